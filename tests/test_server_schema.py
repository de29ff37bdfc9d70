"""schemathesis against the server's own OpenAPI spec, over a real server with gemma-3-270m: generated
requests that fit the schema and ones that break it, on every endpoint, never get a 5xx.

Half of the generated chat/completion bodies are pointed at the real model (with max_tokens capped so a
run stays in a minute or two), so generation itself is fuzzed, not only the 404 for random model names.
"""

from __future__ import annotations

from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, strategies as st
from schemathesis.generation import GenerationMode

from danlu.server import ServerSettings
from danlu.server.app import create_app
from test_server_harness import GEMMA, home_with, models_dir_of, running_server

pytestmark = pytest.mark.weights

EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 40}
MAX_NEW_TOKENS = 3


@pytest.fixture(scope="module")
def url(tmp_path_factory, gemma_path):
    base = home_with(tmp_path_factory.mktemp("schema-home"), models_dir_of(gemma_path))
    with running_server(ServerSettings(base=base, n_ctx=256, keep_alive_s=-1, max_queue=64)) as root:
        yield root


def aimed_at_the_model(body):
    """Point a generated request body at the real model and keep its generation short."""
    if not isinstance(body, dict):
        return body
    body = {**body, "model": GEMMA}
    for key in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
            body[key] = max(min(body[key], MAX_NEW_TOKENS), -1)
    if "max_tokens" not in body:
        body["max_tokens"] = MAX_NEW_TOKENS
    return body


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_no_generated_request_gets_a_server_error(url, mode):
    spec = create_app(ServerSettings()).openapi()
    schema = schemathesis.openapi.from_dict(spec)
    failures, statuses = [], Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
        @hypothesis.settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck))
        def check(case, real):
            if real and operation.method.upper() == "POST":
                case.body = aimed_at_the_model(case.body)
            response = case.call(base_url=url, timeout=60)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{operation.method.upper()} {operation.path} {case.body!r:.300} → "
                                f"{response.status_code} {response.text[:300]}")

        try:
            check()
        except hypothesis.errors.Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to break in an operation without inputs
    print(f"{mode.value}: statuses {dict(statuses)}")
    assert not failures, "\n".join(failures[:10])
    assert sum(n for code, n in statuses.items() if 400 <= code < 500)  # the bad ones were refused
    assert statuses[200] or mode is GenerationMode.NEGATIVE  # and real generations happened

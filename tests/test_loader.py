"""Loading goes through fit: a model that will not fit is refused with numbers and alternatives, never an OOM."""

import pytest

from danlu import hardware
from danlu.fit import DoesNotFit
from danlu.loader import load

pytestmark = pytest.mark.weights


@pytest.fixture
def tiny_machine(monkeypatch):
    """Pretend this machine has 200 MB of RAM and no GPU."""
    small = hardware.with_budget(hardware.detect(), vram_gb=0, ram_gb=0.2)
    monkeypatch.setattr("danlu.fit.api.detect", lambda: small)
    return small


def test_a_model_that_does_not_fit_is_refused_before_loading(home_with_models, gemma_path, tiny_machine):
    with pytest.raises(DoesNotFit) as refused:
        load("gemma-3-270m", n_ctx=512)
    message = str(refused.value)
    assert "MiB" in message and "--force" in message


def test_force_loads_anyway(home_with_models, gemma_path, tiny_machine):
    loaded = load("gemma-3-270m", n_ctx=512, force=True)
    assert loaded.engine.n_ctx == 512
    loaded.engine.close()


def test_a_bare_gguf_path_is_checked_too(gemma_path, tiny_machine):
    with pytest.raises(DoesNotFit):
        load(str(gemma_path), n_ctx=512)


def test_a_bare_path_takes_the_prompt_format_recorded_beside_it(tmp_path):
    """`danlu export` writes OUT.danlu.json; a GGUF of a template-less base is prompted with the format it learned."""
    import json

    from danlu.loader import recorded_format

    gguf = tmp_path / "shop.gguf"
    assert recorded_format(gguf) is None
    gguf.with_suffix(".danlu.json").write_text(json.dumps({"prompt_format": "gemma"}), encoding="utf-8")
    assert recorded_format(gguf) == "gemma"
    gguf.with_suffix(".danlu.json").write_text(json.dumps({"prompt_format": "no-such-format"}), encoding="utf-8")
    assert recorded_format(gguf) is None
    gguf.with_suffix(".danlu.json").write_text("{broken", encoding="utf-8")
    assert recorded_format(gguf) is None

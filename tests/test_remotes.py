"""The remotes registry outside the server: credentials in a base URL are never shown, records are private.

Against a closed loopback port and a loopback HTTP server that answers an error (no network, no model)."""

from __future__ import annotations

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from danlu import loader, remotes
from danlu.arena.battles import model_choices
from danlu.backends.base import GenerationParams, complete
from danlu.config import Settings
from danlu.errors import DanluError

SECRET_URL = "http://alice:s3cret@127.0.0.1:9/v1"  # the discard port: nothing listens on loopback here


@pytest.fixture
def loose_umask():
    """The common umask (022): without care, new files would be readable by every local user."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_credentials_in_a_base_url_are_redacted_in_listings_but_kept_in_the_record(danlu_home):
    remote = remotes.add("cluster", SECRET_URL, api_key="sk-x")
    assert remote.public()["base_url"] == "http://***@127.0.0.1:9/v1"
    assert [r.public()["base_url"] for r in remotes.list_remotes()] == ["http://***@127.0.0.1:9/v1"]
    assert json.loads(remote.record_path.read_text())["base_url"] == SECRET_URL, "the client still needs them"
    assert remotes.redacted_url("https://host:8000/v1") == "https://host:8000/v1"


def test_the_model_picker_row_of_a_remote_does_not_show_its_credentials(danlu_home):
    remotes.add("cluster", SECRET_URL)
    [row] = [c for c in model_choices(Settings()) if c.kind == "remote"]
    assert "s3cret" not in json.dumps(row.to_dict()) and "alice" not in json.dumps(row.to_dict())


def test_an_unreachable_remote_error_does_not_show_its_credentials(danlu_home):
    remotes.add("cluster", SECRET_URL)
    engine = loader.load("cluster").engine
    with pytest.raises(DanluError) as caught:
        complete(engine, engine.tokenize("hi"), GenerationParams(max_tokens=2))
    message = str(caught.value)
    assert "cannot reach the remote" in message and "***@127.0.0.1:9" in message
    assert "s3cret" not in message and "alice" not in message


@pytest.fixture
def echoing_remote():
    """An OpenAI-compatible server that answers 500 with an error quoting the URL it was called at."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            url = f"http://alice:s3cret@127.0.0.1:{self.server.server_port}/v1"
            body = json.dumps({"error": {"message": f"upstream {url} failed"}}).encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://alice:s3cret@127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_a_remote_error_quoting_the_url_does_not_show_its_credentials(danlu_home, echoing_remote):
    remotes.add("echo", echoing_remote)
    engine = loader.load("echo").engine
    with pytest.raises(DanluError) as caught:
        complete(engine, engine.tokenize("hi"), GenerationParams(max_tokens=2))
    message = str(caught.value)
    assert "500" in message and "upstream http://***@127.0.0.1:" in message
    assert "s3cret" not in message and "alice" not in message
    engine.close()


def test_remote_records_are_created_readable_by_their_owner_only(danlu_home, loose_umask):
    remote = remotes.add("cluster", SECRET_URL, api_key="sk-secret")
    assert mode(remote.record_path) == 0o600 and mode(remote.record_path.parent) == 0o700
    remotes.add("cluster", SECRET_URL, api_key="sk-other")  # replacing a record keeps it private
    assert mode(remote.record_path) == 0o600

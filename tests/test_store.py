"""The model store: layout, completeness, verification, atomic writes, and names that cannot escape it.

Every test runs in its own DANLU_HOME (conftest's autouse `danlu_home`); no network, no real weights
except the one test marked `weights`, which checks the pulled gemma against the catalog's sha256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from danlu import catalog
from danlu.catalog.schema import ModelSpec
from danlu.errors import DanluError, IntegrityError, NotDownloaded
from danlu.store import (
    MANIFEST, FileRecord, Store, atomic_write_json, atomic_writer, partial_path, resolve_model_path, safe_name,
    safe_relpath, sha256_file,
)

DATA = b"GGUF" + bytes(range(256)) * 64


def make_spec(file: str = "tiny.gguf", sha256: str | None = None, variant: str = "q8_0", model_id: str = "tiny-model") -> ModelSpec:
    """A minimal catalog entry for a tiny fake model."""
    return ModelSpec.model_validate({
        "id": model_id, "name": "Tiny", "family": "tiny", "architecture": "llama", "backend": "llamacpp",
        "params_b": 0.001, "context_length": 128, "vocab_size": 256, "license": "MIT", "prompt_format": "chatml",
        "default_variant": variant,
        "variants": [{"name": variant, "format": "gguf", "bits_per_weight": 8.0, "size_bytes": len(DATA),
                      "file": file, "sha256": sha256}],
    })


def install_fake(store: Store, spec: ModelSpec, data: bytes = DATA) -> Path:
    """Put a file and its manifest in the store, as a finished pull would."""
    path = store.weight_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    record = FileRecord(path.name, len(data), hashlib.sha256(data).hexdigest())
    store.record(spec, None, "test", [record], path.name, verified=bool(spec.variants[0].sha256))
    return path


# ---------------------------------------------------------------- names that stay inside the store

@pytest.mark.parametrize("bad", ["..", ".", "", "../etc", "a/b", "/etc/passwd", "a\\b", ".hidden", "x\0y", "~root"])
def test_unsafe_model_ids_are_rejected(bad):
    with pytest.raises(DanluError):
        safe_name(bad)


@pytest.mark.parametrize("bad", ["../x.gguf", "/abs/x.gguf", "a/../../b", "a//b", "..\\x", "./x"])
def test_unsafe_file_names_are_rejected(bad):
    with pytest.raises(DanluError):
        safe_relpath(bad)


def test_sub_folders_in_file_names_are_allowed():
    assert str(safe_relpath("onnx/model.onnx")) == "onnx/model.onnx"


def test_remove_with_a_traversing_id_deletes_nothing(danlu_home):
    outside = danlu_home / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    store = Store()
    for bad in ["../precious", "..", str(outside), "models/../../precious"]:
        with pytest.raises(DanluError):
            store.remove(bad)
    assert (outside / "keep.txt").exists()


def test_variant_and_file_names_from_a_catalog_cannot_escape():
    store = Store()
    with pytest.raises(DanluError):
        store.variant_dir(make_spec(variant="../../evil"))
    with pytest.raises(DanluError):
        store.weight_path(make_spec(file="../../evil.gguf"))


def test_a_symlink_out_of_the_store_is_refused(danlu_home, tmp_path):
    store = Store()
    spec = make_spec()
    store.model_dir(spec.id).mkdir(parents=True)
    (store.model_dir(spec.id) / "q8_0").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DanluError, match="escapes"):
        store.variant_dir(spec)


# ---------------------------------------------------------------- layout, completeness, verification

def test_layout_is_models_id_variant_file(danlu_home):
    store = Store()
    assert store.weight_path(make_spec()) == danlu_home / "models" / "tiny-model" / "q8_0" / "tiny.gguf"


def test_complete_needs_the_manifest_and_matching_sizes():
    store, spec = Store(), make_spec()
    path = store.weight_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA)
    assert not store.is_complete(spec), "a file without a manifest is not complete"
    install_fake(store, spec)
    assert store.is_complete(spec)
    path.write_bytes(DATA[:-1])
    assert not store.is_complete(spec), "a truncated file is not complete"


def test_a_catalog_sha256_change_makes_the_old_file_stale():
    store = Store()
    install_fake(store, make_spec(sha256=hashlib.sha256(DATA).hexdigest()))
    assert store.is_complete(make_spec(sha256=hashlib.sha256(DATA).hexdigest()))
    assert not store.is_complete(make_spec(sha256="0" * 64))


def test_verify_recomputes_and_a_flipped_byte_uncompletes_the_variant():
    store, spec = Store(), make_spec(sha256=hashlib.sha256(DATA).hexdigest())
    path = install_fake(store, spec)
    assert store.verify(spec) == hashlib.sha256(DATA).hexdigest()
    damaged = bytearray(DATA)
    damaged[100] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert store.is_complete(spec), "same size: only a hash can tell"
    with pytest.raises(IntegrityError, match="danlu pull tiny-model"):
        store.verify(spec)
    assert not store.is_complete(spec)


def test_verify_of_a_missing_model_says_how_to_pull_it():
    with pytest.raises(NotDownloaded, match="danlu pull tiny-model"):
        Store().verify(make_spec())


def test_list_reports_installed_and_optionally_partial_models():
    store = Store()
    install_fake(store, make_spec(sha256=hashlib.sha256(DATA).hexdigest()))
    partial = store.weight_path(make_spec(model_id="half-done"))
    partial.parent.mkdir(parents=True)
    partial_path(partial).write_bytes(b"abc")
    rows = store.list()
    assert [(r.id, r.variant, r.size, r.verified, r.complete) for r in rows] == [("tiny-model", "q8_0", len(DATA), True, True)]
    assert rows[0].path == store.weight_path(make_spec())
    assert {r.id: r.complete for r in store.list(include_partial=True)} == {"tiny-model": True, "half-done": False}


def test_remove_frees_the_bytes_and_a_second_remove_says_not_installed():
    store = Store()
    install_fake(store, make_spec())
    assert store.remove("tiny-model") >= len(DATA)
    assert not store.model_dir("tiny-model").exists()
    with pytest.raises(NotDownloaded):
        store.remove("tiny-model")


def test_a_second_writer_on_the_same_variant_is_refused():
    store, spec = Store(), make_spec()
    with store.lock(spec):
        with pytest.raises(DanluError, match="another pull"):
            with store.lock(spec):
                pass
    with store.lock(spec):
        pass  # released


def test_not_enough_disk_space_fails_before_downloading():
    with pytest.raises(DanluError, match="disk space"):
        Store().ensure_space(1 << 62)


# ---------------------------------------------------------------- atomic writes

def test_atomic_writer_uses_a_partial_name_until_done(tmp_path):
    target = tmp_path / "f.bin"
    with atomic_writer(target) as handle:
        handle.write(b"new")
        assert partial_path(target).exists() and not target.exists()
    assert target.read_bytes() == b"new" and not partial_path(target).exists()


def test_a_failed_atomic_write_keeps_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as handle:
            handle.write(b"half")
            raise RuntimeError("crash")
    assert target.read_text() and '"v": 1' in target.read_text()
    assert not partial_path(target).exists()


def test_a_corrupt_manifest_counts_as_not_pulled():
    store, spec = Store(), make_spec()
    install_fake(store, spec)
    (store.variant_dir(spec) / MANIFEST).write_text("{not json")
    assert not store.is_complete(spec)


# ---------------------------------------------------------------- names or paths given by a user

def test_a_local_gguf_path_is_used_as_is(tmp_path, monkeypatch):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(DATA)
    assert resolve_model_path(str(gguf)) == gguf.resolve()
    assert resolve_model_path(str(tmp_path)) == tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("mine.gguf") == gguf.resolve()


def test_a_missing_path_and_an_unpulled_model_give_clear_errors(tmp_path):
    with pytest.raises(DanluError, match="no such file"):
        resolve_model_path(str(tmp_path / "nope.gguf"))
    with pytest.raises(NotDownloaded, match="danlu pull gemma-3-270m"):
        resolve_model_path("gemma-3-270m")


def test_a_pulled_catalog_model_resolves_to_its_weight_file():
    spec = catalog.get("gemma-3-270m")
    store = Store()
    path = store.weight_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA)
    record = FileRecord(path.name, len(DATA), spec.variant().sha256)  # as recorded by a verified pull
    store.record(spec, None, "test", [record], path.name, verified=True)
    assert resolve_model_path("gemma-3-270m") == path
    assert resolve_model_path("gemma-3-270m:q4_k_m") == path


@pytest.mark.weights
def test_the_pulled_gemma_matches_the_catalog_sha256(gemma_path):
    assert sha256_file(gemma_path) == catalog.get("gemma-3-270m").variant().sha256
    assert os.path.getsize(gemma_path) == catalog.get("gemma-3-270m").variant().size_bytes

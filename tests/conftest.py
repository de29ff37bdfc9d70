"""Shared fixtures: every test gets its own DANLU_HOME; real weights come from the user's store.

Tests never reach the network. Tests that need real weights carry `@pytest.mark.weights` and skip
(with the command that fixes it) when `make models` has not pulled them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The environment before any test ran: memory measurements run in children started with it, so a
#: variable some earlier test or library set in this process cannot change what they measure.
PRISTINE_ENV = dict(os.environ)

#: The store `make models` pulled into, read before any test changes DANLU_HOME.
REAL_HOME = Path(os.environ.get("DANLU_HOME", Path.home() / ".danlu"))
GEMMA = Path(os.environ.get("DANLU_TEST_GEMMA", REAL_HOME / "models/gemma-3-270m/q4_k_m/gemma-3-270m-q4_k_m.gguf"))
QWEN = Path(os.environ.get("DANLU_TEST_QWEN", REAL_HOME / "models/qwen2.5-coder-1.5b-instruct/q4_k_m/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"))
QWEN05 = Path(os.environ.get("DANLU_TEST_QWEN05", REAL_HOME / "models/qwen2.5-coder-0.5b-instruct/q4_k_m/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))


@pytest.fixture(autouse=True)
def danlu_home(tmp_path_factory, monkeypatch) -> Path:
    """An empty DANLU_HOME per test, like simonw/llm's user-dir fixture."""
    home = tmp_path_factory.mktemp("danlu-home")
    monkeypatch.setenv("DANLU_HOME", str(home))
    monkeypatch.setenv("DANLU_LANG", "zh")
    return home


def _need(path: Path, model_id: str) -> Path:
    if not path.exists():
        pytest.skip(f"{model_id} not pulled: run `make models` (or `danlu pull {model_id}`)")
    return path


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return _need(GEMMA, "gemma-3-270m")


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    return _need(QWEN, "qwen2.5-coder-1.5b-instruct")


@pytest.fixture(scope="session")
def qwen05_path() -> Path:
    """qwen2.5-coder-0.5b-instruct (the 1.5B's draft model, issue 20), when pulled."""
    return _need(QWEN05, "qwen2.5-coder-0.5b-instruct")


@pytest.fixture
def home_with_models(danlu_home: Path) -> Path:
    """A fresh DANLU_HOME whose store links to the real pulled models (read-only use)."""
    models = REAL_HOME / "models"
    if not models.exists():
        pytest.skip("no pulled models: run `make models`")
    (danlu_home / "models").symlink_to(models, target_is_directory=True)
    return danlu_home


@pytest.fixture(scope="session")
def gemma_engine(gemma_path):
    """One loaded gemma-3-270m shared by the tests that only read from it."""
    from danlu.backends.base import LoadPlan
    from danlu.backends.llamacpp import load

    engine = load(None, None, LoadPlan(gemma_path, n_ctx=2048, n_threads=2))
    yield engine
    engine.close()


# --- tiny 2025 models (tests/tiny_modern.py), built once per session -----------------------------------
@pytest.fixture(scope="session")
def llama_cpp_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py, as `danlu export` fetched it (or DANLU_LLAMA_CPP_SRC); skips without it."""
    from danlu.finetune.export import CONVERTER, SRC_ENV, _llama_cpp_version

    given = os.environ.get(SRC_ENV)
    folder = Path(given) if given else REAL_HOME / "cache" / f"llama.cpp-{_llama_cpp_version()}"
    if not (folder / CONVERTER).is_file():
        pytest.skip(f"llama.cpp's converter not fetched: run `python -m danlu.finetune.export` once, or set {SRC_ENV}")
    return folder


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    """A random two-layer Qwen3ForCausalLM with the real Qwen3 chat template, saved as the Hub ships it."""
    import tiny_modern

    return tiny_modern.qwen3(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3")


@pytest.fixture(scope="session")
def tiny_qwen3_gguf(tiny_qwen3_dir, llama_cpp_converter, tmp_path_factory) -> Path:
    """The same model converted (f32) by llama.cpp's own converter: template and vocabulary in the GGUF."""
    import tiny_modern

    out = tmp_path_factory.mktemp("qwen3-gguf") / "tiny-qwen3-f32.gguf"
    return tiny_modern.qwen3_gguf(tiny_qwen3_dir, out, llama_cpp_converter)


@pytest.fixture(scope="session")
def tiny_rwkv7_pth(tmp_path_factory) -> Path:
    """A random RWKV-7 checkpoint in the rwkv package's .pth layout (World vocabulary)."""
    import tiny_modern

    return tiny_modern.rwkv7(tmp_path_factory.mktemp("rwkv7") / "rwkv7-tiny.pth")

"""Export: merge a LoRA into a tiny Llama (SentencePiece vocabulary, as llama.cpp's converter wants it), convert
with llama.cpp's own convert_hf_to_gguf.py, quantize with llama.cpp, and check greedy next tokens against
the merged transformers model. Also: a base that was itself a GGUF keeps its exact vocabulary, and only the
converter's parts are unpacked from the llama-cpp-python sdist.

The converter is not vendored: tests use the one `python -m danlu.finetune.export` (or any `danlu export`)
fetched into the real store, or DANLU_LLAMA_CPP_SRC, and skip with that hint otherwise (tests never reach
the network)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tiny_models as tm
from conftest import REAL_HOME
from danlu.errors import DanluError
from danlu.finetune.export import (CONVERTER, SRC_ENV, _llama_cpp_version, converter_dir, export, run_converter,
                                   unpack_converter)
from danlu.finetune.train import TrainConfig, train

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="session")
def converter() -> Path:
    import os

    given = os.environ.get(SRC_ENV)
    cached = Path(given) if given else REAL_HOME / "cache" / f"llama.cpp-{_llama_cpp_version()}"
    if not (cached / CONVERTER).is_file():
        pytest.skip(f"llama.cpp's converter not fetched: run `python -m danlu.finetune.export` once, or set {SRC_ENV}")
    return cached


@pytest.fixture(autouse=True)
def env(monkeypatch, request):
    monkeypatch.setenv("DANLU_THREADS", "1")
    if "converter" in request.fixturenames:
        monkeypatch.setenv(SRC_ENV, str(request.getfixturevalue("converter")))


def spm_llama(folder: Path) -> Path:
    """A tiny Llama with a SentencePiece BPE tokenizer.model (byte fallback) and a ChatML-style template."""
    import sentencepiece as spm
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(tm.CHINESE * 5), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
                                   user_defined_symbols=["<|im_start|>", "<|im_end|>"])
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink()
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "chat_template": CHAT_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    tm.seeded()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2))
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return spm_llama(tmp_path_factory.mktemp("export") / "llama")


def trained(base_ref: str, tmp_path: Path, name: str = "shop") -> str:
    rows = [{"messages": [{"role": "user", "content": f"你好{i}"}, {"role": "assistant", "content": "谢谢你，再见！"}]}
            for i in range(12)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    train(TrainConfig(base=base_ref, data=data, val=data, out=name, max_steps=4, batch_size=2, lr=2e-2, max_len=64),
          show_progress=False)
    return name


def test_quantized_export_goes_through_llama_cpp_quantizer(base, converter, tmp_path):
    from llama_cpp import Llama

    q8 = export(str(base), trained(str(base), tmp_path), tmp_path / "q8.gguf", "q8_0", show_progress=False)
    assert q8.size_bytes < (base / "model.safetensors").stat().st_size
    assert q8.agreement is not None and q8.positions > 50  # quantized: agreement reported, not required
    llm = Llama(str(q8.path), n_ctx=64, verbose=False)
    assert llm.n_vocab() == 400
    llm.close()


def test_a_gguf_base_keeps_its_own_vocabulary(base, converter, tmp_path):
    from gguf import GGUFReader

    base_gguf = tmp_path / "base-f32.gguf"
    run_converter(converter, base, base_gguf, "f32", show_progress=False)
    result = export(str(base_gguf), trained(str(base_gguf), tmp_path), tmp_path / "out.gguf", "f32", show_progress=False)
    before, after = GGUFReader(str(base_gguf)), GGUFReader(str(result.path))
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
        assert before.get_field(key).contents() == after.get_field(key).contents(), key
    assert result.agreement >= 0.95


def test_f16_export_through_the_typer_command_matches_the_merged_model(base, converter, tmp_path):
    import typer

    from danlu.finetune.cli import adapters_command, export_command

    app = typer.Typer()
    app.command("export")(export_command)
    app.command("adapters")(adapters_command)
    name = trained(str(base), tmp_path, "cli-shop")
    listed = CliRunner().invoke(app, ["adapters", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["name"] == "cli-shop"
    out = tmp_path / "cli.gguf"
    run = CliRunner().invoke(app, ["export", str(base), "--lora", name, "--gguf", str(out), "--quant", "f16", "--json"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["agreement"] >= 0.95 and out.exists()
    record = json.loads(out.with_suffix(".danlu.json").read_text(encoding="utf-8"))
    assert record["adapter"] == name and record["prompt_format"] == "model-template"


def test_unknown_quant_is_refused_before_any_work(base):
    with pytest.raises(DanluError, match="unsupported --quant"):
        export(str(base), "nothing", Path("x.gguf"), "q3_banana", show_progress=False)


def test_converter_source_from_env_must_hold_the_script(tmp_path, monkeypatch):
    from danlu.config import get_settings

    monkeypatch.setenv(SRC_ENV, str(tmp_path))
    with pytest.raises(DanluError, match=CONVERTER):
        converter_dir(get_settings())


def test_only_the_converter_is_unpacked_from_the_sdist(tmp_path):
    sdist = tmp_path / "llama_cpp_python-0.0.0.tar.gz"
    top = "llama_cpp_python-0.0.0/vendor/llama.cpp/"
    files = {top + CONVERTER: b"print()", top + "conversion/__init__.py": b"", top + "gguf-py/gguf/__init__.py": b"",
             top + "LICENSE": b"MIT", top + "ggml/src/ggml.c": b"int x;", "llama_cpp_python-0.0.0/setup.py": b"",
             top + "conversion/../../../../evil.py": b"boom"}
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    unpack_converter(sdist, tmp_path / "out")
    found = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert found == ["LICENSE", "conversion/__init__.py", CONVERTER, "gguf-py/gguf/__init__.py"]
    assert not (tmp_path / "evil.py").exists()

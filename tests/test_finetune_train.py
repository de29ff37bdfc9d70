"""LoRA training on a tiny Qwen2 (ChatML template): held-out loss goes down, the adapter is saved by name,
listed, and chats through the real loader; a killed run resumes to the same weights; refusals are clear.
No timing assertions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tiny_models as tm
from danlu.config import get_settings
from danlu.errors import DanluError
from danlu.finetune.adapters import list_adapters, read_adapter, split_model_id
from danlu.finetune.train import TrainConfig, lr_at, train

REPLY = "谢谢你，再见！"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny matrices: one thread is faster than two fighting over a busy machine."""
    monkeypatch.setenv("DANLU_THREADS", "1")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tm.qwen2(tmp_path_factory.mktemp("ft") / "qwen2")


def dialogues(path: Path, n: int, offset: int = 0) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"你好{i + offset}"}, {"role": "assistant", "content": REPLY}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    return dialogues(tmp_path / "train.jsonl", 24), dialogues(tmp_path / "val.jsonl", 4, offset=100)


def config(base, data, out="tiny", **overrides) -> TrainConfig:
    settings = dict(base=str(base), data=data[0], val=data[1], out=out, max_steps=12, batch_size=2, lr=1e-2,
                    max_len=64, save_every=4)
    return TrainConfig(**{**settings, **overrides})


def test_training_lowers_held_out_loss_and_saves_the_adapter(base, data):
    result = train(config(base, data), show_progress=False)
    assert result.val_loss_after < result.val_loss_before
    assert (result.adapter_dir / "adapter_config.json").exists() and (result.adapter_dir / "adapter_model.safetensors").exists()
    assert result.adapter_dir == get_settings().adapters_dir / "tiny"
    assert len(result.losses) == 12 and result.train_tokens > 0
    assert not any(p.name.startswith(".tiny") for p in result.adapter_dir.parent.iterdir()), "checkpoint left behind"


def test_a_saved_adapter_and_its_checkpoints_are_readable_by_their_owner_only(base, data):
    from danlu.finetune.checkpoint import Checkpoints

    old = os.umask(0o022)  # the common umask: without care, every local user could read them
    try:
        result = train(config(base, data, out="private", max_steps=2, save_every=1), show_progress=False)
        checkpoints = Checkpoints(get_settings().adapters_dir, "in-progress", {"run": 1})
    finally:
        os.umask(old)
    assert oct(result.adapter_dir.stat().st_mode & 0o777) == oct(0o700)
    files = [p for p in result.adapter_dir.rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o600)}
    assert oct(checkpoints.root.stat().st_mode & 0o777) == oct(0o700)


def test_adapter_is_listed_with_base_rank_size_and_losses(base, data):
    result = train(config(base, data, out="listed", rank=4, alpha=8, max_steps=2), show_progress=False)
    [info] = list_adapters()
    assert (info.name, info.base, info.rank, info.alpha) == ("listed", str(base), 4, 8)
    assert info.size_bytes > 0 and info.created[:2] == "20"
    assert info.val_loss_before == result.val_loss_before and info.model_id == f"{base}+listed"
    assert split_model_id("gemma-3-270m+tea-shop") == ("gemma-3-270m", "tea-shop") and split_model_id("qwen") is None


def test_a_plain_peft_folder_is_listed_from_its_config(base, tmp_path):
    tm.lora_adapter(tm.llama(tmp_path / "llama"), get_settings().adapters_dir / "foreign")
    info = read_adapter(get_settings().adapters_dir / "foreign")
    assert info.rank == 4 and info.base == str(tmp_path / "llama") and info.val_loss_after is None


def test_trained_adapter_chats_through_the_loader(base, data):
    from danlu.backends.base import GenerationParams
    from danlu.loader import load

    train(config(base, data, out="chatty", max_steps=30, lr=2e-2), show_progress=False)
    tuned = load(str(base), backend="transformers", adapters=["chatty"])
    assert tuned.engine.adapters[0].applied
    conversation = tuned.conversation(GenerationParams(max_tokens=12, temperature=0.0))
    reply = "".join(chunk.text for chunk in conversation.send("你好7"))
    assert reply.startswith(REPLY[:3])


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from danlu.finetune.train import TrainConfig, train
    config = TrainConfig(**{k: (Path(v) if k in ("data", "val") else v) for k, v in {args}.items()})
    def kill_at_five(info):
        if info.step == 5:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: like a power cut or the OOM killer
    train(config, show_progress=False, on_step=kill_at_five)
""")


def test_a_killed_run_resumes_to_the_same_weights(base, data):
    from safetensors.torch import load_file

    killed = config(base, data, out="resumed", save_every=2, max_steps=8, dropout=0.1)
    args = {k: str(v) if isinstance(v, Path) else v for k, v in killed.__dict__.items()}
    run = subprocess.run([sys.executable, "-c", KILLER.replace("{args}", repr(args))], env=os.environ.copy())
    assert run.returncode == -9
    checkpoint = get_settings().adapters_dir / ".resumed.checkpoint"
    assert sorted(p.name for p in checkpoint.glob("step-*")) == ["step-000004"]
    resumed = train(killed, show_progress=False)
    straight = train(config(base, data, out="straight", save_every=2, max_steps=8, dropout=0.1), show_progress=False)
    assert resumed.resumed_from == 4 and resumed.losses[:4] == straight.losses[:4]
    a, b = (load_file(str(r.adapter_dir / "adapter_model.safetensors")) for r in (resumed, straight))
    assert a.keys() == b.keys() and all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)
    assert not checkpoint.exists()


def test_a_checkpoint_of_different_settings_is_not_resumed_silently(base, data):
    with pytest.raises(KeyboardInterrupt):
        train(config(base, data, out="changed", save_every=1), show_progress=False, on_step=_interrupt_at(2))
    with pytest.raises(DanluError, match=r"different run \(changed: lr\).*--restart"):
        train(config(base, data, out="changed", lr=5e-3), show_progress=False)
    result = train(config(base, data, out="changed", lr=5e-3, restart=True, max_steps=3), show_progress=False)
    assert result.resumed_from == 0


def _interrupt_at(step: int):
    def stop(info):
        if info.step == step:
            raise KeyboardInterrupt
    return stop


def test_an_existing_adapter_is_kept_unless_overwrite(base, data):
    train(config(base, data, out="twice", max_steps=1), show_progress=False)
    with pytest.raises(DanluError, match="--overwrite"):
        train(config(base, data, out="twice", max_steps=1), show_progress=False)
    assert train(config(base, data, out="twice", max_steps=1, overwrite=True), show_progress=False).steps == 1


def test_qlora_on_a_machine_without_cuda_stops_with_a_clear_message(base, data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DanluError, match="QLoRA needs an NVIDIA GPU"):
        train(config(base, data, qlora=True), show_progress=False)


def test_bad_adapter_names_are_refused(base, data):
    with pytest.raises(DanluError, match="invalid adapter name"):
        train(config(base, data, out="../escape"), show_progress=False)


def test_without_val_a_tenth_is_held_out(base, tmp_path):
    result = train(config(base, (dialogues(tmp_path / "all.jsonl", 30), None), out="split", max_steps=1), show_progress=False)
    assert (result.train_examples, result.val_examples) == (27, 3) and result.val_loss_before is not None


def test_learning_rate_warms_up_then_decays():
    rates = [lr_at(step, 20, 1.0) for step in range(20)]
    assert rates[0] == 0.5 and rates[1] == 1.0 and rates[-1] < rates[2] and min(rates) > 0.09


def test_a_gguf_base_is_converted_once_and_cached(tmp_path, monkeypatch):
    from danlu.backends.hf import from_gguf
    from danlu.finetune import base as base_module

    gguf, _ = tm.llama_gguf(tmp_path / "gguf")
    calls = []
    real = from_gguf._dequantize_to
    monkeypatch.setattr(from_gguf, "_dequantize_to", lambda *a: calls.append(a) or real(*a))
    first = base_module.prepare_base(str(gguf), get_settings(), show_progress=False)
    second = base_module.prepare_base(str(gguf), get_settings(), show_progress=False)
    assert first.hf_dir == second.hf_dir and len(calls) == 1
    assert (first.hf_dir / "config.json").exists() and "quantization_config" not in (first.hf_dir / "config.json").read_text()

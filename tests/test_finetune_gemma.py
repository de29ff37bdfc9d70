"""The whole loop on real weights: gemma-3-270m, read from its GGUF, fine-tuned on the shipped tea-shop corpus on
the CPU; the adapter chats through `danlu run --lora`; the export runs in llama.cpp and agrees with the merge.

This is the CI-sized run (8 steps of 2 dialogues, 128 tokens, 8 held-out dialogues); the README's numbers
come from the full-sized run (`danlu finetune gemma-3-270m --data tea-shop --max-steps 30 --max-len 256`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REAL_HOME
from danlu.finetune.data import read_dataset, shipped_corpus
from danlu.finetune.export import CONVERTER, SRC_ENV, _llama_cpp_version, export
from danlu.finetune.train import TrainConfig, train

pytestmark = [pytest.mark.weights, pytest.mark.slow]

QUESTION = "你们几点开门？"
ADAPTER_ID = "gemma-3-270m+tea-shop"


@pytest.fixture(scope="module")
def shop(tmp_path_factory, gemma_path) -> tuple[Path, object]:
    """One short fine-tuning run shared by the module: (DANLU_HOME, TrainResult)."""
    home = tmp_path_factory.mktemp("gemma-shop")
    (home / "models").symlink_to(REAL_HOME / "models", target_is_directory=True)
    train_file, val_file = shipped_corpus("tea-shop")
    val_subset = home / "val8.jsonl"
    val_subset.write_text("".join(json.dumps({"messages": d}, ensure_ascii=False) + "\n"
                                  for d in read_dataset(val_file).dialogues[:8]), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DANLU_HOME", str(home))
        config = TrainConfig(base="gemma-3-270m", data=train_file, val=val_subset, out="tea-shop", rank=8, alpha=16,
                             lr=1e-3, max_steps=8, batch_size=2, max_len=128, save_every=4)
        return home, train(config, show_progress=False)


@pytest.fixture
def in_shop_home(shop, monkeypatch) -> Path:
    monkeypatch.setenv("DANLU_HOME", str(shop[0]))
    return shop[0]


def test_fine_tuning_gemma_lowers_held_out_loss(shop):
    result = shop[1]
    assert result.val_loss_after < result.val_loss_before
    assert (result.adapter_dir / "danlu.json").exists()


def test_the_adapter_chats_through_the_cli(in_shop_home):
    """No --backend: a LoRA on a GGUF base moves to transformers, reading the base's cached transformers copy."""
    from danlu.cli import app

    run = CliRunner().invoke(app, ["run", "gemma-3-270m", "--lora", "tea-shop", "--json",
                                   "--max-tokens", "24", "--temperature", "0", QUESTION])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout.strip().splitlines()[-1])["text"].strip()


def test_the_adapter_is_listed_and_chats_through_the_server_under_its_own_id(shop):
    import openai

    from danlu.config import Settings
    from danlu.server import ServerSettings
    from test_server_harness import running_server

    settings = ServerSettings(base=Settings(home=shop[0], threads=1), n_ctx=512, keep_alive_s=-1)
    with running_server(settings) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        assert ADAPTER_ID in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(model=ADAPTER_ID, messages=[{"role": "user", "content": QUESTION}],
                                               temperature=0, max_tokens=16)
        plain = client.chat.completions.create(model="gemma-3-270m", messages=[{"role": "user", "content": QUESTION}],
                                               temperature=0, max_tokens=16)
    assert reply.model == ADAPTER_ID and reply.choices[0].message.content.strip()
    assert reply.choices[0].message.content != plain.choices[0].message.content  # the adapter changed the model


def test_an_unknown_adapter_id_is_a_404_naming_the_command(shop):
    import openai

    from danlu.config import Settings
    from danlu.server import ServerSettings
    from test_server_harness import running_server

    settings = ServerSettings(base=Settings(home=shop[0], threads=1), n_ctx=512)
    with running_server(settings) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError, match="danlu adapters"):
            client.chat.completions.create(model="gemma-3-270m+nope", messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
def converter(monkeypatch) -> Path:
    cached = REAL_HOME / "cache" / f"llama.cpp-{_llama_cpp_version()}"
    if not (cached / CONVERTER).is_file():
        pytest.skip("llama.cpp's converter not fetched: run `python -m danlu.finetune.export` once")
    monkeypatch.setenv(SRC_ENV, str(cached))
    return cached


def test_exported_gguf_agrees_with_the_merged_model(in_shop_home, converter, tmp_path):
    f16 = export("gemma-3-270m", "tea-shop", tmp_path / "tea-shop-f16.gguf", "f16", show_progress=False)
    assert f16.agreement >= 0.95, f"f16 agreement {f16.agreement:.3f} over {f16.positions} positions"
    from danlu.loader import load  # the base had no chat template: the export's record names the format it learned

    assert load(str(f16.path), n_ctx=256).fmt.name == "gemma"
    q4 = export("gemma-3-270m", "tea-shop", tmp_path / "tea-shop-q4_k_m.gguf", "q4_k_m", show_progress=False)
    assert q4.size_bytes < f16.size_bytes and q4.agreement > 0.5  # quantized: reported, only sanity-checked

"""LoRA supervised fine-tuning with peft: a plain torch loop over one dialogue at a time.

What it does: resolve the base (catalog id or path; a GGUF is dequantized by transformers once and
cached as a transformers folder under $DANLU_HOME/cache), render each dialogue with the prompt format
a chat with that base uses, take the loss only on assistant tokens, measure held-out loss before and
after, draw a bar with loss and tokens/s, and write the adapter to $DANLU_HOME/adapters/NAME.
Checkpoints (adapter, optimizer, RNG, step) are written atomically every `save_every` steps, so a
killed run started again with the same arguments resumes where it stopped and ends with the same
weights as an uninterrupted one.

What it doesn't: sequence packing or padding (one sequence per forward; `batch_size` accumulates
gradients), gradient checkpointing, multi-GPU. A 270M model trains on a laptop CPU; a 7B wants CUDA
and `--qlora` (bitsandbytes 4-bit base, LoRA in bf16/fp32 on top).
Logits are computed only where a label is (`logits_to_keep` with positions): with Gemma's 262k
vocabulary the output layer is most of the cost of a step, and prompt positions need none.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import random
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from danlu.config import Settings, get_settings
from danlu.errors import BackendUnavailable, DanluError
from danlu.finetune import checkpoint as ckpt
from danlu.finetune.base import Base, prepare_base, training_format
from danlu.finetune.data import IGNORE, Dataset, Example, encode_all, read_dataset
from danlu.private import make_private, private_dir
from danlu.progress import Board, say
from danlu.store import sha256_file

ADAPTER_META = "danlu.json"  # danlu's record next to peft's adapter_config.json: base, data, losses, time
VAL_SHARE, VAL_MAX = 0.1, 50  # held out from the training file when no --val is given


@dataclass
class TrainConfig:
    """Everything that decides what a run computes (all but `save_every` must match to resume)."""

    base: str
    data: Path
    out: str
    rank: int = 8
    alpha: int = 16
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None
    max_len: int = 512
    val: Path | None = None
    batch_size: int = 4
    dropout: float = 0.05
    seed: int = 0
    qlora: bool = False
    prompt_format: str | None = None
    save_every: int = 10
    restart: bool = False
    overwrite: bool = False

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed, with the data files' hashes."""
        keep = ("base", "rank", "alpha", "lr", "epochs", "max_steps", "max_len", "batch_size", "dropout", "seed",
                "qlora", "prompt_format")
        facts = {key: getattr(self, key) for key in keep}
        facts["data"] = _sha256(self.data)
        facts["val"] = _sha256(self.val) if self.val else None
        return facts


@dataclass
class StepInfo:
    """What a finished optimizer step reports to `on_step` (the progress bar, tests)."""

    step: int
    total: int
    loss: float
    tokens_per_s: float


@dataclass
class TrainResult:
    """A finished run: where the adapter is and what training did to held-out loss."""

    adapter_dir: Path
    val_loss_before: float | None
    val_loss_after: float | None
    steps: int
    train_examples: int
    val_examples: int
    train_tokens: int
    seconds: float
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)


@dataclass
class Session:
    """One run's working set: the base with fresh LoRA layers, its encoded data, where things go."""

    config: TrainConfig
    base: Base
    model: Any
    device: torch.device
    format_name: str
    train_set: list[Example]
    val_set: list[Example]
    checkpoints: ckpt.Checkpoints
    out_dir: Path


def train(config: TrainConfig, settings: Settings | None = None, on_step: Callable[[StepInfo], None] | None = None,
          show_progress: bool = True) -> TrainResult:
    """Fine-tune `config.base` on `config.data`; resumes from a checkpoint of the same run."""
    session = open_session(config, settings or get_settings(), show_progress)
    with Board(show_progress) as board:
        return _run(session, board, on_step)


def open_session(config: TrainConfig, settings: Settings, show_progress: bool) -> Session:
    """Everything that can refuse comes first (name, QLoRA without CUDA), then the loading."""
    out_dir = _output_dir(config, settings)
    _refuse_qlora_without_cuda(config.qlora)
    _set_threads(settings)
    base = prepare_base(config.base, settings, show_progress)
    model, tokenizer, device = load_for_training(base, config)
    fmt = training_format(model, tokenizer, base, config.prompt_format)
    train_set, val_set = _examples(config, fmt, tokenizer)
    checkpoints = ckpt.Checkpoints(settings.adapters_dir, config.out, config.fingerprint(), config.restart)
    return Session(config, base, model, device, fmt.name, train_set, val_set, checkpoints, out_dir)


def _run(session: Session, board: Board, on_step: Callable[[StepInfo], None] | None) -> TrainResult:
    config, model = session.config, session.model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=0.0)
    total = total_steps(config, len(session.train_set))
    state = session.checkpoints.resume(model, optimizer)
    resumed_from = state.step
    if state.step:
        board.say(f"从第 {state.step} 步继续 / resuming from step {state.step} of {total}")
    else:
        torch.manual_seed(config.seed)  # dropout masks; LoRA init already drew from the seed set at load
        state.val_before = evaluate(model, session.val_set, session.device, board, "验证（训练前）/ val before")
    _loop(session, optimizer, state, total, board, on_step)
    val_after = evaluate(model, session.val_set, session.device, board, "验证（训练后）/ val after")
    result = TrainResult(session.out_dir, state.val_before, val_after, total, len(session.train_set),
                         len(session.val_set), state.tokens, state.seconds, resumed_from, state.losses)
    save_adapter(session, result)
    session.checkpoints.clear()
    return result


def _loop(session: Session, optimizer: Any, state: ckpt.RunState, total: int, board: Board, on_step) -> None:
    config, n = session.config, len(session.train_set)
    bar = board.count_bar("训练 / training", total, completed=state.step)
    order = data_order(n, config.seed)
    session.model.train()
    while state.step < total:
        started = time.perf_counter()
        batch = [session.train_set[order_at(order, state.step * config.batch_size + i, n)] for i in range(config.batch_size)]
        loss, tokens = train_step(session.model, optimizer, batch, lr_at(state.step, total, config.lr), session.device)
        state.advance(loss, tokens, time.perf_counter() - started)
        info = StepInfo(state.step, total, loss, tokens / max(time.perf_counter() - started, 1e-9))
        bar.update(completed=state.step, description=f"训练 / train · loss {loss:.3f} · {info.tokens_per_s:.0f} tok/s")
        if state.step % config.save_every == 0 or state.step == total:
            session.checkpoints.save(session.model, optimizer, state)
        if on_step:
            on_step(info)
    bar.close()


def train_step(model: Any, optimizer: Any, batch: list[Example], lr: float, device: torch.device) -> tuple[float, int]:
    """One optimizer step over `batch` (one forward per dialogue); the loss is the mean over its labelled tokens."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    labelled = sum(example.trained_tokens for example in batch)
    total_loss = 0.0
    for example in batch:
        loss_sum = example_loss(model, example, device)
        (loss_sum / labelled).backward()
        total_loss += float(loss_sum.detach())
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss / labelled, sum(len(example.ids) for example in batch)


def example_loss(model: Any, example: Example, device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the example's labelled tokens; logits only where a label follows."""
    ids = torch.tensor([example.ids], device=device)
    targets = torch.tensor(example.labels[1:], device=device)
    positions = torch.nonzero(targets != IGNORE).flatten()
    logits = _logits_at(model, ids, positions)
    return torch.nn.functional.cross_entropy(logits.float(), targets[positions], reduction="sum")


def _logits_at(model: Any, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    try:
        return model(input_ids=ids, logits_to_keep=positions).logits[0]
    except TypeError:  # remote code without logits_to_keep: full logits, then pick
        return model(input_ids=ids).logits[0, positions]


def evaluate(model: Any, examples: list[Example], device: torch.device, board: Board, label: str) -> float | None:
    """Mean loss per assistant token over `examples` (None without a validation set)."""
    if not examples:
        return None
    was_training, bar = model.training, board.count_bar(label, len(examples))
    model.eval()
    loss, tokens = 0.0, 0
    with torch.no_grad():
        for example in examples:
            loss += float(example_loss(model, example, device))
            tokens += example.trained_tokens
            bar.advance(1)
    bar.close()
    model.train(was_training)
    return loss / tokens


# --- schedule and data order -----------------------------------------------------------------------
def total_steps(config: TrainConfig, n_examples: int) -> int:
    if config.max_steps:
        return config.max_steps
    return max(1, math.ceil(config.epochs * n_examples / config.batch_size))


def lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first tenth, then linear decay to a tenth of the peak; a function of the
    step alone, so a resumed run needs no scheduler state."""
    warmup = max(1, total // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (1.0 - 0.9 * (step - warmup) / max(1, total - warmup))


def data_order(n: int, seed: int) -> Callable[[int], list[int]]:
    """Epoch k's shuffled order, the same every time for the same seed (so resuming needs no saved order)."""
    @functools.lru_cache(maxsize=2)
    def epoch(k: int) -> list[int]:
        order = list(range(n))
        random.Random(seed * 100_003 + k).shuffle(order)
        return order
    return epoch


def order_at(epoch: Callable[[int], list[int]], position: int, n: int) -> int:
    """The example index at a global position counted over all epochs."""
    return epoch(position // n)[position % n]


# --- loading ----------------------------------------------------------------------------------------
def load_for_training(base: Base, config: TrainConfig) -> tuple[Any, Any, torch.device]:
    """The base on CUDA when there is one (4-bit with --qlora), else CPU in fp32, with fresh LoRA layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from danlu.backends.hf import loading

    cuda = torch.cuda.is_available()
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    quantization = loading._quantization("4bit", dtype) if config.qlora else None
    placement = loading.Placement("cuda" if cuda else "cpu", dtype, quantization)
    source = loading.Source(base.hf_dir)
    model = loading.load_model(source, loading.read_config(source), placement, False, {})
    if config.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(config.seed)  # LoRA's A matrices start random: the same seed gives the same run
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question; not ours to fix
        model = get_peft_model(model, lora)
    return model, AutoTokenizer.from_pretrained(str(base.hf_dir)), model.get_input_embeddings().weight.device


def _refuse_qlora_without_cuda(qlora: bool) -> None:
    if not qlora:
        return
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            "QLoRA 需要 NVIDIA GPU（CUDA）和 bitsandbytes，本机没有 CUDA：去掉 --qlora 在 CPU 上训练（适合 1B 以下的小模型）/ "
            "QLoRA needs an NVIDIA GPU (CUDA) and bitsandbytes, and this machine has no CUDA: drop --qlora to train "
            "on the CPU (fine for models under ~1B parameters)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise BackendUnavailable("QLoRA 需要 bitsandbytes / QLoRA needs bitsandbytes: pip install bitsandbytes")


def _set_threads(settings: Settings) -> None:
    """The configured thread count (torch would take every core); danlu draws its own progress, not transformers'."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)


def _examples(config: TrainConfig, fmt, tokenizer) -> tuple[list[Example], list[Example]]:
    """Encoded training and validation examples; without --val a tenth of the data is held out."""
    from danlu.backends.hf.tokens import TokenCodec

    codec = TokenCodec(tokenizer)
    tokenize = lambda text, special: codec.tokenize(text, special, None)  # noqa: E731 — the chat's tokenization
    train_data = read_dataset(config.data)
    train_dialogues, val_dialogues = _split(train_data, read_dataset(config.val) if config.val else None, config.seed)
    train_set, truncated, dropped = encode_all(train_dialogues, fmt, tokenize, config.max_len)
    val_set, _, _ = encode_all(val_dialogues, fmt, tokenize, config.max_len)
    _report_data(train_data, len(train_set), len(val_set), truncated, dropped, config.max_len)
    if not train_set:
        raise DanluError("没有可训练的样本 / no trainable examples (all dialogues dropped)")
    return train_set, val_set


def _split(data: Dataset, val: Dataset | None, seed: int) -> tuple[list[list[dict]], list[list[dict]]]:
    if val is not None:
        return data.dialogues, val.dialogues
    dialogues = list(data.dialogues)
    random.Random(seed).shuffle(dialogues)
    n_val = min(VAL_MAX, round(len(dialogues) * VAL_SHARE)) if len(dialogues) >= 10 else 0
    return dialogues[n_val:], dialogues[:n_val]


def _report_data(data: Dataset, n_train: int, n_val: int, truncated: int, dropped: int, max_len: int) -> None:
    say(f"数据 / data: {data.path.name}（{data.shape}）训练 / train {n_train}，验证 / val {n_val}")
    if truncated:
        say(f"{truncated} 段对话超过 {max_len} 个 token 被截断，{dropped} 段因此没有可学的回复而跳过 / "
            f"{truncated} dialogue(s) cut at {max_len} tokens, {dropped} skipped with no reply left")


# --- output -------------------------------------------------------------------------------------------
def _output_dir(config: TrainConfig, settings: Settings) -> Path:
    from danlu.finetune.adapters import adapter_dir

    out_dir = adapter_dir(config.out, settings)
    if out_dir.exists() and not config.overwrite:
        raise DanluError(f"适配器 {config.out} 已存在：换一个 --out，或加 --overwrite 覆盖 / adapter {config.out} "
                         f"already exists: choose another --out, or pass --overwrite")
    return out_dir


def save_adapter(session: Session, result: TrainResult) -> None:
    """peft's adapter files plus danlu.json, written beside the target and moved into place whole."""
    out_dir, base = session.out_dir, session.base
    staging = out_dir.with_name(f".{out_dir.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    session.model.save_pretrained(str(staging))
    meta = {"base": base.ref, "base_id": base.model_id, "base_dir": str(base.hf_dir), "format": session.format_name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "data": str(session.config.data),
            "config": _jsonable(session.config), "result": _jsonable(result)}
    (staging / ADAPTER_META).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    make_private(staging)  # trained on the user's own dialogues: folder 0700, files 0600
    private_dir(out_dir.parent)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # --overwrite was given (checked before training)
    staging.rename(out_dir)


def _jsonable(record: Any) -> dict[str, Any]:
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(record).items()}


def _sha256(path: Path) -> str:
    return sha256_file(Path(path).expanduser())

"""Checkpoints of a training run, so a killed `danlu finetune` picks up where it stopped.

Layout: $DANLU_HOME/adapters/.NAME.checkpoint/ (hidden, so `danlu adapters` does not list it) holds
run.json (the settings and data hashes the run was started with) and step-NNNNNN/ folders, each
with the LoRA weights (safetensors), the optimizer state, the RNG state and the run's counters.
A step folder is written as step-NNNNNN.tmp and renamed when complete, so a kill during a save
leaves the previous checkpoint intact; older step folders are removed after each save.
Resuming restores the RNG too, so dropout draws the same masks and the resumed run ends with the
same weights as one that was never stopped. The data order needs no saving (a function of the seed).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from danlu.errors import DanluError
from danlu.private import private_dir

RUN_FILE = "run.json"
WEIGHTS_FILE = "adapter.safetensors"
TRAINER_FILE = "trainer.pt"


@dataclass
class RunState:
    """Counters a run carries across restarts."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    val_before: float | None = None
    losses: list[float] = field(default_factory=list)

    def advance(self, loss: float, tokens: int, seconds: float) -> None:
        self.step += 1
        self.tokens += tokens
        self.seconds += seconds
        self.losses.append(loss)


class Checkpoints:
    """The checkpoint folder of one adapter name and one set of run settings."""

    def __init__(self, adapters_dir: Path, name: str, fingerprint: dict[str, Any], restart: bool = False):
        self.root = adapters_dir / f".{name}.checkpoint"
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as it reads back from run.json
        if restart:
            self.clear()
        self._claim()

    def _claim(self) -> None:
        """Start the folder for this run, or check that the one found belongs to the same run."""
        run_file = self.root / RUN_FILE
        if run_file.exists():
            found = json.loads(run_file.read_text(encoding="utf-8"))
            if found != self.fingerprint and self.latest() is not None:
                changed = sorted(k for k in set(found) | set(self.fingerprint) if found.get(k) != self.fingerprint.get(k))
                raise DanluError(
                    f"{self.root} 里有另一次训练的断点（不同的设置：{', '.join(changed)}）：加 --restart 丢弃它重新开始 / "
                    f"{self.root} holds a checkpoint of a different run (changed: {', '.join(changed)}): "
                    f"pass --restart to discard it and start over")
        private_dir(self.root)  # the adapter in the making, and the optimizer state: the owner's alone
        run_file.write_text(json.dumps(self.fingerprint, ensure_ascii=False, indent=2), encoding="utf-8")

    def latest(self) -> Path | None:
        steps = sorted(p for p in self.root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
        return steps[-1] if steps else None

    def resume(self, model: Any, optimizer: Any) -> RunState:
        """Load the newest checkpoint into `model` and `optimizer`; a fresh RunState when there is none."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = self.latest()
        if folder is None:
            return RunState()
        device = model.get_input_embeddings().weight.device
        set_peft_model_state_dict(model, load_file(str(folder / WEIGHTS_FILE), device=str(device)))
        saved = torch.load(folder / TRAINER_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        return RunState(**saved["state"])

    def save(self, model: Any, optimizer: Any, state: RunState) -> Path:
        """Write step-NNNNNN atomically (tmp folder, then rename) and drop the older ones."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        final = self.root / f"step-{state.step:06d}"
        staging = final.with_name(final.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, str(staging / WEIGHTS_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "state": asdict(state),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                   staging / TRAINER_FILE)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for old in self.root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

"""From a LoadPlan to a transformers model and tokenizer: where the files are, what may run, where it goes.

Refusals come first and are DanluErrors with a way out: models with no runtime (`spec.unsupported`),
remote code without `--trust-remote-code`, CUDA-only paths (bitsandbytes, GPTQ) on a machine
without CUDA. Weights load safetensors-first, pickles only with `weights_only=True`. A `.gguf` path
loads through transformers' own GGUF reader (dequantized), which is the cross-check against llama.cpp.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from danlu.backends.base import LoadPlan
from danlu.catalog.schema import ModelSpec, Variant
from danlu.errors import BackendUnavailable, DanluError

#: Config keys that hold a model's longest context, in the order transformers models use them.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length")


@dataclass
class Source:
    """Where the weights are, as transformers wants them: a folder, maybe a GGUF file in it."""

    directory: Path
    gguf_file: str | None = None
    adapters: list[Path] = field(default_factory=list)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


@dataclass
class Placement:
    """Device, dtype and quantization for from_pretrained."""

    device: str
    dtype: torch.dtype
    quantization: Any = None

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"dtype": self.dtype}
        if self.device == "cuda":
            kw["device_map"] = "auto"  # fills the GPU first and spills to CPU memory when it must
        if self.quantization is not None:
            kw["quantization_config"] = self.quantization
        return kw


def refuse_unsupported(spec: ModelSpec | None) -> None:
    """Models danlu cannot run yet stop here with the catalog's reason."""
    if spec is not None and spec.unsupported:
        raise BackendUnavailable(f"{spec.name} 暂不支持 / not supported yet: {spec.unsupported}")


def resolve_source(plan: LoadPlan) -> Source:
    """A model folder, a file inside one, a .gguf file, or a LoRA adapter folder on top of a base."""
    path = Path(plan.path).expanduser()
    if not path.exists():
        raise DanluError(f"找不到模型文件 / model path does not exist: {path}")
    adapters = [Path(a).expanduser() for a in plan.extra.get("adapters", [])]
    if path.is_file():
        if path.suffix == ".gguf":
            _require_module("gguf", "pip install gguf", "读取 GGUF / reading GGUF through transformers")
            return Source(path.parent, path.name, adapters)
        path = path.parent
    if (path / "adapter_config.json").exists():
        return Source(_adapter_base(path, plan), None, [path, *adapters])
    return Source(path, None, adapters)


def _adapter_base(adapter: Path, plan: LoadPlan) -> Path:
    """The base model under an adapter: --base, else the adapter config's base when it is a local folder."""
    base = plan.extra.get("base_model") or json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if base and Path(base).expanduser().is_dir():
        return Path(base).expanduser()
    raise DanluError(
        f"{adapter} 是 LoRA 适配器，需要基础模型：用 --base 指定本地基础模型目录 / "
        f"{adapter} is a LoRA adapter: pass the base model folder with --base (its config names {base!r})"
    )


def read_config(source: Source) -> dict[str, Any]:
    """config.json as plain JSON (AutoConfig itself may need remote code); GGUF files carry their own."""
    if source.gguf_file:
        return {}
    config = source.directory / "config.json"
    if not config.exists():
        raise DanluError(f"{source.directory} 里没有 config.json，不是 transformers 模型目录 / has no config.json: not a transformers model folder")
    return json.loads(config.read_text(encoding="utf-8"))


def remote_code_needed(spec: ModelSpec | None, config: dict[str, Any]) -> bool:
    """The catalog says so, or the config maps to code that transformers does not ship."""
    if spec is not None and spec.trust_remote_code:
        return True
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return "auto_map" in config and config.get("model_type") not in CONFIG_MAPPING_NAMES


def consent_to_remote_code(spec: ModelSpec | None, plan: LoadPlan, needed: bool) -> bool:
    """Remote code runs only when the user passed --trust-remote-code."""
    if not needed or plan.extra.get("trust_remote_code") is True:
        return needed
    written_for = spec.remote_code_transformers if spec else None
    version = f"（为 transformers {written_for} 编写）/ (written for transformers {written_for})" if written_for else ""
    name = spec.name if spec else str(plan.path)
    raise DanluError(
        f"{name} 需要运行模型仓库自带的 Python 代码 {version}：确认信任后加 `--trust-remote-code` / "
        f"{name} runs Python code shipped with the weights {version}: pass `--trust-remote-code` if you trust it"
    )


@contextmanager
def remote_code_guard(spec: ModelSpec | None, trusted: bool) -> Iterator[None]:
    """Remote code written for an older transformers breaks in many ways; name the version it needs."""
    try:
        yield
    except DanluError:
        raise
    except Exception as exc:
        if not trusted:
            raise
        raise DanluError(remote_code_failure(spec, exc)) from exc


def remote_code_failure(spec: ModelSpec | None, exc: BaseException) -> str:
    import transformers

    wanted = (spec.remote_code_transformers if spec else None) or "（未知 / unknown）"
    return (
        f"模型自带代码运行失败：它为 transformers {wanted} 编写，当前是 {transformers.__version__}；"
        f"请在单独的虚拟环境里 `pip install transformers=={wanted}` / the model's own code failed: it was written for "
        f"transformers {wanted}, this is {transformers.__version__}; use a separate venv with that version. "
        f"({type(exc).__name__}: {exc})"
    )


def choose_placement(plan: LoadPlan, config: dict[str, Any], variant: Variant | None) -> Placement:
    """CPU in fp32 unless a GPU is asked for and present; quantized paths demand CUDA."""
    cuda = torch.cuda.is_available()
    quantize = plan.extra.get("quantize")
    gptq = (variant is not None and variant.format == "gptq") or config.get("quantization_config", {}).get("quant_method") == "gptq"
    if quantize or gptq:
        _require_cuda(cuda, "GPTQ" if gptq else f"bitsandbytes {quantize}")
    wants_gpu = plan.gpu_layers != 0 or plan.extra.get("device") == "cuda" or bool(quantize) or gptq
    if plan.extra.get("device") == "cuda" and not cuda:
        _require_cuda(cuda, "--device cuda")
    device = "cuda" if (wants_gpu and cuda) else "cpu"
    dtype = _dtype(plan.extra.get("dtype"), device, gptq)
    return Placement(device, dtype, _quantization(quantize, dtype) if quantize else None)


def _require_cuda(cuda: bool, what: str) -> None:
    if not cuda:
        raise BackendUnavailable(
            f"{what} 需要 NVIDIA GPU（CUDA），本机没有：请选 GGUF 量化版本（llama.cpp）或不量化在 CPU 上运行 / "
            f"{what} needs an NVIDIA GPU (CUDA) and this machine has none: use a GGUF variant (llama.cpp) "
            f"or load unquantized on the CPU"
        )


def _dtype(name: str | None, device: str, gptq: bool) -> torch.dtype:
    """fp32 on CPU (fp16 matmuls are slow or missing there); bf16 on GPUs that have it, else fp16."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name in table:
        return table[name]
    if name not in (None, "auto"):
        raise DanluError(f"未知的 dtype {name!r} / unknown dtype {name!r}: use fp32, fp16 or bf16")
    if device == "cpu":
        return torch.float32
    if gptq or not torch.cuda.is_bf16_supported():
        return torch.float16  # GPTQ kernels are written for fp16
    return torch.bfloat16


def _quantization(kind: str, dtype: torch.dtype) -> Any:
    if kind not in ("8bit", "4bit"):
        raise DanluError(f"未知的量化方式 {kind!r} / unknown quantization {kind!r}: use 8bit or 4bit")
    _require_module("bitsandbytes", "pip install bitsandbytes", f"{kind} 量化 / {kind} quantization")
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def require_gptq_runtime() -> None:
    """transformers 5 runs GPTQ checkpoints through optimum + gptqmodel (auto-gptq is retired)."""
    for module in ("optimum", "gptqmodel"):
        _require_module(module, "pip install optimum gptqmodel", "GPTQ 模型 / GPTQ checkpoints")


def _require_module(module: str, hint: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise BackendUnavailable(f"{what} 需要 {module} / needs {module}: {hint}")


def load_tokenizer(source: Source, trusted: bool) -> Any:
    """The model's tokenizer (from GGUF metadata for a .gguf), or the adapter's when it brings one."""
    from transformers import AutoTokenizer

    folder = _tokenizer_dir(source)
    gguf = source.kwargs if folder == source.directory else {}
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trusted, **gguf)


def _tokenizer_dir(source: Source) -> Path:
    """A LoRA with a larger vocabulary brings its own tokenizer; the last adapter that has one wins."""
    for adapter in reversed(source.adapters):
        if any((adapter / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            return adapter
    return source.directory


def load_model(source: Source, config: dict[str, Any], placement: Placement, trusted: bool, overrides: dict[str, Any]) -> Any:
    """The right Auto class for the architecture, loaded safetensors-first and never with full pickle."""
    if config.get("quantization_config", {}).get("quant_method") == "gptq":
        require_gptq_runtime()
    auto_config = _auto_config(source, config, trusted, overrides)
    try:
        model = _model_class(auto_config, config).from_pretrained(
            str(source.directory), config=auto_config, trust_remote_code=trusted, weights_only=True,
            **source.kwargs, **placement.kwargs(),
        )
    except pickle.UnpicklingError as exc:
        raise DanluError(
            f"{source.directory} 的 pickle 权重里有张量以外的 Python 对象，已拒绝加载（weights_only=True）/ "
            f"refused to load the pickle weights in {source.directory}: they hold Python objects besides tensors "
            f"(weights_only=True); if you trust the file, convert it to safetensors yourself"
        ) from exc
    return model.eval()


def _auto_config(source: Source, config: dict[str, Any], trusted: bool, overrides: dict[str, Any]) -> Any:
    """AutoConfig with danlu's overrides (SuperHOT's RoPE); an unknown model type is a clear refusal."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(source.directory), trust_remote_code=trusted, **source.kwargs, **overrides)
    except (ValueError, KeyError) as exc:
        if trusted:
            raise
        raise BackendUnavailable(
            f"transformers {_version()} 不认识这个模型（model_type={config.get('model_type')!r}）/ "
            f"transformers {_version()} does not know this model (model_type={config.get('model_type')!r}): {exc}"
        ) from exc


def _version() -> str:
    import transformers

    return transformers.__version__


def _model_class(auto_config: Any, config: dict[str, Any]) -> Any:
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if getattr(auto_config, "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM
    auto_map = config.get("auto_map", {})
    if auto_map and "AutoModelForCausalLM" not in auto_map and "AutoModel" in auto_map:
        return AutoModel  # older remote code (ChatGLM's first releases) registers only AutoModel
    return AutoModelForCausalLM


def context_limit(model: Any, plan: LoadPlan, spec: ModelSpec | None) -> int:
    """The plan's context, capped by what the model's positions allow."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    limits = [getattr(config, key) for key in CONTEXT_KEYS if isinstance(getattr(config, key, None), int)]
    if not limits and spec is not None:
        limits = [spec.context_length]
    return min([plan.n_ctx, *limits])

"""Export a base + LoRA as one GGUF for the llama.cpp backend: merge, convert with llama.cpp's own tool, quantize.

1. Merge: `danlu.lora.merge_and_save` folds the adapter into the base's weights (fp32 transformers folder).
2. Convert: llama.cpp's `convert_hf_to_gguf.py`, the converter every published GGUF comes from. It ships
   in the llama-cpp-python source distribution (vendor/llama.cpp) but not in its wheel, so the first export
   fetches that sdist with pip, for the very llama-cpp-python version installed (so the converter and the
   runtime that loads its output agree), and unpacks only the converter, its `conversion/` package and its
   bundled `gguf-py` into $DANLU_HOME/cache/llama.cpp-<version>/. Offline, point DANLU_LLAMA_CPP_SRC at a
   llama.cpp checkout (any folder holding convert_hf_to_gguf.py).
3. Quantize: llama.cpp's `llama_model_quantize` (low-level bindings) turns the f16 file into q4_k_m etc.

A base that was a GGUF has no SentencePiece `tokenizer.model` in its transformers copy (transformers
rebuilds a tokenizer.json from the GGUF), and without it the converter would guess a BPE vocabulary.
The base GGUF's own vocabulary (tokens, scores, types) is therefore written back as a tokenizer.model
beside the merged weights, so the export tokenizes exactly as the base did in llama.cpp.
Afterwards the export is checked: greedy next tokens of llama.cpp on the GGUF against the merged
transformers model on the same ids (`greedy_agreement`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from danlu.config import Settings, get_settings
from danlu.errors import BackendUnavailable, DanluError
from danlu.finetune.base import Base, prepare_base
from danlu.progress import say

CONVERTER = "convert_hf_to_gguf.py"
SRC_ENV = "DANLU_LLAMA_CPP_SRC"
#: What of vendor/llama.cpp the converter needs (plus the licence it ships under).
CONVERTER_PARTS = (CONVERTER, "conversion/", "gguf-py/", "LICENSE")
#: Types the converter writes itself; everything else goes through llama.cpp's quantizer.
CONVERTER_TYPES = ("f32", "f16", "bf16")
QUANT_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m",
               "q5_k_s", "q5_k_m", "q6_k")


@dataclass
class ExportResult:
    """The GGUF written, its size, and how often it agrees with the merged model's greedy choice."""

    path: Path
    size_bytes: int
    quant: str
    agreement: float | None = None
    positions: int = 0


def export(base_ref: str, adapter: str, out: Path, quant: str = "f16", settings: Settings | None = None,
           check: bool = True, show_progress: bool = True) -> ExportResult:
    """Merge `adapter` into `base_ref`, write `out` as GGUF of type `quant`, and check it against the merge."""
    from danlu.finetune.adapters import read_adapter
    from danlu.loader import adapter_path

    settings = settings or get_settings()
    quant = _checked_quant(quant)
    out = Path(out).expanduser()
    converter = converter_dir(settings, show_progress)
    base, lora = prepare_base(base_ref, settings, show_progress), adapter_path(adapter, settings)
    with tempfile.TemporaryDirectory(prefix="export-", dir=_work_dir(settings)) as work:
        merged = merge(base, lora, Path(work) / "merged", show_progress)
        convert_and_quantize(converter, merged, out, quant, Path(work), show_progress)
        info = read_adapter(lora)
        probes = probe_ids(merged, info) if check else []
        agreement, positions = greedy_agreement(out, merged, probes, settings.threads) if check else (None, 0)
    result = ExportResult(out, out.stat().st_size, quant, agreement, positions)
    write_record(result, base, info)
    return result


def write_record(result: ExportResult, base: Base, adapter: Any) -> Path:
    """OUT.danlu.json beside the GGUF: base, adapter, prompt format, check. A base without a chat template
    (gemma-3-270m) leaves none in the GGUF either; this record is where a loader can find the format."""
    record = {"base": base.ref, "adapter": adapter.name, "prompt_format": adapter.prompt_format, "quant": result.quant,
              "agreement": result.agreement, "positions": result.positions}
    path = result.path.with_suffix(".danlu.json")
    path.write_text(json.dumps(record, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def _checked_quant(quant: str) -> str:
    quant = (quant or "f16").lower()
    if quant not in CONVERTER_TYPES + QUANT_TYPES:
        raise DanluError(f"不支持的量化类型 {quant!r} / unsupported --quant {quant!r}: "
                         f"{', '.join(CONVERTER_TYPES + QUANT_TYPES)}")
    return quant


def _work_dir(settings: Settings) -> Path:
    """Scratch space beside the store (a merged model is as big as the base in fp32; /tmp may be small)."""
    work = settings.home / "cache" / "export-work"
    work.mkdir(parents=True, exist_ok=True)
    return work


# --- merge ------------------------------------------------------------------------------------------
def merge(base: Base, adapter: Path, out_dir: Path, show_progress: bool = True) -> Path:
    """The base with the adapter folded in, as a transformers folder a converter can read."""
    from danlu.lora import merge_and_save

    say(f"合并 {adapter.name} 到 {base.ref} / merging {adapter.name} into {base.ref}", enabled=show_progress)
    merge_and_save(base.hf_dir, [adapter], out_dir, dtype="fp32")
    (out_dir / "danlu_merge.json").unlink(missing_ok=True)  # danlu's record, not a model file
    if base.source.suffix == ".gguf" and not (out_dir / "tokenizer.model").exists():
        write_sentencepiece_model(base.source, out_dir / "tokenizer.model")
    return out_dir


def write_sentencepiece_model(gguf_path: Path, out: Path) -> bool:
    """Write the GGUF's SentencePiece-style vocabulary ("llama" tokenizer) as tokenizer.model; False when the
    GGUF's vocabulary is of another kind (byte-level BPE needs none: the converter reads tokenizer.json)."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as spm

    reader = GGUFReader(str(gguf_path))
    if _field(reader, "tokenizer.ggml.model") != "llama":
        return False
    proto = spm.ModelProto()
    tokens, scores = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.scores")
    for token, score, kind in zip(tokens, scores, _field(reader, "tokenizer.ggml.token_type")):
        proto.pieces.add(piece=token, score=float(score), type=int(kind))  # GGUF token types are SentencePiece's
    proto.trainer_spec.model_type = spm.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = any(p.type == spm.ModelProto.SentencePiece.BYTE for p in proto.pieces)
    proto.trainer_spec.unk_id = int(_field(reader, "tokenizer.ggml.unknown_token_id", 0))
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = bool(_field(reader, "tokenizer.ggml.add_space_prefix", False))
    out.write_bytes(proto.SerializeToString())
    return True


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.get_field(key)
    return default if field is None else field.contents()


# --- convert and quantize ------------------------------------------------------------------------------
def convert_and_quantize(converter: Path, merged: Path, out: Path, quant: str, work: Path, show_progress: bool) -> None:
    """Run llama.cpp's converter (f32/f16/bf16 directly), then its quantizer for the other types."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if quant in CONVERTER_TYPES:
        run_converter(converter, merged, out, quant, show_progress)
        return
    intermediate = work / "merged-f16.gguf"
    run_converter(converter, merged, intermediate, "f16", show_progress)
    quantize(intermediate, out, quant, show_progress)


def run_converter(converter: Path, merged: Path, out: Path, outtype: str, show_progress: bool = True) -> None:
    """`python convert_hf_to_gguf.py MERGED --outfile OUT --outtype TYPE`, in this interpreter."""
    say(f"转换为 GGUF（{outtype}）/ converting to GGUF ({outtype}) with llama.cpp's {CONVERTER}", enabled=show_progress)
    command = [sys.executable, str(converter / CONVERTER), str(merged), "--outfile", str(out), "--outtype", outtype]
    env = {**os.environ, "PYTHONPATH": str(converter)}  # the converter imports its own `conversion` package
    done = subprocess.run(command, cwd=converter, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise DanluError(f"llama.cpp 的转换脚本失败 / llama.cpp's converter failed (exit {done.returncode}):\n{tail}")


def quantize(source: Path, out: Path, quant: str, show_progress: bool = True) -> None:
    """llama.cpp's own quantizer, through llama-cpp-python's low-level bindings."""
    import llama_cpp

    say(f"量化为 {quant} / quantizing to {quant}", enabled=show_progress)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params.nthread = get_settings().threads
    with _native_output_silenced():  # llama.cpp logs a line per tensor
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0 or not out.exists():
        raise DanluError(f"llama.cpp 量化失败（返回 {status}）/ llama.cpp quantization to {quant} failed (status {status})")


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null while C code runs (Python-level redirection cannot reach it)."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1), os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


# --- the converter ----------------------------------------------------------------------------------------
def converter_dir(settings: Settings, show_progress: bool = True) -> Path:
    """A folder holding llama.cpp's convert_hf_to_gguf.py: $DANLU_LLAMA_CPP_SRC, the cache, or fetched now."""
    given = os.environ.get(SRC_ENV)
    if given:
        if not (Path(given) / CONVERTER).is_file():
            raise DanluError(f"{SRC_ENV}={given} 里没有 {CONVERTER} / {SRC_ENV} points at a folder without {CONVERTER}")
        return Path(given)
    cached = converter_cache(settings)
    if not (cached / CONVERTER).is_file():
        fetch_converter(cached, show_progress)
    return cached


def converter_cache(settings: Settings) -> Path:
    return settings.home / "cache" / f"llama.cpp-{_llama_cpp_version()}"


def _llama_cpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise BackendUnavailable("导出 GGUF 需要 llama-cpp-python / exporting GGUF needs llama-cpp-python") from None


def fetch_converter(target: Path, show_progress: bool = True) -> Path:
    """Download the llama-cpp-python sdist with pip and unpack only the converter's parts into `target`."""
    version = _llama_cpp_version()
    say(f"首次导出：用 pip 获取 llama-cpp-python {version} 源码包中的 llama.cpp 转换脚本 / first export: fetching "
        f"llama.cpp's converter from the llama-cpp-python {version} source package with pip", enabled=show_progress)
    with tempfile.TemporaryDirectory(prefix="llama-cpp-sdist-") as download:
        sdist = _pip_download_sdist(version, Path(download))
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        unpack_converter(sdist, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _pip_download_sdist(version: str, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               f"llama-cpp-python=={version}", "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True)
    found = sorted(folder.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise DanluError(f"无法下载 llama-cpp-python {version} 源码包；离线时请把 {SRC_ENV} 设为 llama.cpp 源码目录 / "
                         f"could not download the llama-cpp-python {version} sdist; offline, set {SRC_ENV} to a "
                         f"llama.cpp checkout:\n{tail}")
    return found[0]


def unpack_converter(sdist: Path, target: Path) -> None:
    """Extract vendor/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/, LICENSE}, nothing else."""
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if _converter_part(m.name) and (m.isfile() or m.isdir())]
        if not any(m.name.endswith("/" + CONVERTER) for m in members):
            raise DanluError(f"{sdist.name} 里没有 {CONVERTER} / {sdist.name} holds no {CONVERTER}")
        for member in members:
            member.name = _converter_part(member.name)
        archive.extractall(target, members=members, filter="data")  # "data": no links out, no absolute paths


def _converter_part(name: str) -> str | None:
    """The path below vendor/llama.cpp/ when it is one of CONVERTER_PARTS, else None."""
    _, marker, rest = name.partition("/vendor/llama.cpp/")
    if not marker or not rest or ".." in rest.split("/"):  # nothing may climb out of the target folder
        return None
    return rest if any(rest == part or rest.startswith(part) for part in CONVERTER_PARTS) else None


# --- the check ------------------------------------------------------------------------------------------------
def probe_ids(merged: Path, adapter: Any, n: int = 8, max_len: int = 256) -> list[list[int]]:
    """The adapter's own held-out dialogues (the shipped corpus's when that file is gone) as the model sees them
    in a chat: rendered with the format it was trained with, tokenized segment by segment (plain text when no
    format is known)."""
    from transformers import AutoTokenizer

    from danlu.backends.hf.tokens import TokenCodec
    from danlu.finetune.data import encode, read_dataset, shipped_corpus

    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    codec, fmt = TokenCodec(tokenizer), _probe_format(tokenizer, adapter.prompt_format)
    own = Path(adapter.held_out) if adapter.held_out else None
    dialogues = read_dataset(own if own and own.is_file() else shipped_corpus("tea-shop")[1]).dialogues[:n]
    if fmt is None:
        texts = ["\n".join(m["content"] for m in dialogue) for dialogue in dialogues]
        return [tokenizer(text)["input_ids"][:max_len] for text in texts]
    tokenize = lambda text, special: codec.tokenize(text, special, None)  # noqa: E731
    return [encode(dialogue, fmt, tokenize).ids[:max_len] for dialogue in dialogues]


def _probe_format(tokenizer: Any, name: str | None) -> Any:
    from danlu.formats import format_names, from_template, get_format

    if name in format_names():
        return get_format(name)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        return from_template(template, bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "",
                             control_tokens=tuple(tokenizer.all_special_tokens))
    return None


def greedy_agreement(gguf: Path, merged: Path, sequences: Sequence[list[int]], threads: int = 2) -> tuple[float, int]:
    """Share of positions where llama.cpp's argmax on `gguf` equals transformers' on `merged`, over the same ids."""
    hf, cpp = hf_greedy(merged, sequences), llama_cpp_greedy(gguf, sequences, threads)
    pairs = [(a, b) for left, right in zip(hf, cpp) for a, b in zip(left, right)]
    return sum(a == b for a, b in pairs) / max(1, len(pairs)), len(pairs)


def hf_greedy(merged: Path, sequences: Sequence[list[int]]) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist() for ids in sequences]


def llama_cpp_greedy(gguf: Path, sequences: Sequence[list[int]], threads: int = 2) -> list[list[int]]:
    from llama_cpp import Llama

    longest = max(len(ids) for ids in sequences)
    llm = Llama(str(gguf), n_ctx=max(64, longest + 8), logits_all=True, n_threads=threads, verbose=False)
    try:
        result = []
        for ids in sequences:
            llm.reset()
            llm.eval(ids)
            result.append(llm.scores[: len(ids)].argmax(-1).tolist())
        return result
    finally:
        llm.close()


def _close_llama_cpp_devnull() -> None:
    """llama-cpp-python opens /dev/null twice at import and never closes it, which prints two ResourceWarnings
    at exit after an export (something on that path enables them); closed here at exit, before teardown."""
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None and not handle.closed:
            handle.close()


atexit.register(_close_llama_cpp_devnull)

if __name__ == "__main__":  # `python -m danlu.finetune.export`: fetch the converter ahead of time (e.g. in `make models`)
    print(converter_dir(get_settings()))

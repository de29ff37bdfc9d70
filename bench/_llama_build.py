"""Build llama.cpp's own tools (`llama-bench`, `llama-server`) from the very source the installed llama-cpp-python was built from.

The sdist of the installed version (pinned in pyproject.toml) is fetched with pip into bench/.build/,
and configured through its own top-level CMakeLists.txt — the file scikit-build-core ran when pip built
the wheel — so the vendored llama.cpp gets the wheel's options: Release, shared libraries, curl off,
`GGML_NATIVE` on (llama.cpp's default outside cross-compiles: the wheel here carries AVX-512/VNNI code),
OpenMP on, plus whatever `CMAKE_ARGS` pip saw. (The wheel's LLAVA_BUILD is turned off: llama.cpp's tools
add the multimodal library themselves, and it is not what the benchmarks measure. The server is switched on,
its web page left out: it would be downloaded from Hugging Face, and only the API is measured.) With nvcc and a
CUDA GPU present, `-DGGML_CUDA=on` is added, as a CUDA wheel is installed with. Only the asked targets are
built (an example such as `llama-speculative-simple` switches the examples on in the same build folder: the
libraries are not rebuilt), all in one build directory cached per version and device, so the tools share one
compiled libllama/libggml and later runs skip all of this.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".build"
DIST = "llama-cpp-python"


#: llama.cpp programs that live under examples/ rather than tools/ (built with LLAMA_BUILD_EXAMPLES on)
EXAMPLES = ("llama-speculative-simple", "llama-speculative", "llama-lookup")


def wheel_cmake_args(cuda: bool, examples: bool = False) -> list[str]:
    """The options pip's build of the wheel used, spelled out (so SOURCE_DATE_EPOCH cannot turn off native)."""
    args = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF", "-DGGML_NATIVE=ON",
            "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF", f"-DLLAMA_BUILD_EXAMPLES={'ON' if examples else 'OFF'}",
            "-DLLAVA_BUILD=OFF",  # the tools add mtmd themselves; the wheel's copy of it is not benchmarked
            "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"]  # API only, offline
    args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
    return args + (["-DGGML_CUDA=on"] if cuda else [])


def cuda_available() -> bool:
    """nvcc to compile with and an NVIDIA GPU to run on (danlu.hardware's detection)."""
    from danlu.hardware import detect

    gpu = detect().gpu
    return shutil.which("nvcc") is not None and gpu is not None and gpu.kind == "cuda"


def source_dir(ver: str) -> Path:
    """The extracted sdist of llama-cpp-python `ver`, downloaded once with pip."""
    src = CACHE / f"llama_cpp_python-{ver}"
    if (src / "CMakeLists.txt").exists():
        return src
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                    f"{DIST}=={ver}", "-d", str(CACHE)], check=True)
    with tarfile.open(CACHE / f"llama_cpp_python-{ver}.tar.gz") as tar:
        tar.extractall(CACHE, filter="data")
    return src


def llama_bench(cuda: bool | None = None) -> Path:
    """Path to a llama-bench matching the installed llama-cpp-python; builds it the first time."""
    return llama_tool("llama-bench", cuda)


def llama_server(cuda: bool | None = None) -> Path:
    """Path to a llama-server matching the installed llama-cpp-python; builds it the first time."""
    return llama_tool("llama-server", cuda)


def llama_tool(target: str, cuda: bool | None = None) -> Path:
    """Build (once) the llama.cpp tool `target` with the wheel's options; its path."""
    cuda = cuda_available() if cuda is None else cuda
    ver = version(DIST)
    build = CACHE / f"build-{ver}-{'cuda' if cuda else 'cpu'}"
    found = _find_binary(build, target)
    if found:
        return found
    src = source_dir(ver)
    generator = ["-G", "Ninja"] if shutil.which("ninja") and not (build / "Makefile").exists() else []
    args = wheel_cmake_args(cuda, examples=target in EXAMPLES or _examples_on(build))
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), *generator, *args], check=True)
    subprocess.run(["cmake", "--build", str(build), "--target", target, "-j", str(os.cpu_count() or 1)], check=True)
    found = _find_binary(build, target)
    if not found:
        raise RuntimeError(f"built {target} but cannot find it under {build}")
    return found


def _examples_on(build: Path) -> bool:
    """Whether an earlier configure switched the examples on (kept, so a reconfigure does not drop their targets)."""
    cache = build / "CMakeCache.txt"
    return cache.is_file() and "LLAMA_BUILD_EXAMPLES:BOOL=ON" in cache.read_text(errors="replace")


def _find_binary(build: Path, target: str) -> Path | None:
    hits = sorted(p for p in build.rglob(target) if p.is_file() and os.access(p, os.X_OK)) if build.exists() else []
    return hits[0] if hits else None


if __name__ == "__main__":
    print(llama_tool(sys.argv[1] if len(sys.argv) > 1 else "llama-bench"))

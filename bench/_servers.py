"""Start `danlu serve` and llama.cpp's `llama-server` as processes with the same model and KV layout.

Both get the same GGUF, decode threads, prompt/batch threads, parallel slots, context per slot and the same
OpenMP environment; everything else is each server's own default (llama-server: flash attention auto, which
is on for a CPU; a host-RAM prompt cache of up to 8 GiB; window-only SWA caches — danlu: the same three,
except the RAM cache it does not have). Each is its own process, so its resident memory can be read from
/proc: `peak_rss` is the kernel's high-water mark (VmHWM), `rss` the resident set now.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

from danlu.threads import USER_KNOBS


@dataclass(frozen=True)
class Layout:
    """What both servers are given alike."""

    gguf: Path
    model: str  # the name requests use (danlu: the catalog id; llama-server: its alias)
    threads: int  # prompts and batches
    decode_threads: int  # one stream decoding alone
    parallel: int
    ctx_per_slot: int
    omp_env: dict[str, str] = field(default_factory=dict)

    @property
    def pool(self) -> int:
        return self.parallel * self.ctx_per_slot


@dataclass
class Server:
    """A running server process and its base URL."""

    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    def memory(self) -> dict[str, int]:
        """VmHWM and VmRSS of the process, in bytes."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) * 1024
        return {"peak_rss": fields["VmHWM"], "rss": fields["VmRSS"]}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(layout: Layout, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without OpenMP settings, then the layout's (the same for both servers)."""
    env = {k: v for k, v in os.environ.items() if k not in USER_KNOBS}
    return {**env, **layout.omp_env, **(extra or {})}


def danlu_cmd(layout: Layout, port: int) -> list[str]:
    return [sys.executable, "-m", "danlu.cli", "serve", "--port", str(port), "--model", layout.model,
            "--parallel", str(layout.parallel), "--ctx", str(layout.ctx_per_slot), "--keep-alive", "-1",
            "--max-queue", "256"]


def llama_cmd(binary: Path, layout: Layout, port: int) -> list[str]:
    """llama-server with one unified pool of parallel × ctx cells, each slot capped at ctx (as danlu)."""
    return [str(binary), "-m", str(layout.gguf), "--host", "127.0.0.1", "--port", str(port), "-a", layout.model,
            "-t", str(layout.decode_threads), "-tb", str(layout.threads), "-np", str(layout.parallel),
            "-c", str(layout.pool), "--kv-unified", "--kv-unified-per-slot", str(layout.ctx_per_slot),
            "--no-webui"]


def start(name: str, cmd: list[str], env: dict[str, str], port: int, logs: Path, model: str) -> Server:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    wait_ready(server, model)
    return server


def wait_ready(server: Server, model: str, timeout_s: float = 600) -> None:
    """Until the server answers a one-token completion (its model loaded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited: see {server.log}")
        try:
            reply = httpx.post(server.url + "/v1/completions", timeout=600,
                               json={"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0})
            if reply.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{server.name} not ready after {timeout_s} s: see {server.log}")


def start_both(layout: Layout, binary: Path, logs: Path) -> dict[str, Server]:
    """danlu first, then llama-server; both stay up for the whole model's run."""
    servers = {}
    port = free_port()
    env = child_env(layout, {"DANLU_THREADS": str(layout.threads), "DANLU_DECODE_THREADS": str(layout.decode_threads),
                             "PYTHONPATH": os.getcwd()})
    servers["danlu"] = start("danlu", danlu_cmd(layout, port), env, port, logs, layout.model)
    port = free_port()
    servers["llama-server"] = start("llama-server", llama_cmd(binary, layout, port), child_env(layout), port, logs,
                                    layout.model)
    return servers

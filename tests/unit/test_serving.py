"""Server mode lifecycle without vLLM: readiness errors carry the log tail; stop ends the process group."""

import socket
import subprocess
import sys

import pytest

from harmcore.errors import HarmcoreError
from harmcore.generation.server import free_port, port_in_use, server_command, stop, vllm_server, wait_ready


def spawn(code: str, log_path):
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def test_a_server_that_dies_is_one_error_with_its_log_tail(tmp_path):
    log = tmp_path / "server.log"
    proc = spawn("print('loading'); print('ValueError: bad model'); raise SystemExit(3)", log)
    with pytest.raises(HarmcoreError, match=r"exited with code 3 .*\n(.|\n)*ValueError: bad model"):
        wait_ready(f"http://127.0.0.1:{free_port()}/v1", proc, log, timeout_s=30)


def test_a_server_that_never_answers_times_out_and_stop_ends_it(tmp_path):
    log = tmp_path / "server.log"
    proc = spawn("import time; print('starting', flush=True); time.sleep(60)", log)
    try:
        with pytest.raises(HarmcoreError, match=r"did not answer .* within 1s(.|\n)*starting"):
            wait_ready(f"http://127.0.0.1:{free_port()}/v1", proc, log, timeout_s=1)
    finally:
        stop(proc, grace_s=5)
    assert proc.returncode is not None  # SIGTERM ended it


def test_command_and_input_checks(tmp_path):
    cmd = server_command("/m", "127.0.0.1", 8001, served_name="m", dtype="bfloat16", max_model_len=2048,
                         max_logprobs=20)  # fmt: skip
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "--enforce-eager" in cmd
    assert cmd[cmd.index("--max-logprobs") + 1] == "20" and cmd[cmd.index("--port") + 1] == "8001"
    with pytest.raises(HarmcoreError, match="no config.json"):
        with vllm_server(tmp_path):
            pass


def test_command_keeps_the_models_generation_config_out_of_sampling():
    cmd = server_command("/m", "127.0.0.1", 8001, served_name="m", dtype="bfloat16", max_model_len=2048,
                         max_logprobs=20, extra_args=["--seed", "1"])  # fmt: skip
    assert cmd[cmd.index("--generation-config") + 1] == "vllm"
    assert cmd[-2:] == ["--seed", "1"]
    # vLLM's own server parser reads it as generation_config="vllm" (its default, "auto", applies the model's).
    cli_args = pytest.importorskip("vllm.entrypoints.launchers.cli_args")
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = cli_args.make_arg_parser(FlexibleArgumentParser()).parse_args(cmd[3:])
    assert args.generation_config == "vllm" and args.max_logprobs == 20 and args.port == 8001


def test_a_busy_port_is_one_line_before_any_server_starts(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(HarmcoreError, match=f"port {port} on 127.0.0.1 is in use"):
            with vllm_server(tmp_path, port=port):
                pass
    assert not port_in_use("127.0.0.1", port)


def test_a_killed_owner_takes_its_server_with_it(tmp_path):
    """SIGKILL the process that started a server (a killed job or test run): the server goes too."""
    import os
    import signal
    import time

    (tmp_path / "config.json").write_text("{}")
    pid_file = tmp_path / "server.pid"
    owner = f"""
import sys
from harmcore.generation import server
server.server_command = lambda *a, **k: [sys.executable, "-c",
    "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"]
with server.vllm_server({str(tmp_path)!r}, port={free_port()}, startup_timeout_s=300):
    pass
"""
    proc = subprocess.Popen([sys.executable, "-c", owner])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    child = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the server outlived the process that started it")

"""Every python block of README.md runs: the quick start as a script, the "Going remote"
files (a block whose first line is ``# <name>.py``) as a server and a client."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
_NAMED = re.compile(r"# (\w+\.py)\n")


def _blocks() -> tuple[list[str], dict[str, str]]:
    scripts: list[str] = []
    files: dict[str, str] = {}
    for code in _BLOCK.findall((ROOT / "README.md").read_text()):
        named = _NAMED.match(code)
        if named:
            files[named.group(1)] = code
        else:
            scripts.append(code)
    return scripts, files


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    env.update(extra)
    return env


def test_the_readme_has_the_blocks_these_tests_run() -> None:
    scripts, files = _blocks()
    assert len(scripts) == 3
    assert sorted(files) == ["kv_client.py", "kv_messages.py", "kv_server.py"]


@pytest.mark.slow
def test_the_quick_start_runs(tmp_path: Path) -> None:
    script = _blocks()[0][0]
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello, world\ndead_target\n"


def test_the_codec_example_runs(tmp_path: Path) -> None:
    [script] = [code for code in _blocks()[0] if "register_codec" in code]
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "codec ok\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_remote_example_serves_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    _, files = _blocks()
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    env = _env(tmp_path, KV_PORT=str(_free_port()))
    server = subprocess.Popen([sys.executable, "kv_server.py"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            lines.put(line)
        lines.put("")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    log: list[str] = []
    try:
        while not any("actor system kv serving until SIGINT or SIGTERM" in line for line in log):
            line = lines.get(timeout=30)
            assert line, f"the server exited before serving: {''.join(log)}"
            log.append(line)
        client = subprocess.run([sys.executable, "kv_client.py"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        assert client.stdout == "ok\n1\n"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    reader.join(timeout=10)
    while not lines.empty():
        log.append(lines.get())
    assert any("casty.serve: actor system kv: SIGTERM received, shutting down" in line for line in log), log


def test_the_metrics_example_runs(tmp_path: Path) -> None:
    [script] = [code for code in _blocks()[0] if "CastyCollector" in code]
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("['casty_loop_lag_seconds ")

"""Run the ``daskflow ...`` commands a run prints, as printed, in the shell the README
leaves the user in (its quick start activates the virtualenv: ``daskflow`` is on PATH)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["activated_env", "printed_commands", "run_printed"]

#: A command in printed text: from ``daskflow`` up to a bracket, a semicolon, a
#: backquote or the end of the line (``(daskflow cache ls)``, ``now: daskflow ui``).
_COMMAND = re.compile(r"(?<![\w./-])(daskflow [^();`\n]*)")


def activated_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` as after ``. .venv/bin/activate``: the interpreter's bin folder first on PATH."""
    bin_dir = os.path.dirname(sys.executable)
    if shutil.which("daskflow", path=bin_dir) is None:
        import pytest

        pytest.skip(f"no daskflow script next to {sys.executable}: install the package (pip install -e .)")
    out = dict(env)
    out["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    out["VIRTUAL_ENV"] = os.path.dirname(bin_dir)
    return out


def printed_commands(text: str) -> list[str]:
    """Every ``daskflow ...`` command in ``text``, in order, once each."""
    found = [m.group(1).strip().rstrip(".,:") for m in _COMMAND.finditer(text)]
    return list(dict.fromkeys(c for c in found if c != "daskflow"))


def run_printed(command: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    """Run ``command`` through ``bash -c`` as printed and return its output; fail on a
    non-zero exit, "command not found" or a traceback.

    ``daskflow ui`` serves until stopped: it gets ``--port 0`` (8788 may be taken on a
    shared machine), runs until it prints its page's address, and is stopped.
    """
    if command.split()[:2] == ["daskflow", "ui"]:
        return _serve_until_ready(command + " --port 0", env, cwd, timeout)
    done = subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, (command, done.returncode, output)
    assert "command not found" not in output and "Traceback" not in output, (command, output)
    return output


def _serve_until_ready(command: str, env: dict[str, str], cwd: Path, timeout: float) -> str:
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                raise AssertionError(f"{command!r} exited {proc.wait()} before serving: {''.join(seen)}")
            seen.append(line)
            if "daskflow status page for" in line:
                return "".join(seen)
    except queue.Empty:
        raise AssertionError(f"{command!r} printed no page address in {timeout} s: {''.join(seen)}") from None
    finally:
        proc.terminate()
        proc.wait(timeout=30)

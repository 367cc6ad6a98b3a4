"""What the benchmark scripts print about the machine and the code they measured."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess

import daskflow

__all__ = ["cpu_model", "daskflow_revision"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def daskflow_revision() -> str:
    """The git commit of the daskflow source in use, and a digest of uncommitted changes to it."""
    src = os.path.dirname(os.path.abspath(daskflow.__file__))
    try:
        git = ["git", "-C", src]
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        diff = subprocess.run(git + ["diff", "HEAD", "--", "."], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not diff:
        return commit
    return f"{commit} + uncommitted changes (diff sha1 {hashlib.sha1(diff).hexdigest()[:12]})"

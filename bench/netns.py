"""Benches that run in-process in a namespace of their own: the script runs
itself again there, with `--inside`, and the namespace goes when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rerun_inside(script: str, ns: str, batch: Sequence[str] = (), args: Sequence[str] = ()
                 ) -> None:
    """`script --inside ARGS` in a new namespace `ns`, built by `ip -batch` lines."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        if batch:
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(batch), text=True,
                           check=True)
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, script, "--inside", *args],
                       check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)

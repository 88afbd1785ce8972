"""Run the administrator's hook programs: HOOKS_DIR/EVENT/* in name order.

Each runs without a shell, with a clean environment that describes the
event, its own session (so a timeout kills what it started too) and a
timeout. Only files that root (or we) own and nobody else may write are run:
a hook runs as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EVENTS = ("up", "down", "degraded", "long-down", "pre-apply", "post-apply")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class HookResult:
    path: Path
    returncode: int | None  # None: killed at the timeout
    output: str


def _clean(value: str) -> str:
    # Environment values cannot hold NUL; nothing else needs escaping without a shell.
    return value.replace("\0", "")


class HookRunner:
    def __init__(self, hooks_dir: str | None, timeout: float) -> None:
        self.hooks_dir = Path(hooks_dir) if hooks_dir else None
        self.timeout = timeout

    def scripts(self, event: str) -> list[Path]:
        if self.hooks_dir is None:
            return []
        folder = self.hooks_dir / event
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return []
        out = []
        for path in entries:
            try:
                st = path.stat()
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111 or path.name.startswith("."):
                continue
            if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
                log.warning("hook %s skipped: it must be owned by root and writable only by it",
                            path)
                continue
            out.append(path)
        return out

    async def run(self, event: str, env: Mapping[str, str]) -> list[HookResult]:
        environ = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "EVENT": event}
        environ.update({k: _clean(v) for k, v in env.items()})
        return [await self._one(path, environ) for path in self.scripts(event)]

    async def _one(self, path: Path, environ: dict[str, str]) -> HookResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                str(path), env=environ, cwd="/", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("hook %s could not start: %s", path, exc)
            return HookResult(path, -1, str(exc))
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            log.warning("hook %s killed after %g s", path, self.timeout)
            return HookResult(path, None, "")
        text = out.decode(errors="replace").strip()
        if proc.returncode:
            log.warning("hook %s exited %d: %s", path, proc.returncode, text[-200:])
        return HookResult(path, proc.returncode, text)

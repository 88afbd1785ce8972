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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nmbalance.trusted import untrusted_file, untrusted_folder

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
        """The event's trusted hook programs (nmbalance.trusted), in name order."""
        if self.hooks_dir is None:
            return []
        folder = self.hooks_dir / event
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return []
        for place in (self.hooks_dir, folder):
            if (why := untrusted_folder(place)) is not None:
                log.warning("hooks in %s skipped: %s", place, why)
                return []
        out = []
        for path in entries:
            if path.name.startswith(".") or not os.access(path, os.X_OK):
                continue  # not meant to run (a README, a disabled hook)
            if (why := untrusted_file(path, folder)) is not None:
                log.warning("hook %s skipped: %s", path, why)
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

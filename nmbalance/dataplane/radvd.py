"""ipv6 = "prefix": radvd's config file, which nmbalance owns whole, and the SIGHUP
that makes radvd read it and advertise the change at once."""

from __future__ import annotations

import logging
import os
import signal
import stat
from pathlib import Path

from nmbalance.core.prefix6 import RadvdPlan

log = logging.getLogger("nmbalance")


def radvd_pid(pidfile: Path) -> tuple[int | None, str]:
    """The pid radvd wrote, if it is radvd's: the file root's and locked, the process
    named radvd (a stale pidfile's number may be someone else's now); else why not."""
    try:
        st = os.stat(pidfile)
        text = pidfile.read_text()[:32].strip()
    except OSError as exc:
        return None, f"cannot read {pidfile} ({exc.strerror}): is radvd running?"
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        return None, f"{pidfile} must be a file owned by root and writable only by it"
    if not text.isdigit() or int(text) <= 1:
        return None, f"{pidfile} holds no pid"
    try:
        comm = Path(f"/proc/{text}/comm").read_text().strip()
    except OSError:
        return None, f"radvd (pid {text} in {pidfile}) is not running"
    if comm != "radvd":
        return None, f"pid {text} in {pidfile} is {comm!r}, not radvd"
    return int(text), ""


class Radvd:
    """Writes the plan's radvd config when it differs from the file's, and reloads
    radvd; a missing radvd is logged once per change, never an error: the routes
    and the table are in place, and radvd reads the file when it starts."""

    def publish(self, plan: RadvdPlan) -> bool:
        """Whether radvd was told of a change."""
        path = Path(plan.path)
        try:
            if path.read_text() == plan.text:
                return False
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        new = path.with_name(path.name + ".new")
        new.write_text(plan.text)
        os.chmod(new, 0o644)
        os.replace(new, path)
        pid, why = radvd_pid(Path(plan.pidfile))
        if pid is None:
            log.warning("wrote %s; not reloaded: %s", path, why)
            return False
        os.kill(pid, signal.SIGHUP)
        log.info("router advertisements changed: %s reloaded (radvd pid %d)", path, pid)
        return True

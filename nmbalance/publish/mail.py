"""warn_email: hand a short message to the local sendmail, when there is one."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

log = logging.getLogger(__name__)

SENDMAIL = (Path("/usr/sbin/sendmail"), Path("/usr/lib/sendmail"))


def find_sendmail() -> Path | None:
    return next((p for p in SENDMAIL if p.exists()), None)


def message(to: str, subject: str, body: str) -> bytes:
    # `to` is validated by the config model; the subject is ours, one line.
    subject = " ".join(subject.split())
    return (f"To: {to}\nSubject: [nmbalance {socket.gethostname()}] {subject}\n"
            f"Content-Type: text/plain; charset=utf-8\n\n{body}\n").encode()


async def send(to: str, subject: str, body: str, timeout: float,
               sendmail: Path | None = None) -> bool:
    program = sendmail or find_sendmail()
    if program is None:
        return False
    try:
        proc = await asyncio.create_subprocess_exec(
            str(program), "-t", "-oi", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        log.warning("mail to %s failed: %s", to, exc)
        return False
    try:
        await asyncio.wait_for(proc.communicate(message(to, subject, body)), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("mail to %s failed: %s did not finish in %g s", to, program, timeout)
        return False
    return proc.returncode == 0

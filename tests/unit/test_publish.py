"""Hooks, sd_notify and mail with real processes and sockets (no root needed)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

from nmbalance.publish import mail
from nmbalance.publish.hooks import HookRunner
from nmbalance.publish.sdnotify import Notifier


def hook(folder: Path, name: str, body: str, mode: int = 0o755) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def test_hooks_run_in_order_with_a_clean_environment(tmp_path: Path, monkeypatch: object) -> None:
    out = tmp_path / "out"
    hook(tmp_path / "down", "20-second", f'echo "second $UPLINK" >> {out}\n')
    hook(tmp_path / "down", "10-first", f'echo "first $REASON $EVENT ${{SECRET:-unset}}" >> {out}\n')
    hook(tmp_path / "down", "05-not-executable", f"echo no >> {out}\n", mode=0o644)
    hook(tmp_path / "down", "30-group-writable", f"echo no >> {out}\n", mode=0o775)
    hook(tmp_path / "up", "10-other-event", f"echo no >> {out}\n")
    os.environ["SECRET"] = "leaked"
    try:
        runner = HookRunner(str(tmp_path), timeout=5)
        assert [p.name for p in runner.scripts("down")] == ["10-first", "20-second"]
        results = asyncio.run(runner.run("down", {"UPLINK": "DSL", "REASON": "$(touch pwned)"}))
    finally:
        del os.environ["SECRET"]
    assert [r.returncode for r in results] == [0, 0]
    # The reason reaches the hook as data, never as shell code; our environment stays ours.
    assert out.read_text() == "first $(touch pwned) down unset\nsecond DSL\n"
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_a_hook_that_hangs_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook(tmp_path / "up", "10-hang", f"sleep 60 & echo $! > {pids}\nsleep 60\n")
    hook(tmp_path / "up", "20-next", f"echo ran > {tmp_path}/next\n")
    started = time.monotonic()
    results = asyncio.run(HookRunner(str(tmp_path), timeout=0.5).run("up", {}))
    assert time.monotonic() - started < 5
    assert results[0].returncode is None and results[1].returncode == 0
    assert (tmp_path / "next").read_text() == "ran\n"
    child = int(pids.read_text())
    time.sleep(0.1)
    status = Path(f"/proc/{child}/status")
    assert not status.exists() or "zombie" in status.read_text()


def test_no_hooks_dir_runs_nothing(tmp_path: Path) -> None:
    assert asyncio.run(HookRunner(None, 1).run("up", {})) == []
    assert asyncio.run(HookRunner(str(tmp_path / "missing"), 1).run("up", {})) == []


def test_sd_notify_sends_datagrams_to_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000"})
        assert notifier.watchdog_interval == 1.5
        notifier.ready("2 uplinks up")
        assert sock.recv(1024).decode() == f"READY=1\nSTATUS=2 uplinks up\nMAINPID={os.getpid()}"
        notifier.watchdog()
        assert sock.recv(1024) == b"WATCHDOG=1"


def test_sd_notify_abstract_socket_and_absence(tmp_path: Path) -> None:
    name = f"nmbalance-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        Notifier({"NOTIFY_SOCKET": "@" + name}).stopping()
        assert sock.recv(1024) == b"STOPPING=1"
    quiet = Notifier({})
    assert quiet.watchdog_interval is None
    quiet.ready("x")  # nothing to send to: a no-op
    # A watchdog meant for another process is not ours to ping.
    assert Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000",
                     "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_mail_goes_to_sendmail_with_one_line_subject(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    fake = hook(tmp_path, "sendmail", f'echo "$@" > {spool}.args\ncat > {spool}\n')
    sent = asyncio.run(mail.send("root@localhost", "DSL down:\n3 lost", "body", 5, fake))
    assert sent
    text = spool.read_text()
    assert text.startswith("To: root@localhost\nSubject: [nmbalance ")
    assert "] DSL down: 3 lost\n" in text and text.endswith("\n\nbody\n")
    assert (tmp_path / "spool.args").read_text().split() == ["-t", "-oi"]
    assert not asyncio.run(mail.send("root", "s", "b", 5, tmp_path / "missing"))


def test_a_notify_socket_nobody_reads_never_blocks(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        started = time.monotonic()
        for _ in range(200):  # far more than the kernel queues (net.unix.max_dgram_qlen)
            notifier.watchdog()
        assert time.monotonic() - started < 2.0
    finally:
        sock.close()

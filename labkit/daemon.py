"""`nmbalance run` inside a lab's router namespace, with its log captured
line by line (with the time each line arrived) for tests, demo and benches."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

from labkit.lab import ROOT, Lab


class DaemonProcess:
    def __init__(self, lab: Lab, config_path: str, env: Mapping[str, str] | None = None,
                 echo: str | None = None, verbose: bool = False,
                 module: str = "nmbalance") -> None:
        """`verbose`: -v, the events behind each change too (the default is what the
        shipped unit logs). `module`: what runs it (labkit.held: held half-switched)."""
        self.echo = echo  # print each line behind this prefix
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        environ = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
                       DBUS_SYSTEM_BUS_ADDRESS=lab.bus_address)
        environ.update(env or {})
        # `ip netns exec` execs the command: the PID is the daemon's own.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.rtr, sys.executable, "-m", module,
             *(["-v"] if verbose else []), "run",
             "-c", config_path],
            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environ,
        )
        lab.procs.append(self.proc)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            arrived = time.monotonic()
            if self.echo is not None:  # before waiters see it, so output stays in order
                print(self.echo + line, end="", flush=True)
            with self._cond:
                self.lines.append((arrived, line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        """A position in the log; wait_for(..., after=mark) sees only later lines."""
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, timeout: float = 10.0, after: int = 0) -> tuple[float, str]:
        """The first line from `after` on matching `pattern`: (arrival time, line)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for when, line in self.lines[after:]:
                    if regex.search(line):
                        return when, line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line matching {pattern!r}; log:\n{self.text()}")
                self._cond.wait(left)

    def count(self, pattern: str, after: int = 0) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for _, line in self.lines[after:] if regex.search(line))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

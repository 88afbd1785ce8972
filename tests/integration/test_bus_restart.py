"""The system bus restarts under a running daemon: it keeps balancing, and
comes back on the new bus with its name and objects."""

from __future__ import annotations

import signal

from labkit.daemon import DaemonProcess
from labkit.lab import Lab, wait_for
from labkit.managers import Bus, busctl


def test_the_daemon_survives_a_bus_restart() -> None:
    with Lab(isps=2) as lab:
        bus = Bus(lab)
        daemon = DaemonProcess(lab, lab.write(lab.config(weights=(1,))))
        daemon.wait_for("running:")
        bus.proc.send_signal(signal.SIGTERM)
        bus.proc.wait(5)
        daemon.wait_for("lost the system bus")
        # Still balancing without it.
        tally = lab.connections(100)
        assert tally.get(1, 0) > 0 and tally.get(2, 0) > 0
        bus = Bus(lab)
        daemon.wait_for("connected to the system bus again")
        assert wait_for(lambda: busctl(bus, lab, "get-property", "io.github.nmbalance1",
                                       "/io/github/nmbalance1/uplink/ISP1",
                                       "io.github.nmbalance1.Uplink", "State",
                                       check=False).stdout.strip() == 's "active"', 5)
        assert daemon.stop() == 0, daemon.text()


def test_a_bus_that_refuses_our_name_leaves_the_daemon_running() -> None:
    deny = ('<policy context="default"><allow user="*"/><allow own="*"/>'
            '<deny own="io.github.nmbalance1"/><allow send_destination="*"/>'
            '<allow receive_sender="*"/><allow send_type="method_call"/>'
            '<allow send_type="signal"/></policy>')
    with Lab(isps=2) as lab:
        Bus(lab, policy=deny)
        daemon = DaemonProcess(lab, lab.write(lab.config(weights=(1,))))
        daemon.wait_for("running:")
        _, line = daemon.wait_for("running without our D-Bus service")
        assert "the bus refused io.github.nmbalance1" in line
        tally = lab.connections(100)
        assert tally.get(1, 0) > 0 and tally.get(2, 0) > 0
        assert daemon.proc.poll() is None and "Traceback" not in daemon.text()
        assert daemon.stop() == 0

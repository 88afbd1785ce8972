"""Real network managers for the lab (see shared LAB.md): a private D-Bus
system bus, dnsmasq as each ISP's DHCP server, and NetworkManager or
systemd-networkd in the router's namespace with a private mount view, so
they never see or touch this machine's own interfaces, files or bus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from labkit.lab import ROOT, Lab, isp_gateway, run, wait_for

NM_DISPATCHER = "/usr/lib/NetworkManager/nm-dispatcher"
NETWORKD = "/lib/systemd/systemd-networkd"


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # networkd drops to its own user and must reach the bus socket
    return path


def _script(path: Path, text: str) -> Path:
    path.write_text("#!/bin/sh\nset -e\n" + text)
    path.chmod(0o755)
    return path


# --- DHCP ----------------------------------------------------------------------------------
def _isp_prefix(n: int) -> str:
    return isp_gateway(n).rsplit(".", 1)[0]


def start_dnsmasq(lab: Lab, n: int) -> None:
    d = _dir(lab.workdir / f"dnsmasq{n}")
    (d / "opts").write_text(f"option:router,{isp_gateway(n)}\n")
    log = d / "log"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.isp(n), "dnsmasq", "--keep-in-foreground",
         "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0", "--interface=rtr",
         "--bind-interfaces", "--dhcp-authoritative", "--no-ping",
         f"--dhcp-range={_isp_prefix(n)}.100,{_isp_prefix(n)}.150,255.255.255.0,2m",
         "--dhcp-option=option:T1,10", "--dhcp-option=option:T2,15",
         f"--dhcp-optsfile={d / 'opts'}", f"--dhcp-leasefile={d / 'leases'}",
         f"--pid-file={d / 'pid'}", "--user=root", f"--log-facility={log}", "--log-dhcp"],
        text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    lab.procs.append(proc)
    if not wait_for(lambda: log.exists() and "DHCP, IP range" in log.read_text(), 5):
        raise RuntimeError(f"dnsmasq for ISP{n} did not start")


def set_router(lab: Lab, n: int, router: str) -> None:
    """The ISP hands out another gateway; clients see it at their next renewal."""
    d = lab.workdir / f"dnsmasq{n}"
    (d / "opts").write_text(f"option:router,{router}\n")
    os.kill(int((d / "pid").read_text()), signal.SIGHUP)


# --- D-Bus ---------------------------------------------------------------------------------
class Bus:
    """A private system bus in the router's namespace, on a path socket."""

    def __init__(self, lab: Lab, name: str = "bus", policy: str | None = None) -> None:
        self.dir = _dir(lab.workdir / name)
        self.services = _dir(self.dir / "services")
        self.socket = self.dir / "bus.sock"
        self.address = f"unix:path={self.socket}"
        rules = policy if policy is not None else (
            '<policy context="default"><allow user="*"/><allow own="*"/>'
            '<allow send_destination="*"/><allow receive_sender="*"/>'
            '<allow send_type="method_call"/><allow send_type="signal"/></policy>')
        (self.dir / "bus.conf").write_text(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            f"<busconfig><type>system</type><listen>{self.address}</listen>"
            f"<auth>EXTERNAL</auth><servicedir>{self.services}</servicedir>{rules}</busconfig>\n")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.rtr, "dbus-daemon", f"--config-file={self.dir / 'bus.conf'}",
             "--nofork", "--print-address=1"],
            text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        lab.procs.append(self.proc)
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().strip():
            raise RuntimeError("dbus-daemon did not start")
        self.socket.chmod(0o777)
        if name == "bus":
            lab.bus_address = self.address  # the lab's system bus from now on

    def env(self) -> dict[str, str]:
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}


def nmbalance_wrapper(lab: Lab, bus: Bus, config: str, folder: Path) -> Path:
    """An `nmbalance` on PATH for processes that get a clean environment
    (dispatcher scripts): this checkout, this venv, the lab's bus and config."""
    return _script(_dir(folder) / "nmbalance",
                   f"exec env PYTHONPATH={ROOT} DBUS_SYSTEM_BUS_ADDRESS={bus.address} "
                   f"NMBALANCE_CONFIG={config} {sys.executable} -m nmbalance \"$@\"\n")


class _ManagerProcess:
    """A network manager run by its launcher script in the router's namespace."""

    lab: Lab
    dir: Path
    launcher: Path
    what = ""
    env: dict[str, str] | None = None

    def start(self) -> None:
        log = open(self.dir / "log", "a")  # noqa: SIM115 - handed to the child
        self.proc: subprocess.Popen[str] | None = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.rtr, "/bin/sh", str(self.launcher)],
            text=True, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        self.lab.procs.append(self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_dhcp_routes(self, uplinks: tuple[int, ...], timeout: float) -> None:
        """Until each uplink has its DHCP lease's default route in the main table."""
        def ready() -> bool:
            routes = self.lab.ip(self.lab.rtr, "-4", "route", "show", "table", "main").stdout
            return all(f"dev wan{n} proto dhcp" in routes for n in uplinks)
        if not wait_for(ready, timeout):
            raise RuntimeError(f"{self.what} did not configure the uplinks:\n"
                               + (self.dir / "log").read_text()[-3000:])


def static6(n: int) -> tuple[str, str]:
    """Uplink n's static IPv6 address and gateway, as a manager is told them."""
    return f"2001:db8:10{n}::2", f"2001:db8:10{n}::1"


def dns6(n: int) -> str:
    """Uplink n's IPv6 DNS server, as a manager is told it."""
    return f"2001:db8:53::{n}"


# --- NetworkManager ------------------------------------------------------------------------
class NetworkManager(_ManagerProcess):
    what = "NetworkManager"
    def __init__(self, lab: Lab, bus: Bus, uplinks: tuple[int, ...] = (1, 2),
                 never_default: tuple[int, ...] = (), ipv6: tuple[int, ...] = ()) -> None:
        """`ipv6`: uplinks given a static IPv6 address and gateway (static6)."""
        self.lab, self.bus = lab, bus
        self.dir = d = _dir(lab.workdir / "nm")
        for sub in ("run", "lib", "conf.d", "system-conf.d", "dispatcher.d", "bin"):
            _dir(d / sub)
        conns = d / "system-connections"
        conns.mkdir(exist_ok=True)
        conns.chmod(0o700)
        (d / "NetworkManager.conf").write_text(
            "[main]\nplugins=keyfile\ndhcp=internal\ndns=none\nrc-manager=unmanaged\n"
            "hostname-mode=none\nno-auto-default=*\nauth-polkit=false\n"
            "systemd-resolved=false\n"
            f"[keyfile]\npath={conns}\nunmanaged-devices=except:interface-name:wan*\n"
            "[connectivity]\nenabled=false\n"
            "[device-lab]\nmatch-device=interface-name:wan*\ncarrier-wait-timeout=1000\n")
        for n in uplinks:
            keyfile = conns / f"wan{n}.nmconnection"
            keyfile.write_text(
                f"[connection]\nid=ISP{n}-dhcp\nuuid=00000000-0000-4000-8000-00000000000{n}\n"
                f"type=ethernet\ninterface-name=wan{n}\nautoconnect=true\n"
                f"[ipv4]\nmethod=auto\nroute-metric={100 + n}\ndhcp-send-hostname=false\n"
                f"{'never-default=true' + chr(10) if n in never_default else ''}"
                + ("[ipv6]\nmethod=manual\naddress1={}/64,{}\ndns={};\n".format(
                    *static6(n), dns6(n)) if n in ipv6 else "[ipv6]\nmethod=disabled\n"))
            keyfile.chmod(0o600)
        # nm-dispatcher is started by the bus: give it the lab's dispatcher.d and
        # an `nmbalance` on PATH, in a mount view of its own.
        launch = _script(d / "dispatcher-launch.sh",
                         f"mount --bind {d / 'dispatcher.d'} /etc/NetworkManager/dispatcher.d\n"
                         f"mount --bind {d / 'bin'} /usr/local/bin\n"
                         f"export DBUS_SYSTEM_BUS_ADDRESS={bus.address}\n"
                         f"exec {NM_DISPATCHER} --debug >> {d / 'dispatcher.log'} 2>&1\n")
        (bus.services / "org.freedesktop.nm_dispatcher.service").write_text(
            "[D-BUS Service]\nName=org.freedesktop.nm_dispatcher\n"
            f"Exec=/usr/bin/unshare -m --propagation private /bin/sh {launch}\nUser=root\n")
        self.launcher = _script(d / "launch.sh",
                                f"mount --bind {d / 'run'} /run\nmkdir -p /run/NetworkManager\n"
                                f"mount --bind {d / 'lib'} /var/lib/NetworkManager\n"
                                f"mount --bind {d / 'dispatcher.d'} /etc/NetworkManager/dispatcher.d\n"
                                "mount -o remount,bind,ro /sys\n"
                                f"export DBUS_SYSTEM_BUS_ADDRESS={bus.address}\n"
                                f"exec NetworkManager --debug --config={d / 'NetworkManager.conf'} "
                                f"--config-dir={d / 'conf.d'} --system-config-dir={d / 'system-conf.d'} "
                                f"--state-file={d / 'lib' / 'NetworkManager.state'} "
                                f"--intern-config={d / 'lib' / 'intern.conf'} "
                                f"--pid-file={d / 'run' / 'nm.pid'}\n")
        self.start()

    def wait_activated(self, *uplinks: int, timeout: float = 20.0) -> None:
        """Until each uplink has its DHCP address and NetworkManager's default route."""
        self.wait_dhcp_routes(uplinks, timeout)


# --- systemd-networkd ----------------------------------------------------------------------
class Networkd(_ManagerProcess):
    what = "networkd"
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="debug")

    def __init__(self, lab: Lab, bus: Bus, uplinks: tuple[int, ...] = (1, 2),
                 ipv6: tuple[int, ...] = ()) -> None:
        """`ipv6`: uplinks given a static IPv6 address and gateway (static6)."""
        self.lab, self.bus = lab, bus
        self.dir = d = _dir(lab.workdir / "networkd")
        network = _dir(d / "network")
        empty = _dir(d / "empty")
        for n in uplinks:
            (network / f"wan{n}.network").write_text(
                f"[Match]\nName=wan{n}\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\n"
                "IPv6AcceptRA=no\n"
                + ("Address={}/64\nGateway={}\n".format(*static6(n)) if n in ipv6 else "")
                + "[DHCPv4]\nSendHostname=no\nUseHostname=no\nUseDNS=no\n"
                f"RouteMetric={100 + n}\n")
        (d / "networkd.conf").write_text(
            "[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n")
        self.launcher = _script(d / "launch.sh",
                                "mount -t tmpfs tmpfs /run\n"
                                "mkdir -p /run/systemd/netif /run/systemd/network\n"
                                "chown systemd-network:systemd-network /run/systemd/netif\n"
                                f"mount --bind {network} /etc/systemd/network\n"
                                f"mount --bind {d / 'networkd.conf'} /etc/systemd/networkd.conf\n"
                                f"mount --bind -o ro {empty} /usr/lib/systemd/network\n"
                                "mount -o remount,bind,ro /sys\n"
                                f"export DBUS_SYSTEM_BUS_ADDRESS={bus.address}\n"
                                f"exec {NETWORKD}\n")
        self.start()

    def start_dispatcher(self, scripts: Path, bin_dir: Path) -> subprocess.Popen[str]:
        """networkd-dispatcher in networkd's own network and mount namespace (it reads
        /run/systemd/netif), with `bin_dir` over /usr/local/bin in a copy of that view."""
        assert self.proc is not None
        log = open(self.dir / "dispatcher.log", "a")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            ["nsenter", "-t", str(self.proc.pid), "-n", "-m", "unshare", "-m",
             "--propagation", "private", "/bin/sh", "-c",
             f"mount --bind {bin_dir} /usr/local/bin && exec env "
             f"DBUS_SYSTEM_BUS_ADDRESS={self.bus.address} networkd-dispatcher -v "
             f"--script-dir {scripts}"],
            text=True, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.lab.procs.append(proc)
        return proc

    def wait_configured(self, *uplinks: int, timeout: float = 20.0) -> None:
        self.wait_dhcp_routes(uplinks, timeout)


def busctl(bus: Bus, lab: Lab, *args: str, uid: int | None = None, groups: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """busctl on the lab's bus; as another user (and supplementary groups) when asked."""
    cmd = ["ip", "netns", "exec", lab.rtr]
    if uid is not None:
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}",
                f"--groups={groups}" if groups else "--clear-groups"]
    return run([*cmd, "busctl", f"--address={bus.address}", *args], check=check)


#!/usr/bin/env bash
# Install what nmbalance's demo, tests and benches need on a Debian/Ubuntu
# machine (as root): kernel tools from apt, Python packages in ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(nftables libnftables1 iproute2 conntrack iptables iperf3 ethtool python3-venv
              util-linux dbus dnsmasq-base systemd)
# The integration tests run the real NetworkManager and networkd-dispatcher, and
# radvd for ipv6 = "prefix", but only inside lab namespaces (with their own bus):
# installing them must not start or enable them here.
LAB_ONLY_PACKAGES=(network-manager networkd-dispatcher radvd)

missing() {
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

mapfile -t need < <(missing "${APT_PACKAGES[@]}")
mapfile -t lab_only < <(missing "${LAB_ONLY_PACKAGES[@]}")
if [ "${#need[@]}" -gt 0 ] || [ "${#lab_only[@]}" -gt 0 ]; then
    echo "setup: installing ${need[*]} ${lab_only[*]}"
    apt-get update -q >/dev/null
    if [ "${#need[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
    fi
fi
if [ "${#lab_only[@]}" -gt 0 ]; then
    # policy-rc.d exit 101: the package's services are not started now.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=yes
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${lab_only[@]}" >/dev/null || status=$?
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ "${status:-0}" -eq 0 ] || exit "$status"
    # ...nor at the next boot, where systemd runs this machine.
    if [ -d /run/systemd/system ]; then
        systemctl disable --quiet NetworkManager.service NetworkManager-dispatcher.service \
            NetworkManager-wait-online.service networkd-dispatcher.service radvd.service \
            2>/dev/null || true
        echo "setup: NetworkManager, networkd-dispatcher and radvd installed for the lab tests only" \
             "(disabled on this host)"
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import nmbalance, nftables, pyroute2, pytest, mypy, hypothesis, dns.asyncquery" 2>/dev/null; then
    echo "setup: installing Python packages into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e '.[test,pypi-nftables]'
fi

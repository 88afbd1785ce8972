"""Broken configs, each with the place its error must name (file:line and field)."""

GOOD_UPLINKS = """
[[uplink]]
name = "ISP1"
interface = "wan1"

[[uplink]]
name = "ISP2"
interface = "wan2"
"""

# (case id, file name, text, substrings the error must contain)
BAD: list[tuple[str, str, str, list[str]]] = [
    ("toml-syntax", "c.toml", 'mode = "weighted"\n[[uplink]\n', [":2:", "not valid TOML"]),
    ("unknown-top-key", "c.toml", 'mdoe = "weighted"\n' + GOOD_UPLINKS, [":1:", "did you mean 'mode'"]),
    ("unknown-mode", "c.toml", 'mode = "roundrobin"\n' + GOOD_UPLINKS, [":1:", "mode"]),
    ("no-uplinks", "c.toml", 'mode = "weighted"\n', ["uplink", "Field required"]),
    ("empty-uplinks", "c.toml", "uplink = []\n", [":1:", "uplink"]),
    ("uplink-typo", "c.toml", GOOD_UPLINKS + 'weigth = 3\n', [":9:", "uplink[1].weigth", "did you mean 'weight'"]),
    ("weight-zero", "c.toml", GOOD_UPLINKS + "weight = 0\n", [":9:", "uplink[1].weight"]),
    ("weight-string", "c.toml", GOOD_UPLINKS + 'weight = "heavy"\n', [":9:", "uplink[1].weight"]),
    ("weight-huge", "c.toml", GOOD_UPLINKS + "weight = 100000\n", [":9:", "uplink[1].weight"]),
    ("bad-gateway", "c.toml", GOOD_UPLINKS + 'gateway = "10.0.0.300"\n', [":9:", "uplink[1].gateway"]),
    ("bad-probe", "c.toml", GOOD_UPLINKS + 'probe = ["not-an-ip"]\n', [":9:", "uplink[1].probe"]),
    ("bad-name", "c.toml", '[[uplink]]\nname = "my isp!"\ninterface = "wan1"\n', [":2:", "uplink[0].name"]),
    ("long-ifname", "c.toml", '[[uplink]]\nname = "A"\ninterface = "averyveryverylongname"\n', [":3:", "uplink[0].interface"]),
    ("shell-ifname", "c.toml", '[[uplink]]\nname = "A"\ninterface = "eth0;reboot"\n', [":3:", "uplink[0].interface"]),
    ("no-device", "c.toml", '[[uplink]]\nname = "A"\n', [":1:", "uplink[0]", "interface"]),
    ("dup-name", "c.toml", GOOD_UPLINKS.replace('"ISP2"', '"ISP1"'), [":7:", "uplink[1].name", "already used"]),
    ("dup-iface", "c.toml", GOOD_UPLINKS.replace('"wan2"', '"wan1"'), [":8:", "uplink[1].interface", "already used"]),
    ("health-range", "c.toml", GOOD_UPLINKS + "\n[health]\nmax_packet_loss = 150\n", [":11:", "health.max_packet_loss"]),
    ("health-order", "c.toml", GOOD_UPLINKS + "\n[health]\nmin_packet_loss = 50\nmax_packet_loss = 10\n", [":10:", "health", "min_packet_loss"]),
    ("health-typo", "c.toml", GOOD_UPLINKS + "\n[health]\ninterval = 500\n", [":11:", "did you mean 'interval_ms'"]),
    ("rule-unknown-uplink", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\nmethod = "weighted"\nuplinks = ["ISP9"]\n', [":13:", "rule[0].uplinks", "ISP9"]),
    ("rule-bad-method", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\nmethod = "random"\nuplinks = ["ISP1"]\n', [":12:", "rule[0].method"]),
    ("rule-enforced-two", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\nmethod = "enforced"\nuplinks = ["ISP1", "ISP2"]\n', [":10:", "rule[0]", "exactly one uplink"]),
    ("rule-port-no-proto", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\ndport = [443]\nmethod = "priority"\nuplinks = ["ISP1"]\n', [":10:", "rule[0]", "proto"]),
    ("rule-bad-port", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\nproto = "tcp"\ndport = [70000]\nmethod = "priority"\nuplinks = ["ISP1"]\n', [":13:", "rule[0].dport"]),
    ("rule-host-bits", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\ndst = ["192.0.2.1/24"]\nmethod = "priority"\nuplinks = ["ISP1"]\n', [":12:", "rule[0].dst", "host bits"]),
    ("mask-split", "c.toml", GOOD_UPLINKS + "\n[kernel]\nmark_mask = 0x0f0f\n", [":11:", "kernel.mark_mask", "contiguous"]),
    ("mask-too-small", "c.toml", GOOD_UPLINKS + "\n[kernel]\nmark_mask = 0x1\n", ["uplink", "do not fit"]),
    ("table-name", "c.toml", GOOD_UPLINKS + '\n[kernel]\ntable = "my table"\n', [":11:", "kernel.table"]),
    ("port-forward-unknown-uplink", "c.toml", GOOD_UPLINKS + '\n[[port_forward]]\nuplinks = ["X"]\nport = 80\nto = "10.250.0.9"\n', [":11:", "port_forward[0].uplinks"]),
    ("probe-ipv6", "c.toml", GOOD_UPLINKS + 'probe = ["2001:db8::1"]\n', [":9:", "uplink[1].probe", "IPv6 probe"]),
    ("health-timeout", "c.toml", GOOD_UPLINKS + "\n[health]\ninterval_ms = 500\ntimeout_ms = 800\n", [":10:", "health", "timeout_ms"]),
    ("health-hold", "c.toml", GOOD_UPLINKS + "\n[health]\nhold_time = 60\nmax_hold_time = 30\n", [":10:", "health", "max_hold_time"]),
    ("daemon-on-stop", "c.toml", GOOD_UPLINKS + '\n[daemon]\non_stop = "delete"\n', [":11:", "daemon.on_stop"]),
    ("warn-email-injection", "c.toml", 'warn_email = "root\\nBcc: x@y"\n' + GOOD_UPLINKS, [":1:", "warn_email"]),
    ("legacy-role", "balance.conf", "ISP1 wan1 wan 192.0.2.1\nLAN lan0 lan\n", ["balance.conf:1:", "role"]),
    ("legacy-option", "balance.conf", "ISP1 wan1 isp 192.0.2.1\nmax_packet_los=20\n", ["balance.conf:2:", "did you mean 'max_packet_loss'"]),
    ("legacy-mode", "balance.conf", "ISP1 wan1 isp 192.0.2.1\nmode=roundrobin\n", ["balance.conf:2:", "mode"]),
    ("legacy-weight", "balance.conf", "ISP1 wan1 isp 192.0.2.1 heavy\n", ["balance.conf:1:", "uplink[0].weight"]),
    ("legacy-gateway", "balance.conf", "ISP1 wan1 isp 192.0.2.1 1 10.0.0.999\n", ["balance.conf:1:", "uplink[0].gateway"]),
    ("legacy-columns", "balance.conf", "ISP1 wan1 isp 192.0.2.1 1 default extra\n", ["balance.conf:1:", "too many columns"]),
    ("legacy-health", "balance.conf", "ISP1 wan1 isp 192.0.2.1\ninterval_ms=soon\n", ["balance.conf:2:", "health.interval_ms"]),
    ("legacy-ping", "balance.conf", "ISP1 wan1 isp 192.0.2.300\n", ["balance.conf:1:", "uplink[0].probe"]),
    ("legacy-group", "balance.conf", "ISP1 wan1 isp 192.0.2.1\nLAN lan0 lan\nforwarding_group=LAN ISP7\n", ["balance.conf:3:", "ISP7"]),
]

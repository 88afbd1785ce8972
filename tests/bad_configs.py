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
    ("weight-negative", "c.toml", GOOD_UPLINKS + "weight = -1\n", [":9:", "uplink[1].weight"]),
    ("weight-nan", "c.toml", GOOD_UPLINKS + "weight = nan\n", [":9:", "uplink[1].weight"]),
    ("weight-string", "c.toml", GOOD_UPLINKS + 'weight = "heavy"\n', [":9:", "uplink[1].weight"]),
    ("weight-huge", "c.toml", GOOD_UPLINKS + "weight = 10000000\n", [":9:", "uplink[1].weight"]),
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
    ("probe-ipv6", "c.toml", GOOD_UPLINKS + 'probe = ["2001:db8::1"]\n', [":9:", "uplink[1].probe", "is IPv6"]),
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
    ("overflow-no-capacity", "c.toml", 'mode = "overflow"\n' + GOOD_UPLINKS, [":1:", "mode", "uplink 'ISP1' needs download_mbps"]),
    ("latency-no-probes", "c.toml", 'mode = "lowest-latency"\n' + GOOD_UPLINKS, [":1:", "mode", "needs probe targets"]),
    ("rule-least-used-no-capacity", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\nmethod = "least-used"\nuplinks = ["ISP2"]\n', [":12:", "rule[0].method", "'ISP2' needs"]),
    ("legacy-no-device", "balance.conf", "ISP1 wan1 isp 192.0.2.1\nISP2 isp\n", ["balance.conf:2:", "service device role"]),
    ("legacy-weight-negative", "balance.conf", "ISP1 wan1 isp 192.0.2.1 -1\n", ["balance.conf:1:", "uplink[0].weight", "0 or more"]),
    ("legacy-mode-typo", "balance.conf", "ISP1 wan1 isp 192.0.2.1\nmode=failovr\n", ["balance.conf:2:", "did you mean 'failover'"]),
    ("legacy-up", "balance.conf", "ISP1 wan1 isp 192.0.2.1\nup wan2 isp\n", ["balance.conf:2:", "'up'"]),
    ("legacy-not-lsm", "balance.conf", "ISP1 wan1 isp 192.0.2.1\ncheck_arpp=1\n", ["balance.conf:2:", "did you mean 'check_arp'"]),
    ("legacy-no-isp", "balance.conf", "#ISP1 wan1 isp 192.0.2.1\nLAN lan0 lan\nmode=balanced\n", ["balance.conf:3:", "no ISP rows"]),
    ("legacy-shipped-empty", "balance.conf", "## service device role ping-ip\n#CABLE eth0 isp 173.194.43.95 1 default\nmode=balanced\n#forwarding_group=:lan :isp\n", ["balance.conf:4:", "no ISP rows"]),
    ("legacy-alias-uplink", "balance.conf", "ISP1 wan1:0 isp 192.0.2.1\n", ["balance.conf:1:", "uplink[0].interface"]),
    ("legacy-ping-name", "balance.conf", "ISP1 wan1 isp pinghost\n", ["balance.conf:1:", "uplink[0].probe", "host name"]),
    ("legacy-group", "balance.conf", "ISP1 wan1 isp 192.0.2.1\nLAN lan0 lan\nforwarding_group=LAN ISP7\n", ["balance.conf:3:", "ISP7"]),
    # Text that would reach nft (issue 10): scope ids, unusable addresses.
    ("dns-scope-id", "c.toml", GOOD_UPLINKS + 'dns = ["fe80::1%x }\\nflush ruleset"]\n', [":9:", "uplink[1].dns", "scope id"]),
    ("rule-scope-id", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\ndst = ["fe80::%eth0/64"]\nmethod = "priority"\nuplinks = ["ISP1"]\n', [":12:", "rule[0].dst", "scope id"]),
    ("rule-ipv6", "c.toml", GOOD_UPLINKS + '\n[[rule]]\nname = "r"\ndst = ["2001:db8::/32"]\nmethod = "priority"\nuplinks = ["ISP1"]\n', [":12:", "rule[0].dst", "IPv6"]),
    ("gateway-loopback", "c.toml", GOOD_UPLINKS + 'gateway = "127.0.0.1"\n', [":9:", "uplink[1].gateway", "unicast"]),
    ("gateway-broadcast", "c.toml", GOOD_UPLINKS + 'gateway = "255.255.255.255"\n', [":9:", "uplink[1].gateway", "unicast"]),
    ("gateway-ipv6", "c.toml", GOOD_UPLINKS + 'gateway = "2001:db8::1"\n', [":9:", "uplink[1].gateway", "IPv6"]),
    ("dns-multicast", "c.toml", GOOD_UPLINKS + 'dns = ["224.0.0.251"]\n', [":9:", "uplink[1].dns", "unicast"]),
    ("probe-unspecified", "c.toml", GOOD_UPLINKS + 'probe = ["0.0.0.0"]\n', [":9:", "uplink[1].probe", "unicast"]),
    ("probes-too-many", "c.toml", GOOD_UPLINKS + "probe = [" + ", ".join(['"198.51.100.1"'] * 17) + "]\n", [":9:", "uplink[1].probe", "at most 16"]),
    # Kernel knobs that would reach others' state.
    ("proto-dhcp", "c.toml", GOOD_UPLINKS + "\n[kernel]\nroute_protocol = 16\n", [":11:", "kernel.route_protocol", "'dhcp'"]),
    ("proto-low", "c.toml", GOOD_UPLINKS + "\n[kernel]\nroute_protocol = 100\n", [":11:", "kernel.route_protocol", "200-254"]),
    ("table-foreign", "c.toml", GOOD_UPLINKS + '\n[kernel]\ntable = "foreign"\n', [":11:", "kernel.table", "nmbalance"]),
    ("table-keyword", "c.toml", GOOD_UPLINKS + '\n[kernel]\ntable = "counter"\n', [":11:", "kernel.table"]),
    # Strict TOML types.
    ("weight-bool", "c.toml", GOOD_UPLINKS + "weight = true\n", [":9:", "uplink[1].weight", "integer"]),
    ("gateway-int", "c.toml", GOOD_UPLINKS + "gateway = 16843009\n", [":9:", "uplink[1].gateway"]),
    ("masquerade-string", "c.toml", GOOD_UPLINKS + 'masquerade = "no"\n', [":9:", "uplink[1].masquerade", "boolean"]),
    ("interval-string", "c.toml", GOOD_UPLINKS + '\n[health]\ninterval_ms = "2000"\n', [":11:", "health.interval_ms", "integer"]),
    ("huge-integer", "c.toml", GOOD_UPLINKS + "weight = " + "9" * 4301 + "\n", [":9:", "thousands of digits"]),
    ("legacy-huge-integer", "balance.conf", "ISP1 wan1 isp 192.0.2.1 " + "9" * 4301 + "\n", ["balance.conf:1:", "uplink[0].weight"]),
    # Places for every error.
    ("toml-end-of-document", "c.toml", GOOD_UPLINKS + 'connection = "open\n', [":9:", "not valid TOML"]),
    ("u2028-line", "c.toml", '# a line\u2028 still one\n' + GOOD_UPLINKS + "weight = -1\n", [":10:", "uplink[1].weight"]),
    ("multiline-string-line", "c.toml", 'warn_email = """\nname = "x"\n"""\n' + GOOD_UPLINKS, [":1:", "warn_email"]),
    # What convert could not write back.
    ("email-control", "c.toml", 'warn_email = "root\\u0001@x"\n' + GOOD_UPLINKS, [":1:", "warn_email"]),
    ("connection-newline", "c.toml", '[[uplink]]\nname = "A"\nconnection = "x\\ny"\n', [":3:", "uplink[0].connection", "control character"]),
    ("hooks-dir-control", "c.toml", GOOD_UPLINKS + '\n[daemon]\nhooks_dir = "/etc/x\\u001b[2J"\n', [":11:", "daemon.hooks_dir"]),
    ("snippets-dir-newline", "c.toml", 'snippets_dir = "/etc/x\\ny"\n' + GOOD_UPLINKS, [":1:", "snippets_dir"]),
]

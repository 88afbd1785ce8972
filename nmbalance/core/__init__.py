"""The pure core: facts in, a Plan out. No I/O, clock or randomness here.

tests/unit/test_core_purity.py imports this package with dbus-fast, pyroute2,
nftables and icmplib blocked.
"""

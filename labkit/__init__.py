"""A lab of simulated ISPs in network namespaces, for tests, the demo and benches.

Not part of the nmbalance package: it runs `ip` and friends, which the
product itself never does.
"""

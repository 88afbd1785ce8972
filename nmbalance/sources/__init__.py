"""Sources of facts: the kernel (netlink), later NetworkManager, networkd and probes."""

"""nmbalance: spread traffic over several uplinks, fail over in an instant."""

__version__ = "0.1.0"

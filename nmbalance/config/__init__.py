"""Configuration: the pydantic model, the TOML loader and the legacy balance.conf reader."""

from nmbalance.config.load import load_config, load_config_text
from nmbalance.config.model import Config

__all__ = ["Config", "load_config", "load_config_text"]

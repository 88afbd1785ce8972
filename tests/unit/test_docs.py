"""The man pages cover every command and every config key; the shipped
default config is valid; the pages render without warnings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from nmbalance.cli import COMMANDS
from nmbalance.config import load_config
from nmbalance.config.model import Config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def sections(text: str) -> dict[str, str]:
    """`# [health]`-style headings of the config page -> their text."""
    parts = re.split(r"^# (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def model_of(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def test_every_config_key_is_documented_in_its_section() -> None:
    page = sections((DOCS / "nmbalance.toml.5.md").read_text())
    missing = []
    for name, field in Config.model_fields.items():
        sub = model_of(field.annotation)
        if sub is None:
            if f"`{name}`" not in page["TOP-LEVEL KEYS"]:
                missing.append(name)
            continue
        heading = next((h for h in page if h in (f"[{name}]", f"[[{name}]]")), None)
        if heading is None:
            missing.append(f"[{name}]")
            continue
        missing += [f"{name}.{key}" for key in sub.model_fields
                    if f"`{key}`" not in page[heading]]
    assert not missing, f"undocumented config keys: {missing}"


def test_every_command_is_documented() -> None:
    page = (DOCS / "nmbalance.8.md").read_text()
    assert [c for c in COMMANDS if f"* `{c}`" not in page] == []


def test_the_readme_use_block_lists_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    use = readme.split("## Use", 1)[1].split("\n## ", 1)[0]
    listed = {w for line in use.splitlines() if line.startswith("    nmbalance ")
              for w in line.split()[1].split("|")}
    assert listed == set(COMMANDS)


def test_the_shipped_default_config_is_valid() -> None:
    import nmbalance.config

    config = load_config(str(Path(nmbalance.config.__file__).parent / "default.toml"))
    assert [u.name for u in config.uplink] == ["ISP1", "ISP2"]


@pytest.mark.skipif(not shutil.which("groff"), reason="needs groff")
def test_pages_render_without_warnings(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "mkman.py"),
                    *map(str, sorted(DOCS.glob("*.md"))), "-o", str(tmp_path)], check=True)
    for page in ("nmbalance.8", "nmbalance.toml.5"):
        result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(tmp_path / page)],
                                capture_output=True, text=True, check=True)
        assert result.stderr == "", result.stderr

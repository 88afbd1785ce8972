"""The core must not import I/O libraries: import every module of it (and the
config it reads) with them blocked."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import nmbalance.core

BLOCKED = ["dbus_fast", "dbus_next", "pyroute2", "nftables", "icmplib"]


def test_all_of_core_imports_without_io_libraries() -> None:
    modules = [f"nmbalance.core.{m.name}" for m in pkgutil.iter_modules(nmbalance.core.__path__)]
    assert {"nmbalance.core.decide", "nmbalance.core.health_machine",
            "nmbalance.core.numbering"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        f"for module in {[*modules, 'nmbalance.config', 'nmbalance.inet']!r}:\n"
        "    importlib.import_module(module)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r} "
        "and sys.modules[m] is not None]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(nmbalance.core.__file__).parents[2])
    assert result.returncode == 0, result.stderr

"""The core must not import I/O libraries: run an import with them blocked."""

import subprocess
import sys

BLOCKED = ["dbus_fast", "dbus_next", "pyroute2", "nftables", "icmplib"]


def test_core_imports_without_io_libraries() -> None:
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "import nmbalance.core.decide, nmbalance.core.facts, nmbalance.core.plan\n"
        "import nmbalance.core.ruleset, nmbalance.core.slots, nmbalance.config\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r} "
        "and sys.modules[m] is not None]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

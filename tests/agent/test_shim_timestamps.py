"""The container shim runs isolated (``python -I -S``, no ``atoll`` importable) and still
stamps log lines with the shared ``atoll.api.timestamps`` formatter."""

from __future__ import annotations

import subprocess
import sys

from atoll.agent.runtime.containers import SHIM
from atoll.api.timestamps import rfc3339


def test_shim_stamps_with_the_shared_formatter_in_isolation() -> None:
    code = (f"import runpy; g = runpy.run_path({str(SHIM)!r}); "
            "print(g['rfc3339'](1764680400.25, digits=9))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, check=True, cwd="/").stdout.strip()
    assert out == rfc3339(1764680400.25, digits=9) == "2025-12-02T13:00:00.250000000Z"

"""End to end: the demo's lagging ranks are detected and their share shrinks.

Runs ``shardsense demo`` as a process (it owns its own chDB path): real broker,
Faust processor with its models, planner and console; only the ranks' speeds
are simulated.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shardsense.net import free_port

pytestmark = pytest.mark.integration


def test_demo_shrinks_the_lagging_ranks_share(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "demo", "--seconds", "20",
         "--data-dir", str(tmp_path), "--broker-port", str(free_port()),
         "--console-port", str(free_port()), "--log-level", "WARNING"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "COLUMNS": "120"},
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    shares = [float(x) for x in re.findall(r"lagging ranks' share\s+([\d.]+)%", out)]
    versions = [int(x) for x in re.findall(r"map v(\d+)\s", out)]
    assert shares and shares[0] == pytest.approx(12.5), out
    assert max(versions) >= 2, "the planner never published a new map:\n" + out
    assert shares[-1] < 10.0, out  # 2 of 8 ranks at half speed: ideal share 7.1%
    assert "console: http://127.0.0.1:" in out

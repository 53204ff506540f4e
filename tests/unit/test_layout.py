"""The package layout promises: services import without torch; the public paths exist."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

SERVICES = [
    "shardsense",
    "infra.cli",
    "stream_processors.app",
    "stream_processors.service",
    "planner_service.service",
    "dash_app",
    "infra.stack",
]


@pytest.mark.parametrize("module", SERVICES)
def test_service_imports_without_torch(module: str) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        f"import {module}\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_runtime_public_paths() -> None:
    pytest.importorskip("torch")
    from shardsense import ShardSenseRuntime
    from shardsense.runtime.engine import ShardSenseRuntime as Same

    assert ShardSenseRuntime is Same

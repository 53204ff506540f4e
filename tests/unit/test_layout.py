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


def test_core_imports_no_service_until_the_runtime_is_asked_for() -> None:
    """``import shardsense`` stays service-free; the façade loads the runtime on first use."""
    code = (
        "import sys, shardsense, shardsense.events, shardsense.tables, shardsense.schema\n"
        "services = ('producers', 'stream_processors', 'planner_service', 'dash_app',"
        " 'infra', 'benchmarks')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in services], sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_runtime_public_paths_run_the_readme_loop() -> None:
    """Both public paths give the producers runtime, and the README's usage runs as written."""
    pytest.importorskip("torch")
    from producers.engine import ShardSenseRuntime as Implementation
    from shardsense import LoaderOptions, ShardSenseRuntime
    from shardsense.runtime.engine import ShardSenseRuntime as FromEngine

    assert ShardSenseRuntime is FromEngine is Implementation
    dataset, world_size = list(range(640)), 2
    runtime = ShardSenseRuntime(dataset, num_shards=64, num_workers=world_size,
                                loader=LoaderOptions(collate_fn=list))
    loaders = [runtime.get_dataloader(worker_id=rank) for rank in range(world_size)]
    seen = [i for step in zip(*loaders, strict=True) for batch in step for i in batch]
    runtime.epoch_end(0)
    assert len(seen) == len(set(seen)) == runtime.steps_per_epoch * 32 * world_size
    runtime.close()

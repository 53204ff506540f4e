"""One real gloo rank training through the public API while the faults tests break services.

``python fault_rank.py OUTDIR CONTROL`` with RANK, WORLD_SIZE, MASTER_ADDR/PORT and the
``SHARDSENSE_*`` settings (broker, topics, job) in the environment. Each step sleeps
``S_PER_SAMPLE x batch x slowdown`` (the rank's factor in the JSON file CONTROL, which
the test rewrites: a speed change made after a fault). At each epoch end rank 0
reads ``stop`` from CONTROL and broadcasts it, so every rank ends after the same epoch.
Rank 0 keeps ``OUTDIR/status-0.json`` (the map in force) current; at the end every rank
writes ``OUTDIR/rank-<r>.json``: ``[epoch, step, map_version, indices]`` per step and
its sink's counters.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from shardsense.runtime.engine import ShardSenseRuntime
from shardsense.settings import Settings

SAMPLES, SHARDS, GLOBAL_BATCH = 1280, 32, 32  # 40 steps an epoch
S_PER_SAMPLE = 0.0012


class Indexed(torch.utils.data.Dataset):
    """A synthetic regression set returning (x, y, index): the test checks the indices."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(SAMPLES, 8, generator=gen)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[i], self.y[i], i


def control(path: Path, last: dict[str, Any]) -> dict[str, Any]:
    """The test's latest instructions (the previous ones while the file is rewritten)."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return last


def write_atomic(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def main() -> int:
    outdir, control_path = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    rt = ShardSenseRuntime(Indexed(), num_shards=SHARDS, global_batch_size=GLOBAL_BATCH,
                           settings=Settings.from_env(), sync_every=4)
    net = DDP(nn.Linear(8, 1))
    rt.attach(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    steps: list[list[Any]] = []
    orders: dict[str, Any] = {}
    epoch = 0
    while True:
        for step, (x, y, idx) in enumerate(rt.get_dataloader(rank)):
            orders = control(control_path, orders)
            slowdown = float(orders.get("slowdown", {}).get(str(rank), 1.0))
            opt.zero_grad()
            time.sleep(S_PER_SAMPLE * len(idx) * slowdown)  # before backward: busy time
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
            steps.append([epoch, step, rt.map_version, idx.tolist()])
            if rank == 0:
                write_atomic(outdir / "status-0.json", {
                    "epoch": epoch, "step": step, "map_version": rt.map_version,
                    "batch": len(idx), "t": time.time()})
        rt.epoch_end(epoch)
        stop = torch.tensor([int(bool(control(control_path, orders).get("stop")))])
        dist.broadcast(stop, 0)
        epoch += 1
        if stop.item():
            break
    sink = rt.sinks.get(rank)
    rt.close()
    write_atomic(outdir / f"rank-{rank}.json", {
        "steps": steps, "steps_per_epoch": rt.steps_per_epoch,
        "sink": sink.stats() if sink is not None and hasattr(sink, "stats") else {}})
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

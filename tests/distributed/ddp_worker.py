"""One rank of the real torch.distributed (gloo) checks; launched by test_ddp_runtime.py.

``python ddp_worker.py PHASE OUTDIR`` with RANK, WORLD_SIZE, MASTER_ADDR/PORT set.
Phase ``main`` (several checks per launch, since process start-up dominates):
gradient equality vs one process on the global batch, exactly-once under a
map published at once, one ahead of its step and one for the next epoch, a
same-world resume, a checkpoint for the elastic phase, and accuracy of
ShardSense (uneven batches) vs the DistributedSampler baseline, and busy-time
reporting with a sleeping straggler. Phase
``elastic`` resumes that checkpoint with another world size. Each rank writes
``OUTDIR/<phase>-<rank>.json``; the test asserts on them.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from producers.engine import ShardSenseRuntime
from producers.memory import InMemoryMapSource
from producers.seams import MapSource
from shardsense.events import ShardMap

GLOBAL_BATCH = 48
EPOCHS = 20
JOB = "ddp-test"


class Digits(torch.utils.data.Dataset):
    """sklearn's load_digits (shipped inside the package), returning (x, y, index)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[i], self.y[i], i


def data() -> tuple[Digits, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(
        (x / 16.0).astype("float32"), y, test_size=0.2, random_state=0, stratify=y
    )
    return Digits(torch.tensor(xtr), torch.tensor(ytr)), torch.tensor(xte), torch.tensor(yte)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def uneven_map(version: int, world: int, sizes: list[int], n: int, shards: int) -> ShardMap:
    owners = [[s for s in range(shards) if s % world == r] for r in range(world)]
    return ShardMap.build(JOB, version, owners, sizes, num_samples=n, reason="test")


def runtime(train: Digits, maps: InMemoryMapSource, **kw: Any) -> ShardSenseRuntime:
    return ShardSenseRuntime(train, num_shards=64, num_workers=dist.get_world_size(),
                             global_batch_size=GLOBAL_BATCH, job_id=JOB, maps=maps,
                             sync_every=4, **kw)


def check_gradients(train: Digits, sizes: list[int]) -> dict[str, Any]:
    """DDP + hook on uneven batches == one process on the concatenated global batch."""
    rank, world = dist.get_rank(), dist.get_world_size()
    maps = InMemoryMapSource(uneven_map(1, world, sizes, len(train), 64))
    rt = runtime(train, maps)
    net = model()
    ref = copy.deepcopy(net)
    ddp = DDP(net)
    rt.attach(ddp)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    worst, naive_gap, batch_sizes = 0.0, 0.0, []
    for step, (x, y, idx) in enumerate(rt.get_dataloader(rank)):
        if step == 5:
            break
        batch_sizes.append(len(idx))
        opt.zero_grad()
        if rank == 2:
            time.sleep(0.04)  # a straggler: its peers wait for it in the all-reduce
        nn.functional.cross_entropy(ddp(x), y).backward()
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, idx.tolist())
        gidx = torch.tensor([i for part in everyone for i in part])
        ref_opt.zero_grad()
        nn.functional.cross_entropy(ref(train.x[gidx]), train.y[gidx]).backward()
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            worst = max(worst, (p.grad - q.grad).abs().max().item())
        # what plain DDP averaging would have given: the mean of per-rank means
        local = copy.deepcopy(ref)
        local.zero_grad()
        nn.functional.cross_entropy(local(x), y).backward()
        flat = torch.cat([p.grad.flatten() for p in local.parameters()])
        dist.all_reduce(flat)
        wanted = torch.cat([q.grad.flatten() for q in ref.parameters()])
        naive_gap = max(naive_gap, (flat / world - wanted).abs().max().item())
        opt.step()
        ref_opt.step()
    compute = [r.compute_s for r in rt.sinks[rank].records]  # type: ignore[attr-defined]
    rt.close()
    return {"grad_max_abs_diff": worst, "naive_gap": naive_gap, "batch_sizes": batch_sizes,
            "compute_s": compute}


#: step of epoch 0 -> (version, batch sizes, apply point): rank 0 publishes after that step.
#: v2 at once (seen at the sync point of step 4, applies there), v3 for step 14 (seen at 8),
#: v4 for epoch 1 step 3 (seen at 16, held across the epoch end; seen before step 14 it
#: would have replaced v3, which then never applies).
PUBLISH = {2: (2, [24, 16, 8], (0, 0)), 5: (3, [20, 16, 12], (0, 14)),
           15: (4, [16, 16, 16], (1, 3))}
CHECKPOINT_STEP = 9


def two_epochs(rt: ShardSenseRuntime, maps: MapSource, outdir: Path | None,
               start: int = 0) -> list[list[Any]]:
    """Epochs 0 and 1 (epoch 0 from ``start``): ``[epoch, step, version, indices]`` per step."""
    rank = dist.get_rank()
    out: list[list[Any]] = []
    for epoch in (0, 1):
        for step, (_x, _y, idx) in enumerate(rt.get_dataloader(rank), start if epoch == 0 else 0):
            out.append([epoch, step, rt.map_version, idx.tolist()])
            if epoch == 0 and step in PUBLISH and rank == 0:
                version, sizes, (e, s) = PUBLISH[step]
                first = maps.latest()
                assert first is not None  # keep the owners: a small change applies mid-epoch
                maps.publish(ShardMap.build(JOB, version, first.shards, sizes, apply_epoch=e,
                                            apply_step=s, num_samples=rt.job.num_samples))
            if epoch == 0 and step == CHECKPOINT_STEP and outdir is not None:
                (outdir / f"state-{rank}.json").write_text(json.dumps(rt.state_dict()))
                before = [i for row in out for i in row[3]]
                (outdir / f"before-{rank}.json").write_text(json.dumps(before))
        rt.epoch_end(epoch)
    return out


def check_exactly_once(train: Digits, outdir: Path) -> dict[str, Any]:
    """Two epochs with maps published on rank 0 (at once, ahead, for the next epoch), and a
    same-world resume from the step-9 checkpoint by a fresh runtime (a fresh map source too)."""
    rt = runtime(train, InMemoryMapSource())
    steps = two_epochs(rt, rt.maps, outdir)
    state = json.loads((outdir / f"state-{dist.get_rank()}.json").read_text())
    again = runtime(train, InMemoryMapSource())
    again.load_state_dict(state)
    resumed = two_epochs(again, again.maps, None, start=CHECKPOINT_STEP + 1)
    return {"steps": steps, "resumed": resumed, "steps_per_epoch": rt.steps_per_epoch}


def accuracy(train: Digits, xte: torch.Tensor, yte: torch.Tensor, shardsense: bool) -> float:
    rank, world = dist.get_rank(), dist.get_world_size()
    net = model()
    ddp = DDP(net)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    if shardsense:
        maps = InMemoryMapSource(uneven_map(1, world, [26, 14, 8], len(train), 64))
        rt = runtime(train, maps, seed=1)
        rt.attach(ddp)
        loader: Any = rt.get_dataloader(rank)
    else:
        sampler = torch.utils.data.DistributedSampler(train, shuffle=True, seed=1)
        loader = torch.utils.data.DataLoader(
            train, batch_size=GLOBAL_BATCH // world, sampler=sampler, drop_last=True
        )
    for epoch in range(EPOCHS):
        if not shardsense:
            sampler.set_epoch(epoch)
        for x, y, _idx in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
        if shardsense:
            if epoch == 5 and rank == 0:  # a planner re-split half-way through
                maps.publish(uneven_map(2, world, [12, 20, 16], len(train), 64))
            rt.epoch_end(epoch)
        sched.step()
    with torch.no_grad():
        return float((net(xte).argmax(1) == yte).float().mean())


def main() -> int:
    phase, outdir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    train, xte, yte = data()
    result: dict[str, Any] = {"world": dist.get_world_size()}
    if phase == "main":
        assert dist.get_world_size() == 3, "the main phase's maps are written for 3 ranks"
        result["grad"] = check_gradients(train, [26, 14, 8])
        result["once"] = check_exactly_once(train, outdir)
        result["acc_shardsense"] = accuracy(train, xte, yte, shardsense=True)
        result["acc_baseline"] = accuracy(train, xte, yte, shardsense=False)
    else:
        rt = runtime(train, InMemoryMapSource())
        rt.load_state_dict(json.loads((outdir / "state-0.json").read_text()))
        seen = [i for _x, _y, idx in rt.get_dataloader(rank) for i in idx.tolist()]
        result["after"] = seen
        result["map_version"] = rt.map_version
        result["batch_sizes"] = rt._plan[-1][1].batch_sizes
    (outdir / f"{phase}-{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())

"""One rank of ``shardsense bench``: real DDP (gloo) training under each scenario and method.

The ranks are started once and run every (scenario, method) pair in the same
process group, so torch's ~30 s of start-up is paid once and static and
ShardSense see the same machine minutes apart. Rank 0 sends one result dict
per run (and progress) to the parent through a queue; every rank takes the
same steps and collectives in the same order.

Training: an MLP (64-64-10) on sklearn's load_digits (80/20 stratified split,
seeded; the training part repeated until an epoch has ``cfg.epoch_steps``
steps), SGD with momentum and a linear learning-rate decay (final accuracy
then varies ~0.3 pp with the data order, small enough to see a real loss).
Batches carry each sample's index, so the runs can prove exactly-once.
Each step sleeps ``scenario.delay(rank, step) * len(batch)`` before the
forward pass: that sleep is the rank's work (see ``scenarios``).
"""

from __future__ import annotations

import time
import traceback
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from benchmarks.bench.loop import BenchSink, InProcessPlanner
from benchmarks.bench.scenarios import BenchConfig, Scenario, catalogue
from benchmarks.loop.methods import METHODS
from benchmarks.loop.rank import RunControl, run_product
from planner_service.policy import Outcome, PolicyConfig
from producers.engine import ShardSenseRuntime
from producers.memory import InMemoryMapSource

__all__ = ["load_data", "rank_main"]

PROGRESS_EVERY = 10


def load_data(seed: int, min_samples: int = 0) -> tuple[TensorDataset, torch.Tensor,
                                                       torch.Tensor]:
    """Train set (80%, repeated to ``min_samples``) as (x, y, index) and the held-out 20%."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(
        x / 16.0, y, test_size=0.2, random_state=seed, stratify=y
    )
    repeat = max(1, -(-min_samples // len(ytr)))
    xs = torch.tensor(xtr, dtype=torch.float32).repeat(repeat, 1)
    ys = torch.tensor(ytr).repeat(repeat)
    train = TensorDataset(xs, ys, torch.arange(len(ys)))
    return train, torch.tensor(xte, dtype=torch.float32), torch.tensor(yte)


class BenchRun:
    """State shared by both methods: model, optimiser, step clock, results."""

    def __init__(self, cfg: BenchConfig, scenario: Scenario, method: str, rank: int,
                 queue: Any) -> None:
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and method
        self.model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self.ddp = DDP(self.model)
        self.opt = torch.optim.SGD(self.ddp.parameters(), lr=cfg.lr, momentum=0.9)
        self.steps = steps = scenario.steps or cfg.steps
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: max(0.02, 1.0 - s / steps)
        )
        self.cfg, self.scenario, self.method, self.rank, self.queue = (
            cfg, scenario, method, rank, queue)
        self.step = 0
        self.step_s: list[float] = []
        self.work_s: list[float] = []  # this rank's own part: injected work + forward
        self.epoch_of_step: list[int] = []
        self.start_wall: list[float] = []  # time.time() at each step's start: the stage clock
        self.indices: list[list[int]] = []  # sample indices of each step (exactly-once)
        self._last = self._t0 = time.perf_counter()

    def start(self) -> None:
        """Align the ranks and start the clock (set-up is not a step)."""
        dist.barrier()
        self._last = self._t0 = time.perf_counter()

    def train(self, batch: list[torch.Tensor], epoch: int) -> bool:
        """One step (injected work, forward, backward, update); True when the run is done."""
        x, y, idx = batch
        self.start_wall.append(time.time())
        self.indices.append(idx.tolist())
        began = time.perf_counter()
        time.sleep(self.scenario.delay(self.rank, self.step) * len(x))
        loss = F.cross_entropy(self.ddp(x), y)
        self.work_s.append(time.perf_counter() - began)  # before backward's all-reduce waits
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        now = time.perf_counter()
        self.step_s.append(now - self._last)
        self.epoch_of_step.append(epoch)
        self._last = now
        self.step += 1
        if self.rank == 0 and self.step % PROGRESS_EVERY == 0:
            self.queue.put(("step", self.scenario.name, self.method, self.step))
        return self.step >= self.steps

    def rank_log(self) -> dict[str, Any]:
        """This rank's own records, gathered to rank 0 after the run."""
        return {"work_s": self.work_s, "start_wall": self.start_wall, "indices": self.indices}

    def result(self, xte: torch.Tensor, yte: torch.Tensor, **extra: Any) -> dict[str, Any]:
        with torch.no_grad():
            self.model.eval()
            acc = float((self.model(xte).argmax(1) == yte).float().mean())
            weights = float(sum(p.double().abs().sum() for p in self.model.parameters()))
        return {
            "scenario": self.scenario.name, "method": self.method, "steps": self.step,
            "global_batch": self.cfg.global_batch, "wall_s": time.perf_counter() - self._t0,
            "step_s": self.step_s, "epoch_of_step": self.epoch_of_step, "accuracy": acc,
            "weights_l1": weights, **extra,
        }


def run_static(run: BenchRun, train: TensorDataset, world: int, settings: Any = None
               ) -> dict[str, Any]:
    """Baseline: DistributedSampler + equal per-rank batches + DDP's default mean."""
    cfg = run.cfg
    sampler: DistributedSampler[Any] = DistributedSampler(
        train, num_replicas=world, rank=run.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = DataLoader(train, batch_size=cfg.batch_per_rank, sampler=sampler, drop_last=True)
    epoch = 0
    done = False
    run.start()
    while not done:
        sampler.set_epoch(epoch)
        for batch in loader:
            if done := run.train(batch, epoch):
                break
        epoch += 1
    sizes = [[cfg.batch_per_rank] * world] * run.step
    return {"batch_sizes": sizes, "steps_per_epoch": len(loader)}


def shard_bytes(train: TensorDataset, num_shards: int) -> int:
    """The data set's true bytes per shard (every tensor of a sample)."""
    sample_bytes = sum(t[0].numel() * t[0].element_size() for t in train.tensors)
    return max(1, len(train) // num_shards) * sample_bytes


def policy_config(cfg: BenchConfig, train: TensorDataset) -> PolicyConfig:
    """Planner knobs for an in-memory dataset: moving a shard is only an index change.

    The move cost is the shard's real bytes at the default bandwidth (negligible)
    and no warm-up. The predictor already smooths and confirms a level shift
    over two windows, so the policy neither smooths again nor asks for a second
    confirmation (each doubling would add a window of lag).
    """
    return PolicyConfig(algorithm="minmax", shard_bytes=shard_bytes(train, cfg.num_shards),
                        warmup_s=0.0,
                        smoothing=cfg.policy_smoothing, confirmations=cfg.confirmations)


def run_shardsense(run: BenchRun, train: TensorDataset, world: int, settings: Any = None
                   ) -> dict[str, Any]:
    """ABLATION: ShardSenseRuntime + the in-process closed loop of ``benchmarks.bench.loop``.

    Timing windows travel on their own gloo group, asynchronously: issued two
    steps before each of the runtime's sync points and collected one step
    before it, so the gather hides behind a step of work (on this contended box
    a blocking 3-float all_gather costs ~4 ms) and rank 0's map is published
    just before the sync point that reads it.
    """
    cfg = run.cfg
    sink = BenchSink()
    maps = InMemoryMapSource()
    runtime = ShardSenseRuntime(
        train, num_shards=cfg.num_shards, global_batch_size=cfg.global_batch, seed=cfg.seed,
        job_id="bench", sync_every=cfg.sync_every, sink=sink, maps=maps,
        compute_timing=cfg.timing,
    )
    runtime.attach(run.ddp)
    planner = (InProcessPlanner(maps, "bench", policy_config(cfg, train))
               if run.rank == 0 else None)
    group = dist.new_group(backend="gloo")
    loader = runtime.get_dataloader()
    gathered = [torch.zeros(2, dtype=torch.float64) for _ in range(world)]
    pending: tuple[Any, int] | None = None
    windows: list[dict[str, Any]] = []
    keys: list[tuple[int, int]] = []
    done = False
    run.start()
    while not done:
        epoch = runtime.epoch
        for batch in loader:
            key = (epoch, runtime.step - 1)
            keys.append(key)
            done = run.train(batch, epoch)
            if pending is not None:
                pending[0].wait()
                rows = [g.tolist() for g in gathered]
                if planner is not None:
                    planner.on_window(pending[1], [r[0] for r in rows], [r[1] for r in rows])
                    windows.append({"step": run.step,
                                    "time_per_sample_s": [r[0] / max(r[1], 1.0) for r in rows]})
                pending = None
            if (key[1] + 2) % cfg.sync_every == 0 and not done:
                window = torch.tensor(sink.drain(), dtype=torch.float64)
                pending = (dist.all_gather(gathered, window, group=group, async_op=True),
                           key[1])
            if done:
                break
        else:
            runtime.epoch_end(epoch)
    runtime.close()
    dist.destroy_process_group(group)
    if planner is None:
        return {}
    return {**_inprocess_record(planner, maps, sink, keys), "windows": windows,
            "steps_per_epoch": runtime.steps_per_epoch}


def _inprocess_record(planner: InProcessPlanner, maps: InMemoryMapSource, sink: BenchSink,
                      keys: list[tuple[int, int]]) -> dict[str, Any]:
    """The batch sizes each step really ran with, and the planner's non-skipped decisions."""
    by_version = {m.map_version: m.batch_sizes for m in maps.published}
    sizes, version = [], 1
    for key in keys:
        version = sink.versions.get(key, version)
        sizes.append(list(by_version[version]))
    decisions = [{"step": s, "decision": d.outcome.value, "reason": d.reason,
                  "batch_sizes": d.batch_sizes} for s, d in planner.decisions
                 if d.outcome is not Outcome.SKIPPED]
    return {"batch_sizes": sizes, "decisions": decisions,
            "maps_published": len(maps.published)}


#: One runner per path of ``benchmarks.loop.methods.PATHS``.
RUNNERS = {"baseline": run_static, "inprocess": run_shardsense, "product": run_product}


def rank_main(rank: int, cfg: BenchConfig, port: int, queue: Any, replies: Any = None) -> None:
    """Entry point of one spawned rank (``torch.multiprocessing.spawn`` passes ``rank``).

    Before every run rank 0 asks the parent for the run's settings (the parent
    starts the product path's services for it) and broadcasts them.
    """
    torch.set_num_threads(1)  # 4 ranks on 2 cores: intra-op threads only add contention
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=cfg.world, timeout=timedelta(minutes=5))
    control = RunControl(rank, queue, replies)
    try:
        train, xte, yte = load_data(cfg.seed, cfg.epoch_steps * cfg.global_batch)
        scenarios = catalogue(cfg.world, cfg.steps, cfg.base_delay_s)
        for name in cfg.scenarios:
            for method in cfg.methods:
                dist.barrier()
                settings = control.settings_for(name, method,
                                                shard_bytes(train, cfg.num_shards))
                run = BenchRun(cfg, scenarios[name], method, rank, queue)
                extra = RUNNERS[METHODS[method].path](run, train, cfg.world, settings)
                logs: list[Any] = [None] * cfg.world
                dist.all_gather_object(logs, {**run.rank_log(), **extra.pop("per_rank", {})})
                extra["rank_work_s"] = [log["work_s"] for log in logs]  # every rank's speed
                extra["ranks"] = logs
                if rank == 0:
                    queue.put(("result", run.result(xte, yte, **extra)))
        dist.barrier()
    except BaseException:
        if rank == 0:
            queue.put(("error", traceback.format_exc()))
        raise
    finally:
        dist.destroy_process_group()

"""A batch of timing reports as flat columns, and the onset detector's points.

The predictor works on one batch at a time: every timing of every report in
arrival order as numpy columns (built once per batch), with the index of its
report. :func:`points` condenses each report into at most ``per_report`` points
for the onset detector (consecutive chunk means), as the reference predictor did
per report with ``chunk_means``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from shardsense.events import TimingReport

__all__ = ["BatchColumns", "Points", "points"]


def _flat(reports: Sequence[TimingReport], name: str, dtype: type) -> np.ndarray:
    return np.array(list(chain.from_iterable(r.timings[name] for r in reports)), dtype=dtype)


@dataclass
class BatchColumns:
    """Every timing of a batch, in arrival order; ``report`` indexes ``reports``."""

    report: np.ndarray
    epoch: np.ndarray
    step: np.ndarray
    samples: np.ndarray
    wait_s: np.ndarray
    compute_s: np.ndarray
    end_ts: np.ndarray

    @classmethod
    def of(cls, reports: Sequence[TimingReport]) -> BatchColumns:
        """Flatten ``reports`` (decoded, so every column is valid and equally long).

        >>> r = TimingReport.new("j", 0, {"epoch": [0, 0], "step": [1, 2], "samples": [4, 4],
        ...     "data_wait_s": [0., 0.], "compute_s": [1., 2.], "map_version": [1, 1],
        ...     "end_ts": [1., 2.]})
        >>> BatchColumns.of([r, r]).report.tolist()
        [0, 0, 1, 1]
        """
        lens = np.fromiter((len(r) for r in reports), dtype=np.int64, count=len(reports))
        return cls(
            report=np.repeat(np.arange(len(reports)), lens),
            epoch=_flat(reports, "epoch", np.int64),
            step=_flat(reports, "step", np.int64),
            samples=_flat(reports, "samples", np.float64),
            wait_s=_flat(reports, "data_wait_s", np.float64),
            compute_s=_flat(reports, "compute_s", np.float64),
            end_ts=_flat(reports, "end_ts", np.float64),
        )

    def __len__(self) -> int:
        return len(self.report)


@dataclass
class Points:
    """The detector's points: each the chunk mean of consecutive batches of one report."""

    report: np.ndarray
    per_sample_s: np.ndarray  # mean over the chunk's batches of their seconds per sample
    total_s: np.ndarray
    samples: np.ndarray
    epoch: np.ndarray  # of the chunk's first batch
    step: np.ndarray

    def __len__(self) -> int:
        return len(self.report)


def points(cols: BatchColumns, n_reports: int, per_report: int) -> Points:
    """At most ``per_report`` points per report over its batches with samples, in order.

    >>> c = BatchColumns(np.array([0, 0, 0, 1]), np.zeros(4, int), np.arange(4),
    ...                  np.array([1., 1., 0., 2.]), np.zeros(4), np.array([1., 3., 5., 4.]),
    ...                  np.zeros(4))
    >>> p = points(c, 2, per_report=1)
    >>> p.report.tolist(), p.per_sample_s.tolist(), p.step.tolist()
    ([0, 1], [2.0, 2.0], [0, 3])
    """
    if per_report < 1:
        raise ValueError(f"per_report must be >= 1, got {per_report}")
    ok = np.flatnonzero(cols.samples > 0)
    rep = cols.report[ok]
    n = np.bincount(rep, minlength=n_reports)
    p = np.minimum(n, per_report)
    offset = np.cumsum(n) - n
    point_report = np.repeat(np.arange(n_reports), p)
    k = np.arange(len(point_report)) - np.repeat(np.cumsum(p) - p, p)
    starts = offset[point_report] + (k * n[point_report]) // np.maximum(p[point_report], 1)
    if len(starts) == 0:
        e = np.zeros(0)
        return Points(point_report, e, e, e, e.astype(np.int64), e.astype(np.int64))
    total = cols.wait_s[ok] + cols.compute_s[ok]
    samples = cols.samples[ok]
    sizes = np.diff(np.r_[starts, len(ok)])
    return Points(
        report=point_report,
        per_sample_s=np.add.reduceat(total / samples, starts) / sizes,
        total_s=np.add.reduceat(total, starts),
        samples=np.add.reduceat(samples, starts),
        epoch=cols.epoch[ok][starts],
        step=cols.step[ok][starts],
    )

"""The pure steps of a recurrence fit: period, template, level schedule, backtest.

Everything here works on one worker's relative times per sample (time / fleet
median), in step order, NaN where a step was never reported. No state, no I/O:
:class:`stream_processors.recurrence.RecurrenceBank` calls these on the workers
due for a refit and keeps the results.

>>> t = np.arange(600)
>>> wave = np.where(t % 150 < 50, 2.0, 1.0)
>>> int(pick_period(autocorrelation(wave[None, :], 300)[0], 4, 300, 0.5, 0.5))
150
>>> phases, levels = segment(fold(wave, 150, 3), 0.15, 16)
>>> phases, [round(v, 2) for v in levels]
([0, 50], [2.0, 1.0])
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "autocorrelation",
    "backtest",
    "fold",
    "pick_period",
    "rolling_median",
    "segment",
]

FloatArray = npt.NDArray[np.float64]


def autocorrelation(windows: FloatArray, max_lag: int) -> FloatArray:
    """Autocorrelation of each row at lags ``0..max_lag``, over the pairs both observed.

    Rows are step-ordered windows with NaN for missing steps. The count of valid
    pairs at each lag divides the sum (the unbiased estimate), so a gap or a
    short history does not shrink long lags towards 0. One FFT per row, all rows
    at once: O(H log H) for an H-step window.
    """
    if windows.ndim != 2:
        raise ValueError(f"windows must be 2-D (workers, steps), got shape {windows.shape}")
    h = windows.shape[1]
    if not 0 < max_lag < h:
        raise ValueError(f"max_lag must be in [1, {h}), got {max_lag}")
    valid = np.isfinite(windows)
    count = valid.sum(axis=1, keepdims=True)
    mean = np.where(count > 0, np.nansum(windows, axis=1, keepdims=True) / np.maximum(count, 1),
                    0.0)
    x = np.where(valid, windows - mean, 0.0)
    m = valid.astype(np.float64)
    n_fft = 1 << int(np.ceil(np.log2(2 * h)))
    fx, fm = np.fft.rfft(x, n_fft), np.fft.rfft(m, n_fft)
    num = np.fft.irfft(fx * np.conj(fx), n_fft)[:, : max_lag + 1]
    pairs = np.rint(np.fft.irfft(fm * np.conj(fm), n_fft)[:, : max_lag + 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = np.where(pairs >= 8, num / pairs, np.nan)
        return np.asarray(cov / cov[:, :1], dtype=np.float64)


def pick_period(acf: FloatArray, min_lag: int, max_lag: int, min_acf: float,
                min_prominence: float) -> int:
    """The fundamental period in one autocorrelation row, or 0 if nothing recurs.

    A peak counts if it is a local maximum of at least ``min_acf`` that rises
    ``min_prominence`` above the lowest autocorrelation at shorter lags: a step
    change or a slow drift decays monotonically and never dips. Among the
    peaks the smallest lag within 85% of the best is the period (multiples of
    a period peak too); it is then centred on the highest point near it.
    """
    r = np.nan_to_num(acf[: max_lag + 2], nan=-1.0)
    hi = min(max_lag, len(r) - 2)
    if hi <= min_lag:
        return 0
    lags = np.arange(max(min_lag, 2), hi + 1)
    trough = np.minimum.accumulate(r[1:])  # trough[k-1] = min(r[1..k])
    peak = (r[lags] > r[lags - 1]) & (r[lags] >= r[lags + 1]) & (r[lags] >= min_acf)
    peak &= r[lags] - trough[lags - 1] >= min_prominence
    if not peak.any():
        return 0
    heights = r[lags][peak]
    lag = int(lags[peak][np.argmax(heights >= 0.85 * heights.max())])
    near = max(2, lag // 20)
    lo, top = max(min_lag, lag - near), min(hi, lag + near)
    return lo + int(np.argmax(r[lo : top + 1]))


def _nanmedian_rows(rows: FloatArray) -> FloatArray:
    """Median of each column over its observed rows (NaN where none is).

    One sort (NaN sorts last) and two gathers: ``np.nanmedian`` goes through
    masked arrays and cost 20x more here.

    >>> _nanmedian_rows(np.array([[1.0, np.nan], [3.0, np.nan], [2.0, 5.0]])).tolist()
    [2.0, 5.0]
    """
    srt = np.sort(rows, axis=0)
    count = np.isfinite(rows).sum(axis=0)
    lo = np.take_along_axis(srt, np.maximum((count - 1) // 2, 0)[None, ...], axis=0)[0]
    hi = np.take_along_axis(srt, (count // 2 - (count == 0))[None, ...], axis=0)[0]
    return np.where(count > 0, 0.5 * (lo + hi), np.nan)


def fold(values: FloatArray, period: int, periods: int) -> FloatArray:
    """Median over the last ``periods`` whole periods of ``values``, by phase.

    Phase ``i`` holds the steps at indices ``i, i + period, ...`` of ``values``
    (the window's first step is phase 0): a median of 2-3 periods forgets an old
    regime within a few periods and shrugs off one disturbed period.
    """
    k = min(periods, len(values) // period)
    if k < 1:
        raise ValueError(f"values hold no whole period of {period} steps")
    tail = values[len(values) - k * period :].reshape(k, period)
    tmpl = _nanmedian_rows(tail)
    start = (len(values) - k * period) % period
    return np.roll(tmpl, start)


def _smooth(tmpl: FloatArray) -> FloatArray:
    """Circular median of 3 or 5 phases: noise goes, square edges stay square."""
    w = 3 if len(tmpl) < 30 else 5
    pad = np.concatenate([tmpl[-(w // 2) :], tmpl, tmpl[: w // 2]])
    return np.asarray(np.median(np.lib.stride_tricks.sliding_window_view(pad, w), axis=1))


def rolling_median(values: FloatArray, width: int = 5) -> FloatArray:
    """Centred running median along the last axis over observed steps (NaN stays NaN).

    Takes out spikes of up to ``width // 2`` steps (a GC pause, an epoch end's
    extra work) that would otherwise dominate an autocorrelation or fail a backtest.

    >>> rolling_median(np.array([[1.0, 1.0, 9.0, 1.0, 1.0, np.nan]])).tolist()
    [[1.0, 1.0, 1.0, 1.0, 1.0, nan]]
    """
    if values.shape[-1] < width:
        return values
    edge = np.full((*values.shape[:-1], width // 2), np.nan)
    pad = np.concatenate([edge, values, edge], axis=-1)
    view = np.lib.stride_tricks.sliding_window_view(pad, width, axis=-1)
    out = _nanmedian_rows(np.moveaxis(view, -1, 0))
    return np.where(np.isfinite(values), out, np.nan)


def _greedy(seq: FloatArray, min_change: float) -> list[list[int]]:
    """Cut ``seq`` into runs whose max/min stays within ``1 + min_change``: [[begin, end)]."""
    runs = [[0, len(seq)]]
    lo = hi = float(seq[0])
    for i in range(1, len(seq)):
        v = float(seq[i])
        if max(hi, v) > min(lo, v) * (1.0 + min_change):
            runs[-1][1] = i
            runs.append([i, len(seq)])
            lo = hi = v
        else:
            lo, hi = min(lo, v), max(hi, v)
    return runs


def _merge_short(seq: FloatArray, runs: list[list[int]], min_len: int) -> list[list[int]]:
    """Fold each run shorter than ``min_len`` into its closer-levelled neighbour."""
    while len(runs) > 1:
        lengths = [e - b for b, e in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= min_len:
            break
        level = float(np.median(seq[runs[i][0] : runs[i][1]]))
        near = []
        for j in (i - 1, i + 1):
            if 0 <= j < len(runs):
                near.append((abs(np.log(np.median(seq[runs[j][0] : runs[j][1]]) / level)), j))
        j = min(near)[1]
        lo, hi = min(i, j), max(i, j)
        runs[lo : hi + 1] = [[runs[lo][0], runs[hi][1]]]
    return runs


def segment(tmpl: FloatArray, min_change: float, min_len: int) -> tuple[list[int], list[float]]:
    """A periodic template as levels: ``(phases where a level starts, the levels)``.

    Levels differ by at least ``min_change`` (relative) from their neighbours and
    last at least ``min_len`` steps: a shorter level cannot be acted on, so it is
    folded into a neighbour. One level means nothing to schedule. The cut starts
    at the biggest jump (a burst's edge, a ramp's reset), so the wrap-around is a
    real change. A noisy template raises ``min_change`` to 3x its noise.
    """
    if len(tmpl) == 0 or not np.all(np.isfinite(tmpl)) or np.any(tmpl <= 0):
        raise ValueError("tmpl must be a non-empty template of finite values > 0")
    # A noisy template must not cut noise into levels: the tolerance is at least 3x its
    # noise (a median of 5 halves it; a run's range spans ~5 of what is left), estimated
    # robustly from phase-to-phase differences (edges are few).
    raw_jumps = np.abs(np.diff(np.log(tmpl)))
    min_change = max(min_change, 3 * 1.4826 * float(np.median(raw_jumps)) / np.sqrt(2))
    smooth = _smooth(tmpl)
    log_t = np.log(smooth)
    start = int(np.argmax(np.abs(log_t - np.roll(log_t, 1))))
    seq = np.roll(smooth, -start)
    runs = _merge_short(seq, _greedy(seq, min_change), min_len)
    levels = [float(np.median(seq[b:e])) for b, e in runs]
    merged: list[list[int]] = []
    kept: list[float] = []
    alike = 1.0 + min_change / 2  # a ramp's greedy runs differ by ~min_change: kept apart
    for (b, e), lv in zip(runs, levels, strict=True):  # neighbours that ended up alike
        if kept and max(lv, kept[-1]) <= min(lv, kept[-1]) * alike:
            merged[-1][1] = e
            kept[-1] = float(np.median(seq[merged[-1][0] : e]))
        else:
            merged.append([b, e])
            kept.append(lv)
    if len(merged) > 1 and max(kept[0], kept[-1]) <= min(kept[0], kept[-1]) * alike:
        merged[0][0] = merged.pop()[0] - len(seq)  # the wrap-around joins two alike levels
        kept.pop()
    order = sorted(range(len(merged)), key=lambda i: (start + merged[i][0]) % len(seq))
    return ([(start + merged[i][0]) % len(seq) for i in order], [kept[i] for i in order])


def backtest(values: FloatArray, period: int, periods: int, scored: int, tolerance: float,
             hit_share: float) -> int:
    """How many of the last ``scored`` whole periods the older ones predicted correctly.

    Period ``j`` (1 = the latest) is predicted by the folded template of the up
    to ``periods`` periods before it, never by itself; a period is correct if at
    least ``hit_share`` of its observed steps are within ``tolerance``
    (relative) of the prediction. Observations are a running median of 5 steps
    first: the score asks whether the schedule is right, not whether one batch
    was noisy. Needs two whole periods for the first score.
    """
    whole = len(values) // period
    observed = rolling_median(values[len(values) - whole * period :])
    rows = observed.reshape(whole, period)[::-1]  # 0 = latest
    correct = 0
    for j in range(min(scored, whole - 1)):
        older = rows[j + 1 : j + 1 + periods]
        if np.isfinite(older).sum(axis=0).min() == 0:
            continue
        pred = _smooth(_nanmedian_rows(older))
        seen = np.isfinite(rows[j])
        if seen.sum() < period // 2:
            continue
        hits = np.abs(rows[j][seen] / pred[seen] - 1.0) <= tolerance
        correct += int(hits.mean() >= hit_share)
    return correct

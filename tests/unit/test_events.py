"""The event contract: every broken payload gets a stable code, valid ones round-trip."""

from __future__ import annotations

import json

import pytest

from shardsense.errors import InvalidEvent, InvalidShardMap
from shardsense.events import (
    MAX_TIMINGS_PER_REPORT,
    TIMING_COLUMNS,
    DeadLetter,
    Prediction,
    ShardMap,
    TimingReport,
    decode,
    encode,
)

pytestmark = pytest.mark.unit


def report_dict(**over: object) -> dict:
    base = TimingReport.new("job", 1, {c: [1, 2] for c in TIMING_COLUMNS}).to_dict()
    base.update(over)
    return base


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_every_kind_round_trips() -> None:
    events = [
        TimingReport.new("job", 0, {c: [0, 1] for c in TIMING_COLUMNS}, host="h"),
        Prediction("job", 2, "e1", 1.0, 0.001, 0.0001, 1.5, True, 10, {"river": "1"}),
        ShardMap.build("job", 3, [[0, 3], [1, 2]], [5, 3], num_samples=80, max_batch_size=6),
        DeadLetter.for_payload(InvalidEvent("x", "y"), b"abc", source_topic="t",
                               source_partition=0, source_offset=9),
    ]
    for event in events:
        assert decode(encode(event)) == event


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not_json"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "bad_type"),
        (raw({**report_dict(), "v": 2}), "bad_version"),
        (raw({**report_dict(), "v": True}), "bad_version"),
        (raw({**report_dict(), "kind": "nope"}), "unknown_kind"),
        (raw({k: v for k, v in report_dict().items() if k != "event_id"}), "missing_field"),
        (raw(report_dict(job_id="")), "bad_type"),
        (raw(report_dict(worker_id="3")), "bad_type"),
        (raw(report_dict(worker_id=-2)), "bad_value"),
        (raw(report_dict(event_id="x" * 65)), "bad_value"),
        (b'{"v":1,"kind":"timing_report","ts":NaN}', "not_finite"),
        (raw(report_dict(timings={**report_dict()["timings"], "compute_s": [0.1, -1.0]})),
         "negative"),
        (raw(report_dict(timings={**report_dict()["timings"], "step": [1, 1.5]})), "bad_type"),
        (raw(report_dict(timings={**report_dict()["timings"], "epoch": [0, 2**32]})),
         "out_of_range"),
        (raw(report_dict(timings={**report_dict()["timings"], "step": [0, 2**63]})),
         "out_of_range"),
        (raw(report_dict(timings={**report_dict()["timings"], "step": [0, 2**70]})),
         "bad_type"),  # beyond 64 bits JSON parsers read a float
        (raw(report_dict(timings={**report_dict()["timings"], "end_ts": [1.0, 1e300]})),
         "out_of_range"),
        (raw(report_dict(ts=1e12)), "bad_value"),
        (b'{"v":1,"kind":"timing_report","ts":Infinity}', "not_finite"),
        (raw(report_dict(timings={**report_dict()["timings"], "step": [1]})), "bad_shape"),
        (raw(report_dict(timings={**report_dict()["timings"], "extra": [1, 2]})),
         "unknown_field"),
        (raw(report_dict(timings={c: [] for c in TIMING_COLUMNS})), "bad_shape"),
        (raw(report_dict(timings={c: [0] * (MAX_TIMINGS_PER_REPORT + 1)
                                  for c in TIMING_COLUMNS})), "oversized"),
    ],
)
def test_broken_payloads_get_a_stable_code(payload: bytes, code: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(payload, expect=TimingReport, max_bytes=64 * 1024)
    assert info.value.code == code, info.value.reason


def test_wrong_kind_on_a_topic_is_rejected() -> None:
    pred = Prediction("job", 0, "e", 1.0, 0.1, 0.0, 1.0, False, 0)
    with pytest.raises(InvalidEvent, match="wrong_kind"):
        decode(encode(pred), expect=TimingReport)


def test_shard_map_must_partition_the_shards() -> None:
    with pytest.raises(InvalidShardMap, match="shard 1 is assigned twice; shard 2 is unassigned"):
        ShardMap.build("job", 1, [[0, 1], [1]], [1, 1], num_shards=3)
    with pytest.raises(InvalidEvent, match="max_batch_size"):
        ShardMap.build("job", 1, [[0], [1]], [9, 1], max_batch_size=8)
    good = ShardMap.build("job", 1, [[1], [0]], [3, 1])
    assert good.world_size == 2 and good.global_batch_size == 4


def test_nan_is_never_written() -> None:
    pred = Prediction("job", 0, "e", 1.0, float("nan"), 0.0, 1.0, False, 0)
    with pytest.raises(ValueError):
        encode(pred)


def test_dead_letter_keeps_reason_offset_and_a_bounded_prefix() -> None:
    payload = b"x" * 10_000
    dl = DeadLetter.for_payload(InvalidEvent("oversized", "too big"), payload,
                                source_topic="t", source_partition=1, source_offset=42)
    assert (dl.code, dl.source_offset, dl.payload_bytes) == ("oversized", 42, 10_000)
    assert len(dl.payload_b64) <= 4 * (DeadLetter.KEEP_BYTES // 3 + 1)

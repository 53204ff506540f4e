"""Batches follow the load (plain asyncio, no broker): one message alone when idle, what
queued up while the previous batch was processed under load; never more than the cap."""

from __future__ import annotations

import asyncio

import pytest

from shardsense.settings import Settings
from stream_processors.batching import Batcher
from stream_processors.pipeline import Pipeline

pytestmark = pytest.mark.unit


async def _feed(queue: asyncio.Queue[int]):
    while True:
        item = await queue.get()
        if item < 0:
            return
        yield item


def test_idle_messages_go_alone_and_a_backlog_goes_together() -> None:
    async def run() -> list[list[int]]:
        q: asyncio.Queue[int] = asyncio.Queue()
        b: Batcher[int] = Batcher(max_messages=4, linger_s=0.0)
        reader = asyncio.ensure_future(b.fill(_feed(q)))
        out = []
        q.put_nowait(0)
        out.append(await b.take())  # idle: the first message alone
        for i in range(1, 7):  # a burst while "processing"
            q.put_nowait(i)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        out.append(await b.take())
        out.append(await b.take())
        q.put_nowait(-1)
        await reader
        out.append(await b.take())
        return out

    assert asyncio.run(run()) == [[0], [1, 2, 3, 4], [5, 6], []]


def test_linger_lets_near_simultaneous_messages_share_a_batch() -> None:
    async def run() -> list[int]:
        q: asyncio.Queue[int] = asyncio.Queue()
        b: Batcher[int] = Batcher(max_messages=100, linger_s=0.05)
        reader = asyncio.ensure_future(b.fill(_feed(q)))
        q.put_nowait(1)
        asyncio.get_running_loop().call_later(0.01, q.put_nowait, 2)
        batch = await b.take()
        reader.cancel()
        return batch

    assert asyncio.run(run()) == [1, 2]


def test_what_was_never_taken_is_drained_and_a_failed_source_is_reported() -> None:
    async def bad():
        yield 1
        raise OSError("broker gone")

    async def run() -> tuple[list[int], list[int]]:
        b: Batcher[int] = Batcher(max_messages=10, linger_s=0.0)
        await asyncio.gather(b.fill(bad()), return_exceptions=True)
        rest = b.drain()
        with pytest.raises(RuntimeError, match="failed"):
            await b.take()
        return rest, b.drain()

    assert asyncio.run(run()) == ([1], [])


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Batcher(0, 0.0)
    with pytest.raises(ValueError, match="linger_s"):
        Batcher(1, -1.0)


class Remembering:
    """A hook that stages nothing and remembers what it was told to forget."""

    def __init__(self) -> None:
        self.forgotten: set[str] = set()
        self.stored: list[str] = []

    async def prepare(self, reports):
        hook = self

        class Staged:
            async def store(self) -> None:
                hook.stored.append("store")

            async def publish(self) -> None:
                hook.stored.append("publish")

        return Staged()

    def forget(self, jobs: set[str]) -> None:
        self.forgotten |= jobs


def test_a_revoked_partition_takes_its_jobs_state_away(tmp_path) -> None:
    from shardsense.events import encode
    from tests.support.fleet import fleet_reports

    hook = Remembering()
    client = type("C", (), {"insert_arrow": lambda *a: None, "insert": lambda *a, **k: None})()
    p = Pipeline(Settings(data_dir=str(tmp_path)), client, [hook])
    a, b = fleet_reports("a", 1)[0], fleet_reports("b", 1)[0]
    asyncio.run(p.process([(encode(a), 0, 0), (encode(b), 1, 0)]))
    assert hook.stored == ["store", "publish"]  # stored, then published
    assert p.revoked({1}) == {"b"} and hook.forgotten == {"b"}
    assert p.revoked({1}) == set() and p.jobs_by_partition == {0: {"a"}}

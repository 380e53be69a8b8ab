"""EventBus and LogBatcher: bounded per-subscriber queues, coalescing, timed log batches."""

from __future__ import annotations

import asyncio

from cockpit.core.events import Event, Level, LogBatch, LogLine, Notice, SessionInfo, SourceKind
from cockpit.engine.batcher import LogBatcher
from cockpit.engine.bus import EventBus, Subscription


def lines(*texts: str) -> tuple[LogLine, ...]:
    return tuple(
        LogLine("api", "api", SourceKind.LOCAL, t, 1.0, seq=i + 1) for i, t in enumerate(texts)
    )


def batch(*texts: str) -> LogBatch:
    return LogBatch(lines(*texts))


def info(n: int) -> SessionInfo:
    return SessionInfo(f"s{n}", "ctx", "ns", "api")


async def drain(sub: Subscription) -> list[Event]:
    return [event async for event in sub]


def texts(event: Event) -> list[str]:
    assert isinstance(event, LogBatch)
    return [line.text for line in event.lines]


async def test_every_subscriber_gets_every_event_in_order_until_close() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    bus.publish(info(1))
    bus.publish(batch("a"))
    bus.publish(info(2))
    bus.close()
    bus.publish(info(3))  # after close: nobody gets it
    expected = [info(1), batch("a"), info(2)]
    assert await drain(first) == expected
    assert await drain(second) == expected
    assert await drain(bus.subscribe()) == []  # subscribing late to a closed bus ends at once


async def test_a_subscriber_only_sees_what_was_published_after_it_subscribed() -> None:
    bus = EventBus()
    bus.publish(info(1))
    sub = bus.subscribe()
    bus.publish(info(2))
    bus.close()
    assert await drain(sub) == [info(2)]


async def test_waiting_batches_are_merged_up_to_the_batch_size() -> None:
    bus = EventBus(max_batch_lines=3)
    sub = bus.subscribe()
    for text in "abcde":
        bus.publish(batch(text))
    bus.publish(info(1))
    bus.publish(batch("f"))
    bus.close()
    got = await drain(sub)
    assert [texts(e) if isinstance(e, LogBatch) else e for e in got] == [
        ["a", "b", "c"],
        ["d", "e"],
        info(1),  # never merged across another event: order is kept
        ["f"],
    ]


async def test_too_many_lines_drop_the_oldest_and_say_how_many() -> None:
    bus = EventBus(max_lines=4, max_batch_lines=2)
    sub = bus.subscribe()
    bus.publish(batch("a", "b"))
    bus.publish(info(1))
    bus.publish(batch("c", "d"))
    bus.publish(batch("e", "f"))  # 6 lines queued: "a" and "b" go
    bus.publish(LogBatch(lines("g")))  # 5: "c" goes (the batch is cut, not dropped whole)
    assert sub.dropped == (3, 0)
    bus.close()
    got = await drain(sub)
    assert got[0] == Notice(
        "events-dropped",
        "skipped 3 log lines: this view fell behind (the log keeps the lines)",
        Level.WARNING,
    )
    assert got[1] == info(1)
    assert [texts(e) for e in got[2:]] == [["d"], ["e", "f"], ["g"]]


async def test_too_many_events_drop_log_batches_first_then_the_oldest_events() -> None:
    bus = EventBus(max_events=3)
    sub = bus.subscribe()
    bus.publish(info(1))
    bus.publish(batch("a"))
    bus.publish(info(2))
    bus.publish(info(3))  # full: the batch goes
    bus.publish(info(4))  # full, no batch left: the oldest event goes
    assert sub.dropped == (1, 1)
    bus.close()
    got = await drain(sub)
    assert isinstance(got[0], Notice)
    assert got[0].text == (
        "skipped 1 log line and 1 event: this view fell behind (the log keeps the lines)"
    )
    assert got[1:] == [info(2), info(3), info(4)]


async def test_a_batch_bigger_than_the_limit_is_still_delivered_whole() -> None:
    bus = EventBus(max_lines=2, max_batch_lines=5)  # room for one whole batch at least
    sub = bus.subscribe()
    bus.publish(batch("a", "b", "c", "d", "e"))
    bus.close()
    assert [texts(e) for e in await drain(sub)] == [["a", "b", "c", "d", "e"]]


async def test_a_waiting_subscriber_wakes_on_publish_and_aclose_unsubscribes() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    waiting = asyncio.create_task(anext(sub))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    bus.publish(info(1))
    assert await asyncio.wait_for(waiting, 1) == info(1)
    await sub.aclose()
    bus.publish(info(2))
    assert await drain(sub) == []


async def test_batcher_flushes_after_the_interval_in_one_batch() -> None:
    published: list[LogBatch] = []
    batcher = LogBatcher(published.append, lambda: 7, interval=0.05, max_lines=100)
    batcher.start()
    batcher.add(lines("a"))
    await asyncio.sleep(0.01)
    batcher.add(lines("b", "c"))
    assert published == []  # not yet: lines wait for company
    await asyncio.sleep(0.1)
    assert [texts(b) for b in published] == [["a", "b", "c"]]
    assert published[0].dropped_total == 7
    await batcher.stop()


async def test_batcher_flushes_at_once_when_full_and_on_stop() -> None:
    published: list[LogBatch] = []
    batcher = LogBatcher(published.append, lambda: 0, interval=10, max_lines=3)
    batcher.start()
    batcher.add(lines(*"abcdefg"))
    assert [texts(b) for b in published] == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    batcher.add(lines("h"))
    assert batcher.pending == 1
    await batcher.stop()
    assert texts(published[-1]) == ["h"]

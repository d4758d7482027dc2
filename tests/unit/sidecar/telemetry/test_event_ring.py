"""The embedded event ring, appended to from the telemetry thread while the event loop reads
it: every event kept once, in order, and a reader waiting on the loop woken by an append."""

from __future__ import annotations

import asyncio
import threading

from a11i.sidecar.telemetry.events import EventRing


async def test_a_reader_waiting_on_the_loop_is_woken_by_an_append_from_a_thread() -> None:
    ring = EventRing()
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(ring.wait(0, timeout_s=30))
    await asyncio.sleep(0)  # the reader waits now
    threading.Thread(target=ring.add_from_thread, args=({"kind": "call"}, loop)).start()
    assert await asyncio.wait_for(waiting, 30)
    assert ring.since(0) == [(1, {"kind": "call"})]


async def test_appends_from_a_thread_keep_every_event_once_and_in_order() -> None:
    ring = EventRing(capacity=500)
    loop = asyncio.get_running_loop()

    def writer() -> None:
        for n in range(2_000):
            ring.add_from_thread({"n": str(n)}, loop)

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[tuple[int, str]] = []
    last = 0
    while thread.is_alive() or ring.last_id > last:
        for event_id, event in ring.since(last):
            seen.append((event_id, event["n"]))
            last = event_id
        await asyncio.sleep(0)
    thread.join()
    # What a reader saw is consecutive where it did not fall behind the ring's capacity, and
    # always in the order written; the ring ends with the last 500.
    assert [n for _, n in seen] == sorted((n for _, n in seen), key=int)
    assert all(int(n) == event_id - 1 for event_id, n in seen)
    assert seen[-1] == (2_000, "1999")
    assert [event["n"] for _, event in ring.since(0)] == [str(n) for n in range(1_500, 2_000)]


async def test_an_append_from_a_thread_with_nobody_waiting_needs_no_loop() -> None:
    ring = EventRing()
    loop = asyncio.new_event_loop()
    loop.close()  # nobody waits: the loop is not touched, even closed
    ring.add_from_thread({"kind": "call"}, loop)
    assert ring.latest(5) == [(1, {"kind": "call"})]

"""The shared-memory event ring: ordering across processes, backpressure, restarts, errors, cleanup."""
from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import signal
import struct
import threading
import time

import numpy as np
import pytest

from engine.records import EVENT_DTYPE, LAYOUT_VERSION, Ev
from engine.ring import (
    DATA_OFFSET,
    RING_LAYOUT,
    RING_MAGIC,
    EventRing,
    RingConsumer,
    RingError,
    RingInUseError,
    RingLayoutError,
    pattern,
    proc_start,
    ring_status,
)
from engine.workers import kind_mask, select_fresh

CTX = mp.get_context("fork")
_counter = itertools.count()


@pytest.fixture
def ring_name():
    name = f"/xos-test-{os.getpid()}-{next(_counter)}"
    yield name
    try:
        os.unlink("/dev/shm" + name)
    except FileNotFoundError:
        pass


def events(first_seq: int, n: int) -> np.ndarray:
    """Events seq first_seq.. with the payload ``pattern(seq)`` (the test's checksum pattern)."""
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    seq = np.arange(first_seq, first_seq + n, dtype=np.int64)
    ev["kind"] = 3
    ev["seq"] = seq
    ev["price"], ev["taker_fee"] = pattern(seq)
    ev["qty"] = seq * 7
    return ev


def verify(batch: np.ndarray, expect_first: int) -> str | None:
    """None when ``batch`` is exactly seq expect_first.. with the right payload, else what is wrong."""
    seq = batch["seq"]
    want = np.arange(expect_first, expect_first + len(batch), dtype=np.int64)
    if not np.array_equal(seq, want):
        bad = int(np.argmax(seq != want))
        return f"seq {int(seq[bad])} where {int(want[bad])} was due (gap, duplicate or overwrite)"
    price, fee = pattern(seq)
    if not (np.array_equal(batch["price"], price) and np.array_equal(batch["taker_fee"], fee)
            and np.array_equal(batch["qty"], seq * 7)):
        return f"payload mismatch in seqs {expect_first}..{expect_first + len(batch) - 1} (overwritten?)"
    return None


def _reader(name, cname, total, seed, max_sleep_s, ready, results, progress=None, errors=None):
    """Consumer process: read random-sized batches, verify every event, commit, sleep at random."""
    rng = np.random.default_rng(seed)
    c = RingConsumer.attach(name, cname)
    start = c.cursor
    ready.put((cname, start))
    expect = start + 1
    problems = []
    while expect <= total:
        if c.wait(5_000_000_000) == 0:
            problems.append(f"timed out waiting at seq {expect}")
            break
        batch = c.read(int(rng.integers(1, 20_000)))
        p = verify(batch, expect)
        if p:
            problems.append(p)
            if errors is not None:
                errors.value += 1
            break
        expect += len(batch)
        c.commit(len(batch))
        if progress is not None:
            progress.value = c.cursor
        if max_sleep_s and rng.random() < 0.05:
            time.sleep(rng.random() * max_sleep_s)
    results.put((cname, dict(start=start, last=expect - 1, problems=problems, stats=c.stats)))
    c.detach()


def _start_readers(name, n, total, max_sleep_s, **kw):
    ready, results = CTX.Queue(), CTX.Queue()
    procs = [CTX.Process(target=_reader, args=(name, f"r{i}", total, 100 + i, max_sleep_s, ready, results), kwargs=kw,
                         daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    started = dict(ready.get(timeout=30) for _ in procs)
    return procs, started, results


def _publish_random_batches(ring, total, seed):
    rng = np.random.default_rng(seed)
    seq = 1
    while seq <= total:
        n = min(int(rng.integers(1, 6000)), total - seq + 1)
        assert ring.publish_array(events(seq, n)) == n
        seq += n


# ---------------------------------------------------------------------------
# single process


def test_publish_read_commit_wraps(ring_name):
    with EventRing.create(ring_name, 8) as ring:
        c = RingConsumer.attach(ring_name, "a")
        assert c.available() == 0 and c.wait(0) == 0 and c.read(10).shape == (0,)
        assert c.producer_pid == os.getpid() and c.producer_alive()
        expect = 1
        for n in (5, 3, 7, 8, 1, 6):  # batches that wrap around the 8 slots
            ring.publish_array(events(expect, n))
            assert c.available() == n
            got = c.read(100)
            assert verify(got, expect) is None
            assert verify(c.read(2), expect) is None  # read does not consume
            c.commit(n)
            expect += n
        assert ring.cursor == ring.published == c.cursor == expect - 1
        with pytest.raises(RingError, match="only 0 events are unconsumed"):
            c.commit(1)
        c.detach()


def test_take_kinds_copies_only_the_chosen_kinds(ring_name):
    keep = np.zeros(8, np.uint8)
    keep[[1, 3]] = 1
    with EventRing.create(ring_name, 8) as ring:
        c = RingConsumer.attach(ring_name, "a")
        seq = 1
        for n in (5, 7, 8, 3):  # batches that wrap around the 8 slots
            batch = events(seq, n)
            batch["kind"] = np.arange(seq, seq + n) % 9  # kinds 0..8; 8 lies past the mask
            ring.publish_array(batch)
            chosen, first, last = c.take_kinds(6, keep)
            rest, first2, last2 = c.take_kinds(100, keep)
            assert (first, last, first2, last2) == (seq, seq + min(n, 6) - 1, seq + min(n, 6), seq + n - 1)
            got = np.concatenate([chosen, rest])
            want = batch[np.isin(batch["kind"], [1, 3])]
            assert got.tobytes() == want.tobytes()
            assert c.cursor == seq - 1  # taken, not consumed
            c.release_to(last2)
            seq += n
        empty, first, last = c.take_kinds(10, keep)
        assert len(empty) == 0 and last == first - 1 == seq - 1
        c.detach()


def test_next_ts_is_the_ts_of_the_first_event_the_next_take_gets(ring_name):
    keep = np.zeros(8, np.uint8)
    keep[3] = 1
    with EventRing.create(ring_name, 8) as ring:
        c = RingConsumer.attach(ring_name, "a")
        assert c.next_ts() is None  # nothing published
        batch = events(1, 6)
        batch["ts"] = [100, 100, 100, 200, 200, 300]
        ring.publish_array(batch)
        assert c.next_ts() == 100
        c.take_kinds(2, keep)
        assert c.next_ts() == 100 and c.cursor == 0  # taken, not consumed: the ring is unchanged
        c.take_kinds(2, keep)
        assert c.next_ts() == 200
        c.release_to(4)
        c.take(10)
        assert c.next_ts() is None
        c.release_to(6)
        more = events(7, 5)  # wraps around the 8 slots
        more["ts"] = 400
        ring.publish_array(more)
        c.take(3)
        assert c.next_ts() == 400
        c.detach()
        with pytest.raises(RingError):
            c.next_ts()


def test_take_kinds_takes_a_kind_marked_orderless_only_where_no_order_is_named(ring_name):
    """Settlement's Accepted: a listing's (order id 0), never an order's; the same rule as ``select_fresh``."""
    keep = kind_mask(Ev.FILL, orderless=(Ev.ACCEPTED,))
    with EventRing.create(ring_name, 8) as ring:
        c = RingConsumer.attach(ring_name, "a")
        batch = events(1, 6)
        batch["kind"] = [Ev.ACCEPTED, Ev.ACCEPTED, Ev.FILL, Ev.CANCELLED, Ev.ACCEPTED, Ev.FILL]
        batch["order_id"] = [0, 5, 5, 5, 0, 0]
        ring.publish_array(batch)
        chosen, first, last = c.take_kinds(100, keep)
        assert chosen["seq"].tolist() == [1, 3, 5, 6] and (first, last) == (1, 6)
        assert select_fresh(batch, 0, keep)[0].tobytes() == chosen.tobytes()
        c.detach()


def test_a_consumer_waiting_on_its_doorbell_is_rung_only_when_armed(ring_name):
    """A consumer in an event loop (the gateway) polls its doorbell FIFO instead of sleeping on the futex: the
    producer writes a byte only while it is armed; a slot another consumer takes over rings that one's FIFO."""
    import select

    def rung(c):
        return bool(select.select([c.doorbell()], [], [], 0)[0])

    with EventRing.create(ring_name, 16) as ring:
        c = RingConsumer.attach(ring_name, "gw")
        with pytest.raises(RingError, match="has no doorbell: call doorbell"):
            c.arm()
        fd = c.doorbell()
        assert os.path.exists(f"/dev/shm{ring_name}.gw.doorbell") and c.doorbell() == fd
        ring.publish_array(events(1, 2))
        assert not rung(c) and not c.arm()  # not armed: no byte; events wait: it must not sleep
        c.release_to(c.take(16)["seq"][-1])
        assert c.arm()
        ring.publish_array(events(3, 1))
        ring.publish_array(events(4, 1))
        assert rung(c)  # once: the first publish took the flag
        c.disarm()
        assert not rung(c) and c.take(16)["seq"].tolist() == [3, 4]
        c.detach()
        other = RingConsumer.attach(ring_name, "md")  # the freed slot, another FIFO
        other.doorbell()
        assert other.slot == c.slot and other.arm()
        ring.publish_array(events(5, 1))
        assert rung(other)
        other.disarm()
        assert other.take(16)["seq"].tolist() == [5] and other.arm()
        ring.close()  # closing rings too: a consumer waiting in its loop sees the end
        assert rung(other)
        other.detach()
    assert not os.path.exists(f"/dev/shm{ring_name}.gw.doorbell")
    assert not os.path.exists(f"/dev/shm{ring_name}.md.doorbell")


def test_a_byte_on_the_interrupt_fd_ends_a_wait_for_room(ring_name):
    """A producer behind a consumer that never reads stops short when its signal fd gets a byte."""
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        with EventRing.create(ring_name, 16, consumers=("idle",)) as ring:
            ring.interrupt_waits_on(r)
            threading.Timer(0.2, os.write, (w, b"\x0f")).start()
            t0 = time.monotonic()
            assert ring.publish_array(events(1, 40)) == 16  # the first chunk fits; the wait is cut
            assert 0.15 < time.monotonic() - t0 < 5 and ring.interrupted
            assert ring.published == 16
    finally:
        os.close(r)
        os.close(w)


def test_batch_larger_than_capacity_is_chunked(ring_name):
    with EventRing.create(ring_name, 16) as ring:
        c = RingConsumer.attach(ring_name, "a")
        got = []

        def consume():
            while sum(map(len, got)) < 1000:
                c.wait(1_000_000_000)
                b = c.read(7)
                got.append(b)
                c.commit(len(b))

        t = threading.Thread(target=consume)
        t.start()
        assert ring.publish_array(events(1, 1000)) == 1000  # 1000 events through 16 slots
        t.join(10)
        assert verify(np.concatenate(got), 1) is None
        assert ring.stats["waits"] > 0
        c.detach()


def test_seek_within_the_window(ring_name):
    with EventRing.create(ring_name, 16) as ring:
        c = RingConsumer.attach(ring_name, "a")
        ring.publish_array(events(1, 10))
        c.commit(10)
        c.seek(4)  # a worker that persisted "done up to seq 3"
        assert c.cursor == 3 and verify(c.read(100), 4) is None
        c.seek(11)
        assert c.available() == 0
        with pytest.raises(RingError, match=r"holds seqs 1\.\.10"):
            c.seek(12)
        ring.publish_array(events(11, 16))  # fills the ring up to this consumer's cursor
        c.seek(27)
        ring.publish_array(events(27, 14))  # window is now seqs 25..40
        with pytest.raises(RingError, match=r"holds seqs 25\.\.40"):
            c.seek(24)
        c.seek(25)
        assert verify(c.read(100), 25) is None
        c.detach()


def test_c_batch_consumer_checksum(ring_name):
    from bench.ring import expected_checksum

    with EventRing.create(ring_name, 1024) as ring:
        c = RingConsumer.attach(ring_name, "a")
        out = {}
        t = threading.Thread(target=lambda: out.update(c.consume_checksum(100_000, 300)))
        t.start()
        ring.publish_pattern(100_000, 500)
        t.join(20)
        assert out["count"] == 100_000 and out["seq_errors"] == 0 and out["payload_errors"] == 0
        assert out["checksum"] == expected_checksum(100_000)
        c.detach()


def test_status_reports_cursors_and_lag(ring_name):
    with EventRing.create(ring_name, 64) as ring:
        a = RingConsumer.attach(ring_name, "settlement")
        b = RingConsumer.attach(ring_name, "margin")
        ring.publish_array(events(1, 50))
        a.commit(50)
        b.commit(20)
        st = ring_status(ring_name)
        assert st["capacity"] == 64 and st["published"] == 50 and st["creator_pid"] == os.getpid()
        rows = {r["name"]: r for r in st["consumers"]}
        assert rows["settlement"]["cursor"] == 50 and rows["settlement"]["lag"] == 0
        assert rows["margin"]["cursor"] == 20 and rows["margin"]["lag"] == 30
        assert rows["margin"]["pid"] == os.getpid() and rows["margin"]["alive"]
        assert set(st["producer"]) >= {"waits", "wait_ns", "sleeps", "wakes"}
        b.detach()
        assert [r["name"] for r in ring_status(ring_name)["consumers"]] == ["settlement"]
        a.detach()


def test_consumer_slots_are_limited_and_names_unique(ring_name):
    with EventRing.create(ring_name, 16):
        cs = [RingConsumer.attach(ring_name, f"c{i}") for i in range(8)]
        with pytest.raises(RingError, match="no free consumer slot"):
            RingConsumer.attach(ring_name, "c8")
        cs[3].detach()
        with pytest.raises(RingInUseError, match=f"attached by live pid {os.getpid()}"):
            RingConsumer.attach(ring_name, "c0")
        RingConsumer.attach(ring_name, "c8").detach()
        for c in cs:
            c.detach()


# ---------------------------------------------------------------------------
# processes


@pytest.mark.parametrize("n_consumers", [1, 3])
def test_stress_processes_no_gaps_duplicates_or_overwrites(ring_name, n_consumers):
    total = 2_000_000
    with EventRing.create(ring_name, 4096) as ring:
        procs, started, results = _start_readers(ring_name, n_consumers, total, 0.002)
        assert set(started.values()) == {0}
        _publish_random_batches(ring, total, seed=7)
        out = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(10)
        for name, r in out.items():
            assert r["problems"] == [], name
            assert r["last"] == total, name
        assert ring.published == total


def _slow_reader(name, total, ready, results):
    c = RingConsumer.attach(name, "slow")
    ready.put(c.cursor)
    expect, problems = 1, []
    while expect <= total:
        c.wait(5_000_000_000)
        b = c.read(256)
        p = verify(b, expect)
        if p:
            problems.append(p)
            break
        expect += len(b)
        time.sleep(0.001)  # ~256 events/ms: far below the producer's rate
        c.commit(len(b))
    results.put(dict(last=expect - 1, problems=problems))
    c.detach()


def test_producer_waits_for_a_slow_consumer(ring_name):
    total = 50_000
    with EventRing.create(ring_name, 1024) as ring:
        ready, results = CTX.Queue(), CTX.Queue()
        p = CTX.Process(target=_slow_reader, args=(ring_name, total, ready, results), daemon=True)
        p.start()
        ready.get(timeout=30)
        t0 = time.perf_counter()
        _publish_random_batches(ring, total, seed=3)
        elapsed = time.perf_counter() - t0
        out = results.get(timeout=60)
        p.join(10)
        assert out["problems"] == [] and out["last"] == total
        st = ring.stats
        assert st["waits"] > 0 and st["wait_ns"] > 0
        assert st["wait_ns"] / 1e9 > 0.5 * elapsed  # the producer spent its time waiting, not overwriting
        assert st["sleeps"] > 0  # and it slept instead of spinning


def test_killed_consumer_resumes_from_its_cursor(ring_name):
    total = 400_000
    with EventRing.create(ring_name, 4096) as ring:
        progress, errors = CTX.Value("q", 0), CTX.Value("q", 0)
        ready, results = CTX.Queue(), CTX.Queue()
        a = CTX.Process(target=_reader, args=(ring_name, "worker", total, 1, 0.002, ready, results),
                        kwargs=dict(progress=progress, errors=errors), daemon=True)
        a.start()
        assert ready.get(timeout=30) == ("worker", 0)
        producer = threading.Thread(target=_publish_random_batches, args=(ring, total, 5))
        producer.start()
        deadline = time.monotonic() + 30
        while progress.value < 100_000 and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(a.pid, signal.SIGKILL)
        a.join(10)
        assert errors.value == 0
        st = {r["name"]: r for r in ring_status(ring_name)["consumers"]}
        dead = st["worker"]
        assert not dead["alive"] and dead["cursor"] >= 100_000
        time.sleep(0.05)
        assert ring.published <= dead["cursor"] + 4096  # the producer is held back by the dead consumer
        b = CTX.Process(target=_reader, args=(ring_name, "worker", total, 2, 0.0, ready, results), daemon=True)
        b.start()
        name, start = ready.get(timeout=30)
        assert start == dead["cursor"]  # resumed from its slot's cursor
        out = dict([results.get(timeout=60)])
        b.join(10)
        producer.join(10)
        r = out["worker"]
        assert r["problems"] == [] and r["start"] == dead["cursor"] and r["last"] == total


# ---------------------------------------------------------------------------
# errors and stale shared memory


def _write_header(path, *, magic=RING_MAGIC, version=LAYOUT_VERSION, slot=128, capacity=16,
                  pid=1, start=0, ring_layout=RING_LAYOUT, data_offset=DATA_OFFSET, size=None):
    raw = struct.pack("<qIIqqqII", magic, version, slot, capacity, pid, start, ring_layout, data_offset)
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate(DATA_OFFSET + capacity * slot if size is None else size)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(version=2), "ring {name} has layout version 2, this build reads version 1"),
        (dict(slot=64), "ring {name} has slot size 64 bytes, this build's events are 128 bytes"),
        (dict(magic=0x1234), "shared memory {name} is not an xos event ring"),
        (dict(magic=0), "ring {name} is not initialised"),
        (dict(capacity=12), "ring {name} has capacity 12, not a power of two"),
        (dict(ring_layout=9), "ring {name} has ring header layout 9"),
        (dict(size=DATA_OFFSET + 8 * 128), "ring {name} is 5120 bytes, a ring of capacity 16 is 6144"),
    ],
)
def test_attach_rejects_a_foreign_header(ring_name, fields, message):
    _write_header("/dev/shm" + ring_name, **fields)
    want = message.format(name=ring_name)
    with pytest.raises(RingLayoutError) as exc:
        RingConsumer.attach(ring_name, "a")
    assert want in str(exc.value)
    with pytest.raises(RingLayoutError):
        ring_status(ring_name)


def test_attach_to_a_missing_ring(ring_name):
    with pytest.raises(RingError, match=f"no event ring {ring_name}"):
        RingConsumer.attach(ring_name, "a")


def _create_and_die(name, q):
    r = EventRing.create(name, 16)
    r.publish_array(events(1, 3))
    q.put(os.getpid())
    q.close()
    q.join_thread()
    os._exit(0)  # no close: the file stays behind


def test_stale_ring_of_a_dead_creator_is_reported_and_replaced(ring_name, caplog):
    q = CTX.Queue()
    p = CTX.Process(target=_create_and_die, args=(ring_name, q))
    p.start()
    dead_pid = q.get(timeout=30)
    p.join(10)
    assert os.path.exists("/dev/shm" + ring_name)
    with caplog.at_level(logging.WARNING, logger="xos.ring"):
        ring = EventRing.create(ring_name, 32)
    assert f"dead pid {dead_pid}" in ring.stale_removed and f"dead pid {dead_pid}" in caplog.text
    assert ring.published == 0 and ring.capacity == 32  # fresh, not reused
    ring.close()


def test_stale_ring_of_a_reused_pid_is_replaced(ring_name):
    # our own pid, but a different process start time: the pid was reused
    _write_header("/dev/shm" + ring_name, pid=os.getpid(), start=proc_start(os.getpid()) + 12345)
    ring = EventRing.create(ring_name, 16)
    assert "dead pid" in ring.stale_removed
    ring.close()


def test_a_live_owner_refuses_a_second_create(ring_name):
    with EventRing.create(ring_name, 16):
        with pytest.raises(RingInUseError) as exc:
            EventRing.create(ring_name, 16)
        assert str(exc.value) == f"another engine (pid {os.getpid()}) is using shared memory /dev/shm{ring_name}"


def test_foreign_file_is_not_touched(ring_name):
    with open("/dev/shm" + ring_name, "wb") as f:
        f.write(b"somebody else's data" * 10)
    with pytest.raises(RingError, match="is not an xos event ring; not touching it"):
        EventRing.create(ring_name, 16)
    assert os.path.exists("/dev/shm" + ring_name)


def test_close_unlinks_and_wakes_waiting_consumers(ring_name):
    ring = EventRing.create(ring_name, 16)
    c = RingConsumer.attach(ring_name, "a")
    got = []
    t = threading.Thread(target=lambda: got.append(c.wait(-1)))
    t.start()
    time.sleep(0.05)
    ring.close()
    t.join(5)
    assert got == [0] and not t.is_alive()
    assert not os.path.exists("/dev/shm" + ring_name)
    c.detach()
    ring.close()  # idempotent
    ring2 = EventRing.create(ring_name, 16)
    ring2.close(unlink=False)
    assert os.path.exists("/dev/shm" + ring_name)


def test_reserved_consumer_keeps_events_until_it_attaches(ring_name):
    """A slot reserved at create holds the producer back until its worker attaches."""
    r = EventRing.create(ring_name, 64, consumers=("late",))
    try:
        r.publish_pattern(40)
        status = ring_status(ring_name)
        assert [(c["name"], c["cursor"], c["alive"]) for c in status["consumers"]] == [("late", 0, False)]
        c = RingConsumer.attach(ring_name, "late")
        got = c.read(100)
        assert [int(s) for s in got["seq"]] == list(range(1, 41))
        c.commit(len(got))
        c.detach()
    finally:
        r.close()


def test_take_reads_ahead_and_release_consumes(ring_name):
    r = EventRing.create(ring_name, 64)
    try:
        c = RingConsumer.attach(ring_name, "ckpt")
        r.publish_pattern(30)
        first = c.take(10)
        second = c.take(10)
        assert [int(s) for s in first["seq"]] == list(range(1, 11))
        assert [int(s) for s in second["seq"]] == list(range(11, 21))
        assert c.available() == 10 and c.cursor == 0  # taken, not consumed: the ring keeps them
        c.release_to(15)
        assert c.cursor == 15
        with pytest.raises(RingError, match="release_to"):
            c.release_to(25)  # not taken yet
        assert [int(s) for s in c.take(100)["seq"]] == list(range(21, 31))
        c.release_to(30)
        assert c.wait(0) == 0
        c.seek(16)  # a restart from a checkpoint: read again after event 15
        assert [int(s) for s in c.read(100)["seq"]] == list(range(16, 31))
        c.detach()
    finally:
        r.close()


def test_ring_can_start_after_events_published_elsewhere(ring_name):
    """An engine restarting from a snapshot continues the event numbering in a fresh ring."""
    r = EventRing.create(ring_name, 64, consumers=("w",), start=1000)
    try:
        c = RingConsumer.attach(ring_name, "w")
        assert c.cursor == 1000 and c.available() == 0
        events = np.zeros(5, dtype=EVENT_DTYPE)
        events["seq"] = np.arange(1001, 1006)
        r.publish_array(events)
        got = c.read(10)
        assert [int(s) for s in got["seq"]] == list(range(1001, 1006))
        c.commit(5)
        c.seek(1003)  # positions follow the event sequence
        assert [int(s) for s in c.read(10)["seq"]] == [1003, 1004, 1005]
        c.detach()
    finally:
        r.close()
    with pytest.raises(ValueError, match="start"):
        EventRing.create(ring_name + "x", 64, start=-1)


def test_a_napping_consumer_looks_again_unwoken_then_sleeps_until_woken_when_quiet(ring_name):
    """``nap_ns``: while events flow the consumer naps and looks again, never flagged for the
    producer's wake-up; once 50 ms have passed without events it sleeps on the futex and is woken
    as usual."""
    ring = EventRing.create(ring_name, 64)
    c = RingConsumer.attach(ring_name, "worker")
    c.nap_ns = 2_000_000
    got = []

    def wait_then_take():
        got.append((c.wait(5_000_000_000), time.monotonic()))
        c.commit(len(c.read(64)))

    try:
        ring.publish_pattern(4)
        wait_then_take()  # events seen: the napping window runs from here
        got.clear()
        t = threading.Thread(target=wait_then_take)
        t.start()
        time.sleep(0.01)  # within the napping window
        ring.publish_pattern(4)
        sent = time.monotonic()
        t.join(5)
        assert got[0][0] == 4 and got[0][1] - sent < 0.05
        assert ring.stats["wakes"] == 0 and c.stats["sleeps"] == 0  # looked, never woken
        got.clear()
        t = threading.Thread(target=wait_then_take)
        t.start()
        time.sleep(0.2)  # past the window: asleep on the futex
        ring.publish_pattern(4)
        sent = time.monotonic()
        t.join(5)
        assert got[0][0] == 4 and got[0][1] - sent < 0.05
        assert ring.stats["wakes"] == 1 and c.stats["sleeps"] >= 1
    finally:
        c.detach()
        ring.close()

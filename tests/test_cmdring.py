"""The command ring (gateway -> matcher, shared memory): order across processes and the wrap, whole forwards,
the doorbell, waiting for room, a matcher's restart and stop, and what it refuses."""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import select
import struct
import time

import numpy as np
import pytest

from engine.api import Leg, multi_leg_commands
from engine.cmdring import CommandRing, command_ring_status, doorbell_path
from engine.records import COMMAND_DTYPE, Cmd
from engine.ring import RingError, RingInUseError, RingLayoutError
from gateway.server import MatcherFeed

CTX = mp.get_context("fork")
_counter = itertools.count()


@pytest.fixture
def name():
    name = f"xos-cmdtest-{os.getpid()}-{next(_counter)}"
    yield name
    for path in (f"/dev/shm/{name}", doorbell_path(f"/dev/shm/{name}")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def commands(first: int, n: int) -> np.ndarray:
    c = np.zeros(n, COMMAND_DTYPE)
    c["kind"] = Cmd.PLACE
    c["id"] = np.arange(first, first + n)
    return c


def take(ring: CommandRing, max_n: int = 1 << 20) -> list[int]:
    batch = np.zeros(min(max_n, ring.capacity), COMMAND_DTYPE)
    n = ring.take_into(batch.view(np.uint8), 0, len(batch))
    return batch["id"][:n].tolist()


def rung(ring: CommandRing) -> bool:
    return bool(select.select([ring.fileno], [], [], 0)[0])


def test_commands_come_out_in_order_across_the_wrap(name):
    with CommandRing.consumer(name, 8) as matcher, CommandRing.producer(name) as gateway:
        assert gateway.publish(commands(1, 5))
        assert take(matcher, 3) == [1, 2, 3]
        assert gateway.publish(commands(6, 6))  # slots 5..7, then 0..2
        assert take(matcher, 2) == [4, 5] and matcher.available() == 6
        assert take(matcher) == [6, 7, 8, 9, 10, 11]  # joined across the end
        assert matcher.stats == dict(head=11, tail=11, full=0, doorbells=0)


def test_the_status_shows_cursors_lag_ends_and_counters(name):
    with CommandRing.consumer(name, 8) as matcher, CommandRing.producer(name) as gateway:
        matcher.arm()
        gateway.publish(commands(1, 5))
        matcher.disarm()
        take(matcher, 2)
        status = command_ring_status(name)
        assert status == dict(path=f"/dev/shm/{name}", capacity=8, closed=False, published=5, taken=2, lag=3,
                              producer_pid=os.getpid(), producer_alive=True, consumer_pid=os.getpid(),
                              consumer_alive=True, full=0, doorbells=1)
    with pytest.raises(RingError, match="does not exist"):
        command_ring_status(name)


def test_the_doorbell_rings_only_for_an_armed_consumer(name):
    with CommandRing.consumer(name, 16) as matcher, CommandRing.producer(name) as gateway:
        assert gateway.publish(commands(1, 1)) and not rung(matcher)  # not armed: no syscall, no byte
        assert not matcher.arm()  # commands wait: it must not sleep
        assert take(matcher) == [1]
        assert matcher.arm()
        assert gateway.publish(commands(2, 2)) and rung(matcher)
        assert gateway.publish(commands(4, 1))  # rung once: the flag was taken by the first publish
        matcher.disarm()
        assert not rung(matcher)  # the bytes were read off
        assert matcher.stats["doorbells"] == 1 and take(matcher) == [2, 3, 4]


def sleep_on_the_doorbell(ring: CommandRing, armed, woke) -> None:
    assert ring.arm()
    armed.set()
    select.select([ring.fileno], [], [], 10)
    ring.disarm()
    woke.send(take(ring))
    os._exit(0)


def test_the_doorbell_wakes_a_consumer_sleeping_in_another_process(name):
    matcher = CommandRing.consumer(name, 64)
    armed, (woke, told) = CTX.Event(), CTX.Pipe(duplex=False)
    child = CTX.Process(target=sleep_on_the_doorbell, args=(matcher, armed, told))
    child.start()
    try:
        assert armed.wait(10)
        with CommandRing.producer(name) as gateway:
            gateway.publish(commands(1, 3))
            assert woke.poll(10) and woke.recv() == [1, 2, 3] and gateway.stats["doorbells"] == 1
    finally:
        child.join(10)
        matcher.close()


def test_a_full_ring_refuses_a_forward_whole_and_the_feed_keeps_it_in_order(name):
    """``publish`` never waits (the gateway that would wait also routes the matcher's events): a forward without
    room is refused whole, and the gateway's feed keeps it, and what follows, until the matcher has taken."""
    with CommandRing.consumer(name, 8) as matcher:
        feed = MatcherFeed(name)
        feed.send(commands(1, 6))
        feed.send(commands(7, 4))  # 2 slots left: refused whole
        assert matcher.available() == 6 and feed.unsent == 4 and feed.ring.stats["full"] == 1
        feed.send(commands(11, 1))  # behind it, though it would fit
        assert matcher.available() == 6 and feed.unsent == 5
        assert not feed.flush()  # still no room for the first
        assert take(matcher, 3) == [1, 2, 3]
        assert feed.flush() and take(matcher) == list(range(4, 12))
        feed.close()


def test_a_closed_ring_refuses_and_the_feed_moves_to_the_next(name):
    matcher = CommandRing.consumer(name, 8)
    feed = MatcherFeed(name)
    feed.send(commands(1, 2))
    stale = feed.ring
    matcher.close()  # a matcher that stops
    assert not stale.publish(commands(3, 1)) and not os.path.exists(f"/dev/shm/{name}")
    feed.send(commands(9, 2))
    assert feed.unsent == 2  # no ring: kept, in order
    feed.send(commands(11, 1))
    assert feed.unsent == 3
    with CommandRing.consumer(name, 8) as restarted:
        assert restarted.replaced is None and restarted.available() == 0
        assert feed.flush() and take(restarted) == [9, 10, 11]
    feed.close()


def test_a_restarted_matcher_takes_over_the_ring_of_a_live_gateway(name):
    first = CommandRing.consumer(name, 16)
    gateway = CommandRing.producer(name)
    gateway.publish(commands(1, 4))
    assert take(first, 1) == [1]
    del first  # a matcher killed outright: no close(), the file stays
    again = CommandRing.consumer(name, 16)  # its successor
    assert again.replaced is None and take(again) == [2, 3, 4]  # what the gateway published meanwhile
    gateway.close()
    again.close()


def publish_and_exit(name: str) -> None:
    CommandRing.producer(name).publish(commands(1, 3))
    os._exit(0)


def test_the_commands_of_a_dead_gateway_are_dropped_with_the_ring(name):
    first = CommandRing.consumer(name, 16)
    child = CTX.Process(target=publish_and_exit, args=(name,))
    child.start()
    child.join(10)
    assert first.available() == 3
    del first  # the matcher dies too: a later engine must not run what no one waits for
    again = CommandRing.consumer(name, 16)
    assert "its producer is gone" in again.replaced and again.available() == 0
    again.close()


def test_a_capacity_change_replaces_the_ring_and_moves_the_gateway(name):
    first = CommandRing.consumer(name, 16)
    feed = MatcherFeed(name)
    feed.send(commands(1, 1))
    assert take(first) == [1]
    del first
    bigger = CommandRing.consumer(name, 32)
    assert "capacity 16, 32 wanted" in bigger.replaced
    feed.send(commands(2, 1))  # the old ring was marked closed before it was unlinked
    assert take(bigger) == [2] and bigger.capacity == 32
    feed.close()
    bigger.close()


def attach_and_wait(name: str, ready, release) -> None:
    CommandRing.producer(name)
    ready.set()
    release.wait(10)
    os._exit(0)


def test_a_second_live_producer_or_consumer_is_refused(name):
    matcher = CommandRing.consumer(name, 16)
    ready, release = CTX.Event(), CTX.Event()
    child = CTX.Process(target=attach_and_wait, args=(name, ready, release))
    child.start()
    try:
        assert ready.wait(10)
        with pytest.raises(RingInUseError, match=f"another gateway \\(pid {child.pid}\\)"):
            CommandRing.producer(name)
    finally:
        release.set()
        child.join(10)
    gateway = CommandRing.producer(name)  # its producer gone: ours (alive) now
    fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
    os.pwrite(fd, struct.pack("<qq", 1, 0), 136)  # consumer_pid: init, alive and not us
    os.close(fd)
    with pytest.raises(RingInUseError, match="another matcher \\(pid 1\\)"):
        CommandRing.consumer(name, 16)
    gateway.close()
    matcher.close()


def test_bad_rings_and_bad_publishes_are_refused_naming_what_is_wrong(name):
    with pytest.raises(RingError, match="does not exist: is the matcher running"):
        CommandRing.producer(name)
    with open(f"/dev/shm/{name}", "wb") as f:
        f.write(b"\x01" * 8192)
    with pytest.raises(RingLayoutError, match="is not an xos command ring"):
        CommandRing.producer(name)
    with CommandRing.consumer(name, 4) as matcher:  # the stray file is replaced
        assert "is not an xos command ring" in matcher.replaced
        with CommandRing.producer(name) as gateway:
            with pytest.raises(ValueError, match="5 commands do not fit command ring .* of 4"):
                gateway.publish(commands(1, 5))
            with pytest.raises(TypeError, match="COMMAND_DTYPE"):
                gateway.publish(np.zeros(2, np.int64))
            with pytest.raises(RingError, match="the consumer's end cannot publish"):
                matcher.publish(commands(1, 1))
            with pytest.raises(ValueError, match="3 commands after the first 2 do not fit 256 bytes"):
                matcher.take_into(np.zeros(4, COMMAND_DTYPE).view(np.uint8), 2, 3)
    with pytest.raises(ValueError, match="power of two"):
        CommandRing.consumer(name, 12)
    assert not os.path.exists(f"/dev/shm/{name}") and not os.path.exists(doorbell_path(f"/dev/shm/{name}"))


def produce(name: str, seed: int, total: int) -> None:
    rng = np.random.default_rng(seed)
    ring = CommandRing.producer(name)
    sent = 0
    while sent < total:
        n = min(int(rng.integers(1, 200)), total - sent)
        while not ring.publish(commands(sent + 1, n)):  # full: the consumer is behind
            time.sleep(0.0001)
        sent += n
    os._exit(0)


@pytest.mark.parametrize("seed", [1, 2])
def test_every_command_arrives_once_in_order_from_another_process(name, seed):
    """A producer process publishes forwards of random sizes into a small ring (again and again while it is full)
    while this one takes random amounts, sleeping on the doorbell when it finds nothing."""
    rng = np.random.default_rng(seed + 100)
    total = 200_000
    matcher = CommandRing.consumer(name, 256)
    child = CTX.Process(target=produce, args=(name, seed, total))
    child.start()
    got = np.zeros(total, np.int64)
    n = 0
    deadline = time.monotonic() + 60
    while n < total and time.monotonic() < deadline:
        if not matcher.available() and matcher.arm():
            select.select([matcher.fileno], [], [], 0.1)
            matcher.disarm()
        ids = take(matcher, int(rng.integers(1, 300)))
        got[n:n + len(ids)] = ids
        n += len(ids)
    child.join(10)
    matcher.close()
    assert n == total and np.array_equal(got, np.arange(1, total + 1))


def test_the_matchers_intake_never_cuts_a_multi_leg_order_at_the_batch_edge_or_the_wrap(name):
    """``MatcherStage.take_input`` over a real command ring (16 slots), only the intake: a batch that would end
    inside a multi-leg order ends before it, also where the order wraps round the ring's end."""
    import zmq

    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind("inproc://cmdring-intake")
    stage = intake_only(pull, CommandRing.consumer(name, 16), 8)
    gateway = CommandRing.producer(name)
    try:
        unit = multi_leg_commands(1, 1, [Leg(1, 0, 100, 1, 1), Leg(2, 1, 50, 1, 2)])  # 3 records
        places = commands(1, 16)
        for round_ in range(2):  # the second time the unit is slots 14, 15 and 0
            gateway.publish(np.concatenate([places[:6], unit, places[6:8]]))
            gateway.publish(places[8:11])
            assert stage.take_input(1000) == 6  # records 6..8 are the unit: the batch ends before it
            assert stage.take_input(1000) == 8  # the unit, the forward's last 2, 3 of the next
            assert stage.batch["kind"][:3].tolist() == [Cmd.MULTI_LEG, Cmd.LEG, Cmd.LEG]
            assert stage.batch["id"][3:8].tolist() == [7, 8, 9, 10, 11]
            assert stage.take_input(0) == 0
            if round_ == 0:
                gateway.publish(places[:10])  # the ring's tail moves on to slot 8
                assert stage.take_input(0) == 8 and stage.take_input(0) == 2
    finally:
        gateway.close()
        stage.command_ring.close()
        pull.close(0)
        ctx.term()


def test_the_matchers_intake_looks_at_zeromq_unless_its_poll_found_it_empty(name):
    """A batch that only the doorbell woke does not drain the empty ZeroMQ input (a recv there costs a lone
    order 8 us); the next message is still taken at the next poll, and a command ring that keeps the matcher
    busy (no poll at all) never starves ZeroMQ."""
    import threading

    import zmq

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://cmdring-quiet")
    push.connect("inproc://cmdring-quiet")
    stage = intake_only(pull, CommandRing.consumer(name, 16), 8)
    gateway = CommandRing.producer(name)
    drains = []
    drain = stage.drain_input
    stage.drain_input = lambda n: drains.append(n) or drain(n)
    try:
        later = threading.Timer(0.05, gateway.publish, (commands(1, 2),))  # rings while the matcher sleeps
        later.start()
        assert stage.take_input(2000) == 2 and stage.zmq_quiet and drains == []
        later.join()
        push.send(commands(3, 1).tobytes())
        assert stage.take_input(2000) == 1 and stage.batch["id"][0] == 3 and len(drains) == 1
        for k in range(3):  # the ring has commands each time: no poll, and ZeroMQ is drained every batch
            gateway.publish(commands(10 + k, 1))
            push.send(commands(20 + k, 1).tobytes())
            time.sleep(0.01)
            assert stage.take_input(2000) == 2 and sorted(stage.batch["id"][:2].tolist()) == [10 + k, 20 + k]
        assert len(drains) == 4
    finally:
        gateway.close()
        stage.command_ring.close()
        pull.close(0)
        push.close(0)
        ctx.term()


def intake_only(pull, ring: CommandRing, batch: int):
    """A ``MatcherStage`` with only its intake (no journal, engine or event ring): ``pull`` (ZeroMQ) and ``ring``."""
    import zmq

    from engine.process import MatcherStage

    stage = MatcherStage.__new__(MatcherStage)
    stage.input, stage.batch, stage.pending, stage.malformed = pull, np.zeros(batch, dtype=COMMAND_DTYPE), [], 0
    stage.batch_bytes, stage.gateway_first, stage.command_ring = stage.batch.view(np.uint8), False, ring
    stage.input_polled = [(pull, zmq.POLLIN), (ring.fileno, zmq.POLLIN)]
    return stage

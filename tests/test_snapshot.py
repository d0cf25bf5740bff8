"""Snapshot files: exact round trip, verification, fallback past damage, pruning, the writer thread."""
from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest

from engine import snapshot as snap
from engine.matcher import Engine
from engine.state import state_hash
from generators import ENGINE_KWARGS, StreamGenerator, run_stream


def states(seed: int, n_snapshots: int, chunk: int = 3_000):
    """An engine run with a state exported every ``chunk`` commands."""
    gen = StreamGenerator(seed)
    e = Engine(**ENGINE_KWARGS)
    out = []
    for _ in range(n_snapshots):
        for _ in run_stream(e, gen, chunk):
            pass
        out.append((e.export_state(), state_hash(e)))
    return out


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert np.array_equal(a[name], b[name]), name


def test_round_trip_is_exact(tmp_path):
    (state, digest), = states(1, 1, 10_000)
    path = snap.write_snapshot(tmp_path, state)
    assert path.name == f"snapshot-{int(state['counters'][1]):020d}.xsnap"
    head, loaded = snap.read_snapshot(path)
    assert_same_state(state, loaded)
    assert (head.cmd_seq, head.event_seq, head.state_version) == tuple(int(x) for x in state["counters"][[1, 2, 0]])
    assert head.comp_len == os.path.getsize(path) - snap.HEADER_SIZE
    assert state_hash(Engine.from_state(loaded, **ENGINE_KWARGS)) == digest
    got, got_path, problems = snap.load_newest(tmp_path)
    assert got_path == path and problems == []
    assert_same_state(state, got)
    assert not list(tmp_path.glob("*.tmp"))


def test_empty_directory_and_missing_directory(tmp_path):
    assert snap.load_newest(tmp_path) == (None, None, [])
    assert snap.load_newest(tmp_path / "nope") == (None, None, [])


def test_corrupt_newest_falls_back_to_previous(tmp_path):
    (s1, h1), (s2, h2) = states(2, 2)
    p1 = snap.write_snapshot(tmp_path, s1)
    p2 = snap.write_snapshot(tmp_path, s2)
    good = p2.read_bytes()
    size = len(good)
    rng = random.Random(7)
    offsets = sorted(set(list(range(0, snap.HEADER_SIZE)) + [rng.randrange(snap.HEADER_SIZE, size) for _ in range(60)]
                         + [snap.HEADER_SIZE, size - 1]))
    for off in offsets:
        bad = bytearray(good)
        bad[off] ^= 1 << rng.randrange(8)
        p2.write_bytes(bytes(bad))
        state, path, problems = snap.load_newest(tmp_path)
        assert path == p1, off
        assert len(problems) == 1 and str(p2) in problems[0], (off, problems)
        assert_same_state(state, s1)
    for cut in (0, 10, snap.HEADER_SIZE - 1, snap.HEADER_SIZE, snap.HEADER_SIZE + 1, size // 2, size - 1):
        p2.write_bytes(good[:cut])
        state, path, problems = snap.load_newest(tmp_path)
        assert path == p1 and len(problems) == 1, (cut, problems)
    p2.write_bytes(good + b"\0")
    assert snap.load_newest(tmp_path)[1] == p1
    p2.write_bytes(good)
    assert snap.load_newest(tmp_path)[1] == p2
    # both bad: nothing, two reports
    p1.write_bytes(p1.read_bytes()[:-3])
    p2.write_bytes(good[:100])
    state, path, problems = snap.load_newest(tmp_path)
    assert state is None and path is None and len(problems) == 2


def test_problems_are_named(tmp_path):
    (s1, _), = states(3, 1, 2_000)
    p = snap.write_snapshot(tmp_path, s1)
    good = p.read_bytes()

    def problem(data: bytes) -> str:
        p.write_bytes(data)
        state, path, problems = snap.load_newest(tmp_path)
        assert state is None
        return problems[0]

    assert "magic" in problem(b"NOTSNAP!" + good[8:])
    assert "header CRC" in problem(good[:20] + bytes([good[20] ^ 4]) + good[21:])
    assert "truncated" in problem(good[:-5])
    assert "payload CRC" in problem(good[:-1] + bytes([good[-1] ^ 0x80]))
    assert "shorter than" in problem(good[:30])
    # a valid file of another state version is refused, not misread
    bad = dict(s1, counters=s1["counters"].copy())
    bad["counters"][0] = 99
    snap.write_snapshot(tmp_path, bad)
    state, path, problems = snap.load_newest(tmp_path)
    assert state is None and "state version 99" in problems[0]
    # a good file renamed to another sequence
    p.unlink()
    (tmp_path / snap.snapshot_name(5)).write_bytes(good)
    assert "named for cmd_seq 5" in snap.load_newest(tmp_path)[2][0]


def test_max_event_seq_and_cmd_seq(tmp_path):
    sts = states(4, 3, 2_000)
    paths = [snap.write_snapshot(tmp_path, s) for s, _ in sts]
    ev = [int(s["counters"][2]) for s, _ in sts]
    cm = [int(s["counters"][1]) for s, _ in sts]
    assert snap.load_newest(tmp_path, max_event_seq=ev[2])[1] == paths[2]
    assert snap.load_newest(tmp_path, max_event_seq=ev[2] - 1)[1] == paths[1]
    assert snap.load_newest(tmp_path, max_event_seq=ev[0])[1] == paths[0]
    assert snap.load_newest(tmp_path, max_event_seq=ev[0] - 1)[1] is None
    assert snap.load_newest(tmp_path, max_cmd_seq=cm[1] + 1)[1] == paths[1]


def test_writer_keeps_newest_three(tmp_path):
    sts = states(5, 6, 1_500)
    with snap.SnapshotWriter(tmp_path, keep=3) as w:
        for s, _ in sts:
            w.submit(s)
            w.wait()
        stats = w.stats()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [snap.snapshot_name(int(s["counters"][1])) for s, _ in sts[-3:]]
    assert stats["written"] == 6 and stats["failures"] == 0 and stats["skipped"] == 0
    assert stats["last_ns"] > 0 and stats["max_ns"] >= stats["last_ns"] and stats["last_bytes"] > snap.HEADER_SIZE
    state, path, _ = snap.load_newest(tmp_path)
    assert_same_state(state, sts[-1][0])


def test_writer_submit_returns_at_once_and_coalesces(tmp_path):
    sts = states(6, 4, 2_000)
    w = snap.SnapshotWriter(tmp_path, keep=10)
    t0 = time.perf_counter()
    for s, _ in sts:
        w.submit(s)
    submit_s = time.perf_counter() - t0
    assert w.wait(timeout=60)
    w.close()
    st = w.stats()
    assert st["submitted"] == 4 and st["written"] + st["skipped"] == 4 and st["written"] >= 1
    assert submit_s < 0.05
    # whatever was written, the newest state is on disk
    assert_same_state(snap.load_newest(tmp_path)[0], sts[-1][0])
    with pytest.raises(RuntimeError):
        w.submit(sts[0][0])


def test_writer_failure_is_counted_not_raised(tmp_path):
    w = snap.SnapshotWriter(tmp_path / "d", keep=2)
    w.submit({"counters": np.array([1, 1, 1, 0, 0], dtype=np.int64), "junk": np.array([object()])})
    w.wait()
    assert w.failures == 1 and "object" in w.last_error
    w.close()


@pytest.mark.parametrize("scale", ["small", pytest.param("full", marks=pytest.mark.slow)])
def test_config_b_scale_snapshot(tmp_path, scale):
    """A config B state (1,000 markets, many accounts, resting orders) round-trips; prints timings.
    ``full`` is config B itself: 100,000 resting orders, 100,000 accounts."""
    from bench.orders import CONFIGS, generate

    size = dict(orders=20_000, accounts=20_000) if scale == "small" else {}
    w = generate(CONFIGS["B"].replace(commands=2_000, **size))
    e = Engine(**w.engine_kwargs)
    for part in (w.setup, w.prefill, w.stream):
        e.process(part)
    export_s = []
    for _ in range(5):
        t0 = time.perf_counter()
        state = e.export_state()
        export_s.append(time.perf_counter() - t0)
    export_s = sorted(export_s)[2]
    t0 = time.perf_counter()
    path = snap.write_snapshot(tmp_path, state)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loaded, got, problems = snap.load_newest(tmp_path)
    load_s = time.perf_counter() - t0
    assert got == path and not problems
    assert_same_state(state, loaded)
    restored = Engine.from_state(loaded, **w.engine_kwargs)
    assert restored.open_orders == e.open_orders and state_hash(restored) == state_hash(e)
    print(f"\nconfig B ({scale}): {e.open_orders} orders, {len(state['accounts'])} accounts: export (median of 5) "
          f"{export_s * 1e3:.1f} ms, write {write_s * 1e3:.1f} ms ({os.path.getsize(path) / 1e6:.1f} MB), "
          f"load {load_s * 1e3:.1f} ms")

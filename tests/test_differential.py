"""Differential tests: the Cython engine and the reference model, fed the same adversarial command
streams (tests/generators.py), must emit identical event arrays and end in identical states."""
from __future__ import annotations

import numpy as np
import pytest

from engine.reference import ReferenceEngine
from engine.records import COMMAND_DTYPE, EVENT_DTYPE, Cmd, Ev
from engine.state import canonical_state, state_hash

from generators import (ENGINE_KWARGS, SMALL_ENGINE_KWARGS, StreamGenerator, check_batch_book_levels,
                        same_but_book_levels)

try:
    from engine.matcher import Engine
except ImportError:  # pragma: no cover - conftest already fails the run when the build is missing
    Engine = None

pytestmark = pytest.mark.skipif(Engine is None, reason="engine.matcher is not built")


def _record(rec, dtype) -> str:
    return "{" + ", ".join(f"{name}={rec[name].item()}" for name in dtype.names) + "}"


def _kind_name(kind: int, enum) -> str:
    try:
        return enum(kind).name
    except ValueError:
        return str(kind)


def describe_mismatch(cmds: np.ndarray, got: np.ndarray, want: np.ndarray, first_cmd: int) -> str:
    """The first differing event of both engines and the command it answers."""
    n = min(len(got), len(want))
    i = next((k for k in range(n) if got[k].tobytes() != want[k].tobytes()), n)
    lines = [f"event arrays differ: cython {len(got)} events, reference {len(want)} events; first difference at {i}"]
    for name, arr in (("cython", got), ("reference", want)):
        if i < len(arr):
            ev = arr[i]
            lines.append(f"  {name:9s} [{_kind_name(int(ev['kind']), Ev)}] {_record(ev, EVENT_DTYPE)}")
            if i < len(got) and i < len(want):
                fields = [f for f in EVENT_DTYPE.names if got[i][f] != want[i][f]]
                if name == "reference":
                    lines.append(f"  differing fields: {fields}")
        else:
            lines.append(f"  {name:9s} (no event)")
    ref = want if i < len(want) else got
    cmd_seq = int(ref[min(i, len(ref) - 1)]["cmd_seq"]) if len(ref) else first_cmd
    k = cmd_seq - first_cmd
    if 0 <= k < len(cmds):
        lines.append(f"  command #{cmd_seq} [{_kind_name(int(cmds[k]['kind']), Cmd)}] {_record(cmds[k], COMMAND_DTYPE)}")
    # the events of that command, both sides
    for name, arr in (("cython", got), ("reference", want)):
        sel = arr[arr["cmd_seq"] == cmd_seq]
        lines.append(f"  {name} events of command #{cmd_seq}:")
        lines += [f"    [{_kind_name(int(ev['kind']), Ev)}] {_record(ev, EVENT_DTYPE)}" for ev in sel[:12]]
    return "\n".join(lines)


STATE_PARTS = ("assets", "markets", "books", "balances", "fees", "last prices", "venues", "counters")


def describe_state_diff(cy, ref) -> str:
    """The first differing part of the two canonical states, down to the first differing item."""
    a, b = canonical_state(cy), canonical_state(ref)
    for name, pa, pb in zip(STATE_PARTS, a, b):
        if pa == pb:
            continue
        if name == "books":
            for book_a, book_b in zip(pa, pb):
                for oa, ob in zip(book_a, book_b):
                    if oa != ob:
                        return f"books differ:\n  cython    {oa}\n  reference {ob}"
                if len(book_a) != len(book_b):
                    return f"books differ in length: cython {len(book_a)}, reference {len(book_b)}"
        if name in ("balances", "books"):
            for ia, ib in zip(pa, pb):
                if ia != ib:
                    return f"{name} differ:\n  cython    {ia}\n  reference {ib}"
        return f"{name} differ:\n  cython    {pa}\n  reference {pb}"
    return "states equal"


def run_differential(seed: int, n_commands: int, *, chunk: int = 200, engine_kwargs=None, state_every: int = 25,
                     dump_dir=None, generator=StreamGenerator, **gen_opts) -> dict:
    """Feed one generated stream to both engines chunk by chunk; assert equal events and states."""
    kwargs = dict(engine_kwargs or ENGINE_KWARGS)
    cy = Engine(**kwargs)
    ref = ReferenceEngine(**kwargs)
    gen = generator(seed, limits={k: v for k, v in kwargs.items() if k != "max_venues"}, **gen_opts)
    history: list[np.ndarray] = []
    done = chunks = 0
    stats = {"events": 0, "fills": 0, "rejects": 0}
    while done < n_commands:
        cmds = gen.next_chunk(min(chunk, n_commands - done))
        first_cmd = done + 1
        got = cy.process(cmds)
        want = ref.process(cmds)
        history.append(cmds)
        if got.dtype != EVENT_DTYPE or not np.array_equal(got, want):
            msg = describe_mismatch(cmds, got, want, first_cmd)
            if dump_dir is not None:
                path = dump_dir / f"stream-seed{seed}.npy"
                np.save(path, np.concatenate(history))
                msg += f"\n  commands up to here saved to {path} (kwargs {kwargs})"
            pytest.fail(f"seed {seed}, chunk at command {first_cmd}:\n{msg}", pytrace=False)
        gen.observe(cmds, want)
        done += len(cmds)
        chunks += 1
        stats["events"] += len(want)
        stats["fills"] += int(np.count_nonzero(want["kind"] == Ev.FILL))
        stats["rejects"] += int(np.count_nonzero(want["kind"] == Ev.REJECTED))
        if chunks % state_every == 0:
            if canonical_state(cy) != canonical_state(ref):
                pytest.fail(f"seed {seed}: states differ after command {done}: {describe_state_diff(cy, ref)}",
                            pytrace=False)
    if canonical_state(cy) != canonical_state(ref):
        pytest.fail(f"seed {seed}: final states differ: {describe_state_diff(cy, ref)}", pytrace=False)
    assert state_hash(cy) == state_hash(ref)
    for name in ("cmd_seq", "event_seq", "last_order_id", "now", "open_orders"):
        assert getattr(cy, name) == getattr(ref, name), name
    assert cy.cmd_seq == done
    assert stats["fills"] > 0 and stats["rejects"] > 0
    return stats


# about 200,000 commands in the default run, over several seeds and engine sizes
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_differential_stream(seed, tmp_path):
    run_differential(seed, 35_000, dump_dir=tmp_path)


def test_differential_deep_books(tmp_path):
    """Thousands of resting orders over many price levels (level arrays and hash tables grow)."""
    run_differential(10, 30_000, depth=25, max_open=4000, dump_dir=tmp_path)


@pytest.mark.parametrize("seed", [5, 6])
def test_differential_small_tables(seed, tmp_path):
    """Order and account tables that fill up: ORDER_CAPACITY and ACCOUNT_CAPACITY paths."""
    run_differential(seed, 10_000, engine_kwargs=SMALL_ENGINE_KWARGS, dump_dir=tmp_path)


def test_differential_one_command_per_batch(tmp_path):
    run_differential(7, 4_000, chunk=1, dump_dir=tmp_path)


def test_differential_large_batch(tmp_path):
    """One big batch: the event buffer must grow inside a single process() call."""
    run_differential(8, 20_000, chunk=20_000, dump_dir=tmp_path)


def test_batch_boundaries_only_move_the_book_levels():
    """The same stream in one batch and in batches of random sizes: the same events but the BookLevels, which
    end each batch (one per level it changed, its aggregate then), and the same state but the event count."""
    ref = ReferenceEngine(**ENGINE_KWARGS)
    gen = StreamGenerator(9, limits=dict(ENGINE_KWARGS))
    parts = []
    for _ in range(20):
        cmds = gen.next_chunk(200)
        gen.observe(cmds, ref.process(cmds))
        parts.append(cmds)
    stream = np.concatenate(parts)
    whole_engine = Engine(**ENGINE_KWARGS)
    whole = whole_engine.process(stream)
    check_batch_book_levels(whole_engine, whole)
    split_engine = Engine(**ENGINE_KWARGS)
    rng = np.random.default_rng(9)
    cuts = np.sort(rng.choice(np.arange(1, len(stream)), size=60, replace=False))
    pieces = []
    for p in np.split(stream, cuts) + [np.zeros(0, dtype=COMMAND_DTYPE)]:
        pieces.append(split_engine.process(p))
        check_batch_book_levels(split_engine, pieces[-1])
    split = np.concatenate(pieces)
    assert same_but_book_levels(whole, split)
    assert np.count_nonzero(split["kind"] == Ev.BOOK_LEVEL) > np.count_nonzero(whole["kind"] == Ev.BOOK_LEVEL)
    for events, engine in ((whole, whole_engine), (split, split_engine)):
        assert np.array_equal(events["seq"], np.arange(1, len(events) + 1)) and engine.event_seq == len(events)
    assert canonical_state(whole_engine)[:-1] == canonical_state(split_engine)[:-1]
    assert whole_engine.cmd_seq == split_engine.cmd_seq


@pytest.mark.slow
def test_differential_million(tmp_path):
    total = 0
    for seed, n in ((101, 400_000), (102, 400_000), (103, 200_000)):
        run_differential(seed, n, chunk=500, state_every=100, dump_dir=tmp_path)
        total += n
    assert total == 1_000_000


@pytest.mark.slow
@pytest.mark.parametrize("seed", [111, 112])
def test_differential_small_tables_long(seed, tmp_path):
    run_differential(seed, 100_000, engine_kwargs=SMALL_ENGINE_KWARGS, dump_dir=tmp_path)


@pytest.mark.slow
def test_differential_deep_books_long(tmp_path):
    run_differential(120, 300_000, depth=40, max_open=12_000, chunk=500, state_every=100, dump_dir=tmp_path)

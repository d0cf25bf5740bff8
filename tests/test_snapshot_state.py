"""Exporting the engine's state and importing it into a fresh engine loses nothing."""
from __future__ import annotations

import numpy as np
import pytest

from engine.matcher import Engine
from engine.state import canonical_state
from generators import ENGINE_KWARGS, SMALL_ENGINE_KWARGS, StreamGenerator, run_stream


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_export_import_then_continue_identically(seed):
    gen = StreamGenerator(seed)
    live = Engine(**ENGINE_KWARGS)
    for _ in run_stream(live, gen, 15_000):
        pass
    restored = Engine.from_state(live.export_state(), **ENGINE_KWARGS)
    assert canonical_state(restored) == canonical_state(live)
    assert restored.open_orders == live.open_orders
    # the same further batches (expiries, STP, amends, mass cancels ...) give the same events
    chunks = list(run_stream(live, gen, 10_000))
    expected = np.concatenate([e for _, e in chunks])
    assert np.array_equal(np.concatenate([restored.process(c) for c, _ in chunks]), expected)
    assert canonical_state(restored) == canonical_state(live)


def test_export_of_an_import_is_the_same_state():
    gen = StreamGenerator(4)
    live = Engine(**ENGINE_KWARGS)
    for _ in run_stream(live, gen, 8_000):
        pass
    state = live.export_state()
    again = Engine.from_state(state, **ENGINE_KWARGS).export_state()
    assert state.keys() == again.keys()
    for name in state:
        assert np.array_equal(state[name], again[name]), name


def test_import_needs_a_fresh_engine_and_room():
    gen = StreamGenerator(5)
    live = Engine(**SMALL_ENGINE_KWARGS)
    for _ in run_stream(live, gen, 3_000):
        pass
    state = live.export_state()
    with pytest.raises(ValueError, match="fresh"):
        live.core.import_state(state)
    bad = dict(state, counters=state["counters"].copy())
    bad["counters"][0] = 99
    with pytest.raises(ValueError, match="state version"):
        Engine.from_state(bad, **SMALL_ENGINE_KWARGS)
    assert len(state["orders"]) > 1
    with pytest.raises(ValueError, match="holds"):
        Engine.from_state(state, max_orders=1, max_accounts=1 << 10)


def test_export_into_kept_buffers_equals_a_fresh_export():
    gen = StreamGenerator(6)
    live = Engine(**ENGINE_KWARGS)
    for _ in run_stream(live, gen, 4_000):
        pass
    first = live.export_state(reuse_buffers=True)
    kept_orders = first["orders"].base
    for _ in run_stream(live, gen, 2_000):
        pass
    again = live.export_state(reuse_buffers=True)
    fresh = live.export_state()
    for name in fresh:
        assert np.array_equal(again[name], fresh[name]), name
    if len(again["orders"]) <= len(kept_orders):
        assert again["orders"].base is kept_orders  # the same memory, refilled
    assert canonical_state(Engine.from_state(again, **ENGINE_KWARGS)) == canonical_state(live)

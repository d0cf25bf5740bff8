"""The Cython engine's batch entry points agree with each other."""
from __future__ import annotations

import numpy as np
import pytest

from engine.matcher import Engine
from engine.records import EVENT_DTYPE
from generators import ENGINE_KWARGS, StreamGenerator


def stream(n=3_000, seed=8):
    gen = StreamGenerator(seed)
    shadow = Engine(**ENGINE_KWARGS)
    chunks = []
    while sum(len(c) for c in chunks) < n:
        cmds = gen.next_chunk(200)
        gen.observe(cmds, shadow.process(cmds))
        chunks.append(cmds)
    return np.concatenate(chunks)


def test_process_into_count_timed_and_process_agree():
    cmds = stream()
    expected = Engine(**ENGINE_KWARGS).process(cmds)
    into = Engine(**ENGINE_KWARGS)
    out = np.zeros(len(expected) + 10, EVENT_DTYPE)
    assert into.process_into(cmds, out) == len(expected)
    assert np.array_equal(out[: len(expected)], expected)
    counted = Engine(**ENGINE_KWARGS)
    assert counted.process_count(cmds) == len(expected)
    assert np.array_equal(counted.last_events(), expected)
    timed = Engine(**ENGINE_KWARGS)
    events, durations = timed.process_timed(cmds)
    assert np.array_equal(events, expected) and len(durations) == len(cmds) and (durations >= 0).all()


def test_process_into_a_small_buffer_loses_nothing():
    cmds = stream(1_000)
    expected = Engine(**ENGINE_KWARGS).process(cmds)
    e = Engine(**ENGINE_KWARGS)
    with pytest.raises(ValueError, match="last_events"):
        e.process_into(cmds, np.zeros(3, EVENT_DTYPE))
    assert np.array_equal(e.last_events(), expected)
    with pytest.raises(TypeError, match="EVENT_DTYPE"):
        e.process_into(cmds[:0], np.zeros(3, np.int64))

"""Differential tests with venues: the Cython engine and the reference model, fed streams spread
over many venues with mixed policies (``generators.VenueStreamGenerator``), emit byte-identical
events and end in identical states (venue table, offers, allow-lists, regions included)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.records import Ev

from generators import ENGINE_KWARGS, SMALL_ENGINE_KWARGS, VenueStreamGenerator
from test_differential import run_differential


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_venue_stream(seed, tmp_path):
    stats = run_differential(seed, 25_000, dump_dir=tmp_path, generator=VenueStreamGenerator)
    assert stats["fills"] > 500


@pytest.mark.parametrize("seed", [7, 8])
def test_venue_stream_with_per_venue_mass_cancels(seed, tmp_path):
    stats = run_differential(seed, 15_000, dump_dir=tmp_path, generator=VenueStreamGenerator, venue_mass_cancels=True)
    assert stats["fills"] > 300


def test_venue_stream_many_venues_small_limit(tmp_path):
    """40 venues on an engine that holds 48, small order and account tables."""
    run_differential(4, 15_000, engine_kwargs=dict(SMALL_ENGINE_KWARGS, max_accounts=64, max_venues=48),
                     dump_dir=tmp_path, generator=VenueStreamGenerator, n_venues=40, venue_share=0.15)


def test_venue_stream_deep_books(tmp_path):
    run_differential(5, 20_000, depth=20, max_open=3000, dump_dir=tmp_path, generator=VenueStreamGenerator,
                     venue_share=0.03)


def test_venue_stream_covers_cross_venue_trading():
    """The stream is worth its name: trades across venues, passed-over makers, releases, slashes."""
    from engine.matcher import Engine

    e = Engine(**ENGINE_KWARGS)
    gen = VenueStreamGenerator(6, limits=dict(ENGINE_KWARGS))
    events = []
    for _ in range(40):
        cmds = gen.next_chunk(250)
        ev = e.process(cmds)
        gen.observe(cmds, ev)
        events.append(ev)
    ev = np.concatenate(events)
    fills = ev[ev["kind"] == Ev.FILL]
    assert np.count_nonzero(fills["venue"] != fills["client_id"]) > 50  # taker and maker venues differ
    transfers = ev[ev["kind"] == Ev.VENUE_TRANSFER]
    assert set(transfers["reason"].tolist()) >= {1, 2, 3, 4}  # lock, release, slash to both


@pytest.mark.slow
@pytest.mark.parametrize("seed", [101, 102])
def test_venue_stream_long(seed, tmp_path):
    run_differential(seed, 200_000, chunk=500, state_every=100, dump_dir=tmp_path, generator=VenueStreamGenerator)

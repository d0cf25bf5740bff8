"""Outcome markets in generated streams (``generators.OutcomeStreamGenerator``: spot, perps, venues, oracles and
outcome markets mixed): the Cython engine and the reference event for event and state for state, and the
outcome invariants after every chunk."""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from engine.codes import ResultCode as RC
from engine.records import Ev, MarketKind, OutcomeChange, OutcomeState
from engine.reference import ReferenceEngine

from generators import ENGINE_KWARGS, SMALL_ENGINE_KWARGS, OutcomeStreamGenerator, run_stream
from test_differential import run_differential


def check_stream_invariants(e, net: dict[int, int], loans: bool = False) -> None:
    """Per outcome market YES = NO (with the event's) = collateral / payout; per asset, balances + fee pools +
    venue pools and stakes + outcome collateral - event advances - signed perpetual entry values =
    deposits - withdrawals; nothing negative outside a leveraged quote (no leverage here), but free balances with
    ``loans`` (the unified account borrows against collateral)."""
    markets = {m.market_id: m for m in e.markets()}
    for oc in e.outcomes():
        m = markets[oc.market]
        sizes = [p.size for p in e.positions() if p.market == oc.market]
        yes = sum(s for s in sizes if s > 0)
        assert yes == -sum(s for s in sizes if s < 0) + oc.event_no, oc
        assert oc.collateral == oc.payout * (yes // m.lot_size) and oc.event_no >= 0, oc
        if oc.state == OutcomeState.FINAL:
            assert yes == 0 and oc.collateral == 0 and e.l3(oc.market) == [], oc
    totals: dict[int, int] = defaultdict(int)
    for account in e.accounts():
        for asset, (free, held) in e.balances(account).items():
            assert (free >= 0 or loans) and held >= 0, (account, asset, free, held)
            totals[asset] += free + held
    for v in e.venues():
        for asset, amount in e.venue_fees(v.venue_id).items():
            totals[asset] += amount
        totals[e.venue_params().stake_asset] += v.stake + v.unbonding
    for oc in e.outcomes():
        totals[markets[oc.market].quote] += oc.collateral
    for ev in e.outcome_events():
        assert ev.advance >= 0, ev
        quote = markets[next(oc.market for oc in e.outcomes() if oc.event == ev.event)].quote
        totals[quote] -= ev.advance
    for p in e.positions():
        m = markets[p.market]
        if m.kind == MarketKind.PERPETUAL:
            totals[m.quote] -= p.entry_value if p.size > 0 else -p.entry_value
    for a in e.assets():
        assert totals[a.asset_id] + e.fees(a.asset_id) == net.get(a.asset_id, 0), a


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_outcome_stream_invariants_after_every_chunk(seed):
    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = OutcomeStreamGenerator(seed, limits=dict(ENGINE_KWARGS))
    net: dict[int, int] = defaultdict(int)
    seen: Counter = Counter()
    for cmds, events in run_stream(e, gen, 10_000, chunk=100):
        balance = events[events["kind"] == Ev.BALANCE]
        for asset, amount in zip(balance["market"].tolist(), balance["qty"].tolist()):
            net[asset] += amount
        check_stream_invariants(e, net)
        for ev in events[events["kind"] == Ev.OUTCOME_POSITION]:
            seen[OutcomeChange(int(ev["reason"])).name] += 1
        for ev in events[events["kind"] == Ev.OUTCOME_STATUS]:
            seen[OutcomeState(int(ev["reason"])).name] += 1
        for code in events[events["kind"] == Ev.REJECTED]["code"].tolist():
            if 220 <= code <= 229 or 450 <= code <= 459:
                seen[RC(code).name] += 1
    # the stream reaches fills, converts and settlements, resolutions and their refusals
    assert seen["FILL"] > 100 and seen["CONVERT"] > 3 and seen["SETTLE"] > 3, seen
    assert seen["FINAL"] + seen["OVERTURNED"] >= 2 and seen["NOT_RESOLVER"] > 0, seen
    assert seen["OUTCOME_RESOLVED"] > 0 and seen["OUTCOME_PRICE_OUT_OF_RANGE"] > 0, seen


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_outcome_stream_differential(seed, tmp_path):
    stats = run_differential(seed, 12_000, dump_dir=tmp_path, generator=OutcomeStreamGenerator)
    assert stats["fills"] > 500


def test_outcome_stream_small_tables(tmp_path):
    run_differential(5, 6_000, engine_kwargs=dict(SMALL_ENGINE_KWARGS, max_venues=16), dump_dir=tmp_path,
                     generator=OutcomeStreamGenerator)

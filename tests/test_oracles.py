"""Oracles in the matcher (issue 8): OracleConfig and OraclePrice, staleness on the engine clock,
what a stale oracle halts (new risk in that venue and market only), snapshots.  Every test runs
against the Cython engine and the reference model (``engine_cls``)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.records import Cmd, Ev
from engine.state import canonical_state
from test_venues import ADMIN, BTC, BUY, MKT, OP1, OP2, SELL, T1, T2, USD, codes, make, ok, state, two_venues

FEED, FEED_ACCOUNT = 7, 9001
SECOND = 10**9
TIMEOUT = 5 * SECOND
MKT2 = 2  # a second market (BTC/USD, tick 10) that no oracle covers


def world(engine_cls):
    """Venues 1 and 2 on MKT and MKT2; venue 1's MKT oracle takes feed 7 from account 9001."""
    e = two_venues(engine_cls)
    ok(e.add_market(MKT2, BTC, USD, tick_size=10, lot_size=1, min_size=1))
    ok(e.offer_market(OP1, 1, MKT2))
    ok(e.offer_market(OP2, 2, MKT2))
    ok(e.configure_oracle(OP1, 1, MKT, feed_id=FEED, feed_account=FEED_ACCOUNT, timeout_ns=TIMEOUT, ts=SECOND))
    return e


def price(e, p, source_ts, ts, venue=1, market=MKT, **kw):
    kw = {"feed_id": FEED, "sources": 3, **kw}
    return e.oracle_price(kw.pop("account", FEED_ACCOUNT), venue, market, p, source_ts=source_ts, ts=ts, **kw)


def of_kind(events, kind):
    return [e for e in events if e["kind"] == kind]


def test_config_is_echoed_and_a_new_oracle_is_fresh_for_its_timeout(engine_cls):
    e = world(engine_cls)
    o = e.oracle(1, MKT)
    assert (o.feed_id, o.feed_account, o.timeout, o.price, o.updated_at, o.stale) == (FEED, FEED_ACCOUNT, TIMEOUT,
                                                                                      0, SECOND, False)
    assert e.oracle(2, MKT) is None
    ok(e.place(T1, MKT, BUY, 100, 1, 1, venue=1, ts=SECOND + TIMEOUT - 1))
    events = e.place(T1, MKT, BUY, 100, 1, 2, venue=1, ts=SECOND + TIMEOUT)
    assert [int(ev["kind"]) for ev in events] == [Ev.ORACLE_STATUS, Ev.REJECTED]
    status = events[0]
    assert (status["venue"], status["market"], status["qty"], status["client_id"], status["account"]) == (
        1, MKT, 1, FEED, FEED_ACCOUNT)
    assert codes(events) == [RC.ORACLE_STALE]
    assert e.oracle(1, MKT).stale


def test_an_accepted_price_is_kept_and_echoed(engine_cls):
    e = world(engine_cls)
    events = ok(price(e, 250, source_ts=1_000, ts=2 * SECOND))
    (ev,) = of_kind(events, Ev.ORACLE)
    assert (ev["flags"], ev["venue"], ev["market"], ev["price"], ev["qty"], ev["client_id"], ev["account"],
            ev["remaining"]) == (Cmd.ORACLE_PRICE, 1, MKT, 250, 3, FEED, FEED_ACCOUNT, 1_000)
    o = e.oracle(1, MKT)
    assert (o.price, o.source_ts, o.sources, o.updated_at, o.stale) == (250, 1_000, 3, 2 * SECOND, False)


BAD_PRICES = [
    ("unknown venue", dict(venue=9), RC.UNKNOWN_VENUE),
    ("unknown market", dict(market=15), RC.UNKNOWN_MARKET),
    ("not configured (other venue)", dict(venue=2), RC.ORACLE_NOT_CONFIGURED),
    ("not configured (other market)", dict(market=MKT2, p=250), RC.ORACLE_NOT_CONFIGURED),
    ("wrong feed", dict(feed_id=8), RC.WRONG_FEED),
    ("wrong account", dict(account=T1), RC.WRONG_FEED_ACCOUNT),
    ("zero price", dict(p=0), RC.PRICE_NOT_POSITIVE),
    ("negative price", dict(p=-5), RC.PRICE_NOT_POSITIVE),
    ("too large", dict(p=(1 << 62) + 1), RC.PRICE_TOO_LARGE),
    ("no sources", dict(sources=0), RC.INVALID_SOURCE_COUNT),
    ("same source time", dict(source_ts=1_000), RC.ORACLE_TIME_NOT_NEWER),
    ("older source time", dict(source_ts=999), RC.ORACLE_TIME_NOT_NEWER),
]


@pytest.mark.parametrize("what, change, code", BAD_PRICES, ids=[b[0] for b in BAD_PRICES])
def test_bad_price_is_rejected_with_its_code_and_changes_nothing(engine_cls, what, change, code):
    e = world(engine_cls)
    ok(price(e, 250, source_ts=1_000, ts=2 * SECOND))
    before = state(e)
    args = {"p": 260, "source_ts": 2_000, "ts": 3 * SECOND, **change}
    events = price(e, args.pop("p"), **args)
    assert codes(events) == [code], RC(codes(events)[0]).name if codes(events) else "accepted"
    assert state(e) == before


def test_a_price_off_the_markets_tick_is_rejected(engine_cls):
    e = world(engine_cls)
    ok(e.configure_oracle(OP1, 1, MKT2, feed_id=FEED, feed_account=FEED_ACCOUNT, timeout_ns=TIMEOUT))
    assert codes(price(e, 255, source_ts=1, ts=2 * SECOND, market=MKT2)) == [RC.PRICE_OFF_TICK]
    ok(price(e, 250, source_ts=1, ts=2 * SECOND, market=MKT2))


BAD_CONFIGS = [
    ("not the operator", dict(account=OP2), RC.NOT_VENUE_OPERATOR),
    ("no sender", dict(account=0), RC.INVALID_ACCOUNT_ID),
    ("unknown venue", dict(venue=9), RC.UNKNOWN_VENUE),
    ("unknown market", dict(market=15), RC.UNKNOWN_MARKET),
    ("feed id", dict(feed_id=0), RC.INVALID_FEED_ID),
    ("feed account", dict(feed_account=-1), RC.INVALID_FEED_ACCOUNT),
    ("timeout", dict(timeout_ns=0), RC.INVALID_ORACLE_TIMEOUT),
]


@pytest.mark.parametrize("what, change, code", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_is_rejected_with_its_code_and_changes_nothing(engine_cls, what, change, code):
    e = world(engine_cls)
    before = state(e)
    args = {"account": OP1, "venue": 1, "market": MKT2, "feed_id": FEED, "feed_account": FEED_ACCOUNT,
            "timeout_ns": TIMEOUT, **change}
    events = e.configure_oracle(args.pop("account"), args.pop("venue"), args.pop("market"), **args)
    assert codes(events) == [code]
    assert state(e) == before


def test_config_of_a_market_the_venue_does_not_offer_or_a_retired_venue(engine_cls):
    e = world(engine_cls)
    ok(e.add_market(3, BTC, USD, tick_size=1, lot_size=1, min_size=1))
    assert codes(e.configure_oracle(OP1, 1, 3, feed_id=FEED, feed_account=FEED_ACCOUNT,
                                    timeout_ns=TIMEOUT)) == [RC.MARKET_NOT_OFFERED]
    ok(e.set_venue_status(OP2, 2, 4))
    assert codes(e.configure_oracle(ADMIN, 2, MKT, feed_id=FEED, feed_account=FEED_ACCOUNT,
                                    timeout_ns=TIMEOUT)) == [RC.VENUE_RETIRED]


def test_the_admin_configures_venue_zero_and_any_venue(engine_cls):
    e = world(engine_cls)
    assert codes(e.configure_oracle(OP1, 0, MKT, feed_id=1, feed_account=FEED_ACCOUNT,
                                    timeout_ns=TIMEOUT)) == [RC.NOT_VENUE_OPERATOR]
    ok(e.configure_oracle(ADMIN, 0, MKT, feed_id=1, feed_account=FEED_ACCOUNT, timeout_ns=TIMEOUT))
    ok(e.configure_oracle(ADMIN, 1, MKT, feed_id=2, feed_account=FEED_ACCOUNT, timeout_ns=TIMEOUT))
    assert e.oracle(1, MKT).feed_id == 2
    assert codes(price(e, 250, source_ts=1, ts=2 * SECOND)) == [RC.WRONG_FEED]  # feed 7 no longer updates it


def test_stale_halts_new_risk_keeps_cancels_and_size_reductions_and_a_fresh_price_lifts_it(engine_cls):
    e = world(engine_cls)
    ok(price(e, 100, source_ts=1, ts=2 * SECOND))
    ok(e.place(T1, MKT, BUY, 100, 10, 1, venue=1, ts=3 * SECOND))
    ok(e.place(T1, MKT, BUY, 99, 10, 2, venue=1, ts=3 * SECOND))
    stale_at = 2 * SECOND + TIMEOUT
    events = e.place(T2, MKT, SELL, 100, 1, 1, venue=1, ts=stale_at)
    assert [int(ev["kind"]) for ev in events] == [Ev.ORACLE_STATUS, Ev.REJECTED]
    assert codes(events) == [RC.ORACLE_STALE]
    # risk-increasing amends are refused: a larger size, a new price
    assert codes(e.amend(T1, client_id=1, qty=20, ts=stale_at)) == [RC.ORACLE_STALE]
    assert codes(e.amend(T1, client_id=1, price=101, qty=10, ts=stale_at)) == [RC.ORACLE_STALE]
    # a size reduction and a cancel go on
    ok(e.amend(T1, client_id=1, qty=5, ts=stale_at))
    assert e.order(1).remaining == 5
    ok(e.cancel(T1, client_id=2, ts=stale_at))
    ok(e.mass_cancel(T1, MKT, ts=stale_at))
    # a fresh price lifts it: the update's echo, then the status
    events = ok(price(e, 101, source_ts=2, ts=stale_at + 1))
    assert [int(ev["kind"]) for ev in events] == [Ev.ORACLE, Ev.ORACLE_STATUS]
    assert events[1]["qty"] == 0 and events[1]["price"] == 101 and events[1]["remaining"] == stale_at + 1
    ok(e.place(T1, MKT, BUY, 100, 10, 3, venue=1, ts=stale_at + 2))
    # and it goes stale again a timeout after that price
    assert codes(e.place(T1, MKT, BUY, 100, 10, 4, venue=1, ts=stale_at + 1 + TIMEOUT)) == [RC.ORACLE_STALE]


def test_another_venues_orders_and_other_markets_are_untouched(engine_cls):
    e = world(engine_cls)
    ok(e.place(T2, MKT, SELL, 100, 5, 1, venue=2, ts=2 * SECOND))  # resting on venue 2
    late = SECOND + TIMEOUT + SECOND
    assert codes(e.place(T1, MKT, BUY, 100, 1, 1, venue=1, ts=late)) == [RC.ORACLE_STALE]
    assert e.oracle(1, MKT).stale
    # venue 2's orders in the same market trade on (here with venue 0's taker, which no oracle covers)
    events = ok(e.place(T1, MKT, BUY, 100, 2, 2, venue=0, ts=late))
    assert len(of_kind(events, Ev.FILL)) == 1
    ok(e.place(T2, MKT, BUY, 90, 1, 2, venue=2, ts=late))
    ok(e.amend(T2, client_id=2, price=91, qty=3, ts=late))
    # and venue 1's orders in another market
    ok(e.place(T1, MKT2, BUY, 100, 1, 3, venue=1, ts=late))


def test_staleness_is_checked_on_the_engine_clock_by_any_command(engine_cls):
    e = world(engine_cls)
    ok(e.configure_oracle(OP2, 2, MKT, feed_id=FEED, feed_account=FEED_ACCOUNT, timeout_ns=2 * TIMEOUT, ts=SECOND))
    # a deposit at a late clock marks both oracles stale, in configuration order, before the deposit
    events = ok(e.deposit(T1, USD, 1, ts=SECOND + 2 * TIMEOUT))
    statuses = of_kind(events, Ev.ORACLE_STATUS)
    assert [(int(s["venue"]), int(s["qty"])) for s in statuses] == [(1, 1), (2, 1)]
    assert int(events[-1]["kind"]) == Ev.BALANCE
    # nothing is emitted twice
    assert not of_kind(ok(e.deposit(T1, USD, 1, ts=SECOND + 3 * TIMEOUT)), Ev.ORACLE_STATUS)


def test_reconfiguring_keeps_the_price_and_the_source_time(engine_cls):
    e = world(engine_cls)
    ok(price(e, 100, source_ts=50, ts=2 * SECOND))
    ok(e.configure_oracle(OP1, 1, MKT, feed_id=FEED, feed_account=FEED_ACCOUNT, timeout_ns=SECOND, ts=2 * SECOND))
    o = e.oracle(1, MKT)
    assert (o.price, o.source_ts, o.timeout, o.updated_at) == (100, 50, SECOND, 2 * SECOND)
    assert codes(price(e, 100, source_ts=50, ts=2 * SECOND)) == [RC.ORACLE_TIME_NOT_NEWER]
    # the shorter timeout counts from the last price
    assert codes(e.place(T1, MKT, BUY, 100, 1, 1, venue=1, ts=3 * SECOND)) == [RC.ORACLE_STALE]


def test_resolve_takes_only_outcome_markets(engine_cls):  # Resolve itself: tests/test_outcome.py
    e = world(engine_cls)
    assert codes(e.submit(Cmd.RESOLVE, venue=1, market=MKT, account=ADMIN, qty=1)) == [RC.INVALID_MARKET_KIND]


def test_snapshot_round_trip_keeps_oracles_and_their_deadlines():
    from engine.matcher import Engine
    from engine.reference import ReferenceEngine

    e = world(Engine)
    ref = world(ReferenceEngine)
    for x in (e, ref):
        ok(x.configure_oracle(OP1, 1, MKT2, feed_id=FEED + 1, feed_account=FEED_ACCOUNT, timeout_ns=TIMEOUT))
        ok(price(x, 100, source_ts=5, ts=2 * SECOND))
        x.deposit(T1, USD, 1, ts=SECOND + TIMEOUT)  # MKT2's oracle goes stale
    restored = Engine.from_state(e.export_state(), max_orders=1000, max_accounts=100, max_markets=16, max_assets=8,
                                 max_venues=16)
    assert canonical_state(restored) == canonical_state(e)
    assert [o.stale for o in restored.oracles()] == [False, True]
    late = 2 * SECOND + TIMEOUT
    for x in (restored, ref):
        events = x.place(T1, MKT, BUY, 100, 1, 1, venue=1, ts=late)
        assert codes(events) == [RC.ORACLE_STALE]
        assert codes(price(x, 100, source_ts=1, ts=late, market=MKT2, feed_id=FEED + 1)) == []
        ok(x.place(T1, MKT2, BUY, 100, 1, 2, venue=1, ts=late))
    assert canonical_state(restored) == canonical_state(ref)


def test_a_version_3_state_loads_without_oracles():
    from engine.matcher import Engine

    e = make(Engine)
    state3 = e.export_state()
    state3.pop("oracles")
    state3["counters"] = state3["counters"].copy()
    state3["counters"][0] = 3
    restored = Engine.from_state(state3, max_orders=1000, max_accounts=100, max_markets=16, max_assets=8,
                                 max_venues=16)
    assert restored.oracles() == [] and canonical_state(restored) == canonical_state(e)


def test_oracle_codes_are_in_their_bands():
    assert RC.ORACLE_STALE // 100 == 2
    for code in (RC.INVALID_FEED_ID, RC.INVALID_FEED_ACCOUNT, RC.INVALID_ORACLE_TIMEOUT, RC.ORACLE_NOT_CONFIGURED,
                 RC.WRONG_FEED, RC.WRONG_FEED_ACCOUNT, RC.ORACLE_TIME_NOT_NEWER, RC.INVALID_SOURCE_COUNT):
        assert code // 100 == 4
    assert np.unique([int(c) for c in RC]).size == len(RC)


def test_the_default_config_gives_each_fed_market_its_oracle(engine_cls):
    """The bootstrap configures the oracle of each [[feeds.markets]] on the market's listing venue
    (where the feed sends), and the feed's prices are taken; the other venues' orders are not gated."""
    from engine.config import load
    from engine.process import bootstrap_commands

    cfg = load()
    e = engine_cls(max_orders=1000, max_accounts=1000, max_markets=64, max_assets=64, max_venues=16)
    ok(e.process(bootstrap_commands(cfg)))
    venue_of = {m.id: m.venue for m in cfg.markets}
    want = [(venue_of[f.market], f.market, f.id, cfg.feeds.account, int(f.oracle_timeout_s * 1e9))
            for f in cfg.feeds.markets]
    assert [(o.venue, o.market, o.feed_id, o.feed_account, o.timeout) for o in e.oracles()] == want
    f = cfg.feeds.markets[0]
    tick = next(m.tick_size for m in cfg.markets if m.id == f.market)
    ok(e.oracle_price(cfg.feeds.account, venue_of[f.market], f.market, 500 * tick, feed_id=f.id, source_ts=1, ts=1))
    assert e.oracle(venue_of[f.market], f.market).price == 500 * tick


def test_the_feeds_aggregated_prices_are_taken_by_the_matcher(engine_cls):
    """The real feed path (simulated sources, checks, median rounds) produces OraclePrice commands
    the bootstrap's oracles accept, every round, both engines; a stale oracle comes back fresh."""
    from engine.config import loads
    from engine.process import bootstrap_commands
    from feeds.aggregate import Aggregator
    from feeds.sources import Rejects, SimulatedSource
    from test_feeds import feeds_toml

    cfg = loads(feeds_toml(interval=0.1, stale=1.0))
    e = engine_cls(max_orders=100, max_accounts=100, max_markets=16, max_assets=8, max_venues=4)
    ok(e.process(bootstrap_commands(cfg)))
    agg = Aggregator(cfg)
    sources = [SimulatedSource(name, {1: 100.0}, seed=i, step_s=0.1, vol_bps=5.0) for i, name in enumerate("abc")]
    t0 = 1_800_000_000 * SECOND
    accepted = 0
    for step in range(20):
        now = t0 + step * SECOND // 10
        for s in sources:
            agg.ingest(s.name, Rejects(), s.poll(now), now)
        commands = agg.aggregate(now)
        commands["ts"] = now if step != 10 else now + 10 * SECOND  # one long gap: the oracle goes stale
        events = ok(e.process(commands))
        accepted += len(of_kind(events, Ev.ORACLE))
        if step == 10:
            assert [int(x["qty"]) for x in of_kind(events, Ev.ORACLE_STATUS)] == [1, 0]
    assert accepted >= 19 and e.oracle(0, 1).sources >= 2 and not e.oracle(0, 1).stale

"""Each venue's own risk parameters, halts and breaker settings in the matcher (issue 7, "risk groups"):
VenueMarketRisk (band, open-interest cap, breaker), VenueMarketHalt / Resume; both engines (``engine_cls``),
every reject code with the state unchanged, venue isolation in a shared book, the exact open interest, the
differential stream (``generators.VenueRiskStreamGenerator``) and the snapshot round trip."""
from __future__ import annotations

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.matcher import Engine
from engine.records import Cmd, Ev, MarketKind, Tif, pack_breaker_windows
from engine.snapshot import STATE_KEYS
from engine.state import canonical_state
from engine.views import VenueMarketRiskView

from generators import ENGINE_KWARGS, VenueRiskStreamGenerator, run_stream
from test_differential import run_differential
from test_venues import ADMIN, BTC, MKT, OP1, OP2, T1, T2, T3, USD, codes, ok, state, two_venues

PERP = 5
UNOFFERED = 7  # listed by venue 0 only
BUY, SELL = 0, 1
RISK = -1001  # the risk worker's account


def world(engine_cls):
    """``two_venues`` (venue 1 permissionless; venue 2 allow-list: T2 and T3) plus a perpetual market PERP
    offered by both, a spot market only venue 0 offers, and a retired venue 3."""
    e = two_venues(engine_cls)
    ok(e.add_market(PERP, BTC, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL))
    ok(e.offer_market(OP1, 1, PERP))
    ok(e.offer_market(OP2, 2, PERP))
    ok(e.add_market(UNOFFERED, BTC, USD, tick_size=1, lot_size=1, min_size=1))
    ok(e.allow(OP2, 2, T3))
    ok(e.launch_venue(T3, 3, 1_000, insurance_account=903))
    ok(e.offer_market(T3, 3, PERP))
    ok(e.set_venue_status(T3, 3, 4))  # retired
    return e


VENUE_OF = {T1: 1, T2: 2, T3: 1}  # T3 is also allowed on venue 2


def trade(e, maker, taker, side, price, qty, cid, market=PERP, maker_venue=None, taker_venue=None):
    """maker rests ``qty`` at ``price``, taker takes it with an IOC (each through its own venue by default)."""
    ok(e.place(maker, market, 1 - side, price, qty, cid, venue=maker_venue or VENUE_OF[maker]))
    return ok(e.place(taker, market, side, price, qty, cid, tif=Tif.IOC, venue=taker_venue or VENUE_OF[taker]))


def risk(e, venue=1, market=PERP):
    return e.venue_market_risk(venue, market)


# ------------------------------------------------------------------ VenueMarketRisk

def test_venue_market_risk_is_stored_echoed_and_shown(engine_cls):
    e = world(engine_cls)
    assert risk(e) is None
    ev = ok(e.set_venue_risk(OP1, 1, PERP, band_bps=300, oi_cap=50, breaker_move_bps=700, breaker_window_ms=2_000,
                             breaker_cooldown_ms=30_000))
    assert [int(k) for k in ev["kind"]] == [Ev.VENUE]
    assert (ev[0]["flags"], ev[0]["venue"], ev[0]["market"], ev[0]["account"], ev[0]["price"], ev[0]["qty"],
            ev[0]["client_id"], ev[0]["remaining"]) == (Cmd.VENUE_MARKET_RISK, 1, PERP, OP1, 300, 50, 700,
                                                        pack_breaker_windows(2_000, 30_000))
    assert risk(e) == VenueMarketRiskView(1, PERP, 300, 50, 700, 2_000, 30_000, False, 0, 0, 0, 0)
    ok(e.set_venue_risk(ADMIN, 1, MKT, band_bps=100))  # the admin may too; spot: band and breaker only
    assert [v[:2] for v in e.venue_market_risks()] == [(1, MKT), (1, PERP)]
    ok(e.set_venue_risk(OP1, 1, PERP))  # all 0: the market's band, no cap, no breaker
    assert risk(e) == VenueMarketRiskView(1, PERP, 0, 0, 0, 0, 0, False, 0, 0, 0, 0)


def risk_cmd(account=OP1, venue=1, market=PERP, band=0, cap=0, move=0, windows=0):
    return lambda e: e.submit(Cmd.VENUE_MARKET_RISK, account=account, venue=venue, market=market, price=band, qty=cap,
                              id=move, aux=windows)


def halt_cmd(account=OP1, venue=1, market=PERP, kind=Cmd.VENUE_MARKET_HALT):
    return lambda e: e.submit(kind, account=account, venue=venue, market=market)


BAD_VENUE_RISK = [
    ("risk: account 0", risk_cmd(account=0), RC.INVALID_ACCOUNT_ID),
    ("risk: unknown venue", risk_cmd(venue=9), RC.UNKNOWN_VENUE),
    ("risk: not the operator", risk_cmd(account=OP2), RC.NOT_VENUE_OPERATOR),
    ("risk: retired venue", risk_cmd(account=T3, venue=3), RC.VENUE_RETIRED),
    ("risk: unknown market", risk_cmd(market=9), RC.UNKNOWN_MARKET),
    ("risk: market not offered", risk_cmd(market=UNOFFERED), RC.MARKET_NOT_OFFERED),
    ("risk: band negative", risk_cmd(band=-1), RC.INVALID_VENUE_BAND),
    ("risk: band above 10000", risk_cmd(band=10_001), RC.INVALID_VENUE_BAND),
    ("risk: cap negative", risk_cmd(cap=-1), RC.INVALID_OI_CAP),
    ("risk: cap on a spot market", risk_cmd(market=MKT, cap=10), RC.INVALID_OI_CAP),
    ("risk: breaker move negative", risk_cmd(move=-1, windows=pack_breaker_windows(10, 0)), RC.INVALID_BREAKER),
    ("risk: breaker move above 10000", risk_cmd(move=10_001, windows=pack_breaker_windows(10, 0)),
     RC.INVALID_BREAKER),
    ("risk: breaker window 0", risk_cmd(move=100, windows=pack_breaker_windows(0, 10)), RC.INVALID_BREAKER),
    ("risk: breaker off with a window", risk_cmd(windows=pack_breaker_windows(10, 0)), RC.INVALID_BREAKER),
    ("halt: account 0", halt_cmd(account=0), RC.INVALID_ACCOUNT_ID),
    ("halt: unknown venue", halt_cmd(venue=9), RC.UNKNOWN_VENUE),
    ("halt: not the operator", halt_cmd(account=T1), RC.NOT_VENUE_OPERATOR),
    ("halt: unknown market", halt_cmd(market=9), RC.UNKNOWN_MARKET),
    ("halt: market not offered", halt_cmd(market=UNOFFERED), RC.MARKET_NOT_OFFERED),
    ("resume: not halted", halt_cmd(kind=Cmd.VENUE_MARKET_RESUME), RC.MARKET_STATUS_UNCHANGED),
    ("halt: already halted", halt_cmd(venue=2, account=OP2), RC.MARKET_STATUS_UNCHANGED),
    ("place: venue halted", lambda e: e.place(T2, PERP, BUY, 100, 5, 9, venue=2), RC.VENUE_MARKET_HALTED),
    ("amend: venue halted, new price", lambda e: e.amend(T2, price=101, qty=5, client_id=1), RC.VENUE_MARKET_HALTED),
    ("amend: venue halted, larger", lambda e: e.amend(T2, qty=6, client_id=1), RC.VENUE_MARKET_HALTED),
    ("place: outside the venue's band", lambda e: e.place(T1, PERP, BUY, 106, 1, 9, venue=1),
     RC.PRICE_OUTSIDE_BAND),
    ("amend: outside the venue's band", lambda e: e.amend(T1, price=94, qty=2, client_id=1), RC.PRICE_OUTSIDE_BAND),
    ("place: open-interest cap", lambda e: e.place(T1, PERP, BUY, 100, 10, 9, venue=1), RC.VENUE_OI_CAP_REACHED),
    ("amend: open-interest cap", lambda e: e.amend(T1, qty=12, client_id=1), RC.VENUE_OI_CAP_REACHED),
]


def bad_world(engine_cls):
    """Venue 1 in PERP: band 5 %, cap 12 (1 long from T1's fill, T1's 2 resting on the buy side:
    room for 9 more buys);
    venue 2 halted in PERP with T2's order resting."""
    e = world(engine_cls)
    trade(e, T2, T1, BUY, 100, 1, 7)  # T1 long 1 through venue 1 (its buy opened 1), last trade 100
    ok(e.set_venue_risk(OP1, 1, PERP, band_bps=500, oi_cap=12))
    ok(e.place(T1, PERP, BUY, 96, 2, 1, venue=1))
    ok(e.place(T2, PERP, SELL, 104, 5, 1, venue=2))
    ok(e.venue_halt(OP2, 2, PERP))
    assert risk(e) == VenueMarketRiskView(1, PERP, 500, 12, 0, 0, 0, False, 1, 0, 2, 0)
    return e


@pytest.mark.parametrize("what, command, code", BAD_VENUE_RISK, ids=[b[0] for b in BAD_VENUE_RISK])
def test_bad_venue_risk_input_is_rejected_with_its_code_and_changes_nothing(engine_cls, what, command, code):
    e = bad_world(engine_cls)
    before = state(e)
    ev = command(e)
    assert [int(k) for k in ev["kind"]] == [Ev.REJECTED] and codes(ev) == [code], what
    assert state(e) == before


def test_every_venue_risk_code_is_covered():
    covered = {code for _, _, code in BAD_VENUE_RISK}
    assert {c for c in RC if 442 <= c <= 449} <= covered


# ------------------------------------------------------------------ band, cap and halt

def test_the_venues_band_replaces_the_markets_for_its_orders_only(engine_cls):
    e = world(engine_cls)
    ok(e.set_venue_risk(ADMIN, 0, MKT, band_bps=0))  # venue 0 keeps the market's band (none here)
    trade(e, T1, T2, BUY, 1_000, 1, 1, market=MKT)
    ok(e.set_venue_risk(OP1, 1, MKT, band_bps=100))  # 1 % for venue 1's orders
    assert codes(e.place(T1, MKT, BUY, 1_011, 1, 2, venue=1)) == [RC.PRICE_OUTSIDE_BAND]
    ok(e.place(T2, MKT, BUY, 1_011, 1, 2, venue=2))  # venue 2: no band
    ok(e.place(T1, MKT, BUY, 1_010, 1, 3, venue=1))  # exactly 1 %: inside
    ok(e.amend(T1, qty=1, client_id=3))  # no new price: no band check
    assert codes(e.amend(T1, price=989, qty=1, client_id=3)) == [RC.PRICE_OUTSIDE_BAND]


def test_a_wider_venue_band_replaces_a_tighter_market_band(engine_cls):
    e = world(engine_cls)
    ok(e.add_market(6, BTC, USD, tick_size=1, lot_size=1, min_size=1, band_bps=100))
    ok(e.offer_market(OP1, 1, 6))
    ok(e.offer_market(OP2, 2, 6))
    trade(e, T1, T2, BUY, 1_000, 1, 1, market=6)
    ok(e.set_venue_risk(OP1, 1, 6, band_bps=2_000))
    ok(e.place(T1, 6, BUY, 1_150, 1, 2, venue=1))
    assert codes(e.place(T2, 6, BUY, 1_150, 1, 3, venue=2)) == [RC.PRICE_OUTSIDE_BAND]


def test_open_interest_is_what_the_venues_fills_opened_less_what_they_closed(engine_cls):
    e = world(engine_cls)
    trade(e, T2, T1, BUY, 100, 4, 1)  # T1 (venue 1) opens long 4; T2 (venue 2) opens short 4
    assert risk(e)[8:] == (4, 0, 0, 0) and risk(e, 2)[8:] == (0, 4, 0, 0)
    trade(e, T2, T1, SELL, 100, 6, 2)  # T1 closes 4 long and opens 2 short; T2 closes its 4 short, opens 2 long
    assert risk(e)[8:] == (0, 2, 0, 0) and risk(e, 2)[8:] == (2, 0, 0, 0)
    trade(e, T3, T2, BUY, 100, 2, 3)  # T3 (venue 1) opens short 2, T2 (venue 2) long 4
    assert risk(e)[8:] == (0, 4, 0, 0) and risk(e, 2)[8:] == (4, 0, 0, 0)
    # T3 closes its short through venue 2: venue 2's short side drops below 0 (it closed what venue 1 opened)
    trade(e, T2, T3, BUY, 100, 2, 4, taker_venue=2)
    assert risk(e)[8:] == (0, 4, 0, 0) and risk(e, 2)[8:] == (2, -2, 0, 0)
    # per market the venues' sides sum to the accounts' long (and short) sizes
    sizes = [p.size for p in e.positions() if p.market == PERP]
    rows = [r for r in e.venue_market_risks() if r.market == PERP]
    assert sum(r.long_oi for r in rows) == sum(s for s in sizes if s > 0) == sum(r.short_oi for r in rows) == 2


def test_the_cap_counts_open_orders_and_reduce_only_orders_pass(engine_cls):
    e = world(engine_cls)
    ok(e.set_venue_risk(OP1, 1, PERP, oi_cap=10))
    ok(e.place(T1, PERP, BUY, 99, 6, 1, venue=1))  # rests: open buy 6
    assert codes(e.place(T3, PERP, BUY, 98, 5, 2, venue=1)) == [RC.VENUE_OI_CAP_REACHED]
    ok(e.place(T3, PERP, SELL, 101, 10, 2, venue=1))  # the sell side has its own room
    ok(e.place(T2, PERP, SELL, 99, 6, 3, tif=Tif.IOC, venue=2))  # fills T1: long OI 6, open buy 0
    assert risk(e)[8:] == (6, 0, 0, 10)
    assert codes(e.place(T1, PERP, BUY, 99, 5, 4, venue=1)) == [RC.VENUE_OI_CAP_REACHED]
    ok(e.place(T1, PERP, BUY, 99, 4, 4, venue=1))
    ok(e.cancel(T1, client_id=4))  # a cancel gives the room back
    ok(e.set_venue_risk(OP1, 1, PERP, oi_cap=3))  # lowered below what is open: only reductions pass
    assert codes(e.place(T1, PERP, BUY, 99, 1, 5, venue=1)) == [RC.VENUE_OI_CAP_REACHED]
    ok(e.place(T2, PERP, BUY, 99, 2, 5, venue=2))
    ok(e.place(T1, PERP, SELL, 99, 2, 6, tif=Tif.IOC, reduce_only=True, venue=1))
    assert risk(e)[8:] == (4, 0, 0, 10)
    ok(e.amend(T3, qty=9, client_id=2))  # a size reduction passes
    assert risk(e)[8:] == (4, 0, 0, 9)


def test_a_venue_halt_stops_its_new_orders_in_that_market_only(engine_cls):
    e = world(engine_cls)
    ok(e.place(T1, PERP, SELL, 101, 5, 1, venue=1))
    trade(e, T2, T1, BUY, 100, 3, 2)  # T1 long 3 through venue 1
    ok(e.place(T1, PERP, BUY, 80, 1, 8, venue=1))
    ev = ok(e.venue_halt(OP1, 1, PERP))
    assert [(int(x["kind"]), x["flags"], x["venue"], x["market"], x["account"], x["qty"]) for x in ev] == [
        (Ev.MARKET_STATUS, Cmd.VENUE_MARKET_HALT, 1, PERP, OP1, 1)]
    assert risk(e).halted
    assert codes(e.place(T1, PERP, BUY, 100, 1, 3, venue=1)) == [RC.VENUE_MARKET_HALTED]
    assert codes(e.amend(T1, price=102, qty=5, client_id=1)) == [RC.VENUE_MARKET_HALTED]
    ok(e.amend(T1, qty=4, client_id=1))  # a size reduction goes on
    ok(e.place(T2, PERP, BUY, 90, 1, 3, venue=2))  # venue 2 in the same book: untouched
    ok(e.place(T1, MKT, BUY, 90, 1, 4, venue=1))  # venue 1's other market: untouched
    ok(e.place(T1, PERP, SELL, 90, 1, 5, tif=Tif.IOC, reduce_only=True, venue=1))  # reduce-only passes
    fills = ok(e.place(T2, PERP, BUY, 101, 4, 6, tif=Tif.IOC, venue=2))  # its resting order still trades as maker
    assert [x["maker_account"] for x in fills if x["kind"] == Ev.FILL] == [T1]
    ok(e.cancel(T1, client_id=8))  # cancels go on
    ok(e.venue_resume(RISK, 1, PERP))  # the risk worker's account (negative: trusted input only)
    ok(e.place(T1, PERP, BUY, 100, 1, 7, venue=1))
    ok(e.venue_halt(ADMIN, 1, PERP))


def run_for_venue_2(e):
    """Venue 2's traders (T2, T3) trading with each other, amending, and taking venue 1's resting order."""
    out = []
    for market, c in ((PERP, 10), (MKT, 20)):
        out.append(e.place(T2, market, SELL, 100, 5, c + 1, venue=2))
        out.append(e.place(T3, market, BUY, 100, 2, c + 2, tif=Tif.IOC, venue=2))
        out.append(e.amend(T2, price=102, qty=4, client_id=c + 1))
        out.append(e.place(T3, market, BUY, 110, 3, c + 3, venue=2))
        out.append(e.place(T2, market, SELL, 95, 1, c + 4, tif=Tif.FOK, venue=2))
        out.append(e.cancel(T3, client_id=c + 3))
        out.append(e.place(T3, market, BUY, 150, 6, c + 5, tif=Tif.IOC, venue=2))  # reaches venue 1's order
    return out


def test_venue_risk_settings_and_halts_change_nothing_for_another_venue(engine_cls):
    """Venue 1's band, cap and halt in the shared books change none of venue 2's events, orders, positions or
    balances: the same venue-2 commands on an engine where venue 1 has them and one where it has none."""
    plain, gated = world(engine_cls), world(engine_cls)
    for e in (plain, gated):
        ok(e.place(T1, PERP, SELL, 150, 2, 1, venue=1))  # venue 1 rests far away in both
        ok(e.place(T1, MKT, SELL, 150, 2, 2, venue=1))
    ok(gated.set_venue_risk(OP1, 1, PERP, band_bps=10, oi_cap=1, breaker_move_bps=10, breaker_window_ms=1))
    ok(gated.set_venue_risk(OP1, 1, MKT, band_bps=10))
    ok(gated.venue_halt(OP1, 1, PERP))
    ok(gated.venue_halt(OP1, 1, MKT))
    ignored = ("seq", "cmd_seq")  # gated ran more commands
    got, want = run_for_venue_2(gated), run_for_venue_2(plain)
    for g, w in zip(got, want):
        assert len(g) == len(w) and all(np.array_equal(g[f], w[f]) for f in g.dtype.names if f not in ignored)
    assert sum(int(np.count_nonzero((g["kind"] == Ev.FILL) & (g["maker_account"] == T1))) for g in got) == 2
    for account in (T1, T2, T3):
        assert gated.balances(account) == plain.balances(account)
        assert gated.position(account, PERP) == plain.position(account, PERP)
    for market in (PERP, MKT):
        assert gated.l3(market) == plain.l3(market)
    assert risk(gated, 2) == risk(plain, 2)


# ------------------------------------------------------------------ streams and snapshots

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_differential_stream_with_venue_risk(seed, tmp_path):
    stats = run_differential(seed, 8_000, dump_dir=tmp_path, generator=VenueRiskStreamGenerator)
    assert stats["fills"] > 100


def test_stream_reaches_every_venue_risk_code_and_keeps_the_open_sizes_exact():
    e = Engine(**ENGINE_KWARGS)
    gen = VenueRiskStreamGenerator(5, limits={k: v for k, v in ENGINE_KWARGS.items() if k != "max_venues"})
    seen = set()
    for _, events in run_stream(e, gen, 10_000):
        seen |= set(events[events["kind"] == Ev.REJECTED]["code"].tolist())
    assert {c for c in RC if 442 <= c <= 446} <= seen
    assert_open_interest_exact(e, gen.PERP_MARKETS)


def assert_open_interest_exact(e, markets):
    """Each venue's open sizes are its open orders' remaining; per market the venues' long and short open
    interest both sum to the accounts' total long size."""
    rows = e.venue_market_risks()
    for m in markets:
        open_size = {}
        for o in e.l3(m):
            open_size[(o.venue, o.side)] = open_size.get((o.venue, o.side), 0) + o.remaining
        for r in rows:
            if r.market == m:
                assert (r.open_buy, r.open_sell) == (open_size.get((r.venue, BUY), 0), open_size.get((r.venue, SELL), 0))
        longs = sum(p.size for p in e.positions() if p.market == m and p.size > 0)
        assert sum(r.long_oi for r in rows if r.market == m) == longs == sum(r.short_oi for r in rows if r.market == m)


@pytest.mark.parametrize("seed", range(3))
def test_open_interest_stays_exact_through_liquidations(seed):
    """The liquidation tests' random crash streams (book slices, insurance takeovers, ADL): both engines keep the
    same venue rows, and open interest and open sizes stay exact."""
    from engine.reference import ReferenceEngine
    from test_liquidation import PERP as LIQ_PERP, liq_world, random_crash_commands

    engines = [liq_world(cls) for cls in (Engine, ReferenceEngine)]
    for name, fields in random_crash_commands(seed):
        if name == "deposit" and fields["amount"] <= 0:
            continue
        got = [getattr(e, name)(**fields) for e in engines]
        assert got[0].tobytes() == got[1].tobytes(), (name, fields)
        if name == "liquidate":
            assert_open_interest_exact(engines[1], [LIQ_PERP])
    assert engines[0].venue_market_risks() == engines[1].venue_market_risks()
    assert_open_interest_exact(engines[0], [LIQ_PERP])


def test_snapshot_round_trip_keeps_venue_risk():
    e = Engine(**ENGINE_KWARGS)
    gen = VenueRiskStreamGenerator(7, limits={k: v for k, v in ENGINE_KWARGS.items() if k != "max_venues"})
    for _ in run_stream(e, gen, 4_000):
        pass
    state_ = e.export_state()
    assert "venue_market_risk" in STATE_KEYS and len(state_["venue_market_risk"]) > 0
    copy = Engine.from_state(state_, **ENGINE_KWARGS)
    assert canonical_state(copy) == canonical_state(e)
    assert copy.venue_market_risks() == e.venue_market_risks()  # open sizes rebuilt from the orders
    more = gen.next_chunk(2_000)
    assert np.array_equal(copy.process(more), e.process(more))
    # a version 8 state (no venue risk) reads with rows rebuilt for the open orders and nothing set
    old = dict(e.export_state())
    del old["venue_market_risk"]
    old["counters"] = old["counters"].copy()
    old["counters"][0] = 8
    older = Engine.from_state(old, **ENGINE_KWARGS)
    for r in older.venue_market_risks():
        assert (r.band_bps, r.oi_cap, r.halted, r.long_oi, r.short_oi) == (0, 0, False, 0, 0)
    assert sum(r.open_buy + r.open_sell for r in older.venue_market_risks()) == sum(
        r.open_buy + r.open_sell for r in e.venue_market_risks())


# ------------------------------------------------------------------ through the gateway and `xos venue set`

@pytest.fixture(scope="module")
def gateway_engine(tmp_path_factory):
    from test_gateway_venues import KEYS, Engine as VenueGatewayEngine
    from gateway_harness import funded, unit_market

    e = VenueGatewayEngine(tmp_path_factory.mktemp("gwvenuerisk"), KEYS, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="OKB", decimals=2)],
        "markets": [unit_market(1, "OKB", "USD")],
        "accounts": funded((11, 12), USD=1000000, OKB=1000000),
        "venues": dict(admin=99, protocol_account=98, stake_asset="OKB", min_stake=1000, unbond_period_s=0.0,
                       launch=[dict(id=1, operator=11, insurance_account=901, stake=5000, markets=[1])]),
    })
    yield e
    e.stop()


def test_operators_send_venue_market_risk_through_the_gateway_and_xos_venue_set(gateway_engine):
    from gateway import messages as m
    from gateway.client import BadRequest, InvalidOrder, PermissionDenied
    from gateway_harness import run
    from test_gateway_venues import xos_venue

    engine = gateway_engine

    async def scenario():
        op = await engine.client("operator").connect()
        ack = await op.send_command(m.VenueMarketRisk, venue=1, market=1, band_bps=200, breaker_move_bps=300,
                                     breaker_window_ms=5_000, breaker_cooldown_ms=60_000)
        with pytest.raises(InvalidOrder, match="INVALID_OI_CAP"):  # the matcher's check: a cap on a spot market
            await op.send_command(m.VenueMarketRisk, venue=1, market=1, oi_cap=5)
        with pytest.raises(BadRequest, match=r"venue_market_risk\.breaker_window_ms"):  # would not fit its u32
            await op.send_command(m.VenueMarketRisk, venue=1, market=1, breaker_move_bps=1, breaker_window_ms=1 << 32)
        other = await engine.client("other").connect()
        with pytest.raises(PermissionDenied, match="NOT_VENUE_OPERATOR"):
            await other.send_command(m.VenueMarketRisk, venue=1, market=1, band_bps=1)
        for c in (op, other):
            await c.close()
        return ack

    ack = run(scenario())
    cmd = engine.journal()[ack.cmd_seq - 1]
    assert (int(cmd["kind"]), int(cmd["account"])) == (Cmd.VENUE_MARKET_RISK, 11)
    assert engine.state().venue_market_risk(1, 1) == VenueMarketRiskView(1, 1, 200, 0, 300, 5_000, 60_000, False,
                                                                         0, 0, 0, 0)
    done = xos_venue(engine, "set", 1, "--risk-market", 1, "--band-bps", 300, "--key", engine.key("operator"))
    assert done.returncode == 0 and "VENUE_MARKET_RISK venue 1: ok" in done.stdout, done.stdout + done.stderr
    assert engine.state().venue_market_risk(1, 1).band_bps == 300
    halted = xos_venue(engine, "set", 1, "--halt-market", 1, "--key", engine.key("operator"))
    assert halted.returncode == 0 and "VENUE_MARKET_HALT venue 1: ok" in halted.stdout, halted.stdout + halted.stderr
    assert engine.state().venue_market_risk(1, 1).halted
    refused = xos_venue(engine, "set", 1, "--halt-market", 1, "--key", engine.key("other"))
    assert refused.returncode == 1 and "NOT_VENUE_OPERATOR" in refused.stdout, refused.stdout + refused.stderr
    shown = xos_venue(engine, "show", 1)
    assert shown.returncode == 0 and "own risk: HALTED, band 300 bps, open-interest cap none, breaker none" in \
        shown.stdout, shown.stdout + shown.stderr
    resumed = xos_venue(engine, "set", 1, "--resume-market", 1, "--key", engine.key("operator"))
    assert resumed.returncode == 0 and "VENUE_MARKET_RESUME venue 1: ok" in resumed.stdout, resumed.stdout
    assert not engine.state().venue_market_risk(1, 1).halted
    again = xos_venue(engine, "set", 1, "--halt-market", 1, "--trusted-as", 11)  # the admin's trusted path
    assert again.returncode == 0 and engine.state().venue_market_risk(1, 1).halted
    loose = xos_venue(engine, "set", 1, "--band-bps", 5, "--trusted-as", 11)
    assert loose.returncode == 2 and "need --risk-market" in loose.stderr

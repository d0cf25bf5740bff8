"""Isolated margin per position (issue 9; ARCHITECTURE, "Isolated margin (issue 9)"), on both engines (``engine_cls``):
MarginMode, IsolatedMargin, the cross sums that leave isolated positions out, isolated Liquidate (book, fund, ADL),
snapshots, and a generated stream differential with the perpetual invariants after every chunk."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.records import Cmd, Ev, MarketKind, Tif

from generators import ENGINE_KWARGS, IsolatedMarginStreamGenerator, run_stream
from test_venues import codes, ok, state

USD, BTC = 1, 2
PERP, SPOT, PERP2 = 5, 6, 7
BUY, SELL = 0, 1
ADMIN, FEED, PROTOCOL = 99, 77, 800
A, B, C, D = 11, 12, 13, 14
LIQUIDATION_ORDER = 32  # Accepted flags of a liquidation's IOC order


def iso_world(engine_cls, fund: int = 700):
    """PERP and PERP2 (venue 0, tick 1, lot 10, 10x, maintenance 5000 bps, venue 0's oracles at 1000 as the marks) and
    SPOT; A (2000 USD) isolated in PERP, long 10 lots there (margin 1000) and 5 lots cross in PERP2 (margin 500), so
    500 free; B short against both; C and D deep; the protocol account (venue 0's fund) holds ``fund``."""
    e = engine_cls(**ENGINE_KWARGS)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    for m in (PERP, PERP2):
        ok(e.add_market(m, BTC, USD, tick_size=1, lot_size=10, min_size=10, kind=MarketKind.PERPETUAL))
    ok(e.add_market(SPOT, BTC, USD, tick_size=1, lot_size=10, min_size=10))
    ok(e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1, protocol_account=PROTOCOL,
                          admin=ADMIN))
    for i, m in enumerate((PERP, PERP2)):
        ok(e.market_risk(ADMIN, m, max_leverage=10, maintenance_bps=5000))
        ok(e.configure_oracle(ADMIN, 0, m, feed_id=1 + i, feed_account=FEED, timeout_ns=10**15))
        ok(e.oracle_price(FEED, 0, m, 1000, feed_id=1 + i, source_ts=1))
    for account, amount in ((A, 2000), (B, 100_000), (C, 100_000), (D, 100_000), (PROTOCOL, fund)):
        ok(e.deposit(account, USD, amount))
    ok(e.set_margin_mode(A, PERP, True))
    ok(e.place(B, PERP, SELL, 1000, 100, 1))
    ok(e.place(A, PERP, BUY, 1000, 100, 1, tif=Tif.IOC))
    ok(e.place(B, PERP2, SELL, 1000, 50, 2))
    ok(e.place(A, PERP2, BUY, 1000, 50, 2, tif=Tif.IOC))
    return e


def mark(e, market: int, price: int) -> np.ndarray:
    """Venue 0's oracle (so the mark: the books are one-sided) of ``market`` at ``price``."""
    return ok(e.oracle_price(FEED, 0, market, price, feed_id=1 if market == PERP else 2, source_ts=e.cmd_seq + 1))


def of_kind(events, kind) -> list:
    return [ev for ev in events if ev["kind"] == kind]


def test_world(engine_cls):
    e = iso_world(engine_cls)
    assert e.margin_modes() == [(A, PERP)]
    assert e.position(A, PERP)[2:5] == (100, 10_000, 1000) and e.position(A, PERP2)[2:5] == (50, 5000, 500)
    assert e.balance(A, USD) == (500, 1500)


# ---------------------------------------------------------------- MarginMode

def test_margin_mode_echo_view_and_flat_position(engine_cls):
    e = iso_world(engine_cls)
    ev = ok(e.set_margin_mode(C, PERP2, True))
    assert [(int(x["kind"]), int(x["flags"]), int(x["account"]), int(x["market"]), int(x["qty"])) for x in ev] == [
        (Ev.VENUE, Cmd.MARGIN_MODE, C, PERP2, 1)]
    # the mode lives on a (flat) position, created by it: listed, in the snapshot, funded by nothing
    assert e.position(C, PERP2)[2:] == (0, 0, 0, 0) and e.margin_modes() == [(A, PERP), (C, PERP2)]
    ev = ok(e.set_margin_mode(C, PERP2, False))
    assert int(ev[0]["qty"]) == 0 and e.margin_modes() == [(A, PERP)] and e.position(C, PERP2).size == 0
    # trading there now is cross: C's position counts in its cross sums
    ok(e.place(C, PERP2, SELL, 1000, 10, 7))
    ok(e.place(D, PERP2, BUY, 1000, 10, 7, tif=Tif.IOC))
    assert e.margin_modes() == [(A, PERP)]
    with pytest.raises(TypeError):
        e.set_margin_mode(C, PERP, 1)


BAD_MODE = [
    ("account not positive", dict(account=0, market=PERP, qty=1), RC.INVALID_ACCOUNT_ID),
    ("unknown account", dict(account=4242, market=PERP, qty=1), RC.UNKNOWN_ACCOUNT),
    ("unknown market", dict(account=C, market=99, qty=1), RC.UNKNOWN_MARKET),
    ("spot market", dict(account=C, market=SPOT, qty=1), RC.INVALID_MARKET_KIND),
    ("mode not 0/1", dict(account=C, market=PERP, qty=2), RC.INVALID_MARGIN_MODE),
    ("already cross", dict(account=C, market=PERP, qty=0), RC.MARGIN_MODE_UNCHANGED),
    ("already isolated", dict(account=A, market=PERP, qty=1), RC.MARGIN_MODE_UNCHANGED),
    ("open position (isolated)", dict(account=A, market=PERP, qty=0), RC.POSITION_OPEN),
    ("open position (cross)", dict(account=A, market=PERP2, qty=1), RC.POSITION_OPEN),
    ("open order", dict(account=D, market=PERP, qty=1), RC.ORDERS_OPEN),
]


@pytest.mark.parametrize("what, fields, code", BAD_MODE, ids=[b[0] for b in BAD_MODE])
def test_bad_margin_mode_is_rejected_and_changes_nothing(engine_cls, what, fields, code):
    e = iso_world(engine_cls)
    ok(e.place(D, PERP, BUY, 500, 10, 9))  # D: an open order in PERP, no position
    before = state(e)
    ev = e.submit(Cmd.MARGIN_MODE, **fields)
    assert [int(x) for x in ev["kind"]] == [Ev.REJECTED] and codes(ev) == [code], what
    assert state(e) == before


# ---------------------------------------------------------------- IsolatedMargin

def position_event(ev) -> tuple:
    (p,) = of_kind(ev, Ev.POSITION)
    return (int(p["flags"]), int(p["account"]), int(p["market"]), int(p["qty"]), int(p["client_id"]),
            int(p["maker_order"]), int(p["maker_account"]), int(p["order_id"]), int(p["maker_fee"]))


def test_add_and_remove_isolated_margin(engine_cls):
    e = iso_world(engine_cls)
    # at mark 1000 the position's equity is its margin 1000 = its initial margin: nothing can come out
    assert codes(e.add_isolated_margin(A, PERP, -1)) == [RC.ISOLATED_MARGIN_SHORT]
    ev = ok(e.add_isolated_margin(A, PERP, 300))
    assert position_event(ev) == (Cmd.ISOLATED_MARGIN, A, PERP, 100, 1300, 200, 1800, 0, 0)
    assert e.position(A, PERP).margin == 1300 and e.balance(A, USD) == (200, 1800)
    ok(e.add_isolated_margin(A, PERP, -300))
    assert codes(e.add_isolated_margin(A, PERP, -1)) == [RC.ISOLATED_MARGIN_SHORT]
    # in profit at 1100: equity 1000 + 1000, initial 1100: up to 900 comes out, not one more
    mark(e, PERP, 1100)
    before = state(e)
    assert codes(e.add_isolated_margin(A, PERP, -901)) == [RC.ISOLATED_MARGIN_SHORT] and state(e) == before
    ev = ok(e.add_isolated_margin(A, PERP, -900))
    assert position_event(ev) == (Cmd.ISOLATED_MARGIN, A, PERP, 100, 100, 1400, 600, 0, 0)
    # far in profit: the unrealised PnL stays in the position, the margin cannot go below 0
    mark(e, PERP, 1500)
    assert codes(e.add_isolated_margin(A, PERP, -101)) == [RC.ISOLATED_MARGIN_SHORT]
    ok(e.add_isolated_margin(A, PERP, -100))
    assert e.position(A, PERP).margin == 0 and e.balance(A, USD) == (1500, 500)
    # a close pays the closed part's PnL (7500 - 5000) into free as for any fill
    ok(e.place(C, PERP, BUY, 1500, 50, 3))
    ok(e.place(A, PERP, SELL, 1500, 50, 3, tif=Tif.IOC))
    assert e.position(A, PERP)[2:5] == (50, 5000, 0) and e.balance(A, USD) == (4000, 500)


BAD_MARGIN = [
    ("account not positive", dict(account=0, market=PERP, qty=10), RC.INVALID_ACCOUNT_ID),
    ("unknown account", dict(account=4242, market=PERP, qty=10), RC.UNKNOWN_ACCOUNT),
    ("unknown market", dict(account=A, market=99, qty=10), RC.UNKNOWN_MARKET),
    ("spot market", dict(account=A, market=SPOT, qty=10), RC.INVALID_MARKET_KIND),
    ("amount 0", dict(account=A, market=PERP, qty=0), RC.INVALID_MARGIN_AMOUNT),
    ("amount past the money range", dict(account=A, market=PERP, qty=-(1 << 62) - 1), RC.INVALID_MARGIN_AMOUNT),
    ("a cross position", dict(account=A, market=PERP2, qty=10), RC.NO_ISOLATED_POSITION),
    ("no position", dict(account=D, market=PERP, qty=10), RC.NO_ISOLATED_POSITION),
    ("a flat isolated position", dict(account=C, market=PERP, qty=10), RC.NO_ISOLATED_POSITION),
    ("more than free", dict(account=A, market=PERP, qty=501), RC.INSUFFICIENT_FREE_BALANCE),
    ("below the initial margin", dict(account=A, market=PERP, qty=-1), RC.ISOLATED_MARGIN_SHORT),
]


@pytest.mark.parametrize("what, fields, code", BAD_MARGIN, ids=[b[0] for b in BAD_MARGIN])
def test_bad_isolated_margin_is_rejected_and_changes_nothing(engine_cls, what, fields, code):
    e = iso_world(engine_cls)
    ok(e.set_margin_mode(C, PERP, True))
    before = state(e)
    ev = e.submit(Cmd.ISOLATED_MARGIN, **fields)
    assert [int(x) for x in ev["kind"]] == [Ev.REJECTED] and codes(ev) == [code], what
    assert state(e) == before


# ---------------------------------------------------------------- the cross sums leave isolated positions out

def test_pre_trade_check_ignores_isolated_profit_and_loss(engine_cls):
    """A's cross PERP2 at 950: excess 500 free + 500 margin - 250 loss - 475 initial = 275. The isolated PERP's
    profit (or loss) changes nothing: Withdraw and PlaceOrder pass up to 275, not one more."""
    e = iso_world(engine_cls)
    mark(e, PERP2, 950)
    for price in (1300, 900):  # isolated PERP far in profit, then at its bankruptcy point
        mark(e, PERP, price)
        before = state(e)
        assert codes(e.withdraw(A, USD, 276)) == [RC.INSUFFICIENT_MARGIN] and state(e) == before
        assert codes(e.place(A, PERP2, BUY, 950, 30, 5)) == [RC.INSUFFICIENT_MARGIN]  # holds 3 x 95 = 285
        assert codes(e.place(A, PERP, BUY, 950, 30, 5)) == [RC.INSUFFICIENT_MARGIN]  # an isolated market's hold too
        assert state(e) == before
    ok(e.withdraw(A, USD, 275))
    assert e.balance(A, USD) == (225, 1500)


def test_isolated_crash_liquidates_only_that_position(engine_cls):
    """PERP crashes to 880: A's isolated position is at -200 against maintenance 440, while A's cross equity (free +
    PERP2) is healthy, so a cross Liquidate is refused. The isolated Liquidate cancels A's PERP order only, closes 3
    lots on the book at 905 (bankruptcy price 900) and the fund takes the rest over at 898 (the position's equity
    now counts the 15 the book slice realised); A's cross balance gets back only what is left of the position's
    margin, and its PERP2 position and order are untouched."""
    e = iso_world(engine_cls)
    ok(e.place(A, PERP, BUY, 500, 10, 3))  # holds 50 (from free: the cross check covers it)
    ok(e.place(A, PERP2, BUY, 500, 10, 4))  # holds 50
    assert e.balance(A, USD) == (400, 1600)
    mark(e, PERP, 880)
    before = state(e)
    assert codes(e.liquidate(D, A, 0, USD)) == [RC.NOT_LIQUIDATABLE] and state(e) == before
    ok(e.place(D, PERP, BUY, 905, 30, 5))
    ev = ok(e.liquidate(D, A, 0, USD, isolated_market=PERP))
    (start,) = of_kind(ev, Ev.LIQUIDATION)
    assert [int(start[f]) for f in ("account", "client_id", "price", "qty", "maker_order")] == [A, D, -200, 440, PERP]
    (cancel,) = of_kind(ev, Ev.CANCELLED)[:1]
    assert (int(cancel["market"]), int(cancel["reason"])) == (PERP, 8)
    accepted = [x for x in of_kind(ev, Ev.ACCEPTED) if x["flags"] == LIQUIDATION_ORDER]
    assert [(int(x["price"]), int(x["qty"])) for x in accepted] == [(900, 100)]
    assert [(int(f["price"]), int(f["qty"])) for f in of_kind(ev, Ev.FILL)] == [(905, 30)]
    (takeover,) = of_kind(ev, Ev.DELEVERAGE)
    assert [int(takeover[f]) for f in ("reason", "maker_account", "price", "qty")] == [1, PROTOCOL, 898, 70]
    (done,) = of_kind(ev, Ev.LIQUIDATED)
    assert [int(done[f]) for f in ("price", "qty", "remaining", "client_id", "maker_order")] == [1, 0, 0, 0, PERP]
    assert e.position(A, PERP)[2:5] == (0, 0, 0) and e.margin_modes() == [(A, PERP)]
    # free: 400 + the cancelled order's 50 + what the position had left (1); held: PERP2's margin and order
    assert e.balance(A, USD) == (451, 550)
    assert e.position(A, PERP2)[2:5] == (50, 5000, 500) and [o.market for o in e.l3(PERP2) if o.account == A] == [PERP2]
    assert codes(e.liquidate(D, A, 0, USD, isolated_market=PERP)) == [RC.NOTHING_TO_LIQUIDATE]
    assert sum(p.size for p in e.positions() if p.market == PERP) == 0


def test_isolated_liquidation_by_adl(engine_cls):
    """With a fund that cannot margin the position (1 USD), the isolated position is deleveraged against the best
    ranked short at its bankruptcy price (no book)."""
    e = iso_world(engine_cls, fund=1)
    ok(e.place(C, PERP, SELL, 1000, 20, 8))
    ok(e.place(D, PERP, BUY, 1000, 20, 8, tif=Tif.IOC))  # C short 2 lots too: as profitable per margin as B, whose
    # lower account id ranks it first
    mark(e, PERP, 870)
    ev = ok(e.liquidate(D, A, 0, USD, isolated_market=PERP))
    adl = of_kind(ev, Ev.DELEVERAGE)
    # equity 1000 - 1300 = -300: bankruptcy price (8700 + 300) / 10 = 900
    assert [(int(x["reason"]), int(x["maker_account"]), int(x["price"]), int(x["qty"])) for x in adl] == [
        (2, B, 900, 100)]
    assert e.position(A, PERP).size == 0 and e.position(B, PERP).size == 0
    assert e.balance(A, USD) == (500, 500) and e.position(A, PERP2)[2:5] == (50, 5000, 500)
    (done,) = of_kind(ev, Ev.LIQUIDATED)
    assert [int(done[f]) for f in ("price", "qty", "remaining", "client_id")] == [0, 0, 0, 0]


def test_cross_liquidate_never_touches_isolated_positions(engine_cls):
    """PERP2 (cross) crashes while the isolated PERP is deep in profit: the profit does not save the cross account,
    and the cross Liquidate closes PERP2 only."""
    e = iso_world(engine_cls)
    mark(e, PERP, 1500)
    mark(e, PERP2, 920)  # cross equity 500 + 500 - 400 = 600 >= 230; still healthy
    assert codes(e.liquidate(D, A, 0, USD)) == [RC.NOT_LIQUIDATABLE]
    mark(e, PERP2, 820)  # 500 + 500 - 900 = 100 < 205
    ev = ok(e.liquidate(D, A, 0, USD))
    assert int(of_kind(ev, Ev.LIQUIDATION)[0]["maker_order"]) == 0
    assert {int(x["market"]) for x in of_kind(ev, Ev.DELEVERAGE)} == {PERP2}
    assert e.position(A, PERP2).size == 0 and e.position(A, PERP)[2:5] == (100, 10_000, 1000)
    assert codes(e.liquidate(D, A, 0, USD)) == [RC.NOTHING_TO_LIQUIDATE]  # only the isolated position is left


BAD_ISOLATED_LIQUIDATE = [
    ("a cross position", dict(account=D, target=A, venue=0, asset=USD, isolated_market=PERP2), RC.NOTHING_TO_LIQUIDATE),
    ("no such market", dict(account=D, target=A, venue=0, asset=USD, isolated_market=99), RC.NOTHING_TO_LIQUIDATE),
    ("a negative market", dict(account=D, target=A, venue=0, asset=USD, isolated_market=-5), RC.NOTHING_TO_LIQUIDATE),
    ("wrong venue", dict(account=D, target=A, venue=1, asset=USD, isolated_market=PERP), RC.NOTHING_TO_LIQUIDATE),
    ("wrong asset", dict(account=D, target=A, venue=0, asset=BTC, isolated_market=PERP), RC.NOTHING_TO_LIQUIDATE),
    ("flat isolated", dict(account=D, target=C, venue=0, asset=USD, isolated_market=PERP), RC.NOTHING_TO_LIQUIDATE),
    ("the fund", dict(account=D, target=PROTOCOL, venue=0, asset=USD, isolated_market=PERP), RC.INSURANCE_FUND_ACCOUNT),
    ("healthy", dict(account=D, target=A, venue=0, asset=USD, isolated_market=PERP), RC.NOT_LIQUIDATABLE),
]


@pytest.mark.parametrize("what, fields, code", BAD_ISOLATED_LIQUIDATE, ids=[b[0] for b in BAD_ISOLATED_LIQUIDATE])
def test_bad_isolated_liquidate_is_rejected_and_changes_nothing(engine_cls, what, fields, code):
    e = iso_world(engine_cls)
    ok(e.deposit(1, BTC, 10))
    ok(e.launch_venue(1, 1, 5, insurance_account=2))
    ok(e.set_margin_mode(C, PERP, True))
    mark(e, PERP, 960)  # equity 600 >= maintenance 480
    before = state(e)
    ev = e.liquidate(**fields)
    assert [int(x) for x in ev["kind"]] == [Ev.REJECTED] and codes(ev) == [code], what
    assert state(e) == before


def test_exposure_cap_leaves_isolated_positions_out(engine_cls):
    """A cap on venue 0 counts A's cross PERP2 (initial 500) and its orders there, against equity without the
    isolated position's margin (2000 - 1000 = 1000 at mark): a 50 % cap leaves room for exactly 0 more."""
    e = iso_world(engine_cls)
    ok(e.set_exposure_cap(A, 0, 5000))
    assert codes(e.place(A, PERP2, BUY, 1000, 10, 5)) == [RC.EXPOSURE_CAP_EXCEEDED]
    ok(e.set_exposure_cap(A, 0, 6000))  # 600 of 1000: a hold of 100 fits
    ok(e.place(A, PERP2, BUY, 1000, 10, 5))


def test_scenarios_identical_on_both_engines():
    from engine.matcher import Engine
    from engine.reference import ReferenceEngine

    def scenario(cls) -> list:
        e = iso_world(cls)
        out = [e.add_isolated_margin(A, PERP, 200), mark(e, PERP, 880), e.add_isolated_margin(A, PERP, -50),
               e.place(D, PERP, BUY, 905, 30, 5), e.liquidate(D, A, 0, USD, isolated_market=PERP),
               e.set_margin_mode(A, PERP, False), mark(e, PERP2, 820), e.liquidate(D, A, 0, USD)]
        return [x.tobytes() for x in out] + [repr(state(e))]

    assert scenario(Engine) == scenario(ReferenceEngine)



def funding_at(engine_cls, rate: int):
    """``iso_world`` with quotes around the oracle (impact mid 1000 = the oracle: premium 0) and funding at ``rate``
    per interval (interest, clamp and cap at it), paid at ts 1000; returns the engine, A's free before and the
    funding's events."""
    e = iso_world(engine_cls)
    ok(e.place(C, PERP, BUY, 990, 10, 50))
    ok(e.place(D, PERP, SELL, 1010, 10, 50))
    ok(e.funding_config(ADMIN, PERP, interval_ns=1000, sample_interval_ns=100, interest=rate, clamp=rate, cap=rate))
    free = e.balance(A, USD)[0]
    return e, free, ok(e.apply_funding(C, PERP, ts=1000))


def test_funding_of_an_isolated_position_moves_its_own_margin(engine_cls):
    """1 %: A's isolated long (10 lots at mark 1000) pays 100 out of its own margin, its free balance untouched; a
    Position event (flags ApplyFunding) carries the margin after for the workers."""
    e, free, events = funding_at(engine_cls, 1_000_000)
    assert e.position(A, PERP).margin == 900 and e.balance(A, USD) == (free, 1500 - 100)
    mine = [ev for ev in events if ev["account"] == A]
    assert [(Ev(int(x["kind"])).name, int(x["qty"]), int(x["remaining"]), int(x["taker_fee"])) for x in mine] == [
        ("VENUE_TRANSFER", -100, free, 1400), ("POSITION", 100, 10_000, 0)]
    assert (int(mine[1]["flags"]), int(mine[1]["client_id"])) == (Cmd.APPLY_FUNDING, 900)


def test_funding_past_an_isolated_margin_takes_the_rest_from_free(engine_cls):
    """20 %: A owes 2000, its isolated margin holds 1000: the margin goes to 0, the other 1000 comes out of free
    (funding sums to zero; the position is then liquidatable on its own)."""
    e, free, events = funding_at(engine_cls, 20_000_000)
    assert e.position(A, PERP).margin == 0 and e.balance(A, USD) == (free - 1000, 500)
    funding = [ev for ev in events if ev["kind"] == Ev.FUNDING][0]
    assert int(funding["maker_order"]) == int(funding["maker_fee"]) == 2000  # A paid 2000, B (short) received it


# ---------------------------------------------------------------- snapshots

def test_snapshot_round_trip_and_bad_rows():
    from engine.matcher import STATE_VERSION, Engine

    e = iso_world(Engine)
    ok(e.set_margin_mode(C, PERP2, True))
    exported = e.export_state()
    assert int(exported["counters"][0]) == STATE_VERSION >= 12
    assert exported["margin_modes"].tolist() == [(A, PERP), (C, PERP2)]
    copy = Engine.from_state(exported, **ENGINE_KWARGS)
    assert state(copy) == state(e) and copy.margin_modes() == e.margin_modes()
    mark(copy, PERP, 880)  # the copy liquidates the isolated position as the original would
    mark(e, PERP, 880)
    assert ok(copy.liquidate(D, A, 0, USD, isolated_market=PERP)).tobytes() == \
        ok(e.liquidate(D, A, 0, USD, isolated_market=PERP)).tobytes()
    # version 11: no margin modes, every position cross
    old = dict(exported)
    del old["margin_modes"]
    old["counters"] = exported["counters"].copy()
    old["counters"][0] = 11
    assert Engine.from_state(old, **ENGINE_KWARGS).margin_modes() == []
    for row, words in (((D, PERP), "no such position"), ((A, SPOT), "no such position"), ((A, -1), "no such position"),
                       ((A, PERP), "listed twice")):
        bad = dict(exported)
        rows = [tuple(r) for r in exported["margin_modes"].tolist()]
        bad["margin_modes"] = np.array(rows + [row] if words == "listed twice" else [row], exported["margin_modes"].dtype)
        with pytest.raises(ValueError, match=words):
            Engine.from_state(bad, **ENGINE_KWARGS)


# ---------------------------------------------------------------- generated streams

@pytest.mark.parametrize("seed", [21, 22])
def test_isolated_stream_differential(seed, tmp_path):
    from test_differential import run_differential

    stats = run_differential(seed, 12_000, dump_dir=tmp_path, generator=IsolatedMarginStreamGenerator)
    assert stats["fills"] > 500


def test_isolated_stream_invariants_after_every_chunk():
    """The perpetual invariants (test_perp) after every chunk of an isolated-margin stream on the reference model;
    MarginMode, IsolatedMargin and isolated Liquidate each accepted and refused with several codes."""
    from engine.reference import ReferenceEngine
    from test_perp import check_perp_invariants

    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = IsolatedMarginStreamGenerator(23, limits=dict(ENGINE_KWARGS))
    net: dict[int, int] = defaultdict(int)
    seen: Counter = Counter()
    for cmds, events in run_stream(e, gen, 12_000, chunk=100):
        balance = events[events["kind"] == Ev.BALANCE]
        for asset, amount in zip(balance["market"].tolist(), balance["qty"].tolist()):
            net[asset] += amount
        check_perp_invariants(e, net)
        by_seq = {int(x["cmd_seq"]): x for x in events[::-1]}  # each command's first event
        first = e.cmd_seq - len(cmds) + 1  # no multi-leg units here: one record, one command
        for i, cmd in enumerate(cmds.tolist()):
            kind, aux = cmd[0], cmd[13]
            if kind not in (Cmd.MARGIN_MODE, Cmd.ISOLATED_MARGIN) and not (kind == Cmd.LIQUIDATE and aux):
                continue
            ev = by_seq.get(first + i)
            seen[(kind, int(ev["code"]) if ev is not None and ev["kind"] == Ev.REJECTED else 0)] += 1
        for done in events[events["kind"] == Ev.LIQUIDATED]:
            assert done["price"] >= 0 and done["client_id"] == 0, done  # equity after >= 0, nothing uncovered
    for kind in (Cmd.MARGIN_MODE, Cmd.ISOLATED_MARGIN):
        assert seen[(kind, 0)] > 3 and sum(1 for (k, c) in seen if k == kind and c) >= 3, seen
    assert seen[(Cmd.LIQUIDATE, 0)] > 3 and sum(1 for (k, c) in seen if k == Cmd.LIQUIDATE and c) >= 2, seen
    assert e.margin_modes()

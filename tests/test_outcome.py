"""Outcome (YES/NO) markets and Resolve (issues 9 and 8): the merged book, minting, transfer and merging of
shares, multi-outcome events and Convert, resolution with a dispute window, every reject code with the state
unchanged, snapshots; both engines (``engine_cls``). The differential stream with outcome markets mixed with
spot and perps is in ``test_outcome_stream.py``."""
from __future__ import annotations

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.records import CancelReason, Cmd, Ev, MarketKind, OutcomeChange, OutcomeState, Tif
from engine.views import OutcomeEventView, OutcomeView, PositionView

from test_venues import codes, ok, state

USD, TEAM = 1, 2
BIN = 21  # a standalone binary market
EV1, EV2, EV3 = 31, 32, 33  # one event: exactly one of them resolves YES
EVENT = 7
PAYOUT = 1000  # one unit of collateral per lot: prices are 0.001 steps between 0 and 1
ADMIN, PROTOCOL, RESOLVER = 99, 800, 70
A, B, C = 11, 12, 13
FUND = 1_000_000
BUY, SELL = 0, 1
WINDOW = 1_000


def world(engine_cls, *, taker_bps=0, window=0):
    e = engine_cls(max_orders=1024, max_accounts=64, max_markets=64, max_assets=8)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(TEAM, "TEAM", 0))
    for account in (A, B, C):
        ok(e.deposit(account, USD, FUND))
    ok(e.set_venue_params(ADMIN, stake_asset=USD, min_stake=1, unbond_period=0, protocol_account=PROTOCOL,
                          admin=ADMIN))
    for market in (BIN, EV1, EV2, EV3):
        ok(e.add_market(market, TEAM, USD, tick_size=1, lot_size=1, min_size=1, taker_bps=taker_bps,
                        kind=MarketKind.OUTCOME))
    ok(e.configure_outcome(ADMIN, BIN, payout=PAYOUT, resolver=RESOLVER, dispute_window=window))
    for market in (EV1, EV2, EV3):
        ok(e.configure_outcome(ADMIN, market, payout=PAYOUT, resolver=RESOLVER, dispute_window=window, event=EVENT))
    return e


def of_kind(events, kind):
    return [ev for ev in events if ev["kind"] == kind]


def conserved(e) -> bool:
    """Balances + fees + collateral - the events' advances = deposits (USD is only deposited here)."""
    in_accounts = sum(sum(e.balance(a, USD)) for a in e.accounts())
    collateral = sum(oc.collateral for oc in e.outcomes())
    advances = sum(ev.advance for ev in e.outcome_events())
    return in_accounts + e.fees(USD) + collateral - advances == 3 * FUND


def check_outcome_invariants(e) -> None:
    """Per outcome market: YES outstanding = NO outstanding (with the event's) = collateral / payout; nothing
    negative; every account's held quote = its orders' holds."""
    for oc in e.outcomes():
        m = next(m for m in e.markets() if m.market_id == oc.market)
        sizes = [p.size for p in e.positions() if p.market == oc.market]
        yes = sum(s for s in sizes if s > 0)
        no = -sum(s for s in sizes if s < 0) + oc.event_no
        assert yes == no, (oc, sizes)
        assert oc.collateral == oc.payout * (yes // m.lot_size), oc
        assert oc.collateral >= 0 and oc.event_no >= 0
    for a in e.accounts():
        for asset, (free, held) in e.balances(a).items():
            assert free >= 0 and held >= 0, (a, asset, free, held)
    assert all(ev.advance >= 0 for ev in e.outcome_events())


def test_listing_mint_transfer_merge_dispute_overturn_and_payout(engine_cls):
    e = world(engine_cls, window=WINDOW)
    assert e.outcome(BIN) == OutcomeView(BIN, OutcomeState.OPEN, 0, PAYOUT, RESOLVER, WINDOW, 0, 0, 0, 0)
    # A buys YES at 0.600 (a bid holds 600 per lot), B buys NO at 0.400 (an ask at 600 holds 400 per lot)
    ok(e.place(A, BIN, BUY, 600, 10, 1))
    assert e.balance(A, USD) == (FUND - 6000, 6000)
    events = ok(e.place(B, BIN, SELL, 600, 10, 1))
    assert e.balance(A, USD) == (FUND - 6000, 0)  # the pair is minted: 6000 + 4000 locked
    assert e.balance(B, USD) == (FUND - 4000, 0)
    assert e.position(A, BIN) == PositionView(A, BIN, 10, 6000, 0, 0)
    assert e.position(B, BIN) == PositionView(B, BIN, -10, 4000, 0, 0)
    assert e.outcome(BIN).collateral == 10 * PAYOUT
    taker, maker = of_kind(events, Ev.OUTCOME_POSITION)
    assert (taker["account"], taker["reason"], taker["qty"], taker["remaining"], taker["maker_fee"],
            taker["taker_fee"], taker["maker_order"], taker["maker_account"]) == (
        B, OutcomeChange.FILL, -10, 4000, -4000, 10 * PAYOUT, FUND - 4000, 0)
    assert (maker["account"], maker["qty"], maker["maker_fee"]) == (A, 10, -6000)
    check_outcome_invariants(e)
    # transfer: A sells 4 YES to C at 0.700; the collateral does not move
    ok(e.place(C, BIN, BUY, 700, 4, 2))
    ok(e.place(A, BIN, SELL, 700, 4, 2))
    assert e.position(A, BIN) == PositionView(A, BIN, 6, 3600, 0, 400)  # realised 4 x 700 - 2400
    assert e.balance(A, USD) == (FUND - 6000 + 2800, 0)
    assert e.position(C, BIN) == PositionView(C, BIN, 4, 2800, 0, 0)
    assert e.outcome(BIN).collateral == 10 * PAYOUT
    # merge: B (NO) buys 3 YES from C at 0.650: B's pairs go back to collateral, C is paid 650 each
    ok(e.place(C, BIN, SELL, 650, 3, 3))
    ok(e.place(B, BIN, BUY, 650, 3, 3))
    assert e.position(B, BIN) == PositionView(B, BIN, -7, 2800, 0, 1050 - 1200)  # 3 x 350 back for 3 x 400
    assert e.outcome(BIN).collateral == 7 * PAYOUT
    assert conserved(e)
    check_outcome_invariants(e)
    # a resting order, then the resolver proposes NO; trading stops, the admin overturns to YES
    ok(e.place(C, BIN, BUY, 100, 5, 4))
    events = ok(e.resolve(RESOLVER, BIN, yes=False, ts=10))
    (status,) = of_kind(events, Ev.OUTCOME_STATUS)
    assert (status["reason"], status["qty"], status["remaining"]) == (OutcomeState.PROPOSED, 0, 10 + WINDOW)
    assert codes(e.place(A, BIN, BUY, 500, 1, 5)) == [RC.OUTCOME_RESOLVING]
    assert codes(e.resolve(RESOLVER, BIN, yes=True)) == [RC.RESOLUTION_PENDING]
    assert codes(e.resolve(A, BIN, yes=True)) == [RC.NOT_RESOLVER]
    events = ok(e.resolve(ADMIN, BIN, yes=True, ts=20))
    cancelled = of_kind(events, Ev.CANCELLED)
    assert [(ev["account"], ev["code"]) for ev in cancelled] == [(C, RC.OUTCOME_RESOLVED)]
    settled = of_kind(events, Ev.OUTCOME_POSITION)
    assert [(ev["account"], ev["maker_fee"], ev["reason"]) for ev in settled] == [  # in order of first fill
        (B, 0, OutcomeChange.SETTLE), (A, 6 * PAYOUT, OutcomeChange.SETTLE), (C, 1 * PAYOUT, OutcomeChange.SETTLE)]
    (status,) = of_kind(events, Ev.OUTCOME_STATUS)
    assert (status["reason"], status["qty"], status["taker_fee"]) == (OutcomeState.OVERTURNED, 1, 0)
    assert e.outcome(BIN) == OutcomeView(BIN, OutcomeState.FINAL, 1, PAYOUT, RESOLVER, WINDOW, 0, 0, 0, 0)
    assert all(p.size == 0 and p.entry_value == 0 for p in e.positions())
    assert e.position(A, BIN).realised == 400 + 6 * PAYOUT - 3600
    assert e.position(B, BIN).realised == -150 - 2800
    assert all(held == 0 for a in e.accounts() for _, held in e.balances(a).values())
    assert conserved(e)
    assert codes(e.place(A, BIN, BUY, 500, 1, 6)) == [RC.OUTCOME_RESOLVED]
    assert codes(e.resolve(ADMIN, BIN, yes=False)) == [RC.OUTCOME_RESOLVED]


def test_window_passes_on_the_clock(engine_cls):
    e = world(engine_cls, window=WINDOW)
    ok(e.place(A, BIN, BUY, 300, 2, 1))
    ok(e.place(B, BIN, SELL, 300, 2, 1))
    ok(e.resolve(RESOLVER, BIN, yes=False, ts=100))
    assert ok(e.deposit(C, USD, 1, ts=100 + WINDOW - 1)) is not None
    assert e.outcome(BIN).state == OutcomeState.PROPOSED
    e_events = ok(e.deposit(C, USD, 1, ts=100 + WINDOW))  # any command at the deadline finalises first
    assert [int(ev["kind"]) for ev in e_events][:3] == [Ev.OUTCOME_POSITION, Ev.OUTCOME_POSITION, Ev.OUTCOME_STATUS]
    assert e.outcome(BIN).state == OutcomeState.FINAL
    assert e.balance(B, USD) == (FUND - 2 * 700 + 2 * PAYOUT, 0)
    assert e.balance(A, USD) == (FUND - 2 * 300, 0)


def test_fees_are_on_each_side_leg(engine_cls):
    e = world(engine_cls, taker_bps=100)  # 1 %: a YES bid at 0.900 holds 900 + 9 per lot, a NO at 0.100 100 + 1
    ok(e.place(A, BIN, BUY, 900, 10, 1))
    assert e.balance(A, USD) == (FUND - 9090, 9090)
    ok(e.place(B, BIN, SELL, 900, 10, 1))  # B takes: buys NO at 100 per lot, fee 1 % of 1000
    assert e.balance(B, USD) == (FUND - 1000 - 10, 0)
    assert e.balance(A, USD) == (FUND - 9000, 0)  # maker fee 0
    assert e.fees(USD) == 10
    assert conserved(e)


def test_event_convert_and_resolution(engine_cls):
    e = world(engine_cls)
    # A holds 5 NO on EV1 (B the YES), 2 YES on EV2 bought from C (C holds NO there)
    ok(e.place(B, EV1, BUY, 300, 5, 1))
    ok(e.place(A, EV1, SELL, 300, 5, 1))
    ok(e.place(A, EV2, SELL, 500, 2, 2))  # A sells 2 at 500: A is short (NO) 2 on EV2
    ok(e.place(C, EV2, BUY, 500, 2, 2))
    before = e.balance(A, USD)
    events = ok(e.convert(A, EV1, 3))
    (conv,) = of_kind(events, Ev.OUTCOME_CONVERT)
    # 3 NO on EV1 -> 3 YES on EV2 and EV3; the event advances 2 x 3 x 1000 to mint them
    assert (conv["account"], conv["market"], conv["qty"], conv["taker_fee"]) == (A, EV1, 3, 6 * PAYOUT)
    moves = of_kind(events, Ev.OUTCOME_POSITION)
    assert [(ev["market"], ev["qty"], ev["maker_fee"]) for ev in moves] == [
        (EV1, -2, 0), (EV2, 1, 2 * PAYOUT), (EV3, 3, 0)]  # on EV2, 2 of the 3 YES merge with A's 2 NO
    assert e.balance(A, USD) == (before[0] + 2 * PAYOUT, before[1])
    assert e.outcome_events() == [OutcomeEventView(EVENT, 3, 3, 6 * PAYOUT)]
    assert [oc.event_no for oc in e.outcomes()[1:]] == [3, 3, 3]
    assert conserved(e)
    check_outcome_invariants(e)
    assert codes(e.convert(A, EV1, 3)) == [RC.NO_SHARES_TO_CONVERT]
    assert codes(e.convert(A, BIN, 1)) == [RC.NOT_IN_EVENT]
    # EV3 wins: its YES holders get 1000 each, EV1 and EV2 NO holders too; the advance is repaid
    events = ok(e.resolve(RESOLVER, EV3, yes=True))
    statuses = of_kind(events, Ev.OUTCOME_STATUS)
    assert [(ev["market"], ev["qty"], ev["reason"]) for ev in statuses] == [
        (EV1, 0, OutcomeState.FINAL), (EV2, 0, OutcomeState.FINAL), (EV3, 1, OutcomeState.FINAL)]
    assert e.outcome_events() == [OutcomeEventView(EVENT, 3, 3, 0)]
    assert all(oc.collateral == 0 for oc in e.outcomes())
    # NO on EV1 cost 5 x 700, NO on EV2 2 x 500; the merge paid 2 x 1000; EV1's 2 NO and EV3's 3 YES win
    assert e.balance(A, USD)[0] == FUND - 5 * 700 - 2 * 500 + 2 * PAYOUT + 2 * PAYOUT + 3 * PAYOUT
    assert conserved(e)
    check_outcome_invariants(e)


def test_an_event_resolves_by_its_winner_only(engine_cls):
    e = world(engine_cls)
    assert codes(e.resolve(RESOLVER, EV1, yes=False)) == [RC.INVALID_OUTCOME]
    ok(e.resolve(RESOLVER, EV2, yes=True))
    assert [oc.outcome for oc in e.outcomes()[1:]] == [0, 1, 0]
    assert codes(e.convert(A, EV1, 1)) in ([RC.OUTCOME_RESOLVED], [RC.NO_SHARES_TO_CONVERT])


def sender(account, **fields):
    return fields | {"account": account}


REJECTS = [
    # (code, command kind, fields)
    (RC.INVALID_ACCOUNT_ID, Cmd.OUTCOME_CONFIG, dict(account=0, market=41, price=PAYOUT, id=RESOLVER)),
    (RC.UNKNOWN_MARKET, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=60, price=PAYOUT, id=RESOLVER)),
    (RC.INVALID_MARKET_KIND, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=42, price=PAYOUT, id=RESOLVER)),
    (RC.NOT_VENUE_OPERATOR, Cmd.OUTCOME_CONFIG, dict(account=A, market=41, price=PAYOUT, id=RESOLVER)),
    (RC.OUTCOME_CONFIGURED, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=BIN, price=PAYOUT, id=RESOLVER)),
    (RC.INVALID_PAYOUT, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=41, price=1, id=RESOLVER)),
    (RC.INVALID_PAYOUT, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=41, price=(1 << 62) + 1, id=RESOLVER)),
    (RC.INVALID_RESOLVER, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=41, price=PAYOUT, id=0)),
    (RC.INVALID_DISPUTE_WINDOW, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=41, price=PAYOUT, id=RESOLVER, qty=-1)),
    (RC.INVALID_EVENT, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=41, price=PAYOUT, id=RESOLVER, aux=-1)),
    (RC.INVALID_EVENT, Cmd.OUTCOME_CONFIG, dict(account=ADMIN, market=41, price=2 * PAYOUT, id=RESOLVER, aux=EVENT)),
    (RC.OUTCOME_NOT_CONFIGURED, Cmd.PLACE, dict(account=A, market=41, price=500, qty=1, id=1)),
    (RC.OUTCOME_PRICE_OUT_OF_RANGE, Cmd.PLACE, dict(account=A, market=BIN, price=PAYOUT, qty=1, id=1)),
    (RC.INVALID_FLAGS, Cmd.PLACE, dict(account=A, market=BIN, price=500, qty=1, id=1, tif=Tif.IOC, flags=8)),
    (RC.INSUFFICIENT_BALANCE, Cmd.PLACE, dict(account=A, market=BIN, side=SELL, price=1, qty=1002, id=9)),
    (RC.INVALID_ACCOUNT_ID, Cmd.CONVERT, dict(account=0, market=EV1, qty=1)),
    (RC.UNKNOWN_ACCOUNT, Cmd.CONVERT, dict(account=55, market=EV1, qty=1)),
    (RC.UNKNOWN_MARKET, Cmd.CONVERT, dict(account=A, market=60, qty=1)),
    (RC.INVALID_MARKET_KIND, Cmd.CONVERT, dict(account=A, market=42, qty=1)),
    (RC.OUTCOME_NOT_CONFIGURED, Cmd.CONVERT, dict(account=A, market=41, qty=1)),
    (RC.NOT_IN_EVENT, Cmd.CONVERT, dict(account=A, market=BIN, qty=1)),
    (RC.QTY_NOT_POSITIVE, Cmd.CONVERT, dict(account=A, market=EV1, qty=0)),
    (RC.QTY_OFF_LOT, Cmd.CONVERT, dict(account=A, market=43, qty=1)),
    (RC.NO_SHARES_TO_CONVERT, Cmd.CONVERT, dict(account=A, market=EV1, qty=1)),
    (RC.INVALID_ACCOUNT_ID, Cmd.RESOLVE, dict(account=0, market=BIN, qty=1)),
    (RC.UNKNOWN_MARKET, Cmd.RESOLVE, dict(account=RESOLVER, market=60, qty=1)),
    (RC.INVALID_MARKET_KIND, Cmd.RESOLVE, dict(account=RESOLVER, market=42, qty=1)),
    (RC.OUTCOME_NOT_CONFIGURED, Cmd.RESOLVE, dict(account=RESOLVER, market=41, qty=1)),
    (RC.INVALID_OUTCOME, Cmd.RESOLVE, dict(account=RESOLVER, market=BIN, qty=2)),
    (RC.INVALID_OUTCOME, Cmd.RESOLVE, dict(account=RESOLVER, market=EV1, qty=0)),
    (RC.NOT_RESOLVER, Cmd.RESOLVE, dict(account=ADMIN, market=BIN, qty=1)),
]


def reject_world(engine_cls):
    e = world(engine_cls)
    ok(e.add_market(41, TEAM, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.OUTCOME))
    ok(e.add_market(42, TEAM, USD, tick_size=1, lot_size=1, min_size=1))
    ok(e.add_market(43, TEAM, USD, tick_size=1, lot_size=2, min_size=2, kind=MarketKind.OUTCOME))
    ok(e.configure_outcome(ADMIN, 43, payout=PAYOUT, resolver=RESOLVER, event=8))
    ok(e.add_market(44, TEAM, USD, tick_size=1, lot_size=2, min_size=2, kind=MarketKind.OUTCOME))
    ok(e.configure_outcome(ADMIN, 44, payout=PAYOUT, resolver=RESOLVER, event=8))
    ok(e.place(A, BIN, BUY, 500, 4, 1))  # state with an open order and positions to keep
    ok(e.place(B, EV1, BUY, 500, 4, 1))
    ok(e.place(A, EV1, SELL, 500, 2, 2))
    return e


@pytest.mark.parametrize("code,kind,fields", REJECTS, ids=[f"{c.name}-{i}" for i, (c, _, _) in enumerate(REJECTS)])
def test_every_reject_leaves_state_unchanged(engine_cls, code, kind, fields):
    e = reject_world(engine_cls)
    if code == RC.NO_SHARES_TO_CONVERT:
        fields = dict(fields, qty=4)  # A holds 2 NO on EV1
    before = state(e)
    events = e.submit(kind, **fields)
    assert codes(events) == [code]
    assert state(e) == before


def test_rejects_while_resolving_and_after(engine_cls):
    e = world(engine_cls, window=WINDOW)
    ok(e.place(B, EV1, BUY, 500, 4, 1))
    ok(e.place(A, EV1, SELL, 500, 2, 2))
    ok(e.resolve(RESOLVER, EV2, yes=True))
    before = state(e)
    assert codes(e.amend(B, order_id=1, price=400, qty=2)) == [RC.OUTCOME_RESOLVING]
    assert codes(e.convert(A, EV1, 1)) == [RC.OUTCOME_RESOLVING]
    assert codes(e.place(A, EV3, BUY, 100, 1, 3)) == [RC.OUTCOME_RESOLVING]
    assert codes(e.configure_outcome(ADMIN, 41, payout=PAYOUT, resolver=RESOLVER, event=EVENT)) == [RC.UNKNOWN_MARKET]
    assert state(e) == before
    ok(e.add_market(41, TEAM, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.OUTCOME))
    before = state(e)
    assert codes(e.configure_outcome(ADMIN, 41, payout=PAYOUT, resolver=RESOLVER, event=EVENT)) == [RC.INVALID_EVENT]
    assert state(e) == before
    ok(e.resolve(ADMIN, EV1, yes=True))  # overturned: EV1 wins
    before = state(e)
    assert codes(e.convert(A, EV1, 1)) == [RC.OUTCOME_RESOLVED]
    assert codes(e.amend(B, order_id=1, price=400, qty=2)) == [RC.ORDER_CLOSED]
    assert state(e) == before
    assert e.balance(B, USD) == (FUND - 1000 + 2 * PAYOUT, 0)


def test_snapshot_round_trip_mid_resolution():
    """Cython only (snapshots): positions, collateral, an event's advance, a proposed resolution and open
    orders survive export/import; both engines then agree on the rest, finalisation by the clock included."""
    from engine.matcher import Engine
    from engine.state import canonical_state

    e = world(Engine, window=WINDOW)
    ok(e.place(B, EV1, BUY, 300, 5, 1))
    ok(e.place(A, EV1, SELL, 300, 5, 1))
    ok(e.convert(A, EV1, 2))
    ok(e.place(A, BIN, BUY, 600, 3, 2))
    ok(e.place(B, BIN, SELL, 600, 2, 2))
    ok(e.place(C, BIN, SELL, 900, 4, 3))  # rests: a NO order holding 100 per lot
    ok(e.resolve(RESOLVER, BIN, yes=True, ts=50))
    copy = Engine.from_state(e.export_state(), max_orders=1024, max_accounts=64, max_markets=64, max_assets=8)
    assert canonical_state(copy) == canonical_state(e)
    assert copy.outcome_events() == e.outcome_events() and copy.outcome(BIN).state == OutcomeState.PROPOSED
    for engine_events in zip(*[(eng.deposit(C, USD, 1, ts=50 + WINDOW), eng.resolve(RESOLVER, EV2, yes=True, ts=60 + WINDOW),
                                eng.resolve(ADMIN, EV3, yes=True, ts=70 + WINDOW)) for eng in (e, copy)]):
        assert np.array_equal(*engine_events)
    assert canonical_state(copy) == canonical_state(e)
    assert all(oc.state == OutcomeState.FINAL for oc in e.outcomes()) and e.outcome(EV3).outcome == 1
    assert e.outcome_events()[0].advance == 0


def test_snapshot_keys_and_version():
    from engine.matcher import STATE_VERSION, Engine
    from engine.snapshot import STATE_KEYS

    state = world(Engine).export_state()
    assert STATE_VERSION >= 8 and int(state["counters"][0]) == STATE_VERSION  # 8 brought outcomes (9: venue risk)
    assert set(STATE_KEYS) <= set(state) and {"outcomes", "outcome_events"} <= set(STATE_KEYS)
    assert [int(m) for m in state["outcomes"]["market"]] == [BIN, EV1, EV2, EV3]


def test_outcome_positions_have_no_mark_and_stay_out_of_liquidation(engine_cls):
    """Beside a leveraged perpetual (``test_liquidation.liq_world``): an outcome market of the same venue and quote
    gets no Mark events; its fully paid positions count neither in a Liquidate's equity and maintenance nor as
    something to liquidate; a liquidation cancels the target's outcome order with its other orders in the venue's
    markets and leaves its outcome position and the market's collateral as they were."""
    from test_liquidation import BTC, D, PERP, crash, liq_world
    from test_liquidation import A as PERP_LONG
    from test_liquidation import USD as LIQ_USD

    om, e3 = 7, 16
    e = liq_world(engine_cls)
    ok(e.add_market(om, BTC, LIQ_USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.OUTCOME))
    ok(e.configure_outcome(ADMIN, om, payout=PAYOUT, resolver=RESOLVER))
    ok(e.deposit(PERP_LONG, LIQ_USD, 600 + 300))  # what its YES and its resting bid take: free stays 200
    ok(e.deposit(e3, LIQ_USD, 400))
    trades = [ok(e.place(D, om, SELL, 600, 1, 1)), ok(e.place(PERP_LONG, om, BUY, 600, 1, 1, tif=Tif.IOC)),
              ok(e.place(e3, om, SELL, 600, 1, 1)), ok(e.place(D, om, BUY, 600, 1, 2, tif=Tif.IOC))]
    ok(e.place(PERP_LONG, om, BUY, 300, 1, 2))
    assert not any(ev["kind"] == Ev.MARK for events in trades for ev in events)
    assert e.position(PERP_LONG, om) == PositionView(PERP_LONG, om, 1, 600, 0, 0)
    assert e.position(e3, om).size == -1 and e.outcome(om).collateral == PAYOUT
    # e3 holds only NO shares: nothing to liquidate (not "healthy")
    before = state(e)
    assert codes(e.liquidate(D, e3, 0, LIQ_USD)) == [RC.NOTHING_TO_LIQUIDATE]
    assert state(e) == before
    # at 960 the perpetual long is healthy on its own: 200 + 1000 - 400 >= 480 (its YES, at no mark, is not a loss)
    crash(e, 960, 2)
    assert codes(e.liquidate(D, PERP_LONG, 0, LIQ_USD)) == [RC.NOT_LIQUIDATABLE]
    crash(e, 900, 3)
    events = ok(e.liquidate(D, PERP_LONG, 0, LIQ_USD))
    (start,) = of_kind(events, Ev.LIQUIDATION)
    assert (start["price"], start["qty"]) == (200, 450)  # the equity and maintenance of the perpetual alone
    cancelled = [ev for ev in of_kind(events, Ev.CANCELLED) if ev["reason"] == CancelReason.LIQUIDATION]
    assert [(ev["market"], ev["account"], ev["price"]) for ev in cancelled] == [(om, PERP_LONG, 300)]
    assert e.balance(PERP_LONG, LIQ_USD)[1] == 0  # the bid's hold is back (the perpetual margin is gone too)
    assert e.position(PERP_LONG, PERP).size == 0
    assert e.position(PERP_LONG, om) == PositionView(PERP_LONG, om, 1, 600, 0, 0)
    assert e.outcome(om).collateral == PAYOUT
    assert not any(ev["kind"] in (Ev.OUTCOME_POSITION, Ev.MARK) and ev["market"] == om for ev in events)
    assert [m.market_id for m in e.market_risks()] == [PERP]  # only perpetual markets have a mark
    check_outcome_invariants(e)

"""Mark prices, liquidation, the insurance fund and auto-deleveraging (issue 9; ARCHITECTURE, "Liquidation,
insurance and ADL"), on both engines (``engine_cls``)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.records import Ev, MarketKind, Tif

from generators import ENGINE_KWARGS
from test_venues import codes, ok, state

USD, BTC = 1, 2
PERP, SPOT = 5, 6
BUY, SELL = 0, 1
ADMIN, FEED, PROTOCOL = 99, 77, 800
A, B, C, D = 11, 12, 13, 14
TICK = 5


def marks(events) -> list[tuple]:
    """(market, mark, oracle, impact mid, last, impact bid, impact ask) of each Mark event."""
    return [(int(e["market"]), int(e["price"]), int(e["qty"]), int(e["remaining"]), int(e["client_id"]),
             int(e["maker_order"]), int(e["maker_account"])) for e in events if e["kind"] == Ev.MARK]


def mark_world(engine_cls, impact_lots=2):
    """PERP (tick 5, lot 10) with an oracle of venue 0 fed by FEED, impact size ``impact_lots``; SPOT alongside."""
    e = engine_cls(**ENGINE_KWARGS)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    ok(e.add_market(PERP, BTC, USD, tick_size=TICK, lot_size=10, min_size=10, kind=MarketKind.PERPETUAL))
    ok(e.add_market(SPOT, BTC, USD, tick_size=TICK, lot_size=10, min_size=10))
    ok(e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1, protocol_account=PROTOCOL,
                          admin=ADMIN))
    ok(e.market_risk(ADMIN, PERP, max_leverage=1, maintenance_bps=5000, impact_lots=impact_lots))
    ok(e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=1_000))
    for account in (A, B, C, D):
        ok(e.deposit(account, USD, 10_000_000))
        ok(e.deposit(account, BTC, 10_000))
    return e


def test_mark_rule_inputs_missing_and_median(engine_cls):
    e = mark_world(engine_cls)
    assert e.market_risks()[0].mark == 0
    # only the impact mid: 2 lots deep on each side (bids 100 x1 + 95 x2, asks 120 x3) -> (95 + 120) / 2 = 107.5 -> 105
    ok(e.place(A, PERP, BUY, 100, 10, 1))
    assert marks(ok(e.place(A, PERP, BUY, 95, 20, 2))) == []  # one side only: no impact mid yet
    assert marks(ok(e.place(B, PERP, SELL, 120, 30, 1))) == [(PERP, 105, 0, 105, 0, 95, 120)]
    # the oracle alone with the impact mid: the oracle wins over a book-derived input
    assert marks(ok(e.oracle_price(FEED, 0, PERP, 200, feed_id=1, source_ts=1))) == [(PERP, 200, 200, 105, 0, 95, 120)]
    # a trade: all three, the median; the trade took one lot of asks, so the impact ask is still 120
    events = ok(e.place(C, PERP, BUY, 120, 10, 1, tif=Tif.IOC))
    assert marks(events) == [(PERP, 120, 200, 105, 120, 95, 120)]
    # the command's last event; its batch's BookLevel events follow it
    assert events[events["kind"] != Ev.BOOK_LEVEL][-1]["kind"] == Ev.MARK and events[-1]["kind"] == Ev.BOOK_LEVEL
    assert e.market_risks()[0].mark == 120
    # the oracle goes stale (a command past its timeout): oracle missing, the last trade over the impact mid (120
    # again: no Mark event); then a lower oracle price is the median
    assert marks(ok(e.deposit(D, USD, 1, ts=5_000))) == [] and e.oracle(0, PERP).stale
    ok(e.oracle_price(FEED, 0, PERP, 110, feed_id=1, source_ts=2, ts=5_001))
    assert e.market_risks()[0].mark == 110  # median(110, 105, 120)
    # spot markets have no mark
    ok(e.place(A, SPOT, BUY, 100, 10, 3))
    assert marks(ok(e.place(B, SPOT, SELL, 100, 10, 3, tif=Tif.IOC))) == []


def test_an_untraded_perpetuals_band_is_around_its_mark(engine_cls):
    """Before its first trade a perpetual's band is around its mark (here the oracle's price), so that the first
    trade cannot be anywhere; once it has traded, around the last trade, as in every market."""
    e = mark_world(engine_cls)
    ok(e.set_venue_risk(ADMIN, 0, PERP, band_bps=1000))  # 10 %
    ok(e.place(A, PERP, BUY, 5, 10, 1))  # no trade, no mark: nothing to bound it by
    ok(e.oracle_price(FEED, 0, PERP, 200, feed_id=1, source_ts=1))
    assert e.market_risks()[0].mark == 200
    before = state(e)
    for events in (e.place(B, PERP, SELL, 5, 10, 1),  # would trade at 5 against the oracle's 200
                   e.place(B, PERP, SELL, 175, 10, 1),  # 12.5 % under
                   e.amend(A, client_id=1, price=100, qty=10)):
        assert codes(events) == [RC.PRICE_OUTSIDE_BAND]
        assert state(e) == before
    ok(e.place(B, PERP, SELL, 180, 10, 2))  # 10 %: inside
    ok(e.place(C, PERP, BUY, 180, 10, 1, tif=Tif.IOC))  # the first trade, at 180
    assert e.market_risks()[0].mark > 180
    ok(e.place(B, PERP, SELL, 165, 10, 3))  # 8.3 % under the last trade (over 10 % under the mark)
    assert codes(e.place(B, PERP, SELL, 160, 10, 4)) == [RC.PRICE_OUTSIDE_BAND]


def test_mark_survives_export_import():
    from engine.matcher import Engine

    e = mark_world(Engine)
    ok(e.place(A, PERP, BUY, 100, 30, 1))
    ok(e.place(B, PERP, SELL, 130, 20, 1))
    ok(e.oracle_price(FEED, 0, PERP, 125, feed_id=1, source_ts=1))
    ok(e.place(C, PERP, SELL, 100, 10, 1, tif=Tif.IOC))
    copy = Engine.from_state(e.export_state(), **ENGINE_KWARGS)
    assert copy.market_risks() == e.market_risks() and e.market_risks()[0][3:] == (2, 0, 115)  # median(125, 115, 100)
    assert state(copy) == state(e)


# ---------------------------------------------------------------- liquidation, insurance, ADL

LEV = 10
E2 = 15
OPEN = [  # (maker, taker, taker side, price, lots): A +10 @1000, C +2 @1000 +3 @950, D +4 @950, B -12 @1000, E2 -7 @950
    (B, A, BUY, 1000, 10), (B, C, BUY, 1000, 2), (E2, C, BUY, 950, 3), (E2, D, BUY, 950, 4),
]
DEPOSITS = {A: 1_200, C: 685, D: 100_000, B: 100_000, E2: 100_000, PROTOCOL: 700}


def liq_world(engine_cls):
    """PERP at 10x, maintenance 5000 bps, no fees, venue 0's oracle (fed by FEED) as the mark; the positions of
    OPEN, A with 200 free beside its margin, C with 200; the protocol account (venue 0's fund) holds 700."""
    e = engine_cls(**ENGINE_KWARGS)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    ok(e.add_market(PERP, BTC, USD, tick_size=1, lot_size=10, min_size=10, kind=MarketKind.PERPETUAL))
    ok(e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1, protocol_account=PROTOCOL,
                          admin=ADMIN))
    ok(e.market_risk(ADMIN, PERP, max_leverage=LEV, maintenance_bps=5000))
    ok(e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=10**15))
    for account, amount in DEPOSITS.items():
        ok(e.deposit(account, USD, amount))
    ok(e.oracle_price(FEED, 0, PERP, 1000, feed_id=1, source_ts=1))
    for i, (maker, taker, side, price, lots) in enumerate(OPEN):
        ok(e.place(maker, PERP, 1 - side, price, lots * 10, 100 + i))
        ok(e.place(taker, PERP, side, price, lots * 10, 100 + i, tif=Tif.IOC))
    return e


def crash(e, price, ts):
    return ok(e.oracle_price(FEED, 0, PERP, price, feed_id=1, source_ts=ts))


def of_kind(events, kind) -> list:
    return [ev for ev in events if ev["kind"] == kind]


BAD_LIQUIDATE = [
    ("sender not positive", dict(account=0, target=A, venue=0, asset=USD), RC.INVALID_ACCOUNT_ID),
    ("unknown venue", dict(account=D, target=A, venue=77, asset=USD), RC.UNKNOWN_VENUE),
    ("unknown asset", dict(account=D, target=A, venue=0, asset=9), RC.UNKNOWN_ASSET),
    ("target not positive", dict(account=D, target=0, venue=0, asset=USD), RC.INVALID_ACCOUNT_ID),
    ("unknown target", dict(account=D, target=4242, venue=0, asset=USD), RC.UNKNOWN_ACCOUNT),
    ("the fund itself", dict(account=D, target=PROTOCOL, venue=0, asset=USD), RC.INSURANCE_FUND_ACCOUNT),
    ("no position in the asset", dict(account=D, target=A, venue=0, asset=BTC), RC.NOTHING_TO_LIQUIDATE),
    ("no position at all", dict(account=D, target=ADMIN, venue=0, asset=USD), RC.NOTHING_TO_LIQUIDATE),
    ("healthy (a stale keeper)", dict(account=D, target=A, venue=0, asset=USD), RC.NOT_LIQUIDATABLE),
]


@pytest.mark.parametrize("what, fields, code", BAD_LIQUIDATE, ids=[b[0] for b in BAD_LIQUIDATE])
def test_bad_liquidate_is_rejected_and_changes_nothing(engine_cls, what, fields, code):
    e = liq_world(engine_cls)
    ok(e.deposit(ADMIN, USD, 1))
    crash(e, 960, 2)  # A: equity 1200 - 400 = 800 >= maintenance 480
    before = state(e)
    ev = e.liquidate(**fields)
    assert [int(x) for x in ev["kind"]] == [Ev.REJECTED] and codes(ev) == [code], what
    assert state(e) == before


def crash_scenario(e) -> list[np.ndarray]:
    """A price crash through A's and C's liquidation prices: A partly on the book, the rest to the insurance fund;
    then C, which the fund cannot margin, auto-deleveraged against the shorts. Returns each command's events."""
    out = [crash(e, 900, 2)]
    out.append(ok(e.place(D, PERP, BUY, 890, 30, 1)))  # a bid above A's bankruptcy price (880)
    out.append(ok(e.liquidate(D, A, 0, USD)))
    out.append(crash(e, 850, 3))
    out.append(ok(e.liquidate(D, C, 0, USD)))
    out.append(e.liquidate(D, C, 0, USD))  # nothing left
    out.append(e.liquidate(D, D, 0, USD))  # healthy
    return out


def test_price_crash_ends_in_insurance_then_adl(engine_cls):
    e = liq_world(engine_cls)
    out = crash_scenario(e)
    liq_a = out[2]
    (start,) = of_kind(liq_a, Ev.LIQUIDATION)
    assert (start["account"], start["client_id"], start["price"], start["qty"]) == (A, D, 200, 450)
    accepted = [ev for ev in of_kind(liq_a, Ev.ACCEPTED) if ev["flags"] == 32]
    assert [(ev["side"], ev["price"], ev["qty"]) for ev in accepted] == [(SELL, 880, 100)]  # the bankruptcy price
    assert [(f["price"], f["qty"], f["taker_fee"]) for f in of_kind(liq_a, Ev.FILL)] == [(890, 30, 0)]
    (takeover,) = of_kind(liq_a, Ev.DELEVERAGE)
    # A's equity after the book: 170; the rest (7 lots) at (6300 - 170) / 7 -> 876, margined by the fund like an
    # order: a hold of 7 x ceil(876 / 10), of which the initial margin ceil(6132 / 10) stays held
    assert (takeover["reason"], takeover["maker_account"], takeover["price"], takeover["qty"]) == (1, PROTOCOL, 876, 70)
    assert e.position(PROTOCOL, PERP)[2:5] == (70, 7 * 876, 614) and e.balance(PROTOCOL, USD) == (86, 614)
    assert e.position(A, PERP).size == 0 and e.balance(A, USD) == (2, 0)  # equity 2 >= 0: no shortfall
    (done,) = of_kind(liq_a, Ev.LIQUIDATED)
    assert (done["price"], done["qty"], done["remaining"], done["client_id"]) == (2, 0, 0, 0)
    # C at 850: equity 85 < 213; no bids; the fund (86 free) cannot margin 5 x 84: ADL against B (ratio 1.5) first
    liq_c = out[4]
    adl = of_kind(liq_c, Ev.DELEVERAGE)
    assert [(d["reason"], d["maker_account"], d["price"], d["qty"]) for d in adl] == [(2, B, 833, 50)]
    assert e.position(B, PERP).size == -70 and e.position(C, PERP).size == 0
    assert e.balance(C, USD)[0] >= 0
    assert codes(out[5]) == [RC.NOTHING_TO_LIQUIDATE] and codes(out[6]) == [RC.NOT_LIQUIDATABLE]
    assert sum(p.size for p in e.positions()) == 0


def test_crash_scenario_is_identical_on_both_engines():
    from engine.matcher import Engine
    from engine.reference import ReferenceEngine

    got = [crash_scenario(liq_world(cls)) for cls in (Engine, ReferenceEngine)]
    for a, b in zip(*got):
        assert a.tobytes() == b.tobytes()


def random_crash_commands(seed: int, n_rounds: int = 60) -> list[tuple[str, dict]]:
    """A seeded stream of crashes and recoveries over thinly funded leveraged accounts: random trades open
    positions, the oracle (the mark while the book is one-sided or thin) moves by up to 15 % a round, a few
    resting orders sit at random prices, and keepers send Liquidate for random accounts (most refused)."""
    import random

    r = random.Random(seed)
    traders = list(range(30, 42))
    cmds: list[tuple[str, dict]] = []
    for a in traders:
        cmds.append(("deposit", dict(account=a, asset=USD, amount=r.choice([300, 600, 1_000, 5_000, 50_000]))))
    cmds.append(("deposit", dict(account=PROTOCOL, asset=USD, amount=r.choice([0, 500, 5_000]))))  # 0: skipped
    price, ts, cid = 1000, 2, 1000
    for _ in range(n_rounds):
        for _ in range(r.randint(0, 3)):  # a trade between two traders near the mark
            maker, taker = r.sample(traders, 2)
            side = r.randint(0, 1)
            p = max(1, price + r.randint(-20, 20))
            lots = r.randint(1, 5)
            cid += 1
            cmds.append(("place", dict(account=maker, market=PERP, side=1 - side, price=p, qty=lots * 10, client_id=cid)))
            cmds.append(("place", dict(account=taker, market=PERP, side=side, price=p, qty=lots * 10, client_id=cid,
                                        tif=Tif.IOC)))
        if r.random() < 0.5:  # a resting order somewhere (liquidations may hit it)
            cid += 1
            cmds.append(("place", dict(account=r.choice(traders), market=PERP, side=r.randint(0, 1),
                                       price=max(1, price + r.randint(-150, 150)), qty=10 * r.randint(1, 4),
                                       client_id=cid)))
        price = max(50, price + int(price * r.uniform(-0.15, 0.12)))
        ts += 1
        cmds.append(("oracle_price", dict(account=FEED, venue=0, market=PERP, price=price, feed_id=1, source_ts=ts)))
        for _ in range(r.randint(1, 4)):
            cmds.append(("liquidate", dict(account=r.choice(traders), target=r.choice(traders + [PROTOCOL]), venue=0,
                                           asset=USD)))
    return cmds


def replay_on_both(engines, cmds, net: dict, check):
    """Run ``cmds`` (engine API calls, as ``random_crash_commands`` makes them) on the Cython engine and the reference
    in turn, asserting the same events; after each, ``check(reference, net)`` with ``net`` the deposits per asset so
    far.  Yields (index in cmds, the events)."""
    for i, (name, fields) in enumerate(cmds):
        if name == "deposit" and fields["amount"] <= 0:
            continue
        got = [getattr(e, name)(**fields) for e in engines]
        assert got[0].tobytes() == got[1].tobytes(), (name, fields)
        if name == "deposit":
            net[fields["asset"]] += fields["amount"]
        check(engines[1], net)
        yield i, got[1]


@pytest.mark.parametrize("seed", range(6))
def test_random_crashes_differential_and_invariants(seed):
    """Both engines event for event on random crash streams; after every command the reference model holds the
    perpetual invariants (positions sum to 0, held = holds + margins, conservation), and every liquidation
    ends with the target's equity at or above 0, its shortfall covered in full."""
    from collections import defaultdict

    from engine.matcher import Engine
    from engine.reference import ReferenceEngine
    from test_perp import check_perp_invariants

    engines = [liq_world(cls) for cls in (Engine, ReferenceEngine)]
    ref = engines[1]
    net = defaultdict(int)
    for account, amount in DEPOSITS.items():
        net[USD] += amount
    seen = defaultdict(int)
    for _, ev in replay_on_both(engines, random_crash_commands(seed), net, check_perp_invariants):
        for done in of_kind(ev, Ev.LIQUIDATED):
            assert done["price"] >= 0 and done["client_id"] == 0, done  # equity after >= 0, nothing uncovered
            seen["liquidated"] += 1
        for d in of_kind(ev, Ev.DELEVERAGE):
            seen[int(d["reason"])] += 1
        seen["book"] += sum(1 for a in of_kind(ev, Ev.ACCEPTED) if a["flags"] == 32)
    assert engines[0].market_risks() == ref.market_risks()
    assert seen["liquidated"] > 0, dict(seen)
    print(seed, dict(seen))


def test_exhausted_fund_in_one_venue_changes_nothing_in_another(engine_cls):
    """Venue 0's fund is empty, so A's liquidation ends in ADL there; venue 1's risk group (its market, its traders'
    positions and balances, its insurance fund) is untouched, though B trades in both."""
    OP, INS, F, G = 50, 51, 52, 53
    PERP2 = 7
    e = liq_world(engine_cls)
    ok(e.deposit(OP, BTC, 10))
    ok(e.launch_venue(OP, 1, 5, insurance_account=INS))
    ok(e.add_market(PERP2, BTC, USD, tick_size=1, lot_size=10, min_size=10, kind=MarketKind.PERPETUAL, venue=1))
    ok(e.deposit(INS, USD, 50_000))
    for account in (F, G):
        ok(e.deposit(account, USD, 50_000))
    ok(e.place(F, PERP2, SELL, 500, 40, 1, venue=1))
    ok(e.place(G, PERP2, BUY, 500, 30, 1, venue=1, tif=Tif.IOC))
    ok(e.place(B, PERP2, BUY, 500, 10, 999, venue=1, tif=Tif.IOC))
    ok(e.withdraw(PROTOCOL, USD, DEPOSITS[PROTOCOL]))  # venue 0's insurance fund is exhausted
    crash(e, 900, 2)

    def venue1():
        return ([e.position(a, PERP2) for a in (F, G, B)], [e.balances(a) for a in (F, G, INS, OP)],
                e.market_risks()[1], e.l3(PERP2))

    before = venue1()
    events = ok(e.liquidate(D, A, 0, USD))
    adl = of_kind(events, Ev.DELEVERAGE)
    assert adl and all(d["reason"] == 2 and d["market"] == PERP for d in adl)
    assert e.position(A, PERP).size == 0 and e.position(PROTOCOL, PERP) is None
    assert venue1() == before
    assert codes(e.liquidate(D, G, 1, USD)) == [RC.NOT_LIQUIDATABLE]

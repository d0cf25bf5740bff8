"""Funding of perpetual markets (issue 9; ARCHITECTURE, "Funding"): FundingConfig, premium samples on the engine
clock, ApplyFunding's zero-sum transfers with the remainder to the insurance fund, and a funding-driven shortfall
through Liquidate's fund payment and ADL haircuts, on both engines (``engine_cls``)."""
from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.matcher import Engine
from engine.records import RATE_SCALE, Deleverage, Ev, EvFlag, MarketKind, Tif, Transfer
from engine.reference import ReferenceEngine
from engine.views import FundingView

from generators import ENGINE_KWARGS
from test_venues import codes, ok, state

USD, BTC = 1, 2
PERP, SPOT = 5, 6
BUY, SELL = 0, 1
ADMIN, FEED, PROTOCOL, KEEPER = 99, 77, 800, 55
A, B, C, D = 11, 12, 13, 14
INTERVAL, SAMPLE = 1_000, 100


def funding_world(engine_cls, *, leverage=1, interval=INTERVAL, sample=SAMPLE, interest=0, clamp=0, cap=RATE_SCALE,
                  deposits=None):
    """PERP (tick 1, lot 10) listed by venue 0, whose fund is PROTOCOL; venue 0's oracle fed by FEED at 1000; funding
    every ``interval`` ns of engine clock, sampled every ``sample``; SPOT alongside. All at ts 0."""
    e = engine_cls(**ENGINE_KWARGS)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    ok(e.add_market(PERP, BTC, USD, tick_size=1, lot_size=10, min_size=10, kind=MarketKind.PERPETUAL))
    ok(e.add_market(SPOT, BTC, USD, tick_size=1, lot_size=10, min_size=10))
    ok(e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1, protocol_account=PROTOCOL,
                          admin=ADMIN))
    ok(e.market_risk(ADMIN, PERP, max_leverage=leverage, maintenance_bps=5000))
    ok(e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=10**15))
    ok(e.funding_config(ADMIN, PERP, interval_ns=interval, sample_interval_ns=sample, interest=interest, clamp=clamp,
                        cap=cap))
    for account, amount in (deposits or {A: 100_000, B: 100_000, C: 100_000, D: 100_000}).items():
        ok(e.deposit(account, USD, amount))
    ok(e.oracle_price(FEED, 0, PERP, 1000, feed_id=1, source_ts=1))
    return e


def trade(e, maker, taker, side, price, lots, cid, ts=0):
    ok(e.place(maker, PERP, 1 - side, price, lots * 10, cid, ts=ts))
    return ok(e.place(taker, PERP, side, price, lots * 10, cid, tif=Tif.IOC, ts=ts))


def transfers(events, reason) -> list[tuple[int, int]]:
    """(account, amount) of each VenueTransfer with ``reason``."""
    return [(int(ev["account"]), int(ev["qty"])) for ev in events
            if ev["kind"] == Ev.VENUE_TRANSFER and ev["reason"] == reason]


def funding_event(events) -> dict:
    (ev,) = [ev for ev in events if ev["kind"] == Ev.FUNDING]
    return dict(market=int(ev["market"]), venue=int(ev["venue"]), due=int(ev["order_id"]), fund=int(ev["account"]),
                mark=int(ev["client_id"]), rate=int(ev["price"]), premium=int(ev["qty"]), samples=int(ev["remaining"]),
                paid=int(ev["maker_order"]), next=int(ev["maker_account"]), received=int(ev["maker_fee"]),
                remainder=int(ev["taker_fee"]))


def premium_world(engine_cls, **config):
    """A long 3 lots against B short 2 and C short 1 at 1000; D quotes 1090 / 1110 (impact mid 1100: premium +10 %,
    1e7); the mark stays 1000 (median of the oracle 1000, the impact mid and the last trade 1000)."""
    e = funding_world(engine_cls, **config)
    trade(e, B, A, BUY, 1000, 2, 1)
    trade(e, C, A, BUY, 1000, 1, 2)
    ok(e.place(D, PERP, BUY, 1090, 10, 3))
    ok(e.place(D, PERP, SELL, 1110, 10, 4))
    assert e.market_risks()[0].mark == 1000
    return e


def test_funding_pays_ceil_receives_floor_and_the_remainder_goes_to_the_fund(engine_cls):
    e = premium_world(engine_cls, cap=1_234_567)
    assert e.fundings()[0] == FundingView(PERP, INTERVAL, SAMPLE, 0, 0, 1_234_567, 100, 1000, 0, 0)
    assert codes(e.apply_funding(KEEPER, PERP, ts=500)) == [RC.FUNDING_NOT_DUE]  # takes one sample first
    assert e.fundings()[0][-4:] == (600, 1000, 10_000_000, 1)  # missed sample times are not made up
    free = {a: e.balance(a, USD)[0] for a in (A, B, C, PROTOCOL)}
    events = ok(e.apply_funding(KEEPER, PERP, ts=1000))  # one more sample at 1000, then the funding
    # rate = 1e7 + clamp(0 - 1e7, +-0) capped at 1234567; A pays ceil(3000 x rate), B and C get floor of theirs
    assert transfers(events, Transfer.FUNDING) == [(A, -38), (B, 24), (C, 12)]
    assert transfers(events, Transfer.FUNDING_REMAINDER) == [(PROTOCOL, 2)]
    assert funding_event(events) == dict(market=PERP, venue=0, due=1000, fund=PROTOCOL, mark=1000, rate=1_234_567,
                                         premium=10_000_000, samples=2, paid=38, next=2000, received=36, remainder=2)
    assert events[-1]["kind"] == Ev.FUNDING
    assert all(int(ev["price"]) == PERP for ev in events if ev["kind"] == Ev.VENUE_TRANSFER)
    changes = {a: e.balance(a, USD)[0] - free[a] for a in free}
    assert changes == {A: -38, B: 24, C: 12, PROTOCOL: 2} and sum(changes.values()) == 0
    assert e.fundings()[0][-4:] == (1100, 2000, 0, 0)
    assert codes(e.apply_funding(KEEPER, PERP, ts=1999)) == [RC.FUNDING_NOT_DUE]


def test_interest_clamp_and_no_sample(engine_cls):
    e = premium_world(engine_cls, interest=10_000, clamp=30_000)
    assert funding_event(ok(e.apply_funding(KEEPER, PERP, ts=1000)))["rate"] == 10_000_000 - 30_000
    # no sample in the next interval (the oracle went stale by a reconfiguration's short timeout): rate 0, no transfers
    ok(e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=1, ts=1000))
    events = ok(e.apply_funding(KEEPER, PERP, ts=2000))
    assert funding_event(events)["samples"] == 0 and funding_event(events)["rate"] == 0
    assert not transfers(events, Transfer.FUNDING)


def test_shorts_pay_when_the_impact_mid_is_below_the_oracle_and_free_may_go_negative(engine_cls):
    e = premium_world(engine_cls, deposits={A: 100_000, B: 2_000, C: 1_000, D: 100_000})
    ok(e.cancel(D, client_id=3))
    ok(e.place(D, PERP, BUY, 500, 10, 5))  # impact mid (500 + 1110) / 2 = 805: premium -19.5 %
    for k in range(1, 4):
        events = ok(e.apply_funding(KEEPER, PERP, ts=k * 1000))
        assert funding_event(events)["rate"] == -19_500_000
        assert transfers(events, Transfer.FUNDING) == [(A, 585), (B, -390), (C, -195)]
    assert e.balance(C, USD)[0] == 1_000 - 1_000 - 3 * 195 < 0  # its 1x margin took the rest: funding went below


BAD_FUNDING = [
    ("sender not positive", lambda e: e.apply_funding(0, PERP, ts=1000), RC.INVALID_ACCOUNT_ID),
    ("unknown market", lambda e: e.apply_funding(KEEPER, 99, ts=1000), RC.UNKNOWN_MARKET),
    ("spot market", lambda e: e.apply_funding(KEEPER, SPOT, ts=1000), RC.INVALID_MARKET_KIND),
    ("not due", lambda e: e.apply_funding(KEEPER, PERP, ts=1000), RC.FUNDING_NOT_DUE),
    ("config: sender not positive",
     lambda e: e.funding_config(0, PERP, interval_ns=10, sample_interval_ns=1, cap=1, ts=1000), RC.INVALID_ACCOUNT_ID),
    ("config: unknown market",
     lambda e: e.funding_config(ADMIN, 99, interval_ns=10, sample_interval_ns=1, cap=1, ts=1000), RC.UNKNOWN_MARKET),
    ("config: spot market", lambda e: e.funding_config(ADMIN, SPOT, interval_ns=10, sample_interval_ns=1, cap=1,
                                                       ts=1000), RC.INVALID_MARKET_KIND),
    ("config: not the operator",
     lambda e: e.funding_config(A, PERP, interval_ns=10, sample_interval_ns=1, cap=1, ts=1000), RC.NOT_VENUE_OPERATOR),
    ("config: interval 0", lambda e: e.funding_config(ADMIN, PERP, interval_ns=0, sample_interval_ns=1, cap=1, ts=1000),
     RC.INVALID_FUNDING_INTERVAL),
    ("config: sample 0", lambda e: e.funding_config(ADMIN, PERP, interval_ns=10, sample_interval_ns=0, cap=1, ts=1000),
     RC.INVALID_FUNDING_INTERVAL),
    ("config: sample past the interval",
     lambda e: e.funding_config(ADMIN, PERP, interval_ns=10, sample_interval_ns=11, cap=1, ts=1000),
     RC.INVALID_FUNDING_INTERVAL),
    ("config: interest too high", lambda e: e.funding_config(ADMIN, PERP, interval_ns=10, sample_interval_ns=1,
                                                             interest=RATE_SCALE + 1, cap=1, ts=1000),
     RC.INVALID_FUNDING_RATE),
    ("config: interest too low", lambda e: e.funding_config(ADMIN, PERP, interval_ns=10, sample_interval_ns=1,
                                                            interest=-RATE_SCALE - 1, cap=1, ts=1000),
     RC.INVALID_FUNDING_RATE),
    ("config: clamp too high", lambda e: e.funding_config(ADMIN, PERP, interval_ns=10, sample_interval_ns=1,
                                                          clamp=RATE_SCALE + 1, cap=1, ts=1000),
     RC.INVALID_FUNDING_RATE),
    ("config: cap 0", lambda e: e.funding_config(ADMIN, PERP, interval_ns=10, sample_interval_ns=1, cap=0, ts=1000),
     RC.INVALID_FUNDING_RATE),
    ("config: cap too high", lambda e: e.funding_config(ADMIN, PERP, interval_ns=10, sample_interval_ns=1,
                                                        cap=RATE_SCALE + 1, ts=1000), RC.INVALID_FUNDING_RATE),
]


@pytest.mark.parametrize("what, command, code", BAD_FUNDING, ids=[b[0] for b in BAD_FUNDING])
def test_bad_funding_commands_are_rejected_and_change_nothing(engine_cls, what, command, code):
    e = premium_world(engine_cls)
    ok(e.apply_funding(KEEPER, PERP, ts=1000))  # the clock at 1000, sampled; the next funding at 2000
    before = state(e)
    events = command(e)
    assert [int(x) for x in events["kind"]] == [Ev.REJECTED] and codes(events) == [code], what
    assert state(e) == before


def test_no_funding_account_before_venue_params(engine_cls):
    e = engine_cls(**ENGINE_KWARGS)
    ok(e.add_asset(USD, "USD", 6))
    ok(e.add_asset(BTC, "BTC", 8))
    ok(e.add_market(PERP, BTC, USD, tick_size=1, lot_size=10, min_size=10, kind=MarketKind.PERPETUAL))
    assert e.fundings() == [FundingView(PERP, 3_600_000_000_000, 60_000_000_000, 0, 0, 1_000_000, 60_000_000_000,
                                        3_600_000_000_000, 0, 0)]
    before = state(e)
    assert codes(e.apply_funding(KEEPER, PERP, ts=3_599_999_999_999)) == [RC.FUNDING_NOT_DUE]
    ok(e.deposit(A, USD, 1, ts=3_600_000_000_000))
    before = state(e)
    assert codes(e.apply_funding(KEEPER, PERP, ts=3_600_000_000_000)) == [RC.NO_FUNDING_ACCOUNT]
    assert state(e) == before


def lockstep(engines, build):
    """The same command on both engines: their events must be equal."""
    got = [build(e) for e in engines]
    assert np.array_equal(got[0], got[1]), (got[0], got[1])
    return got[1]


def test_many_intervals_sum_to_zero_on_both_engines():
    """50 funding intervals of moving oracle prices, quotes and positions (4 traders at 1-5x): each ApplyFunding's
    transfers sum to exactly 0 with the remainder to the fund; per asset, balances - open entry values = deposits;
    both engines event for event and state for state."""
    r = random.Random(9)
    deposits = {A: 3_000_000, B: 3_000_000, C: 3_000_000, D: 3_000_000, PROTOCOL: 0}
    engines = [funding_world(cls, leverage=5, interval=INTERVAL, sample=37, interest=1_000, clamp=20_000,
                             cap=700_000, deposits={a: x for a, x in deposits.items() if x}) for cls in
               (Engine, ReferenceEngine)]
    ts, src, cid, remainders, applied = 0, 1, 100, 0, 0
    for interval in range(1, 51):
        while ts < interval * INTERVAL - 60:
            ts += r.randint(5, 60)
            x = r.random()
            if x < 0.2:
                src += 1
                price = r.randint(900, 1100)
                lockstep(engines, lambda e: ok(e.oracle_price(FEED, 0, PERP, price, feed_id=1, source_ts=src, ts=ts)))
            elif x < 0.6:
                cid += 1
                maker, taker = r.sample([A, B, C, D], 2)
                side, price, lots = r.randint(0, 1), r.randint(950, 1050), r.randint(1, 4)
                lockstep(engines, lambda e: e.place(maker, PERP, 1 - side, price, lots * 10, cid, ts=ts))
                lockstep(engines, lambda e: e.place(taker, PERP, side, price, lots * 10, cid, tif=Tif.IOC, ts=ts))
            else:
                cid += 1
                side = r.randint(0, 1)
                price = r.randint(850, 980) if side == BUY else r.randint(1020, 1150)
                lockstep(engines, lambda e: e.place(D, PERP, side, price, 10, cid, tif=Tif.GTC, ts=ts))
        ts = interval * INTERVAL + r.randint(0, 30)
        events = lockstep(engines, lambda e: e.apply_funding(KEEPER, PERP, ts=ts))
        if codes(events):
            continue
        applied += 1
        f = funding_event(events)
        moved = transfers(events, Transfer.FUNDING)
        rest = transfers(events, Transfer.FUNDING_REMAINDER)
        assert sum(x for _, x in moved) + sum(x for _, x in rest) == 0
        assert all(account == PROTOCOL and x > 0 for account, x in rest)
        assert f["paid"] == -sum(x for _, x in moved if x < 0) and f["received"] == sum(x for _, x in moved if x > 0)
        assert f["remainder"] == f["paid"] - f["received"] == sum(x for _, x in rest)
        assert -f["received"] - f["remainder"] <= 0 <= f["remainder"] < len(moved) + 1
        remainders += f["remainder"]
        for e in engines:
            owed = sum(p.entry_value if p.size > 0 else -p.entry_value for p in e.positions())
            total = sum(sum(e.balance(a, USD)) for a in e.accounts())
            assert total - owed == sum(deposits.values())
    assert engines[0].export_state()["funding"].tolist() == [tuple(f) for f in
                                                             [(PERP, 0) + tuple(engines[1].fundings()[0][1:])]]
    from engine.state import canonical_state
    assert canonical_state(engines[0]) == canonical_state(engines[1])
    assert applied == 50 and remainders > 0


def test_funding_survives_export_import():
    e = premium_world(Engine, cap=1_234_567)
    ok(e.deposit(A, 1, 1, ts=700))  # one sample
    copy = Engine.from_state(e.export_state(), **ENGINE_KWARGS)
    assert copy.fundings() == e.fundings() and e.fundings()[0].samples == 1
    assert np.array_equal(copy.apply_funding(KEEPER, PERP, ts=1000), e.apply_funding(KEEPER, PERP, ts=1000))
    old = e.export_state()
    del old["funding"]
    old["counters"][0] = 10
    assert Engine.from_state(old, **ENGINE_KWARGS).fundings()[0][1:] == (
        3_600_000_000_000, 60_000_000_000, 0, 0, 1_000_000, 60_000_000_000, 3_600_000_000_000, 0, 0)


def test_funding_drives_a_short_below_zero_and_liquidate_pays_from_the_fund_then_haircuts(engine_cls):
    """Shorts pay 45 % per interval (impact mid 550 against the oracle's 1000) until S, at 10x with 100 of margin, has
    equity -1250: its liquidation's bankruptcy price clamps to one tick, the fund takes the short over at 1, and the
    shortfall left (251) is paid by the fund up to its margin excess (101), the rest (150) haircut from L2's profit."""
    S, L, S2, L2 = A, B, C, D
    e = funding_world(engine_cls, leverage=10, deposits={S: 100, L: 10_000, S2: 100_000, L2: 10_000, PROTOCOL: 1200,
                                                         KEEPER: 100_000})
    trade(e, S2, L2, BUY, 800, 1, 1)
    trade(e, S, L, BUY, 1000, 1, 2)
    ok(e.place(KEEPER, PERP, BUY, 500, 10, 3))
    ok(e.place(KEEPER, PERP, SELL, 600, 10, 4))
    assert e.market_risks()[0].mark == 1000  # median(1000, 550, 1000)
    for k in range(1, 4):
        events = ok(e.apply_funding(KEEPER, PERP, ts=k * 1000))
        assert funding_event(events)["rate"] == -45_000_000
        assert dict(transfers(events, Transfer.FUNDING)) == {S: -450, S2: -450, L: 450, L2: 450}
    assert e.balance(S, USD) == (-1350, 100)
    events = ok(e.liquidate(KEEPER, S, 0, USD, ts=3000))
    kinds = [int(k) for k in events["kind"]]
    assert kinds == [Ev.LIQUIDATION, Ev.ACCEPTED, Ev.CANCELLED, Ev.DELEVERAGE, Ev.POSITION, Ev.POSITION,
                     Ev.VENUE_TRANSFER, Ev.VENUE_TRANSFER, Ev.DELEVERAGE, Ev.POSITION, Ev.VENUE_TRANSFER, Ev.LIQUIDATED]
    liq, acc, _, takeover = events[0], events[1], events[2], events[3]
    assert (int(liq["price"]), int(liq["qty"])) == (-1250, 50)
    assert int(acc["flags"]) == EvFlag.LIQUIDATION and int(acc["price"]) == 1  # the bankruptcy price clamped to a tick
    assert (int(takeover["reason"]), int(takeover["maker_account"]), int(takeover["price"])) == (
        Deleverage.INSURANCE, PROTOCOL, 1)
    assert transfers(events, Transfer.INSURANCE_SHORTFALL) == [(PROTOCOL, -101), (S, 101)]
    haircut = events[8]
    assert (int(haircut["reason"]), int(haircut["maker_account"]), int(haircut["maker_fee"])) == (
        Deleverage.SHORTFALL, L2, 150)
    assert e.position(L2, PERP)[2:4] == (10, 950)  # entry value 800 + 150: its unrealised profit 200 -> 50
    assert transfers(events, Transfer.ADL_SHORTFALL) == [(S, 150)]
    done = events[-1]
    assert (int(done["price"]), int(done["qty"]), int(done["remaining"]), int(done["client_id"])) == (0, 101, 150, 0)
    assert e.balance(S, USD) == (0, 0) and e.position(S, PERP).size == 0
    owed = sum(p.entry_value if p.size > 0 else -p.entry_value for p in e.positions())
    assert sum(sum(e.balance(a, USD)) for a in e.accounts()) - owed == 100 + 10_000 + 100_000 + 10_000 + 1200 + 100_000


@pytest.mark.parametrize("seed", [11, 12])
def test_funding_stream_differential(seed, tmp_path):
    from test_differential import run_differential

    from generators import FundingPerpStreamGenerator

    stats = run_differential(seed, 15_000, dump_dir=tmp_path, generator=FundingPerpStreamGenerator)
    assert stats["fills"] > 500


def test_funding_stream_invariants_after_every_chunk():
    """The perpetual invariants (test_perp) after every chunk of a funding stream on the reference model, and every
    ApplyFunding's transfers summing to 0 with the remainder to the listing venue's fund (venue 0: the protocol)."""
    from test_perp import check_perp_invariants

    from generators import FundingPerpStreamGenerator, run_stream

    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = FundingPerpStreamGenerator(13, limits=dict(ENGINE_KWARGS))
    net: dict[int, int] = defaultdict(int)
    applied = moved = 0
    for cmds, events in run_stream(e, gen, 12_000, chunk=100):
        balance = events[events["kind"] == Ev.BALANCE]
        for asset, amount in zip(balance["market"].tolist(), balance["qty"].tolist()):
            net[asset] += amount
        check_perp_invariants(e, net)
        by_cmd: dict[int, list] = defaultdict(list)
        for ev in events:
            by_cmd[int(ev["cmd_seq"])].append(ev)
        for evs in by_cmd.values():
            fundings = [ev for ev in evs if ev["kind"] == Ev.FUNDING]
            if not fundings:
                continue
            applied += 1
            total = sum(int(ev["qty"]) for ev in evs if ev["kind"] == Ev.VENUE_TRANSFER
                        and ev["reason"] in (Transfer.FUNDING, Transfer.FUNDING_REMAINDER))
            assert total == 0
            assert all(int(ev["account"]) == gen.PROTOCOL for ev in evs
                       if ev["kind"] == Ev.VENUE_TRANSFER and ev["reason"] == Transfer.FUNDING_REMAINDER)
            moved += int(fundings[0]["maker_order"] != 0)
    assert applied > 20 and moved > 5, (applied, moved)

"""Atomic multi-leg orders (issue 9): a MultiLeg header and its 2..4 Leg records, all legs filled in full at
their limits or the whole rejected with the failing leg named; both engines (``engine_cls``), the differential
stream with multi-leg orders (``generators.MultiLegStreamGenerator``) and the perpetual invariants after every
chunk."""
from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pytest

from engine.api import Leg, multi_leg_commands
from engine.codes import ResultCode as RC
from engine.matcher import Engine
from engine.records import COMMAND_DTYPE, Cmd, CmdFlag, Ev, MarketKind, OrdType, Stp, Tif
from engine.reference import ReferenceEngine

from generators import (ENGINE_KWARGS, SMALL_ENGINE_KWARGS, MultiLegStreamGenerator, OutcomeMultiLegStreamGenerator,
                        run_stream)
from test_differential import run_differential
from test_outcome_stream import check_stream_invariants
from test_perp import check_perp_invariants
from test_venues import codes, ok, state

USD, BTC, ETH, OKB = 1, 2, 3, 4
SPOT_BTC, SPOT_ETH, PERP = 1, 2, 5
ADMIN, OP, INS, PROTOCOL = 900, 10, 901, 800
MAKER, MAKER2, T = 11, 12, 13
BUY, SELL = 0, 1
FUND = 1_000_000


def world(engine_cls, max_orders: int = 1000, leverage: int = 1):
    """Spot BTC/USD and ETH/USD (taker 10 bps) and a BTC perpetual in USD (at ``leverage``); venue 1 (operator
    OP) offers all three; MAKER asks 10 BTC at 100 and bids 10 ETH at 50, MAKER2 asks 10 of the perpetual at 200."""
    e = engine_cls(max_orders=max_orders, max_accounts=100, max_markets=16, max_assets=8, max_venues=16)
    for asset, symbol in ((USD, "USD"), (BTC, "BTC"), (ETH, "ETH"), (OKB, "OKB")):
        ok(e.add_asset(asset, symbol, 6))
    ok(e.add_market(SPOT_BTC, BTC, USD, tick_size=1, lot_size=1, min_size=1, taker_bps=10))
    ok(e.add_market(SPOT_ETH, ETH, USD, tick_size=1, lot_size=1, min_size=1, taker_bps=10))
    ok(e.add_market(PERP, BTC, USD, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL))
    for account in (OP, MAKER, MAKER2, T):
        for asset in (USD, BTC, ETH, OKB):
            ok(e.deposit(account, asset, FUND))
    ok(e.set_venue_params(ADMIN, stake_asset=OKB, min_stake=1_000, unbond_period=1, protocol_account=PROTOCOL,
                          admin=ADMIN))
    ok(e.launch_venue(OP, 1, 5_000, insurance_account=INS))
    for market in (SPOT_BTC, SPOT_ETH, PERP):
        ok(e.offer_market(OP, 1, market))
    if leverage > 1:
        ok(e.market_risk(ADMIN, PERP, max_leverage=leverage, maintenance_bps=5000))
    ok(e.place(MAKER, SPOT_BTC, SELL, 100, 10, 1))
    ok(e.place(MAKER, SPOT_ETH, BUY, 50, 10, 2))
    ok(e.place(MAKER2, PERP, SELL, 200, 10, 3))
    return e


def of_kind(events, kind) -> list:
    return [ev for ev in events if ev["kind"] == kind]


def rejected_whole(e, events, code, leg: int, before) -> None:
    """One Rejected naming ``leg`` (0: the header), the header's account, and nothing changed."""
    assert [int(ev["kind"]) for ev in events] == [Ev.REJECTED], [Ev(int(k)).name for k in events["kind"]]
    assert (RC(int(events[0]["code"])), int(events[0]["reason"]), int(events[0]["account"])) == (code, leg, T)
    assert state(e) == before


def test_all_legs_fill_one_accepted_per_leg_then_the_fills(engine_cls):
    e = world(engine_cls)
    seq = e.cmd_seq
    events = e.multi_leg(T, 77, [Leg(SPOT_BTC, BUY, 100, 4, 5), Leg(SPOT_ETH, SELL, 50, 3, 6)])
    accepted, fills = of_kind(events, Ev.ACCEPTED), of_kind(events, Ev.FILL)
    assert [int(ev["kind"]) for ev in events[:4]] == [Ev.ACCEPTED, Ev.ACCEPTED, Ev.FILL, Ev.FILL]
    # linked: reason = leg number, maker_order = the parent id, maker_account = the leg count
    assert [(int(a["reason"]), int(a["maker_order"]), int(a["maker_account"]), int(a["client_id"]), int(a["market"]))
            for a in accepted] == [(1, 77, 2, 5, SPOT_BTC), (2, 77, 2, 6, SPOT_ETH)]
    assert [(int(f["market"]), int(f["qty"]), int(f["price"])) for f in fills] == [(SPOT_BTC, 4, 100), (SPOT_ETH, 3, 50)]
    # one command of three records: its events carry the header's sequence, the engine counts every record
    assert set(events["cmd_seq"].tolist()) == {seq + 1} and e.cmd_seq == seq + 3
    assert e.balance(T, BTC) == (FUND + 4, 0) and e.balance(T, ETH) == (FUND - 3, 0)
    assert e.balance(T, USD) == (FUND - 400 - 1 + 150 - 1, 0)  # taker fees ceil(0.4) and ceil(0.15)
    assert e.open_orders == 3  # the makers' rests; no leg ever rests


def test_one_thin_leg_rejects_all_and_changes_nothing(engine_cls):
    e = world(engine_cls)
    before = state(e)
    events = e.multi_leg(T, 1, [Leg(SPOT_BTC, BUY, 100, 4, 5), Leg(SPOT_ETH, SELL, 50, 11, 6)])  # 10 bid
    rejected_whole(e, events, RC.LEG_NOT_FILLABLE, 2, before)
    assert (int(events[0]["market"]), int(events[0]["qty"]), int(events[0]["client_id"])) == (SPOT_ETH, 11, 6)
    # a limit the book does not reach is the same
    rejected_whole(e, e.multi_leg(T, 1, [Leg(SPOT_BTC, BUY, 99, 4, 5), Leg(SPOT_ETH, SELL, 50, 1, 6)]),
                   RC.LEG_NOT_FILLABLE, 1, before)
    # the same legs one by one: the first would have filled
    assert of_kind(ok(e.place(T, SPOT_ETH, SELL, 50, 10, 9, tif=Tif.FOK)), Ev.FILL)


def test_spot_and_perpetual_legs_on_two_venues_fill_together(engine_cls):
    e = world(engine_cls)
    events = ok(e.multi_leg(T, 5, [Leg(PERP, BUY, 200, 2, 1), Leg(SPOT_BTC, BUY, 100, 2, 2, venue=1),
                                   Leg(SPOT_ETH, SELL, 50, 1, 3, venue=1)]))
    accepted = of_kind(events, Ev.ACCEPTED)
    assert [(int(a["venue"]), int(a["reason"]), int(a["maker_account"])) for a in accepted] == [
        (0, 1, 3), (1, 2, 3), (1, 3, 3)]
    assert [int(f["market"]) for f in of_kind(events, Ev.FILL)] == [PERP, SPOT_BTC, SPOT_ETH]
    assert e.position(T, PERP).size == 2 and e.position(MAKER2, PERP).size == -2
    assert e.balance(T, BTC)[0] == FUND + 2 and e.balance(T, ETH)[0] == FUND - 1
    # fills of the venue-1 legs pay venue 1's fees (0 bps here) into its pool, not the market's
    assert [int(f["taker_fee"]) for f in of_kind(events, Ev.FILL)] == [0, 0, 0]


def test_the_account_must_afford_all_legs_together(engine_cls):
    e = world(engine_cls)
    ok(e.withdraw(T, USD, FUND - 700))  # 700 USD: each buy alone fits, both do not
    before = state(e)
    legs = [Leg(SPOT_BTC, BUY, 100, 4, 1), Leg(PERP, BUY, 200, 2, 2)]  # holds 4 x (100 + 1 fee), then 400
    rejected_whole(e, e.multi_leg(T, 1, legs), RC.INSUFFICIENT_BALANCE, 2, before)
    # legs taking different assets do not add up: 401 USD and 3 ETH
    ok(e.multi_leg(T, 2, [Leg(SPOT_BTC, BUY, 100, 4, 1), Leg(SPOT_ETH, SELL, 50, 3, 2)]))
    assert of_kind(ok(e.place(T, PERP, BUY, 200, 2, 3, tif=Tif.FOK)), Ev.FILL)  # alone it was affordable


def test_margin_of_the_whole_set(engine_cls):
    e = world(engine_cls, leverage=10)
    ok(e.place(T, PERP, BUY, 200, 1, 1, tif=Tif.IOC))  # a long of 1 at 200, margin 20: the margin check now runs
    ok(e.place(MAKER, PERP, BUY, 100, 1, 4))
    ok(e.place(MAKER2, PERP, SELL, 100, 1, 5, tif=Tif.IOC))  # the mark falls to 100 (the last trade)
    ok(e.withdraw(T, USD, e.balance(T, USD)[0] - 500))
    # margin excess: free 500 + margin 20 - loss 100 - initial 10 = 410; the set holds 404 then 20 more
    legs = [Leg(SPOT_BTC, BUY, 100, 4, 1), Leg(PERP, BUY, 200, 1, 2)]
    before = state(e)
    rejected_whole(e, e.multi_leg(T, 1, legs), RC.INSUFFICIENT_MARGIN, 2, before)
    assert of_kind(ok(e.place(T, PERP, BUY, 200, 1, 12, tif=Tif.FOK)), Ev.FILL)  # the failing leg alone passes


def raw_unit(header: dict, legs: list[dict]) -> np.ndarray:
    cmds = np.zeros(1 + len(legs), dtype=COMMAND_DTYPE)
    cmds[0]["kind"] = Cmd.MULTI_LEG
    for name, value in dict(dict(account=T, qty=len(legs), id=1), **header).items():
        cmds[0][name] = value
    for k, fields in enumerate(legs, start=1):
        cmds[k]["kind"] = Cmd.LEG
        for name, value in dict(dict(account=T, tif=Tif.FOK, market=SPOT_BTC, side=BUY, price=100, qty=1, id=k),
                                **fields).items():
            cmds[k][name] = value
    return cmds


SECOND = dict(market=SPOT_ETH, side=SELL, price=50, qty=1, id=2)
BAD_UNITS = [
    ("no leg count", {"qty": 1}, [{}], RC.INVALID_LEG_COUNT, 0),
    ("five legs", {"qty": 5}, [{}, SECOND], RC.INVALID_LEG_COUNT, 0),
    ("parent id 0", {"id": 0}, [{}, SECOND], RC.INVALID_CLIENT_ID, 0),
    ("leg of another account", {}, [{}, dict(SECOND, account=MAKER)], RC.LEG_ACCOUNT_MISMATCH, 2),
    ("market order leg", {}, [{"ord_type": OrdType.MARKET}, SECOND], RC.INVALID_ORDER_TYPE, 1),
    ("IOC leg", {}, [{}, dict(SECOND, tif=Tif.IOC)], RC.INVALID_TIF, 2),
    ("two legs in one market", {}, [{}, dict(SECOND, market=SPOT_BTC)], RC.DUPLICATE_LEG_MARKET, 2),
    ("leg client ids repeat", {}, [{}, dict(SECOND, id=1)], RC.DUPLICATE_CLIENT_ID, 2),
    ("unknown market", {}, [{}, dict(SECOND, market=9)], RC.UNKNOWN_MARKET, 2),
    ("post-only leg", {}, [{"flags": CmdFlag.POST_ONLY}, SECOND], RC.INVALID_FLAGS, 1),
    ("reduce-only spot leg", {}, [{"flags": CmdFlag.REDUCE_ONLY}, SECOND], RC.INVALID_FLAGS, 1),
    ("reduce-only without position", {}, [{}, dict(SECOND, market=PERP, side=SELL, price=200, flags=CmdFlag.REDUCE_ONLY)],
     RC.REDUCE_ONLY_WOULD_INCREASE, 2),
    ("expiring leg", {}, [{"aux": 10**18}, SECOND], RC.INVALID_EXPIRY, 1),
    ("price 0", {}, [{}, dict(SECOND, price=0)], RC.PRICE_NOT_POSITIVE, 2),
    ("not fillable", {}, [{"qty": 11}, SECOND], RC.LEG_NOT_FILLABLE, 1),
    ("halted market", {}, [{}, SECOND], RC.MARKET_HALTED, 2),
    ("own order in the way", {}, [{}, dict(SECOND, stp=Stp.CANCEL_TAKER)], RC.LEG_NOT_FILLABLE, 2),
    ("unknown venue", {}, [{"venue": 3}, SECOND], RC.UNKNOWN_VENUE, 1),
]


@pytest.mark.parametrize("what, header, legs, code, leg", BAD_UNITS, ids=[b[0] for b in BAD_UNITS])
def test_every_reject_names_the_leg_and_changes_nothing(engine_cls, what, header, legs, code, leg):
    e = world(engine_cls)
    if what == "halted market":
        ok(e.halt(SPOT_ETH))
    if what == "own order in the way":
        ok(e.place(T, SPOT_ETH, BUY, 60, 1, 99))  # T's own bid is ahead of MAKER's: CANCEL_TAKER ends the walk
    before = state(e)
    cmds = raw_unit(header, legs)
    events = e.process(cmds)
    rejected = of_kind(events, Ev.REJECTED)
    assert (RC(int(rejected[0]["code"])), int(rejected[0]["reason"]), int(rejected[0]["account"]),
            int(rejected[0]["maker_order"])) == (code, leg, T, header.get("id", 1))
    assert not of_kind(events, Ev.ACCEPTED) and state(e) == before
    if code == RC.INVALID_LEG_COUNT:  # the legs after a header with a bad count are strays
        assert codes(events) == [code] + [RC.LEG_WITHOUT_HEADER] * len(legs)
    else:
        assert len(events) == 1


def test_orders_capacity_counts_every_leg(engine_cls):
    e = world(engine_cls, max_orders=4)  # 3 rest: one slot left, two legs need two
    before = state(e)
    rejected_whole(e, e.multi_leg(T, 1, [Leg(SPOT_BTC, BUY, 100, 1, 1), Leg(SPOT_ETH, SELL, 50, 1, 2)]),
                   RC.ORDER_CAPACITY, 2, before)


def test_a_unit_split_by_the_batch_end_is_refused_then_its_legs_are_strays(engine_cls):
    e = world(engine_cls)
    before = state(e)
    unit = multi_leg_commands(T, 1, [Leg(SPOT_BTC, BUY, 100, 1, 1), Leg(SPOT_ETH, SELL, 50, 1, 2)])
    seq = e.cmd_seq
    first = e.process(unit[:2])
    second = e.process(unit[2:])
    assert codes(first) == [RC.LEGS_INCOMPLETE, RC.LEG_WITHOUT_HEADER] and codes(second) == [RC.LEG_WITHOUT_HEADER]
    assert first[0]["cmd_seq"] == seq + 1 and first[1]["cmd_seq"] == seq + 2 and second[0]["cmd_seq"] == seq + 3
    assert state(e) == before
    # a header followed by another command: too few legs too; the PlaceOrder runs as itself
    place = np.zeros(1, dtype=COMMAND_DTYPE)
    place[0] = (Cmd.PLACE, BUY, 0, 0, 0, 0, 0, SPOT_BTC, 0, T, 100, 1, 7, 0)
    events = e.process(np.concatenate([unit[:2], place, unit[2:]])[[0, 2, 1, 3]])
    assert codes(events) == [RC.LEGS_INCOMPLETE, RC.LEG_WITHOUT_HEADER, RC.LEG_WITHOUT_HEADER]
    assert of_kind(events, Ev.FILL)  # the PlaceOrder ran as itself


def test_reduce_only_leg_closes_a_position_with_a_spot_leg(engine_cls):
    e = world(engine_cls)
    ok(e.place(T, PERP, BUY, 200, 3, 1, tif=Tif.IOC))
    ok(e.place(MAKER, PERP, BUY, 190, 5, 8))
    events = ok(e.multi_leg(T, 3, [Leg(PERP, SELL, 190, 3, 1, reduce_only=True), Leg(SPOT_BTC, BUY, 100, 3, 2)]))
    assert e.position(T, PERP).size == 0 and e.balance(T, BTC)[0] == FUND + 3
    assert [int(p["qty"]) for p in of_kind(events, Ev.POSITION)] == [0, 3]


def test_same_events_on_both_engines():
    out = []
    for cls in (Engine, ReferenceEngine):
        e = world(cls)
        ev = [e.multi_leg(T, 5, [Leg(PERP, BUY, 200, 2, 1), Leg(SPOT_BTC, BUY, 100, 2, 2, venue=1)]),
              e.multi_leg(T, 6, [Leg(PERP, BUY, 200, 9, 3), Leg(SPOT_BTC, BUY, 100, 2, 4)]),
              e.multi_leg(T, 7, [Leg(SPOT_ETH, SELL, 50, 2, 5), Leg(SPOT_BTC, BUY, 100, 9, 6)])]
        out.append(np.concatenate(ev))
    assert np.array_equal(out[0], out[1])
    assert codes(out[0]) == [RC.LEG_NOT_FILLABLE, RC.LEG_NOT_FILLABLE]


# ---------------------------------------------------------------- generated streams


@pytest.mark.parametrize("seed, generator", [(1, MultiLegStreamGenerator), (2, MultiLegStreamGenerator),
                                             (3, OutcomeMultiLegStreamGenerator), (4, OutcomeMultiLegStreamGenerator)])
def test_multi_leg_stream_differential(seed, generator, tmp_path):
    stats = run_differential(seed, 12_000, dump_dir=tmp_path, generator=generator)
    assert stats["fills"] > 300


def test_multi_leg_stream_small_tables(tmp_path):
    run_differential(4, 6_000, engine_kwargs=dict(SMALL_ENGINE_KWARGS, max_venues=16), dump_dir=tmp_path,
                     generator=MultiLegStreamGenerator)


def count_units(e, cmds, events, outcome: dict[str, int]) -> None:
    """Per multi-leg order of the chunk just run: all or none (every leg accepted and filled in full at or better
    than its limit, nothing rejected) or one Rejected; counted in ``outcome`` by result (and by market kind)."""
    kinds = {m.market_id: MarketKind(m.kind).name for m in e.markets()}
    headers = set(np.flatnonzero(cmds["kind"] == Cmd.MULTI_LEG).tolist())
    first = e.cmd_seq - len(cmds) + 1
    for seq in sorted({int(s) for s in events["cmd_seq"].tolist()}):
        if seq - first not in headers:
            continue
        mine = events[events["cmd_seq"] == seq]
        accepted = mine[mine["kind"] == Ev.ACCEPTED]
        if not len(accepted):
            outcome[RC(int(mine[0]["code"])).name] += 1
            continue
        n = int(accepted[0]["maker_account"])
        assert accepted["reason"].tolist() == list(range(1, n + 1))
        assert not of_kind(mine, Ev.REJECTED)
        for a in accepted:
            fills = mine[(mine["kind"] == Ev.FILL) & (mine["order_id"] == a["order_id"])]
            assert int(fills["qty"].sum()) == int(a["qty"])
            assert all((p <= a["price"]) if a["side"] == BUY else (p >= a["price"]) for p in fills["price"].tolist())
            outcome["filled " + kinds[int(a["market"])]] += 1
        outcome["filled"] += 1


INVARIANT_RUNS = [(3, MultiLegStreamGenerator, check_perp_invariants), (4, MultiLegStreamGenerator, check_perp_invariants),
                  (5, OutcomeMultiLegStreamGenerator, check_stream_invariants),
                  (6, OutcomeMultiLegStreamGenerator, check_stream_invariants)]


@pytest.mark.parametrize("seed, generator, check", INVARIANT_RUNS, ids=[f"{g.__name__}-{s}" for s, g, _ in INVARIANT_RUNS])
def test_multi_leg_stream_invariants_after_every_chunk(seed, generator, check):
    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = generator(seed, limits=dict(ENGINE_KWARGS))
    net: dict[int, int] = defaultdict(int)
    outcome: dict[str, int] = defaultdict(int)
    for cmds, events in run_stream(e, gen, 20_000, chunk=100):
        balance = events[events["kind"] == Ev.BALANCE]
        for asset, amount in zip(balance["market"].tolist(), balance["qty"].tolist()):
            net[asset] += amount
        check(e, net)
        count_units(e, cmds, events, outcome)
    assert outcome["filled"] > 10 and outcome["LEG_NOT_FILLABLE"] > 20, dict(outcome)
    assert outcome["filled SPOT"] and outcome["filled PERPETUAL"], dict(outcome)
    assert outcome["INSUFFICIENT_BALANCE"] + outcome["INSUFFICIENT_MARGIN"] > 0, dict(outcome)
    if generator is OutcomeMultiLegStreamGenerator:
        assert outcome["filled OUTCOME"], dict(outcome)


@pytest.mark.parametrize("seed", [1, 2])
def test_generated_exposure_caps_bind(seed):
    """The stream's SetExposureCap commands take effect: some orders meet a cap (both engines agree on which:
    the differential tests above)."""
    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = MultiLegStreamGenerator(seed, limits=dict(ENGINE_KWARGS))
    refused = accepted_caps = 0
    for cmds, events in run_stream(e, gen, 15_000, chunk=200):
        refused += int(np.count_nonzero(events["code"] == RC.EXPOSURE_CAP_EXCEEDED))
        accepted_caps += int(np.count_nonzero((events["kind"] == Ev.VENUE) & (events["flags"] == Cmd.SET_EXPOSURE_CAP)))
    assert refused > 0 and accepted_caps > 10, (refused, accepted_caps)


# ---------------------------------------------------------------- the input side


def test_whole_units_never_cuts_inside_a_multi_leg_order():
    from engine.api import whole_units

    unit = multi_leg_commands(T, 1, [Leg(SPOT_BTC, BUY, 100, 1, 1), Leg(SPOT_ETH, SELL, 50, 1, 2),
                                     Leg(PERP, BUY, 200, 1, 3)])
    place = np.zeros(2, dtype=COMMAND_DTYPE)
    place["kind"] = Cmd.PLACE
    stream = np.concatenate([place, unit, place])  # the unit is records 2..5
    assert [whole_units(stream, k) for k in range(len(stream) + 1)] == [0, 1, 2, 2, 2, 2, 6, 7, 8]
    bad = unit.copy()
    bad[0]["qty"] = 9  # the matcher refuses this header alone: cutting after it is fine
    assert whole_units(np.concatenate([place, bad]), 3) == 3


def test_the_matcher_input_takes_a_multi_leg_order_whole():
    """The matcher stage's intake (a real PULL socket): a batch that would end inside a multi-leg order ends
    before it, and the order comes whole in the next batch; a message that is not whole records is dropped."""
    import zmq

    from engine.cmdring import CommandRing

    from test_cmdring import intake_only

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    stage = intake_only(pull, CommandRing.consumer(f"xos-multileg-intake-{os.getpid()}", 16), 8)  # the ring empty
    try:
        pull.bind("inproc://multileg-intake")
        push.connect("inproc://multileg-intake")
        unit = multi_leg_commands(T, 1, [Leg(SPOT_BTC, BUY, 100, 1, 1), Leg(SPOT_ETH, SELL, 50, 1, 2)])
        place = np.zeros(6, dtype=COMMAND_DTYPE)
        place["kind"] = Cmd.PLACE
        push.send(np.concatenate([place, unit, place[:2]]).tobytes())
        push.send(place[:3].tobytes())
        assert stage.take_input(1000) == 6  # records 6..8 are the unit: the batch ends before it
        assert stage.take_input(1000) == 8  # the unit, the message's last 2 places, 3 of the next message
        assert stage.batch["kind"][:3].tolist() == [Cmd.MULTI_LEG, Cmd.LEG, Cmd.LEG]
        assert stage.take_input(0) == 0 and not stage.pending
        for malformed in (b"", place[:1].tobytes() + b"x"):  # not whole records: dropped and counted
            push.send(malformed)
        push.send(place[:1].tobytes())
        assert stage.take_input(1000) == 1 and stage.malformed == 2 and not stage.pending
    finally:
        stage.command_ring.close()
        pull.close(0)
        push.close(0)
        ctx.term()


def test_multi_leg_orders_and_caps_replay_and_snapshot_suffix_agree(tmp_path):
    """Journal replay (which joins frames, never splits one) and every snapshot + its suffix reach the live state and
    events with multi-leg orders and exposure caps in the stream (caps in the snapshots)."""
    from engine.replay import replay

    from test_determinism import check_same_everywhere

    check_same_everywhere(tmp_path, seed=21, n_commands=30_000, snapshot_every=6_000, generator=MultiLegStreamGenerator)
    _, engine = replay(tmp_path / "journal", capacities=ENGINE_KWARGS)
    assert engine.exposure_caps()

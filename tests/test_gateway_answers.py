"""Which pending command each event answers (gateway/routing.pyx: ``echoes``, ``answer_rows``, ``enqueue``),
against the echo rules written out here in numpy, over the matcher's own streams of orders, venue, listing,
outcome, multi-leg, liquidation and margin commands, with each event's fields mutated one at a time; and the
FIFO pairing over whole streams: every command the gateway can send answered once, by its own event, none lost."""
from __future__ import annotations

import collections
import random

import numpy as np
import pytest
from generators import (ENGINE_KWARGS, IsolatedMarginStreamGenerator, MultiLegStreamGenerator, OutcomeStreamGenerator,
                        StreamGenerator, VenueListingStreamGenerator, VenueRiskStreamGenerator, run_stream)

from engine.matcher import Engine
from engine.records import (COMMAND_DTYPE, EVENT_DTYPE, CancelReason, Cmd, CmdFlag, Ev, EvFlag, pack_market_assets,
                            pack_market_params, unpack_listing)
from gateway import messages as m
from gateway.routing import LEG_RECORD, PendingQueue, answer_rows, echo_mask, enqueue, own_firsts
from gateway.server import OWN_FIRST, PENDING_DTYPE

GENERATORS = (StreamGenerator, VenueListingStreamGenerator, OutcomeStreamGenerator, MultiLegStreamGenerator,
              VenueRiskStreamGenerator, IsolatedMarginStreamGenerator)
# what a gateway session can send: orders, multi-leg orders and the field commands
GATEWAY_KINDS = {int(k) for k in (Cmd.PLACE, Cmd.CANCEL, Cmd.AMEND, Cmd.MASS_CANCEL, Cmd.MULTI_LEG)} | {
    int(cls.kind) for cls in m.FIELD_COMMANDS}


def reference_echoes(ev: np.ndarray, cmd: np.ndarray) -> np.ndarray:
    """Row by row: is event ``ev[i]`` the own first event of command ``cmd[i]`` (it echoes its fields)?"""
    ek, ck = ev["kind"], cmd["kind"]
    same_market = ev["market"] == cmd["market"]
    same_id = ev["client_id"] == cmd["id"]
    accepted = ek == Ev.ACCEPTED
    same_price_venue = (ev["price"] == cmd["price"]) & (ev["venue"] == cmd["venue"])
    same_values = same_id & same_market & same_price_venue & (ev["qty"] == cmd["qty"])
    target = np.where(cmd["flags"] & CmdFlag.BY_CLIENT_ID, ev["client_id"], ev["order_id"]) == cmd["id"]
    rejected = (ek == Ev.REJECTED) & (ev["flags"] == ck)  # a Rejected names the refused command's kind
    out = (rejected & same_values) | \
        ((ck == Cmd.PLACE) & accepted & (ev["order_id"] > 0) & same_id & same_market & (ev["side"] == cmd["side"])
         & same_price_venue) | \
        ((ck == Cmd.MASS_CANCEL) & accepted & (ev["order_id"] == 0) & same_market) | \
        ((ck == Cmd.CANCEL) & (ek == Ev.CANCELLED) & (ev["reason"] == CancelReason.USER) & target) | \
        ((ck == Cmd.AMEND) & (ek == Ev.AMENDED) & target)
    # a multi-leg order's header: its first leg's Accepted or its one Rejected, the parent id in maker_order
    legs = cmd["qty"]
    out |= (ck == Cmd.MULTI_LEG) & (ev["maker_order"] == cmd["id"]) & (
        (accepted & (ev["reason"] == 1) & (ev["maker_account"] == legs))
        | (rejected & (ev["reason"] <= legs)))
    field = ck >= Cmd.VENUE_PARAMS
    out |= field & ((ek == Ev.VENUE) | (ek == Ev.ORACLE_CONFIG)) & (ev["flags"] == ck) & same_values & \
        (ev["side"] == cmd["side"]) & (ev["remaining"] == cmd["aux"])
    status = ek == Ev.OUTCOME_STATUS
    out |= (ck == Cmd.OUTCOME_CONFIG) & status & (ev["reason"] == 1) & same_market & (ev["price"] == cmd["price"]) & \
        (ev["order_id"] == cmd["id"]) & (ev["maker_order"] == cmd["qty"]) & (ev["client_id"] == cmd["aux"])
    out |= (ck == Cmd.RESOLVE) & status & (ev["reason"] != 1) & \
        ((same_market & (ev["qty"] == cmd["qty"])) | (ev["client_id"] != 0))
    out |= (ck == Cmd.CONVERT) & (ek == Ev.OUTCOME_CONVERT) & same_market & (ev["qty"] == cmd["qty"])
    out |= (ck == Cmd.LIQUIDATE) & (ek == Ev.LIQUIDATION) & (ev["account"] == cmd["id"]) & \
        (ev["venue"] == cmd["venue"]) & (ev["market"] == cmd["market"]) & (ev["maker_order"] == cmd["aux"])
    out |= (ck == Cmd.ISOLATED_MARGIN) & (ek == Ev.POSITION) & (ev["flags"] == ck) & same_market
    out |= ((ck == Cmd.VENUE_MARKET_HALT) | (ck == Cmd.VENUE_MARKET_RESUME)) & (ek == Ev.MARKET_STATUS) & \
        (ev["flags"] == ck) & same_market & (ev["venue"] == cmd["venue"])
    list_market = (ck == Cmd.LIST_MARKET) & accepted & (ev["flags"] == EvFlag.MARKET_LISTING) & same_values & \
        (ev["side"] == cmd["side"]) & (ev["maker_account"] == cmd["account"])
    for i in np.flatnonzero(list_market).tolist():  # its assets and fees are in AddMarket's packing in the echo
        base, quote, maker, taker, band = unpack_listing(int(cmd["flags"][i]), int(cmd["aux"][i]))
        list_market[i] = int(ev["account"][i]) == pack_market_assets(base, quote) and \
            int(ev["remaining"][i]) == pack_market_params(maker, taker, band)
    return out | list_market


def mutated(ev: np.ndarray, rng: random.Random) -> np.ndarray:
    """A copy of ``ev`` with one field of each row nudged (by one, or to 0, or to another row's value)."""
    out = ev.copy()
    names = [n for n in EVENT_DTYPE.names if n not in ("seq", "cmd_seq", "durable_seq", "ts")]
    for i in range(len(out)):
        name = rng.choice(names)
        how = rng.randrange(3)
        value = int(out[name][i])
        if how == 0:
            value += rng.choice((-1, 1))
        elif how == 1:
            value = 0
        else:
            value = int(ev[name][rng.randrange(len(ev))])
        info = np.iinfo(EVENT_DTYPE[name])
        out[name][i] = min(max(value, info.min), info.max)
    return out


def assert_echoes_agree(ev: np.ndarray, cmd: np.ndarray) -> int:
    got = np.empty(len(ev), np.uint8)
    echo_mask(np.ascontiguousarray(ev).view(np.uint8), np.ascontiguousarray(cmd).view(np.uint8), got)
    want = reference_echoes(ev, cmd)
    bad = np.flatnonzero(got.view(bool) != want)
    assert not len(bad), (ev[bad[:3]], cmd[bad[:3]], got[bad[:3]], want[bad[:3]])
    return int(want.sum())


@pytest.mark.parametrize("make", GENERATORS, ids=lambda g: g.__name__)
def test_the_echo_rules_in_c_agree_with_numpys(make):
    """Each event against its own command (mostly echoes), a mutated copy of it (mostly not) and another
    command of the chunk: the C rule and the numpy rule say the same, and both kinds of answer occur."""
    rng = random.Random(7)
    engine = Engine(**ENGINE_KWARGS)
    seen = positives = pairs = 0
    for cmds, events in run_stream(engine, make(5), 2500, chunk=89):
        own = cmds[events["cmd_seq"] - 1 - seen]
        seen += len(cmds)
        other = cmds[np.array([rng.randrange(len(cmds)) for _ in range(len(events))], np.int64)]
        for ev, cmd in ((events, own), (mutated(events, rng), own), (events, other)):
            positives += assert_echoes_agree(ev, cmd)
            pairs += len(ev)
    assert 0 < positives < pairs


def pending_rows(cmds: np.ndarray, first_seq: int) -> np.ndarray:
    """The commands a gateway could have sent, as its pending rows (rid: the command's seq; sid: its
    index, or LEG_RECORD for a multi-leg order's legs).  Its mass cancel of all markets names none."""
    kinds = cmds["kind"]
    keep = np.isin(kinds, list(GATEWAY_KINDS)) | (kinds == Cmd.LEG)
    keep &= ~((kinds == Cmd.MASS_CANCEL) & (cmds["flags"] & CmdFlag.ALL_MARKETS != 0) & (cmds["market"] != 0))
    rows = np.zeros(int(keep.sum()), PENDING_DTYPE)
    seqs = np.flatnonzero(keep) + first_seq
    rows["rid"] = seqs
    rows["sid"] = np.where(kinds[keep] == Cmd.LEG, LEG_RECORD, seqs)
    rows["cmd"] = cmds[keep]
    return rows


def reference_answers(events: np.ndarray, at: np.ndarray, sender: np.ndarray, fifo: dict) -> tuple[list, list, list]:
    """``answer_rows`` written out over ``fifo`` (account -> list of pending rows): (acks as (sid, row), rejects,
    lost), with ``reference_echoes``."""
    acks, rejects, lost = [], [], []
    for k, account in zip(at.tolist(), sender.tolist()):
        q = fifo.get(account)
        if not q:
            continue
        window = np.array(q[:64], PENDING_DTYPE)
        hits = np.flatnonzero(reference_echoes(events[np.full(len(window), k)], window["cmd"]))
        if not len(hits):
            continue
        d = int(hits[0])
        lost += [(int(p["sid"]), int(p["rid"]), int(p["cmd"]["kind"]), int(p["cmd"]["id"])) for p in q[:d]]
        p, e = q[d], events[k]
        del q[:d + 1]
        sid, rid, kind, ident = int(p["sid"]), int(p["rid"]), int(p["cmd"]["kind"]), int(p["cmd"]["id"])
        if e["kind"] == Ev.REJECTED:
            rejects.append((sid, rid, kind, ident, int(e["code"]), int(e["client_id"]), int(e["cmd_seq"]),
                            int(e["reason"])))
        elif sid >= 0:
            order_id, client_id = int(e["order_id"]), int(e["client_id"])
            if kind == Cmd.MULTI_LEG:
                client_id = ident
            elif kind >= Cmd.VENUE_PARAMS:
                order_id = client_id = 0
            count = int(e["qty"]) if kind == Cmd.MASS_CANCEL else 0
            acks.append((sid, (rid, order_id, client_id, int(e["cmd_seq"]), int(e["durable_seq"]), count,
                               int(e["ts"]))))
    return acks, rejects, lost


@pytest.mark.parametrize("make", GENERATORS, ids=lambda g: g.__name__)
def test_every_sent_command_is_answered_once_by_its_own_event(make):
    """Whole streams as a gateway forwards them (``enqueue``: two chunks of pending rows per forward; the
    commands it writes are the stream's own) and routes their events (``own_firsts`` then ``answer_rows``,
    which meets other producers' commands for the same accounts: deposits, listings, halts ...): the
    same acks, rejects and lost commands as ``reference_answers``; and each command answered once, by an
    ack or a reject of its own seq, none lost: a Rejected names its command's kind, so another producer's
    (a scheduler's ApplyFunding from a trading account) never passes for a gateway command's."""
    fifo = collections.defaultdict(PendingQueue)
    reference = collections.defaultdict(list)
    claimed, seen, sent, answered, acked = 0, 0, 0, [], 0
    for cmds, events in run_stream(Engine(**ENGINE_KWARGS), make(11), 3000, chunk=101):
        rows = pending_rows(cmds, seen + 1)
        seen += len(cmds)
        if len(rows):
            commands = np.empty(len(rows), COMMAND_DTYPE)
            half = len(rows) // 2  # as a forward of single requests and a row message
            assert enqueue(fifo, [rows[:half], rows[half:]], commands.view(np.uint8)) == len(rows)
            assert commands.tobytes() == rows["cmd"].tobytes()
            for row in rows[rows["sid"] != LEG_RECORD]:
                reference[int(row["cmd"]["account"])].append(row)
            sent += int((rows["sid"] != LEG_RECORD).sum())
        events["durable_seq"] = seen  # a bare engine journals nothing: the chunk as one group commit
        raw = events.view(np.uint8)
        at, sender = np.empty(len(events), np.int64), np.empty(len(events), np.int64)
        n = own_firsts(raw, OWN_FIRST, claimed, at, sender)
        if not n:
            continue
        claimed = int(events["cmd_seq"][at[n - 1]])
        acks, sids, rejects, lost = np.empty(n, m.ACK_ROW_DTYPE), np.empty(n, np.int64), [], []
        k = answer_rows(raw, at[:n], sender[:n], fifo, True, acks, sids, rejects, lost)
        want_acks, want_rejects, want_lost = reference_answers(events, at[:n], sender[:n], reference)
        assert list(zip(sids[:k].tolist(), acks[:k].tolist())) == want_acks
        assert rejects == want_rejects and lost == want_lost == []
        for sid, (rid, order_id, client_id, cmd_seq, durable_seq, count, ts) in want_acks:
            assert rid == cmd_seq == sid and durable_seq >= cmd_seq
            if cmds["kind"][cmd_seq - (seen - len(cmds)) - 1] == Cmd.PLACE:
                assert order_id > 0
        acked += k
        answered += [row[3] for _, row in want_acks]
        for sid, rid, kind, ident, code, client_id, cmd_seq, leg in rejects:
            assert rid == cmd_seq == sid and code > 0
            answered.append(cmd_seq)
    assert acked and len(answered) == len(set(answered)) == sent
    assert sum(len(q) for q in fifo.values()) == sum(len(q) for q in reference.values()) == 0


def test_a_command_never_executed_is_reported_lost_and_the_next_still_answers():
    """The FIFO's head that no event echoes, followed by one whose event comes: the head is lost (its
    session, request id and client id come back), the second acknowledged; an event of a command the
    gateway did not send (another producer's, for the same account) answers nothing."""
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(3)
    setup = next(run_stream(engine, gen, 200, chunk=200))[0]
    place = setup[setup["kind"] == Cmd.PLACE][-1].copy()
    account = int(place["account"])
    never, real, foreign = place.copy(), place.copy(), place.copy()
    never["id"], real["id"], foreign["id"] = 990001, 990002, 990003
    fifo = collections.defaultdict(PendingQueue)
    rows = np.zeros(2, PENDING_DTYPE)
    rows["sid"], rows["rid"] = (5, 6), (50, 60)
    rows["cmd"][0], rows["cmd"][1] = never, real
    enqueue(fifo, [rows], np.empty(2, COMMAND_DTYPE).view(np.uint8))
    assert fifo[account].rows_bytes() == rows.tobytes() and len(fifo[account]) == 2
    events = engine.process(np.array([foreign, real], COMMAND_DTYPE))
    events["durable_seq"] = events["cmd_seq"].max()
    at, sender = np.empty(len(events), np.int64), np.empty(len(events), np.int64)
    n = own_firsts(events.view(np.uint8), OWN_FIRST, 0, at, sender)
    assert n == 2 and sender[:n].tolist() == [account, account]
    acks, sids, rejects, lost = np.empty(n, m.ACK_ROW_DTYPE), np.empty(n, np.int64), [], []
    k = answer_rows(events.view(np.uint8), at[:n], sender[:n], fifo, True, acks, sids, rejects, lost)
    assert lost == [(5, 50, Cmd.PLACE, 990001)]
    assert k == 1 and sids[0] == 6 and acks[0]["rid"] == 60 and acks[0]["client_id"] == 990002
    assert rejects == [] and len(fifo[account]) == 0


def test_an_ack_is_refused_for_a_command_not_yet_durable():
    """With journaling on, an answering event whose durable_seq is behind its command raises (the
    matcher publishes only what its journal holds): a gateway never acknowledges what it could lose."""
    engine = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(3)
    setup = next(run_stream(engine, gen, 200, chunk=200))[0]
    place = setup[setup["kind"] == Cmd.PLACE][-1].copy()
    place["id"] = 990011
    fifo = collections.defaultdict(PendingQueue)
    rows = np.zeros(1, PENDING_DTYPE)
    rows["sid"], rows["rid"], rows["cmd"] = 1, 2, place
    enqueue(fifo, [rows], np.empty(1, COMMAND_DTYPE).view(np.uint8))
    events = engine.process(np.array([place], COMMAND_DTYPE))
    events["durable_seq"] = events["cmd_seq"] - 1
    at, sender = np.empty(len(events), np.int64), np.empty(len(events), np.int64)
    n = own_firsts(events.view(np.uint8), OWN_FIRST, 0, at, sender)
    with pytest.raises(RuntimeError, match="not acknowledging a command that is not durable"):
        answer_rows(events.view(np.uint8), at[:n], sender[:n], fifo, True, np.empty(n, m.ACK_ROW_DTYPE),
                    np.empty(n, np.int64), [], [])


def test_a_fifo_grows_and_compacts_keeping_its_rows_in_order():
    """Pushes past the first capacity (grown), answers off the head, then pushes again (the live rows moved
    to the front): the FIFO's rows are always those sent and not yet answered, oldest first."""
    def places(first: int, n: int) -> np.ndarray:
        rows = np.zeros(n, PENDING_DTYPE)
        ids = np.arange(first, first + n)
        rows["sid"], rows["rid"] = 1, ids
        cmd = rows["cmd"]
        cmd["kind"], cmd["account"], cmd["market"], cmd["id"], cmd["price"], cmd["qty"] = Cmd.PLACE, 7, 1, ids, ids, 1
        return rows

    fifo = collections.defaultdict(PendingQueue)
    sent = places(1, 900)
    assert enqueue(fifo, [sent[:300], sent[300:600], sent[600:]], np.empty(900, COMMAND_DTYPE).view(np.uint8)) == 900
    assert fifo[7].rows_bytes() == sent.tobytes()
    events = np.zeros(500, EVENT_DTYPE)  # the first 500 placed: their Accepted events echo them
    events["kind"], events["account"], events["market"], events["qty"] = Ev.ACCEPTED, 7, 1, 1
    events["order_id"] = events["client_id"] = events["price"] = events["cmd_seq"] = events["durable_seq"] = \
        np.arange(1, 501)
    acks, sids = np.empty(500, m.ACK_ROW_DTYPE), np.empty(500, np.int64)
    at, sender = np.arange(500, dtype=np.int64), np.full(500, 7, np.int64)
    assert answer_rows(events.view(np.uint8), at, sender, fifo, True, acks, sids, [], []) == 500
    assert acks["rid"].tolist() == list(range(1, 501)) and fifo[7].rows_bytes() == sent[500:].tobytes()
    more = places(901, 700)
    enqueue(fifo, [more], np.empty(700, COMMAND_DTYPE).view(np.uint8))
    assert fifo[7].rows_bytes() == sent[500:].tobytes() + more.tobytes() and len(fifo[7]) == 1100

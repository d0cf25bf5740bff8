"""Which pending command each event answers (gateway/routing.pyx: ``echoes``, ``ReplyRouter``, ``ForwardBatch``),
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
from reply_reference import ReferenceReplies, full_rows, reference_echoes, routed

from engine.matcher import Engine
from engine.records import COMMAND_DTYPE, EVENT_DTYPE, Cmd, CmdFlag, Ev
from gateway import messages as m
from gateway.routing import LEG_RECORD, PENDING_DTYPE, ForwardBatch, PendingQueue, ReplyRouter, echo_mask
from gateway.server import OWN_FIRST, ROUTED, OrderTable

GENERATORS = (StreamGenerator, VenueListingStreamGenerator, OutcomeStreamGenerator, MultiLegStreamGenerator,
              VenueRiskStreamGenerator, IsolatedMarginStreamGenerator)
# what a gateway session can send: orders, multi-leg orders and the field commands
GATEWAY_KINDS = {int(k) for k in (Cmd.PLACE, Cmd.CANCEL, Cmd.AMEND, Cmd.MASS_CANCEL, Cmd.MULTI_LEG)} | {
    int(cls.kind) for cls in m.FIELD_COMMANDS}


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


def enqueue(fifo, rows: np.ndarray) -> ForwardBatch:
    """``rows`` (PENDING_DTYPE) onto their accounts' FIFOs as a forward puts them: through a ForwardBatch (a new
    one: ``send_seq`` from 0, written into ``rows``)."""
    batch = ForwardBatch()
    rows["send_seq"] = np.arange(len(rows))
    for sid, rid, cmd, _ in rows.tolist():
        batch.add(sid, rid, cmd)
    assert batch.enqueue(fifo) == len(rows) and batch.pending().tobytes() == rows.tobytes()
    return batch


def router_for(fifo, keyed) -> ReplyRouter:
    router = ReplyRouter(ROUTED, OWN_FIRST, fifo, True)
    router.set_keyed(np.array(sorted(keyed), np.int64))
    return router


@pytest.mark.parametrize("make", GENERATORS, ids=lambda g: g.__name__)
def test_every_sent_command_is_answered_once_by_its_own_event(make):
    """Whole streams as a gateway forwards them (``ForwardBatch``: the commands it holds are the stream's
    own) and routes their events (``ReplyRouter.route``, which meets
    other producers' commands for the same accounts: deposits, listings, halts ...): the same acks,
    rejects, lost commands and reports as ``ReferenceReplies``; and each command answered once, by an ack
    or a reject of its own seq, none lost: a Rejected names its command's kind, so another producer's (a
    scheduler's ApplyFunding from a trading account) never passes for a gateway command's."""
    fifo = collections.defaultdict(PendingQueue)
    keyed: set[int] = set()  # every account that sent a command (what a gateway with their keys routes)
    router, table, reference = router_for(fifo, keyed), OrderTable(), ReferenceReplies(keyed)
    seen, sent, answered, acked = 0, 0, [], 0
    for cmds, events in run_stream(Engine(**ENGINE_KWARGS), make(11), 3000, chunk=101):
        rows = pending_rows(cmds, seen + 1)
        seen += len(cmds)
        if len(rows):
            enqueue(fifo, rows)
            for row in rows[rows["sid"] != LEG_RECORD]:
                reference.fifo[int(row["cmd"]["account"])].append(row)
            sent += int((rows["sid"] != LEG_RECORD).sum())
            keyed.update(rows["cmd"]["account"].tolist())
            router.set_keyed(np.array(sorted(keyed), np.int64))
            reference.keyed = set(keyed)
        events["durable_seq"] = seen  # a bare engine journals nothing: the chunk as one group commit
        acks, rejects, lost, reports, _ = routed(router, table, events)
        want_acks, want_rejects, want_lost, want_reports, _ = reference.route(events)
        assert acks == want_acks and rejects == want_rejects and reports == full_rows(want_reports)
        assert lost == want_lost == []
        for sid, (rid, order_id, client_id, cmd_seq, durable_seq, count, ts) in acks:
            assert rid == cmd_seq == sid and durable_seq >= cmd_seq
            if cmds["kind"][cmd_seq - (seen - len(cmds)) - 1] == Cmd.PLACE:
                assert order_id > 0
        acked += len(acks)
        answered += [row[3] for _, row in acks]
        for sid, rid, kind, ident, code, client_id, cmd_seq, leg in rejects:
            assert rid == cmd_seq == sid and code > 0
            answered.append(cmd_seq)
    assert router.claimed == reference.claimed > 0
    assert acked and len(answered) == len(set(answered)) == sent
    assert sum(len(q) for q in fifo.values()) == sum(len(q) for q in reference.fifo.values()) == 0


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
    enqueue(fifo, rows)
    assert fifo[account].rows_bytes() == rows.tobytes() and len(fifo[account]) == 2
    events = engine.process(np.array([foreign, real], COMMAND_DTYPE))
    events["durable_seq"] = events["cmd_seq"].max()
    acks, rejects, lost, _, _ = routed(router_for(fifo, [account]), OrderTable(), events)
    assert lost == [(5, 50, Cmd.PLACE, 990001, account)]
    assert len(acks) == 1 and acks[0][0] == 6 and acks[0][1][0] == 60 and acks[0][1][2] == 990002
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
    enqueue(fifo, rows)
    events = engine.process(np.array([place], COMMAND_DTYPE))
    events["durable_seq"] = events["cmd_seq"] - 1
    table = OrderTable()
    with pytest.raises(RuntimeError, match="not acknowledging a command that is not durable"):
        routed(router_for(fifo, [int(place["account"])]), table, events)
    assert table.n == 1  # the order table followed what came before (the process ends and restarts anyway)


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
    for part in (sent[:300], sent[300:600], sent[600:]):
        enqueue(fifo, part)
    assert fifo[7].rows_bytes() == sent.tobytes()
    events = np.zeros(500, EVENT_DTYPE)  # the first 500 placed: their Accepted events echo them
    events["kind"], events["account"], events["market"], events["qty"] = Ev.ACCEPTED, 7, 1, 1
    events["order_id"] = events["client_id"] = events["price"] = events["cmd_seq"] = events["durable_seq"] = \
        np.arange(1, 501)
    events["seq"] = np.arange(1, 501)
    acks = routed(router_for(fifo, [7]), OrderTable(), events)[0]
    assert [row[0] for _, row in acks] == list(range(1, 501)) and fifo[7].rows_bytes() == sent[500:].tobytes()
    more = places(901, 700)
    enqueue(fifo, more)
    assert fifo[7].rows_bytes() == sent[500:].tobytes() + more.tobytes() and len(fifo[7]) == 1100


@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_the_reply_pass_agrees_with_its_reference_when_only_some_accounts_have_keys(seed):
    """A random generator's stream where only some senders have keys (the others' commands are another
    producer's), more getting keys on the way; batches of random length, some republished in part
    (``after``), a few read quietly (``quiet_until``), a small order table that compacts: ``ReplyRouter``
    and ``ReferenceReplies`` make the same acks, rejects, lost commands, reports and listings."""
    rng = random.Random(seed)
    fifo, keyed = collections.defaultdict(PendingQueue), set()
    router, reference = router_for(fifo, keyed), ReferenceReplies(keyed)
    table = OrderTable(capacity=rng.choice([8, 64]))  # small: compacts on the way
    seen = routed_seq = answered = 0
    previous = np.zeros(0, EVENT_DTYPE)
    for cmds, events in run_stream(Engine(**ENGINE_KWARGS), rng.choice(GENERATORS)(seed), 2000,
                                   chunk=rng.randint(1, 300)):
        rows = pending_rows(cmds, seen + 1)
        seen += len(cmds)
        if len(rows) and (not keyed or rng.random() < 0.2):
            keyed.update(a for a in set(rows["cmd"]["account"].tolist()) if rng.random() < 0.7)
            router.set_keyed(np.array(sorted(keyed), np.int64))
            reference.keyed = set(keyed)
        rows = rows[np.isin(rows["cmd"]["account"], sorted(keyed)) | (rows["sid"] == LEG_RECORD)]
        if len(rows):
            enqueue(fifo, rows)
            for row in rows[rows["sid"] != LEG_RECORD]:
                reference.fifo[int(row["cmd"]["account"])].append(row)
        events["durable_seq"] = seen
        if len(previous) and rng.random() < 0.2:  # republished: the last routed events come again first
            events = np.concatenate([previous[-rng.randint(1, len(previous)):], events])
        quiet_until = routed_seq + rng.randint(1, 30) if rng.random() < 0.05 else 0
        got = routed(router, table, events, routed_seq, quiet_until)
        want = reference.route(events, routed_seq, quiet_until)
        assert got[:3] == want[:3] and got[3] == full_rows(want[3]) and got[4] == want[4]
        answered += len(got[0]) + len(got[1])
        routed_seq, previous = max(routed_seq, int(events["seq"][-1])), events
    assert router.claimed == reference.claimed and answered > 0

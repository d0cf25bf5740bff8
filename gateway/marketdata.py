"""Market data: every market's L2 and L3 book rebuilt from the event ring, published over ZeroMQ.

    python -m engine.process marketdata [--config PATH]      (``xos run`` starts it)

``MarketDataCore`` is the pure part (no sockets, picklable): it follows the ring's order events
(Accepted, Fill, Cancelled, Amended), BookLevel and MarketStatus, keeps each market's book order by
order (L3) and level by level (L2, exactly the matcher's ``BookLevel`` aggregates), and turns every
command into the messages of ``gateway.mdmessages``: per market and command one ``BookUpdate`` and
one ``OrderUpdate`` under the market's next ``seq``, the command's ``Trades``, a ``BookStatus`` on
halt / resume.  ``MarketDataStage`` is the process: a registered ring consumer that checkpoints the
core like the margin and risk workers (so a restart republishes from its checkpoint with the same
seqs, and subscribers drop what they already have), publishes on a PUB socket and answers snapshot
requests on a ROUTER socket (ZeroMQ's Clone pattern).  See docs/ARCHITECTURE.md, "Market data".
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import zmq

from engine.process import (EXIT_PRODUCER_GONE, TAKE_MAX, Checkpoint, Heartbeat, Stop, attach_live, beat_or_leave,
                            resume_at)
from engine.records import EVENT_DTYPE, Ev, join_records, select_records
from engine.ring import RingError, ring_status
from engine.snapshot import load_newest
from engine.workercore import IntTable
from engine.workers import EventCore, Listings, kind_mask

from .intake import readable, send_pair
from .listings import learn_from_events, market_symbols, seed_from_state
from .mdbook import MarketBook
from .mdcore import GROUP_COLUMNS, ORDER_COLUMNS, level_mismatches, md_pass
from .mdmessages import (
    ASK,
    BID,
    CHANNEL_BOOK,
    CHANNEL_ORDERS,
    CHANNEL_STATUS,
    CHANNEL_TRADES,
    ENCODER,
    LEVEL_DTYPE,
    OP_DTYPE,
    REQUEST_DECODER,
    TRADE_DTYPE,
    BookSnapshot,
    BookSnapshotRequest,
    BookStatus,
    BookUpdate,
    MarketInfo,
    MarketList,
    MarketsRequest,
    MdError,
    OrderSnapshot,
    OrderUpdate,
    PriceLevel,
    RestingOrder,
    Trades,
    topic,
)

ROLE = "marketdata"
FOLLOWED = kind_mask(Ev.ACCEPTED, Ev.FILL, Ev.CANCELLED, Ev.AMENDED, Ev.BOOK_LEVEL, Ev.MARKET_STATUS)
_ACCEPTED = int(Ev.ACCEPTED)


LEVEL_SIZE, OP_SIZE, TRADE_SIZE = LEVEL_DTYPE.itemsize, OP_DTYPE.itemsize, TRADE_DTYPE.itemsize


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Where a new run of equal ``keys`` starts (bool per row; the keys are grouped already)."""
    n = len(keys[0])
    start = np.zeros(n, bool)
    if n:
        start[0] = True
        for k in keys:
            start[1:] |= k[1:] != k[:-1]
    return start


def ends_a_batch(next_ts: int | None, chosen: np.ndarray, held: np.ndarray) -> bool:
    """Whether a take ended the last matcher batch it holds (``MarketDataCore.apply_taken``'s ``complete``):
    the next event in the ring (its ``next_ts``) is of a later batch, or none is published yet (the
    matcher publishes a batch at once).  A take of none of the followed kinds leaves the held batch's
    question open."""
    last = chosen if len(chosen) else held
    return next_ts is None or not len(last) or next_ts != last["ts"][-1]


class MarketDataCore(EventCore):
    """Books of every market from ring events; ``apply(events)`` returns the messages to publish as
    ``(channel, message)`` pairs, in order.

    Conflation rule: the events of one matcher batch (the matcher stamps one ``ts`` on every
    command of an input batch, and the journal replays the same batches with the same ``ts``) end
    up in one message per market and channel under the market's next ``seq``.  So a restarted core
    numbers its updates exactly as before, whatever the ring's batching.  The last batch seen may
    be incomplete: it is held (``held``, kept in a checkpoint) until an event of a later ``ts``
    arrives or the caller says nothing more is published (``apply(..., complete=True)``).  So the
    books always match the last seq published, which is what a snapshot relies on.

    L2 comes straight from the matcher's BookLevel events (each carries its level's aggregate after
    the change): the last one per level in the batch is the increment.  L3 ops come from the order
    events: an incoming order is not in the book while it matches, so it is added (``OP_ADD``, or
    ``OP_AMEND`` with priority lost for an amended order that re-entered) with what is left once
    its command is over.  Each batch's L3 changes are checked against its BookLevel changes, level
    by level (``l3_mismatches``, must stay 0)."""

    FOLLOWED = FOLLOWED

    def __init__(self) -> None:
        self._cursor = 0  # seq of the last event taken (applied, or held in ``held``)
        self.listings = Listings()
        self.books: dict[int, MarketBook] = {}
        self.orders = IntTable(len(ORDER_COLUMNS))  # resting orders by id: ORDER_COLUMNS (gateway/mdcore.pyx)
        self.held = np.zeros(0, EVENT_DTYPE)  # followed events of the last matcher batch, maybe incomplete
        self.l3_mismatches = 0  # levels whose L3 change disagreed with their BookLevel change (must stay 0)
        self.unknown_orders = 0  # order events about orders not in the book (must stay 0)

    @classmethod
    def from_matcher_state(cls, state: dict) -> "MarketDataCore":
        """A core holding the books of a matcher snapshot (``engine.snapshot``): resting orders with
        their time priority, levels summed from them, listings, halts.  Its cursor is the snapshot's
        event seq, and every market's ``seq`` and trade number start there too, so they only go
        forward for a subscriber that followed an earlier run."""
        core = cls()
        event_seq = int(state["counters"][2])
        core._cursor = event_seq
        seed_from_state(core.listings, state)
        for market, halted in state["markets"][["market", "halted"]].tolist():
            book = core.books[market] = MarketBook(market)
            book.halted = bool(halted)
            book.seq = book.trade_number = event_seq
        o = np.sort(state["orders"], order="order_id")
        o = o[o["remaining"] > 0]
        core.orders.update(o["order_id"], np.column_stack([o[name].astype(np.int64) for name in ORDER_COLUMNS]))
        keys = np.lexsort((o["price"], o["side"], o["market"]))
        market, side, price, rem = (o[name][keys] for name in ("market", "side", "price", "remaining"))
        starts = np.flatnonzero(_runs(market, side, price))
        qty = np.add.reduceat(rem, starts) if len(starts) else rem
        count = np.diff(np.append(starts, len(rem)))
        levels = np.zeros(len(starts), LEVEL_DTYPE)  # by market, then bids and asks, each ascending by price
        levels["side"], levels["price"], levels["qty"], levels["count"] = side[starts], price[starts], qty, count
        market = market[starts]
        bounds = np.flatnonzero(_runs(market)).tolist() + [len(market)]
        scratch = np.empty(len(market), np.int64)
        for lo, hi in zip(bounds, bounds[1:]):
            core.books[int(market[lo])].update(levels[lo:hi].view(np.uint8), scratch, scratch)
        return core

    # ------------------------------------------------------------------------------ events -------

    def apply(self, events: np.ndarray, complete: bool = True) -> list[tuple[bytes, object]]:
        """Apply a batch of ring events (seq order; seqs at or below the cursor are skipped, a gap
        raises ``SequenceGapError``); returns the messages to publish.  ``complete``: nothing more is
        published after these events (the last matcher batch is whole)."""
        return self._publish(super().apply(events), complete)

    def apply_taken(self, chosen: np.ndarray, first: int, last: int, complete: bool = True):
        """``apply`` of what ``RingConsumer.take_kinds(n, FOLLOWED)`` returned."""
        return self._publish(super().apply_taken(chosen, first, last), complete)

    def _publish(self, taken: list[np.ndarray], complete: bool) -> list[tuple[bytes, object]]:
        """The messages of the held events and those ``taken`` after them.  When the caller knows nothing
        more of the last matcher batch follows (``complete``), all of them in one pass (each costs ~50 us
        of numpy and Python around ``md_pass``, and at a calm pace a look at the ring often holds two
        batches), and in place when nothing was held: no copy.  Otherwise the last batch is held."""
        pieces = [p for p in (self.held, *taken) if len(p)]
        self.held = self.held[:0]
        if pieces and not complete:
            tail = pieces[-1]
            ts = tail["ts"]
            cut = int(np.searchsorted(ts, ts[-1]))  # the matcher's clock never goes back
            if cut == 0 and len(pieces) == 2 and pieces[0]["ts"][0] == ts[-1]:  # one batch goes on
                self.held = join_records(pieces)
                return []
            self.held = tail[cut:]
            pieces = [p for p in (*pieces[:-1], tail[:cut]) if len(p)]
        return self._apply_batches(pieces)

    def _apply(self, chosen: np.ndarray, last: int) -> list[np.ndarray]:
        """Note ``chosen`` (``_publish`` decides what is whole) and move the cursor to ``last``."""
        self._cursor = last
        return [chosen] if len(chosen) else []

    def _apply_batches(self, pieces: list[np.ndarray]) -> list[tuple[bytes, object]]:
        """Apply whole matcher batches (events in ``pieces``, in order) and return their messages."""
        if not pieces:
            return []

        events = join_records(pieces) if len(pieces) > 1 else np.ascontiguousarray(pieces[0])

        # in C: the L3 ops (the resting-order table follows them), the L2 increments, the trades and
        # the halts, grouped by (matcher batch, market); each op's change of its levels for the check
        n = len(events)
        ops, levels, trades = np.empty(n, OP_DTYPE), np.empty(n, LEVEL_DTYPE), np.empty(n, TRADE_DTYPE)
        level_key, batch_ts = np.empty(n, np.int64), np.empty(n, np.int64)
        groups, deltas = np.empty((n, len(GROUP_COLUMNS)), np.int64), np.empty((2 * n, 5), np.int64)
        n_groups, n_ops, n_levels, n_trades, n_deltas, unknown, orderless = md_pass(
            events.view(np.uint8), self.orders, ops, deltas, levels, level_key, trades, groups, batch_ts)
        self.unknown_orders += unknown
        if orderless:  # listings (and mass cancels): a listed market's book exists before its events are published
            self._learn_listings(select_records(events, (events["kind"] == _ACCEPTED) & (events["order_id"] == 0)))
        raw_ops, raw_levels, raw_trades = ops.view(np.uint8), levels.view(np.uint8), trades.view(np.uint8)
        trade_number = trades["number"]
        level_dq, level_dc = np.zeros(n_levels, np.int64), np.zeros(n_levels, np.int64)  # each level's change
        out: list[tuple[bytes, object]] = []
        books = self.books
        for key, o0, o1, l0, l1, t0, t1, halted in groups[:n_groups].tolist():
            b_ts = int(batch_ts[key >> 32])
            m = key & 0xFFFFFFFF
            book = books[m]
            book.ts = b_ts
            if o1 > o0 or l1 > l0:
                changed = raw_levels[l0 * LEVEL_SIZE:l1 * LEVEL_SIZE]  # bids then asks, each ascending by price
                book.update(changed, level_dq[l0:l1], level_dc[l0:l1])
                book.seq += 1
                checksum = book.checksum()
                out.append((CHANNEL_BOOK, BookUpdate(m, book.seq, b_ts, changed.tobytes(), checksum)))
                out.append((CHANNEL_ORDERS, OrderUpdate(m, book.seq, b_ts, raw_ops[o0 * OP_SIZE:o1 * OP_SIZE].tobytes(),
                                                        checksum)))
                if t1 > t0:  # trades are numbered per market
                    trade_number[t0:t1] = np.arange(book.trade_number + 1, book.trade_number + 1 + t1 - t0)
                    book.trade_number += t1 - t0
                    out.append((CHANNEL_TRADES, Trades(m, book.seq, b_ts,
                                                       raw_trades[t0 * TRADE_SIZE:t1 * TRADE_SIZE].tobytes())))
            if halted >= 0:
                book.halted = bool(halted)
                out.append((CHANNEL_STATUS, self.status(m)))
        # per level, the change the L3 ops made must be the change its BookLevel events made
        self.l3_mismatches += level_mismatches(deltas[:n_deltas], levels[:n_levels], level_key[:n_levels], level_dq,
                                               level_dc)
        return out

    def _learn_listings(self, accepted: np.ndarray) -> None:
        """Listings among Accepted events without an order; a listed market gets its (empty) book."""
        for market in learn_from_events(self.listings, accepted):
            self.books.setdefault(market, MarketBook(market))

    # ------------------------------------------------------------------------------ queries ------

    def resting(self, market: int) -> list[RestingOrder]:
        """A market's resting orders: bids best first, each level in time priority, then asks likewise."""
        ids, values = self.orders.arrays()
        c = dict(zip(ORDER_COLUMNS, values.T))
        rows = np.flatnonzero((c["market"] == market) & (c["remaining"] > 0))
        side, price = c["side"][rows], c["price"][rows]
        rows = rows[np.lexsort((c["rest_seq"][rows], np.where(side == BID, -price, price), side))]
        return [RestingOrder(*r) for r in zip(ids[rows].tolist(), c["side"][rows].tolist(), c["price"][rows].tolist(),
                                              c["remaining"][rows].tolist())]

    def status(self, market: int) -> BookStatus:
        b = self.books[market]
        return BookStatus(market, b.seq, b.checksum(), b.trade_number, b.halted, b.ts)

    def statuses(self) -> list[tuple[bytes, BookStatus]]:
        return [(CHANNEL_STATUS, self.status(m)) for m in self.books]

    def book_snapshot(self, market: int, depth: int = 0) -> BookSnapshot | None:
        b = self.books.get(market)
        if b is None:
            return None
        bids = [PriceLevel(*lv) for lv in b.side_levels(BID, depth)]
        asks = [PriceLevel(*lv) for lv in b.side_levels(ASK, depth)]
        return BookSnapshot(market, b.seq, b.ts, bids, asks, b.checksum(), b.trade_number, b.halted)

    def order_snapshot(self, market: int) -> OrderSnapshot | None:
        b = self.books.get(market)
        if b is None:
            return None
        return OrderSnapshot(market, b.seq, b.ts, self.resting(market), b.checksum(), b.trade_number,
                             b.halted)

    def market_list(self) -> MarketList:
        assets = self.listings.assets
        names = {mid: tuple(assets[a].symbol if a in assets else str(a) for a in (d.base, d.quote))
                 for mid, d in self.listings.markets.items()}
        symbols = market_symbols((mid, *names[mid], d.kind) for mid, d in self.listings.markets.items())
        out = []
        for mid in sorted(self.listings.markets):
            d = self.listings.markets[mid]
            base, quote = assets.get(d.base), assets.get(d.quote)
            base_sym, quote_sym = names[mid]
            out.append(MarketInfo(mid, symbols[mid], base_sym, quote_sym, base.decimals if base else 0,
                                  quote.decimals if quote else 0, d.tick_size, d.lot_size, d.min_size, d.kind,
                                  d.venue, self.books[mid].halted))
        return MarketList(out)

    def answer(self, request) -> object:
        """The reply to one decoded request."""
        if isinstance(request, MarketsRequest):
            return self.market_list()
        if isinstance(request, BookSnapshotRequest):
            reply = self.book_snapshot(request.market, request.depth)
        else:
            reply = self.order_snapshot(request.market)
        if reply is None:
            return MdError("UNKNOWN_MARKET", f"no market {request.market} is listed")
        return reply


# ------------------------------------------------------------------------------------ process -----

WAIT_NS = 5_000_000  # longest ring wait between two looks at the snapshot socket
# the ring quiet this long: checkpoint what is pending.  A pause of one WAIT_NS is common at a calm pace, and a
# checkpoint then came 5 times a second: each one's fsync is a disk flush the matcher's durable writes queue
# behind, and 77 % of the slowest 1 % of orders at 1,000/s overlapped one
IDLE_CHECKPOINT_S = 0.1
STATUS_EVERY_S = 1.0  # BookStatus per market this often
MAX_REQUEST_BYTES = 4096
PUB_HWM = 1_000_000  # messages queued per subscriber before the PUB drops (the subscriber resyncs)


def bootstrap_core(cfg, kept_from: int) -> MarketDataCore:
    """A core from the matcher's newest snapshot that the ring continues: taken at or after
    ``kept_from`` (the ring holds what follows it) and not past what the ring has published (a
    snapshot the restarted matcher did not restore from may be ahead of the journal)."""
    published = ring_status(cfg.ring_name)["published"]
    state, path, problems = load_newest(cfg.data_path / "snapshots", max_event_seq=published)
    for problem in problems:
        print(f"xos {ROLE}: snapshot skipped: {problem}", file=sys.stderr, flush=True)
    event_seq = int(state["counters"][2]) if state is not None else -1
    if event_seq < kept_from:
        raise RingError(f"market data cannot start: the ring keeps events after seq {kept_from} only, and no "
                        f"matcher snapshot from there on is in {cfg.data_path / 'snapshots'} (newest usable: "
                        f"{path or 'none'})")
    print(f"xos {ROLE}: books bootstrapped from {path} (event seq {event_seq})", file=sys.stderr, flush=True)
    return MarketDataCore.from_matcher_state(state)


class MarketDataStage:
    """Ring -> ``MarketDataCore`` -> PUB socket; snapshots on the ROUTER socket, between batches, so
    each one is exactly the state at the seq it carries."""

    def __init__(self, cfg):
        self.cfg = cfg
        md = cfg.marketdata
        self.checkpoint = Checkpoint(cfg.data_path / "run" / f"{ROLE}.ckpt")
        try:
            restored = self.checkpoint.load()
        except Exception as exc:  # another version's (a class since moved or changed): the books are rebuilt
            print(f"xos {ROLE}: checkpoint {self.checkpoint.path} not read ({type(exc).__name__}: {exc}); "
                  f"rebuilding the books from the matcher's snapshot and the ring", file=sys.stderr, flush=True)
            restored = None
        self.core: MarketDataCore = restored if restored is not None else MarketDataCore()
        self.consumer = attach_live(cfg, ROLE)
        self.consumer.nap_ns = cfg.marketdata.nap_us * 1000
        kept_from = self.consumer.cursor  # the ring holds every event after it for this service
        if self.core.cursor < kept_from:  # no checkpoint, or one the ring has moved past
            self.core = bootstrap_core(cfg, kept_from)
        resume_at(self.consumer, self.core.cursor + 1)
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, PUB_HWM)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(md.address)
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a client gone before its reply is counted, not queued
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(md.snapshot_address)
        self.heartbeat = Heartbeat(cfg, ROLE)
        self.checkpoint_every = max(1, self.consumer.capacity // 4)
        self.last_checkpoint = time.monotonic()
        self.last_taken = time.monotonic()  # when events last came from the ring
        self.last_status = 0.0
        self.pending = 0  # events applied since the last checkpoint
        self.taken_seq = self.consumer.cursor
        self.applied = 0
        self.published = 0
        self.snapshots = 0
        self.bad_requests = 0
        self.lost_replies = 0

    def counters(self) -> dict:
        c = self.core
        return {"applied": self.applied, "published": self.published, "snapshots": self.snapshots,
                "bad_requests": self.bad_requests, "lost_replies": self.lost_replies, "markets": len(c.books),
                "resting_orders": len(c.orders), "l3_mismatches": c.l3_mismatches,
                "unknown_orders": c.unknown_orders, "cursor": c.cursor, "ring_cursor": self.consumer.cursor,
                "lag": self.consumer.available()}

    def make_durable(self) -> None:
        """Checkpoint the core, then let the ring drop what the checkpoint covers."""
        self.checkpoint.save(self.core)
        self.pending = 0
        self.last_checkpoint = time.monotonic()
        done = min(self.core.cursor, self.taken_seq)
        if done > self.consumer.cursor:
            self.consumer.release_to(done)

    def publish(self, messages) -> None:
        socket, encode = self.pub.underlying, ENCODER.encode
        for channel, msg in messages:
            send_pair(socket, topic(msg.market, channel), encode(msg))  # a PUB never waits: it drops at its HWM
        self.published += len(messages)

    def serve_requests(self) -> None:
        # looked at every turn of the loop, mostly to find nothing: a recv raising Again costs 9 us warm, this ~1
        if not readable(self.router.underlying):
            return
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, body = frames[:-1], frames[-1]
            try:
                reply = self.core.answer(REQUEST_DECODER.decode(body))
                self.snapshots += 1
            except Exception as exc:  # msgspec.DecodeError / ValidationError: tell the client, keep serving
                self.bad_requests += 1
                reply = MdError("MALFORMED_REQUEST", f"not a market-data request: {exc}")
            try:
                self.router.send_multipart([*envelope, ENCODER.encode(reply)])
            except zmq.ZMQError:  # EHOSTUNREACH: the client left
                self.lost_replies += 1

    def step(self, timeout_ns: int) -> int:
        if not self.consumer.wait(timeout_ns):
            return 0
        chosen, first, last = self.consumer.take_kinds(TAKE_MAX, FOLLOWED)
        if last < first:
            return 0
        self.taken_seq = last
        self.last_taken = time.monotonic()
        complete = ends_a_batch(self.consumer.next_ts(), chosen, self.core.held)
        self.publish(self.core.apply_taken(chosen, first, last, complete=complete))
        self.applied += last - first + 1
        self.pending += last - first + 1
        if self.pending >= self.checkpoint_every or \
                time.monotonic() - self.last_checkpoint >= self.cfg.workers.checkpoint_s:
            self.make_durable()
        return last - first + 1

    def run(self) -> int:
        self.heartbeat.beat(state="running", **self.counters())
        try:
            while not Stop.requested and not self.consumer.producer_closed():
                self.serve_requests()
                if not self.step(WAIT_NS) and self.pending and time.monotonic() - self.last_taken >= IDLE_CHECKPOINT_S:
                    self.make_durable()
                now = time.monotonic()
                if now - self.last_status >= STATUS_EVERY_S:
                    self.publish(self.core.statuses())
                    self.last_status = now
                if beat_or_leave(self, ROLE):
                    return EXIT_PRODUCER_GONE
            while self.step(0):  # drain what is already published
                pass
            self.make_durable()
            self.heartbeat.beat(state="stopped", **self.counters())
            return 0
        finally:
            self.close()

    def close(self) -> None:
        self.pub.close(linger=0)
        self.router.close(linger=0)
        self.context.term()
        for address in (self.cfg.marketdata.address, self.cfg.marketdata.snapshot_address):
            if address.startswith("ipc://"):
                Path(address[len("ipc://"):]).unlink(missing_ok=True)
        self.consumer.detach()


__all__ = ["MarketDataCore", "MarketDataStage", "ROLE"]

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

from engine.process import EXIT_PRODUCER_GONE, TAKE_MAX, Checkpoint, Heartbeat, Stop, attach_consumer
from engine.records import EVENT_DTYPE, Ev, EvFlag
from engine.workers import ASSET_LISTING, MARKET_LISTING, Listings, kind_mask, select_fresh

from .mdmessages import (
    ASK,
    BID,
    CHANNEL_BOOK,
    CHANNEL_ORDERS,
    CHANNEL_STATUS,
    CHANNEL_TRADES,
    ENCODER,
    REQUEST_DECODER,
    BookSnapshot,
    BookSnapshotRequest,
    BookStatus,
    BookUpdate,
    Book,
    Level,
    MarketInfo,
    MarketList,
    MarketsRequest,
    MdError,
    OrderAdd,
    OrderAmend,
    OrderCancel,
    OrderExecute,
    OrderSnapshot,
    OrderUpdate,
    PriceLevel,
    Trade,
    Trades,
    topic,
)

ROLE = "marketdata"
FOLLOWED = kind_mask(Ev.ACCEPTED, Ev.FILL, Ev.CANCELLED, Ev.AMENDED, Ev.BOOK_LEVEL, Ev.MARKET_STATUS)
COLUMNS = ("seq", "cmd_seq", "kind", "flags", "side", "reason", "market", "venue", "ts", "order_id", "account",
           "client_id", "price", "qty", "remaining", "maker_order")
_ACCEPTED, _FILL, _CANCELLED, _AMENDED, _BOOK_LEVEL, _MARKET_STATUS = (
    int(Ev.ACCEPTED), int(Ev.FILL), int(Ev.CANCELLED), int(Ev.AMENDED), int(Ev.BOOK_LEVEL), int(Ev.MARKET_STATUS))
_PRIORITY_LOST = int(EvFlag.PRIORITY_LOST)
_ASSET_FLAG, _MARKET_FLAG = int(EvFlag.ASSET_LISTING), int(EvFlag.MARKET_LISTING)


class _Changes:
    """What one command (or the part of it in one batch) did to one market."""

    __slots__ = ("levels", "ops", "trades", "status", "ts")

    def __init__(self):
        self.levels: list[Level] = []
        self.ops: list = []
        self.trades: list[Trade] = []
        self.status = False
        self.ts = 0


class MarketDataCore:
    """Books of every market from ring events; ``apply(events)`` returns the messages to publish as
    ``(channel, message)`` pairs, in order.

    The events of one command end up in one message per kind and market, so a market's seqs count
    commands and do not depend on how the ring's events were batched: a restarted core numbers its
    updates exactly as before.  ``apply(events, complete)`` applies only whole commands: when the
    batch may end inside a command (``complete`` false: the publisher had more events than the
    consumer took) the last command's events are held back and applied with the next batch.  So
    the books always match the last seq published, which is what a snapshot relies on.  An incoming
    order is not in the book while it matches: it is added (``OrderAdd``, or ``OrderAmend`` with
    priority lost for an amended order that re-entered) once its matching is over.
    """

    def __init__(self) -> None:
        self.cursor = 0  # seq of the last event applied
        self.listings = Listings()
        self.books: dict[int, Book] = {}
        self.cmd_seq = 0
        self.incoming: list | None = None  # [order_id, market, side, price, remaining, amended, ts]
        self.pending: dict[int, _Changes] = {}
        self.held = np.zeros(0, EVENT_DTYPE)  # the start of a command whose end has not come yet
        self.l3_mismatches = 0  # BookLevel aggregates the L3 book disagreed with (must stay 0)
        self.unknown_orders = 0  # order events about orders not in the book (must stay 0)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["held"] = self.held[:0]  # not applied, so not in a checkpoint: the ring gives them again
        return state

    # ------------------------------------------------------------------------------ events -------

    def apply(self, events: np.ndarray, complete: bool = True) -> list[tuple[bytes, object]]:
        """Apply a batch of ring events (seq order; seqs at or below the cursor are skipped, a gap
        raises ``SequenceGapError``); returns the messages to publish.  ``complete``: the batch ends
        at the end of a command (the consumer took everything published)."""
        if len(self.held):
            events = np.concatenate([self.held, events])
        new, last = select_fresh(events, self.cursor, FOLLOWED)
        if not complete and len(new):
            cmd_seqs = new["cmd_seq"]
            cut = int(np.searchsorted(cmd_seqs, cmd_seqs[-1]))  # cmd_seq is non-decreasing
            # the ring's copy is kept from where the held command starts, its unfollowed events too
            self.held = events[int(np.searchsorted(events["seq"], new["seq"][cut])):].copy()
            new = new[:cut]
            last = int(self.held["seq"][0]) - 1
        else:
            self.held = events[:0]
        out: list[tuple[bytes, object]] = []
        if len(new):
            self._apply_rows(zip(*(new[name].tolist() for name in COLUMNS)), out)
            self._settle_incoming()
            self._publish_pending(out)
        self.cursor = max(self.cursor, last)
        return out

    def _changes(self, market: int, ts: int) -> _Changes:
        ch = self.pending.get(market)
        if ch is None:
            ch = self.pending[market] = _Changes()
        ch.ts = ts
        return ch

    def _apply_rows(self, rows, out) -> None:
        books = self.books
        for (seq, cmd_seq, kind, flags, side, reason, market, venue, ts, order_id, account, client_id, price, qty,
             remaining, maker_order) in rows:
            if cmd_seq != self.cmd_seq:
                self._settle_incoming()
                self._publish_pending(out)
                self.cmd_seq = cmd_seq
            if kind == _BOOK_LEVEL:
                if self.incoming is not None:
                    self._settle_incoming()
                book = books[market]
                book.set_level(side, price, qty, remaining)
                self._changes(market, ts).levels.append(Level(side, price, qty, remaining))
                if book.l3_level(side, price) != (qty, remaining):
                    self.l3_mismatches += 1
            elif kind == _FILL:
                book = books[market]
                ch = self._changes(market, ts)
                if maker_order in book.orders:
                    left = book.queues[1 - side][price][maker_order] - qty
                    book.resize(maker_order, left)
                    ch.ops.append(OrderExecute(maker_order, qty, left, seq))
                else:
                    self.unknown_orders += 1
                incoming = self.incoming
                if incoming is not None and incoming[0] == order_id:
                    incoming[4] = remaining
                else:
                    self.unknown_orders += 1
                book.trade_number += 1
                ch.trades.append(Trade(seq, book.trade_number, price, qty, side, order_id, maker_order))
            elif kind == _CANCELLED:
                incoming = self.incoming
                if incoming is not None and incoming[0] == order_id:
                    incoming[4] = remaining  # an incoming order's remainder never rested
                elif market in books and order_id in books[market].orders:
                    books[market].resize(order_id, remaining)
                    self._changes(market, ts).ops.append(OrderCancel(order_id, qty, remaining, reason))
                else:
                    self.unknown_orders += 1
            elif kind == _ACCEPTED:
                if order_id > 0:
                    self.incoming = [order_id, market, side, price, qty, False, ts]
                elif flags & _MARKET_FLAG:
                    self.listings.learn(MARKET_LISTING, seq, side, market, venue, account, client_id, price, qty,
                                        remaining)
                    books.setdefault(market, Book(market))
                elif flags & _ASSET_FLAG:
                    self.listings.learn(ASSET_LISTING, seq, side, market, venue, account, client_id, price, qty,
                                        remaining)
                # else a MassCancel's echo: its Cancelled events follow
            elif kind == _AMENDED:
                book = books.get(market)
                if book is None or order_id not in book.orders:
                    self.unknown_orders += 1
                elif flags & _PRIORITY_LOST:
                    book.resize(order_id, 0)  # it re-enters as an incoming order at its new price
                    self.incoming = [order_id, market, side, price, qty, True, ts]
                else:  # same price, size down or equal: it keeps its place
                    book.resize(order_id, qty)
                    self._changes(market, ts).ops.append(OrderAmend(order_id, price, qty, False))
            elif kind == _MARKET_STATUS:
                book = books.get(market)
                if book is not None:
                    book.halted = qty == 1
                    self._changes(market, ts).status = True

    def _settle_incoming(self) -> None:
        """The incoming order's matching is over: a remainder rests at the back of its level."""
        incoming = self.incoming
        if incoming is None:
            return
        self.incoming = None
        order_id, market, side, price, remaining, amended, ts = incoming
        if remaining > 0:
            self.books[market].rest(order_id, side, price, remaining)
            op = OrderAmend(order_id, price, remaining, True) if amended else OrderAdd(order_id, side, price, remaining)
        elif amended:
            op = OrderAmend(order_id, price, 0, True)
        else:
            return
        self._changes(market, ts).ops.append(op)

    def _publish_pending(self, out: list) -> None:
        """One update per market the command changed."""
        if not self.pending:
            return
        books = self.books
        for market, ch in self.pending.items():
            book = books[market]
            book.ts = ch.ts
            if ch.levels or ch.ops:
                book.seq += 1
                checksum = book.checksum()
                out.append((CHANNEL_BOOK, BookUpdate(market, book.seq, ch.ts, ch.levels, checksum)))
                out.append((CHANNEL_ORDERS, OrderUpdate(market, book.seq, ch.ts, ch.ops, checksum)))
                if ch.trades:
                    out.append((CHANNEL_TRADES, Trades(market, book.seq, ch.ts, ch.trades)))
            if ch.status:
                out.append((CHANNEL_STATUS, self.status(market)))
        self.pending = {}

    # ------------------------------------------------------------------------------ queries ------

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
        return OrderSnapshot(market, b.seq, b.ts, b.resting_orders(), b.checksum(), b.trade_number, b.halted)

    def market_list(self) -> MarketList:
        assets = self.listings.assets
        seen: set[str] = set()
        out = []
        for mid in sorted(self.listings.markets):
            d = self.listings.markets[mid]
            base, quote = assets.get(d.base), assets.get(d.quote)
            base_sym = base.symbol if base else str(d.base)
            quote_sym = quote.symbol if quote else str(d.quote)
            symbol = f"{base_sym}/{quote_sym}"
            if symbol in seen:
                symbol = f"{symbol}#{mid}"
            seen.add(symbol)
            out.append(MarketInfo(mid, symbol, base_sym, quote_sym, base.decimals if base else 0,
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
STATUS_EVERY_S = 1.0  # BookStatus per market this often
MAX_REQUEST_BYTES = 4096
PUB_HWM = 1_000_000  # messages queued per subscriber before the PUB drops (the subscriber resyncs)


class MarketDataStage:
    """Ring -> ``MarketDataCore`` -> PUB socket; snapshots on the ROUTER socket, between batches, so
    each one is exactly the state at the seq it carries."""

    def __init__(self, cfg):
        self.cfg = cfg
        md = cfg.marketdata
        self.checkpoint = Checkpoint(cfg.data_path / "run" / f"{ROLE}.ckpt")
        restored = self.checkpoint.load()
        self.core: MarketDataCore = restored if restored is not None else MarketDataCore()
        self.consumer = attach_consumer(cfg, ROLE, self.core.cursor + 1)
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
                "resting_orders": sum(len(b.orders) for b in c.books.values()), "l3_mismatches": c.l3_mismatches,
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
        send = self.pub.send_multipart
        encode = ENCODER.encode
        for channel, msg in messages:
            send((topic(msg.market, channel), encode(msg)))
        self.published += len(messages)

    def serve_requests(self) -> None:
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
        events = self.consumer.take(TAKE_MAX)
        self.taken_seq = int(events["seq"][-1])
        # nothing more published: the batch ends where the matcher's publish ended, between commands
        self.publish(self.core.apply(events, complete=self.consumer.available() == 0))
        self.applied += len(events)
        self.pending += len(events)
        if self.pending >= self.checkpoint_every or \
                time.monotonic() - self.last_checkpoint >= self.cfg.workers.checkpoint_s:
            self.make_durable()
        return len(events)

    def run(self) -> int:
        self.heartbeat.beat(state="running", **self.counters())
        try:
            while not Stop.requested and not self.consumer.producer_closed():
                self.serve_requests()
                if not self.step(WAIT_NS) and self.pending:
                    self.make_durable()
                now = time.monotonic()
                if now - self.last_status >= STATUS_EVERY_S:
                    self.publish(self.core.statuses())
                    self.last_status = now
                if self.heartbeat.due():
                    if not self.consumer.producer_alive():
                        # what was applied is durable up to the cursor; the restarted matcher
                        # republishes the rest into a new ring
                        self.make_durable()
                        self.heartbeat.beat(state="producer gone", **self.counters())
                        print(f"xos {ROLE}: the matcher is gone; leaving to reattach", file=sys.stderr, flush=True)
                        return EXIT_PRODUCER_GONE
                    self.heartbeat.beat(state="running", **self.counters())
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

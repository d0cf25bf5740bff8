"""Market-data wire messages: msgspec MessagePack structs, encoders and decoders made once.

Two sockets (docs/ARCHITECTURE.md, "Market data"):

- PUB (``marketdata.address``): two frames per message, ``[topic, payload]``.  The topic is the
  market id as 4 big-endian bytes followed by one channel byte, so a SUB that subscribes to the
  4-byte prefix gets every channel of that market and one that subscribes to the 5 bytes gets one
  channel: ``B`` L2 increments (``BookUpdate``), ``O`` the L3 order-by-order stream
  (``OrderUpdate``), ``T`` trades (``Trades``), ``S`` status (``BookStatus``, once a second per
  market and on every halt or resume, so a subscriber notices a lost last update while the market
  is quiet).
- ROUTER (``marketdata.snapshot_address``): a DEALER sends one request (``BookSnapshotRequest``,
  ``OrderSnapshotRequest``, ``MarketsRequest``) and gets one reply (``BookSnapshot``,
  ``OrderSnapshot``, ``MarketList`` or ``MdError``).

Sequence numbers: each market has one sequence ``seq``, incremented once for every matcher batch
(the commands the matcher stamped with one ``ts``) that touched that market's book.  The
``BookUpdate`` and the ``OrderUpdate`` of that batch carry the same ``seq`` (every book change is
both an L2 and an L3 change), and a snapshot carries the ``seq`` it is valid at, so a subscriber
applies exactly the updates with ``seq`` > the snapshot's.  Trades are numbered per market
(``number`` 1, 2, ...); their ``id`` is the fill's event seq.  The rows of an update are packed
records (``LEVEL_DTYPE``, ``OP_DTYPE``, ``TRADE_DTYPE``: little-endian, unpadded).

Checksum (``book_checksum``): CRC32 (the zlib / IEEE 802.3 polynomial, unsigned) of the byte string
``pack("<BB", nb, na)`` followed by ``nb`` bid levels best first, then ``na`` ask levels best first,
each ``pack("<qqq", price, qty, count)``, where ``nb`` and ``na`` are the numbers of levels on each
side, at most ``CHECKSUM_DEPTH`` (10).  An empty book's checksum is ``crc32(b"\\x00\\x00")``.
Prices and quantities are the engine's integers (price per lot in quote units, qty in base units).
"""
from __future__ import annotations

import struct
import zlib
from bisect import bisect_left, insort
from typing import Annotated, Sequence, Union

import msgspec
import numpy as np

CHECKSUM_DEPTH = 10

CHANNEL_BOOK = b"B"
CHANNEL_ORDERS = b"O"
CHANNEL_TRADES = b"T"
CHANNEL_STATUS = b"S"
CHANNELS = (CHANNEL_BOOK, CHANNEL_ORDERS, CHANNEL_TRADES, CHANNEL_STATUS)

_MARKET = struct.Struct(">I")
_COUNTS = struct.Struct("<BB")
_LEVEL = struct.Struct("<qqq")


def market_prefix(market: int) -> bytes:
    """The topic prefix of every message about ``market`` (subscribe to it for all channels)."""
    return _MARKET.pack(market)


def topic(market: int, channel: bytes) -> bytes:
    """The PUB topic of ``channel`` (one of ``CHANNELS``) for ``market``."""
    return _MARKET.pack(market) + channel


def topic_market(raw: bytes) -> int:
    return _MARKET.unpack_from(raw)[0]


def book_checksum(bids: Sequence[Sequence[int]], asks: Sequence[Sequence[int]]) -> int:
    """CRC32 of the top ``CHECKSUM_DEPTH`` levels, ``(price, qty, count)`` best first per side."""
    top_bids = bids[:CHECKSUM_DEPTH]
    top_asks = asks[:CHECKSUM_DEPTH]
    parts = [_COUNTS.pack(len(top_bids), len(top_asks))]
    parts += [_LEVEL.pack(p, q, c) for p, q, c in top_bids]
    parts += [_LEVEL.pack(p, q, c) for p, q, c in top_asks]
    return zlib.crc32(b"".join(parts))


# ----------------------------------------------------------------------------------- PUB --------

# Increments carry their rows as packed little-endian records (``bytes``, no padding), so the
# publisher builds a message from numpy arrays without one Python object per row; a subscriber
# reads them with ``np.frombuffer(payload, DTYPE)`` (or ``levels_of`` / ``ops_of`` / ``trades_of``).
LEVEL_DTYPE = np.dtype([("side", "u1"), ("price", "<i8"), ("qty", "<i8"), ("count", "<i8")])  # 25 bytes
OP_DTYPE = np.dtype([("op", "u1"), ("side", "u1"), ("reason", "u1"), ("order_id", "<i8"), ("price", "<i8"),
                     ("qty", "<i8"), ("remaining", "<i8"), ("trade_id", "<i8")])  # 43 bytes
TRADE_DTYPE = np.dtype([("id", "<i8"), ("number", "<i8"), ("price", "<i8"), ("qty", "<i8"), ("side", "u1"),
                        ("taker_order", "<i8"), ("maker_order", "<i8")])  # 49 bytes

# ``OP_DTYPE.op``: what happened to the order (``side`` and ``price`` are always the order's)
OP_ADD = ord("a")  # it rests at the back of its level with ``qty`` (= ``remaining``) open
OP_EXECUTE = ord("e")  # it traded ``qty`` as a maker; ``remaining`` open after; ``trade_id`` = the trade's id
OP_CANCEL = ord("c")  # ``qty`` was taken off it; ``remaining`` open after; ``reason`` = the engine's cancel reason
OP_AMEND = ord("m")  # it now rests at ``price`` with ``remaining`` (= ``qty``) open; ``reason`` 1: it lost its
#                      priority (moved to the back of the level, after trading as a taker if it crossed)
PRIORITY_LOST = 1


class PriceLevel(msgspec.Struct, array_like=True, frozen=True):
    price: int
    qty: int
    count: int


class BookUpdate(msgspec.Struct, tag="B", array_like=True, frozen=True):
    """The L2 levels one matcher batch changed in one market, each as it is after the batch
    (``LEVEL_DTYPE`` rows; ``qty == count == 0``: the level is gone), and the checksum after them."""

    market: int
    seq: int
    ts: int  # engine clock of the batch (ns)
    levels: bytes
    checksum: int


class OrderUpdate(msgspec.Struct, tag="O", array_like=True, frozen=True):
    """The L3 changes of one matcher batch in one market, in order (``OP_DTYPE`` rows); same ``seq``
    and ``checksum`` as its ``BookUpdate`` (an L3 subscriber checks the levels its orders add up to)."""

    market: int
    seq: int
    ts: int
    ops: bytes
    checksum: int


class Trades(msgspec.Struct, tag="T", array_like=True, frozen=True):
    """The trades of one matcher batch in one market (``TRADE_DTYPE`` rows: ``id`` = the fill's event
    seq, unique and stable across restarts; ``number`` 1, 2, ... per market, a gap means a trade
    was missed; ``side`` the taker's)."""

    market: int
    seq: int  # the book seq of the batch they belong to
    ts: int
    trades: bytes


def levels_of(update: BookUpdate) -> np.ndarray:
    return np.frombuffer(update.levels, LEVEL_DTYPE)


def ops_of(update: OrderUpdate) -> np.ndarray:
    return np.frombuffer(update.ops, OP_DTYPE)


def trades_of(msg: Trades) -> np.ndarray:
    return np.frombuffer(msg.trades, TRADE_DTYPE)


class BookStatus(msgspec.Struct, tag="S", array_like=True, frozen=True):
    """Where a market's streams are: sent once a second per market and on halt / resume."""

    market: int
    seq: int
    checksum: int
    trade_number: int
    halted: bool
    ts: int


PubMessage = Union[BookUpdate, OrderUpdate, Trades, BookStatus]


# ----------------------------------------------------------------------------- requests ---------

class BookSnapshotRequest(msgspec.Struct, tag="book?", frozen=True, forbid_unknown_fields=True):
    market: int
    depth: Annotated[int, msgspec.Meta(ge=0, le=(1 << 31) - 1)] = 0  # levels per side, 0 = the whole book


class OrderSnapshotRequest(msgspec.Struct, tag="orders?", frozen=True, forbid_unknown_fields=True):
    market: int


class MarketsRequest(msgspec.Struct, tag="markets?", frozen=True, forbid_unknown_fields=True):
    pass


Request = Union[BookSnapshotRequest, OrderSnapshotRequest, MarketsRequest]


class BookSnapshot(msgspec.Struct, tag="book", frozen=True):
    market: int
    seq: int  # valid at this seq: apply updates with a larger one
    ts: int
    bids: list[PriceLevel]  # best first
    asks: list[PriceLevel]
    checksum: int  # of the whole book's top levels, whatever the depth asked
    trade_number: int
    halted: bool


class RestingOrder(msgspec.Struct, array_like=True, frozen=True):
    order_id: int
    side: int
    price: int
    qty: int


class OrderSnapshot(msgspec.Struct, tag="orders", frozen=True):
    market: int
    seq: int
    ts: int
    orders: list[RestingOrder]  # bids best first, each level in time priority, then asks likewise
    checksum: int
    trade_number: int
    halted: bool


class MarketInfo(msgspec.Struct, frozen=True):
    market: int
    symbol: str  # "BASE/QUOTE", a perpetual "BASE/QUOTE:QUOTE" (a second market of the same name: "...#ID")
    base: str
    quote: str
    base_decimals: int
    quote_decimals: int
    tick_size: int
    lot_size: int
    min_size: int
    kind: int
    venue: int
    halted: bool


class MarketList(msgspec.Struct, tag="markets", frozen=True):
    markets: list[MarketInfo]


class MdError(msgspec.Struct, tag="error", frozen=True):
    code: str  # stable: UNKNOWN_MARKET, MALFORMED_REQUEST
    reason: str


Reply = Union[BookSnapshot, OrderSnapshot, MarketList, MdError]


# ----------------------------------------------------------------------------------- book -------

BID, ASK = 0, 1


class LevelBook:
    """One market's L2 book: levels, seq, trade count, halt.  The publisher keeps one per market
    (its orders are in ``gateway.marketdata.MarketDataCore.orders``); a subscriber's ``Book`` adds the orders.
    The checksum is computed by this one code on both ends."""

    __slots__ = ("market", "levels", "prices", "seq", "trade_number", "halted", "ts")

    def __init__(self, market: int):
        self.market = market
        self.levels: tuple[dict, dict] = ({}, {})  # side -> price -> (qty, count)
        self.prices: tuple[list, list] = ([], [])  # side -> the prices of its levels, ascending
        self.seq = 0
        self.trade_number = 0
        self.halted = False
        self.ts = 0

    def set_level(self, side: int, price: int, qty: int, count: int) -> tuple[int, int]:
        """Set a level (``qty == count == 0`` removes it); returns its ``(qty, count)`` before."""
        levels = self.levels[side]
        old = levels.get(price)
        if qty == 0 and count == 0:
            if old is not None:
                del levels[price]
                prices = self.prices[side]
                del prices[bisect_left(prices, price)]
        else:
            if old is None:
                insort(self.prices[side], price)
            levels[price] = (qty, count)
        return old or (0, 0)

    def side_levels(self, side: int, depth: int = 0) -> list[tuple[int, int, int]]:
        """``(price, qty, count)`` best first, at most ``depth`` of them (0: all)."""
        prices = self.prices[side]
        if side == BID:
            chosen = prices[::-1] if depth <= 0 else prices[:-depth - 1:-1]
        else:
            chosen = prices if depth <= 0 else prices[:depth]
        levels = self.levels[side]
        return [(p, *levels[p]) for p in chosen]

    def checksum(self) -> int:
        return book_checksum(self.side_levels(BID, CHECKSUM_DEPTH), self.side_levels(ASK, CHECKSUM_DEPTH))

    def clear(self) -> None:
        for side in (BID, ASK):
            self.levels[side].clear()
            self.prices[side].clear()

    def load(self, snapshot: BookSnapshot) -> None:
        """Become the L2 book of ``snapshot`` (whole depth: an increment may touch any level)."""
        self.clear()
        for side, levels in ((BID, snapshot.bids), (ASK, snapshot.asks)):
            for lv in levels:
                self.set_level(side, lv.price, lv.qty, lv.count)
        self._take_status(snapshot)

    def apply_levels(self, update: BookUpdate) -> None:
        for side, price, qty, count in levels_of(update).tolist():
            self.set_level(side, price, qty, count)
        self.seq = update.seq
        self.ts = update.ts

    def _take_status(self, snapshot) -> None:
        self.seq = snapshot.seq
        self.ts = snapshot.ts
        self.trade_number = snapshot.trade_number
        self.halted = snapshot.halted


class Book(LevelBook):
    """A subscriber's book of one market: the L2 levels and the resting orders of each level in
    time priority (L3), filled from a snapshot and then the updates (``apply_levels`` for L2,
    ``apply_ops`` for L3)."""

    __slots__ = ("queues", "orders")

    def __init__(self, market: int):
        super().__init__(market)
        self.queues: tuple[dict, dict] = ({}, {})  # side -> price -> {order_id: remaining}, oldest first
        self.orders: dict[int, tuple[int, int]] = {}  # order_id -> (side, price) of the resting orders

    def clear(self) -> None:
        super().clear()
        for side in (BID, ASK):
            self.queues[side].clear()
        self.orders.clear()

    def rest(self, order_id: int, side: int, price: int, qty: int) -> None:
        """Put an order at the back of its level."""
        queues = self.queues[side]
        queue = queues.get(price)
        if queue is None:
            queue = queues[price] = {}
        queue[order_id] = qty
        self.orders[order_id] = (side, price)

    def resize(self, order_id: int, remaining: int) -> tuple[int, int]:
        """Set a resting order's open size in place (0 removes it); returns its (side, price)."""
        side, price = where = self.orders[order_id]
        queues = self.queues[side]
        queue = queues[price]
        if remaining:
            queue[order_id] = remaining
            return where
        del queue[order_id]
        del self.orders[order_id]
        if not queue:
            del queues[price]
        return where

    def l3_level(self, side: int, price: int) -> tuple[int, int]:
        """(qty, count) of the resting orders at a level."""
        queue = self.queues[side].get(price)
        return (sum(queue.values()), len(queue)) if queue else (0, 0)

    def resting_orders(self) -> list[RestingOrder]:
        """Bids best first, each level oldest first, then asks likewise."""
        out = []
        for side in (BID, ASK):
            queues = self.queues[side]
            for price in sorted(queues, reverse=side == BID):
                out.extend(RestingOrder(oid, side, price, rem) for oid, rem in queues[price].items())
        return out

    def load_orders(self, snapshot: OrderSnapshot) -> None:
        """Become the L3 book of ``snapshot``, with the L2 levels its orders add up to."""
        self.clear()
        for o in snapshot.orders:
            self.rest(o.order_id, o.side, o.price, o.qty)
        for side in (BID, ASK):
            for price in self.queues[side]:
                self.set_level(side, price, *self.l3_level(side, price))
        self._take_status(snapshot)

    def apply_ops(self, update: OrderUpdate) -> None:
        """Apply an L3 update and bring the L2 levels it touched in line with the orders.
        Raises ``KeyError`` for an op about an order this book does not hold (a missed update)."""
        touched = set()
        for op, side, reason, order_id, price, _qty, remaining, _trade in ops_of(update).tolist():
            if op == OP_ADD:
                self.rest(order_id, side, price, remaining)
            elif op == OP_AMEND and reason == PRIORITY_LOST:
                touched.add(self.resize(order_id, 0))
                if remaining:
                    self.rest(order_id, side, price, remaining)
            else:  # execute, cancel, amend in place
                self.resize(order_id, remaining)
            touched.add((side, price))
        for side, price in touched:
            self.set_level(side, price, *self.l3_level(side, price))
        self.seq = update.seq
        self.ts = update.ts


ENCODER = msgspec.msgpack.Encoder()
PUB_DECODER = msgspec.msgpack.Decoder(PubMessage)
REQUEST_DECODER = msgspec.msgpack.Decoder(Request)
REPLY_DECODER = msgspec.msgpack.Decoder(Reply)

__all__ = [
    "ASK", "BID", "Book", "BookSnapshot", "BookSnapshotRequest", "BookStatus", "BookUpdate", "CHANNELS", "CHANNEL_BOOK",
    "CHANNEL_ORDERS", "CHANNEL_STATUS", "CHANNEL_TRADES", "CHECKSUM_DEPTH", "ENCODER", "LEVEL_DTYPE", "LevelBook",
    "MarketInfo", "MarketList", "MarketsRequest", "MdError", "OP_ADD", "OP_AMEND", "OP_CANCEL", "OP_DTYPE",
    "OP_EXECUTE", "OrderSnapshot", "OrderSnapshotRequest", "OrderUpdate", "PRIORITY_LOST", "PUB_DECODER",
    "PriceLevel", "PubMessage", "REPLY_DECODER", "REQUEST_DECODER", "Reply", "Request", "RestingOrder",
    "TRADE_DTYPE", "Trades", "book_checksum", "levels_of", "market_prefix", "ops_of", "topic", "topic_market",
    "trades_of",
]

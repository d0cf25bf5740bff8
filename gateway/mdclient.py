"""Market-data client: asyncio, CCXT-style names and structures.

    md = MarketDataClient("tcp://127.0.0.1:7101", "tcp://127.0.0.1:7102")
    book = await md.fetch_order_book("BTC/USD")          # a snapshot
    while True:
        book = await md.watch_order_book("BTC/USD")      # after each update, kept in sync
        trades = await md.watch_trades("BTC/USD")        # the trades since the last call

Books come back as ``{'symbol', 'bids': [[price, amount], ...], 'asks', 'timestamp', 'datetime',
'nonce'}`` (bids best first; ``nonce`` is the market's seq) and trades as ``{'id', 'timestamp',
'datetime', 'symbol', 'order', 'type', 'side', 'takerOrMaker', 'price', 'amount', 'cost', 'fee',
'info'}``.  Prices and amounts are the engine's integers: price in quote units per lot, amount in
base units, cost the notional ``price * amount / lot_size`` in quote units (docs/ARCHITECTURE.md,
Units); ``load_markets`` gives each market's decimals, tick and lot to convert them.

A watched book follows ZeroMQ's Clone pattern by itself: subscribe, buffer the increments, take a
snapshot (it carries the seq it is valid at), apply the buffered increments after it, then each
new one.  An increment that skips a seq, a checksum that differs from the book's, or a status
message ahead of the book (a lost last update) starts a resync from a new snapshot; ``resyncs``,
``gaps`` and ``checksum_errors`` count them.  Updates at or below the book's seq (a restarted
publisher republishing from its checkpoint) are dropped.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import struct

import msgspec
import zmq
import zmq.asyncio

from .mdmessages import (
    ASK,
    BID,
    CHANNEL_BOOK,
    CHANNEL_STATUS,
    CHANNEL_TRADES,
    ENCODER,
    PUB_DECODER,
    REPLY_DECODER,
    LevelBook,
    BookSnapshot,
    BookSnapshotRequest,
    BookStatus,
    BookUpdate,
    MarketInfo,
    MarketList,
    MarketsRequest,
    MdError,
    OrderSnapshot,
    OrderSnapshotRequest,
    Trades,
    topic,
    topic_market,
    trades_of,
)


LIMIT_MAX = (1 << 31) - 1  # a ``limit``: levels, trades or orders
SINCE_MAX_MS = ((1 << 63) - 1) // 1_000_000  # a ``since`` in ms, as the engine's int64 ns


def count_arg(name: str, value, top: int = LIMIT_MAX) -> int:
    """CCXT's ``since`` or ``limit``: None or an int >= 0 (None and 0: no bound); anything else is refused, named."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be None or an int >= 0, not {type(value).__name__} {value!r}")
    if not 0 <= value <= top:
        raise ValueError(f"{name} must be None or an int in 0 .. {top}, not {value}")
    return value


class MarketDataError(RuntimeError):
    """The market-data service refused a request or did not answer it."""


def _datetime(ts_ms: int) -> str:
    return _dt.datetime.fromtimestamp(ts_ms / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


class _Watched:
    """A book kept in sync, and what waits for its next change."""

    def __init__(self, info: MarketInfo):
        self.info = info
        self.book = LevelBook(info.market)
        self.synced = False
        self.buffer: list[BookUpdate] = []  # increments that arrived while a snapshot was awaited
        self.syncing: asyncio.Task | None = None
        self.changed = asyncio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class _TradeFeed:
    def __init__(self, info: MarketInfo):
        self.info = info
        self.last_number: int | None = None
        self.new: list[dict] = []
        self.changed = asyncio.Event()


class MarketDataClient:
    """Subscriber of one market-data service (its PUB and snapshot ROUTER addresses)."""

    def __init__(self, address: str, snapshot_address: str, *, context: zmq.asyncio.Context | None = None,
                 request_timeout_s: float = 5.0):
        self.address = address
        self.snapshot_address = snapshot_address
        self.context = context or zmq.asyncio.Context.instance()
        self.request_timeout_s = request_timeout_s
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 1_000_000)
        self.sub.connect(address)
        self.dealer: zmq.asyncio.Socket | None = None
        self.request_lock = asyncio.Lock()
        self.markets: dict[str, MarketInfo] = {}
        self.markets_by_id: dict[int, MarketInfo] = {}
        self.books: dict[int, _Watched] = {}
        self.trade_feeds: dict[int, _TradeFeed] = {}
        self.reader: asyncio.Task | None = None
        self.resyncs = 0  # snapshots taken again after a gap or a checksum mismatch
        self.gaps = 0
        self.checksum_errors = 0
        self.trade_gaps = 0  # trades missed (the PUB dropped them; they cannot be fetched again)
        self.bad_messages = 0

    @classmethod
    def from_config(cls, cfg, **kw) -> "MarketDataClient":
        return cls(cfg.marketdata.address, cfg.marketdata.snapshot_address, **kw)

    # ------------------------------------------------------------------------ requests -------

    async def request(self, message):
        """One request on the snapshot socket; its reply (``MarketDataError`` for an error reply)."""
        async with self.request_lock:
            if self.dealer is None:
                self.dealer = self.context.socket(zmq.DEALER)
                self.dealer.setsockopt(zmq.LINGER, 0)
                self.dealer.connect(self.snapshot_address)
            await self.dealer.send(ENCODER.encode(message))
            if not await self.dealer.poll(int(self.request_timeout_s * 1000), zmq.POLLIN):
                # a late reply must not answer the next request: start over with a new socket
                self.dealer.close(linger=0)
                self.dealer = None
                raise MarketDataError(f"no reply from {self.snapshot_address} within {self.request_timeout_s} s")
            reply = REPLY_DECODER.decode(await self.dealer.recv())
        if isinstance(reply, MdError):
            raise MarketDataError(f"{reply.code}: {reply.reason}")
        return reply

    async def load_markets(self, reload: bool = False) -> dict[str, dict]:
        """``{symbol: market}`` with CCXT's names (``id``, ``symbol``, ``base``, ``quote``,
        ``precision``, ``limits``, ``active``) plus the engine's ``tick_size`` and ``lot_size``."""
        if reload or not self.markets:
            listing: MarketList = await self.request(MarketsRequest())
            self.markets = {m.symbol: m for m in listing.markets}
            self.markets_by_id = {m.market: m for m in listing.markets}
        return {s: self._market_dict(m) for s, m in self.markets.items()}

    @staticmethod
    def _market_dict(m: MarketInfo) -> dict:
        return {"id": m.market, "symbol": m.symbol, "base": m.base, "quote": m.quote, "active": not m.halted,
                "spot": m.kind == 0, "type": ("spot", "swap", "outcome")[m.kind] if 0 <= m.kind <= 2 else m.kind,
                "precision": {"price": m.tick_size, "amount": m.lot_size},
                "limits": {"amount": {"min": m.min_size, "max": None}},
                "tick_size": m.tick_size, "lot_size": m.lot_size, "base_decimals": m.base_decimals,
                "quote_decimals": m.quote_decimals, "info": m}

    async def market(self, symbol: str | int) -> MarketInfo:
        """A market by symbol (``"BTC/USD"``) or id; unknown ones are looked up once more."""
        for reload in (False, True):
            await self.load_markets(reload)
            found = self.markets_by_id.get(symbol) if isinstance(symbol, int) else self.markets.get(symbol)
            if found is not None:
                return found
        raise MarketDataError(f"unknown market {symbol!r}; listed: {sorted(self.markets)}")

    # ------------------------------------------------------------------------ books ----------

    async def fetch_order_book(self, symbol: str | int, limit: int | None = None) -> dict:
        info = await self.market(symbol)
        snap: BookSnapshot = await self.request(BookSnapshotRequest(info.market, count_arg("limit", limit)))
        return self._book_dict(info, [(lv.price, lv.qty) for lv in snap.bids], [(lv.price, lv.qty) for lv in snap.asks],
                               snap.seq, snap.ts)

    async def fetch_l3_order_book(self, symbol: str | int) -> dict:
        """Every resting order: ``{'bids': [[price, amount, order_id], ...], 'asks', 'nonce', ...}``,
        each side best first and each level in time priority."""
        info = await self.market(symbol)
        snap: OrderSnapshot = await self.request(OrderSnapshotRequest(info.market))
        bids = [[o.price, o.qty, o.order_id] for o in snap.orders if o.side == BID]
        asks = [[o.price, o.qty, o.order_id] for o in snap.orders if o.side == ASK]
        return self._book_dict(info, bids, asks, snap.seq, snap.ts)

    async def watch_order_book(self, symbol: str | int, limit: int | None = None) -> dict:
        """The book once it is in sync (first call), then after each change."""
        count_arg("limit", limit)
        info = await self.market(symbol)
        w = self.books.get(info.market)
        if w is None:
            w = self.books[info.market] = _Watched(info)
            self.sub.setsockopt(zmq.SUBSCRIBE, topic(info.market, CHANNEL_BOOK))
            self.sub.setsockopt(zmq.SUBSCRIBE, topic(info.market, CHANNEL_STATUS))
            self._start_reader()
            self._resync(w, initial=True)
        else:
            await w.changed.wait()
        while not w.synced:
            await w.changed.wait()
        return self.order_book(info.market, limit)

    def order_book(self, market: int, limit: int | None = None) -> dict:
        """The watched book of ``market`` as it is now."""
        w = self.books[market]
        b = w.book
        depth = count_arg("limit", limit)
        bids = [[p, q] for p, q, _ in b.side_levels(BID, depth)]
        asks = [[p, q] for p, q, _ in b.side_levels(ASK, depth)]
        return self._book_dict(w.info, bids, asks, b.seq, b.ts)

    @staticmethod
    def _book_dict(info: MarketInfo, bids, asks, seq: int, ts: int) -> dict:
        ms = ts // 1_000_000
        return {"symbol": info.symbol, "bids": [list(x) for x in bids], "asks": [list(x) for x in asks],
                "timestamp": ms, "datetime": _datetime(ms) if ms else None, "nonce": seq}

    def _resync(self, w: _Watched, initial: bool = False) -> None:
        """Take the book again from a snapshot; increments are buffered meanwhile."""
        if not initial:
            self.resyncs += 1
        w.synced = False
        w.buffer = []
        if w.syncing is None or w.syncing.done():
            w.syncing = asyncio.get_running_loop().create_task(self._sync(w))

    async def _sync(self, w: _Watched) -> None:
        while True:
            try:
                snap: BookSnapshot = await self.request(BookSnapshotRequest(w.info.market))
            except MarketDataError:
                await asyncio.sleep(0.1)  # the service restarts: ask again
                continue
            w.book.load(snap)
            buffered, w.buffer = w.buffer, []
            if all(self._apply(w, u) for u in buffered):
                w.synced = True
                w.notify()
                return

    def _apply(self, w: _Watched, update: BookUpdate) -> bool:
        """Apply one increment to a synced book; False (and counted) on a gap or a bad checksum."""
        book = w.book
        if update.seq <= book.seq:
            return True  # already in the book (a snapshot past it, or a republished update)
        if update.seq != book.seq + 1:
            self.gaps += 1
            return False
        book.apply_levels(update)
        if book.checksum() != update.checksum:
            self.checksum_errors += 1
            return False
        return True

    # ------------------------------------------------------------------------ trades ---------

    async def watch_trades(self, symbol: str | int, since: int | None = None, limit: int | None = None) -> list[dict]:
        """The trades received since the last call (waits for at least one)."""
        since, limit = count_arg("since", since, SINCE_MAX_MS), count_arg("limit", limit)
        info = await self.market(symbol)
        feed = self.trade_feeds.get(info.market)
        if feed is None:
            feed = self.trade_feeds[info.market] = _TradeFeed(info)
            self.sub.setsockopt(zmq.SUBSCRIBE, topic(info.market, CHANNEL_TRADES))
            self._start_reader()
        while not feed.new:
            feed.changed.clear()
            await feed.changed.wait()
        out, feed.new = feed.new, []
        if since:
            out = [t for t in out if t["timestamp"] >= since]
        return out[-limit:] if limit else out

    def _take_trades(self, feed: _TradeFeed, msg: Trades) -> None:
        info = feed.info
        ms = msg.ts // 1_000_000
        for trade_id, number, price, qty, side, taker_order, maker_order in trades_of(msg).tolist():
            if feed.last_number is not None:
                if number <= feed.last_number:
                    continue  # republished after a restart of the service
                if number != feed.last_number + 1:
                    self.trade_gaps += number - feed.last_number - 1
            feed.last_number = number
            feed.new.append({"id": str(trade_id), "timestamp": ms, "datetime": _datetime(ms), "symbol": info.symbol,
                             "order": None, "type": None, "side": "buy" if side == BID else "sell",
                             "takerOrMaker": "taker", "price": price, "amount": qty,
                             "cost": price * qty // info.lot_size, "fee": None,
                             "info": {"number": number, "taker_order": taker_order,
                                      "maker_order": maker_order, "seq": msg.seq}})
        feed.changed.set()

    # ------------------------------------------------------------------------ the stream -----

    def _start_reader(self) -> None:
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            frames = await self.sub.recv_multipart()
            try:
                msg = PUB_DECODER.decode(frames[-1])
                market = topic_market(frames[0])
            except (msgspec.DecodeError, struct.error):
                self.bad_messages += 1  # not from an xos publisher: ignored, the stream goes on
                continue
            if isinstance(msg, BookUpdate):
                w = self.books.get(market)
                if w is None:
                    continue
                if not w.synced:
                    w.buffer.append(msg)
                elif self._apply(w, msg):
                    w.notify()
                else:
                    self._resync(w)
            elif isinstance(msg, Trades):
                feed = self.trade_feeds.get(market)
                if feed is not None:
                    self._take_trades(feed, msg)
            elif isinstance(msg, BookStatus):
                w = self.books.get(market)
                if w is None or not w.synced:
                    continue
                w.book.halted = msg.halted
                if msg.seq > w.book.seq:  # the last update(s) never arrived
                    self.gaps += 1
                    self._resync(w)
                elif msg.seq == w.book.seq and msg.checksum != w.book.checksum():
                    self.checksum_errors += 1
                    self._resync(w)

    async def close(self) -> None:
        tasks = [t for t in [self.reader, *(w.syncing for w in self.books.values())] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.sub.close(linger=0)
        if self.dealer is not None:
            self.dealer.close(linger=0)


__all__ = ["MarketDataClient", "MarketDataError"]

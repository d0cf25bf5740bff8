"""Order-entry client: asyncio, with CCXT's unified method and field names.

    client = Client("tcp://127.0.0.1:7100", server_key=SERVER_PUBLIC, secret_key_file="alice.key_secret")
    await client.connect()
    order = await client.create_order("BTC/USDT", "limit", "buy", 100_000, 50_000_000,
                                      {"clientOrderId": 1})
    await client.cancel_order(order["id"])

Orders come back as CCXT structures (``id``, ``clientOrderId``, ``symbol``, ``type``, ``side``,
``price``, ``amount``, ``filled``, ``remaining``, ``status``, ``timestamp``, ..., and xos's
``venue``: the venue an order goes through, ``params["venue"]`` when placing, default 0).  Prices and
amounts are the engine's integers, as in the market-data client: price in quote units per lot,
amount in base units (docs/ARCHITECTURE.md, Units; ``load_markets`` gives tick and lot sizes).
A rejected request raises a ``GatewayError`` subclass carrying the stable code name.
``fetch_order_book``, ``watch_order_book`` and ``watch_trades`` go to the market-data client
given as ``market_data`` (``gateway.mdclient.MarketDataClient``).

``SyncClient`` runs a ``Client`` on a private event loop thread for synchronous code.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import itertools
import threading
from pathlib import Path

import zmq
import zmq.asyncio

from engine.codes import ResultCode
from engine.records import CancelReason, Cmd, OrdType, Side, Stp, Tif

import numpy as np

from . import messages as m
from .keys import load_pair
from .listings import market_symbols
from .mdclient import SINCE_MAX_MS, count_arg


class GatewayError(Exception):
    """The gateway or the matcher refused a request: ``code`` (number), ``name`` (stable), ``reason``;
    ``leg``: a multi-leg order's leg at fault (1..4; 0: the order as a whole, or not a multi-leg order)."""

    def __init__(self, code: int, name: str, reason: str, leg: int = 0):
        self.code, self.name, self.reason, self.leg = code, name, reason, leg
        super().__init__(f"{name} ({code}): {reason}")


class InvalidOrder(GatewayError):
    pass


class InsufficientFunds(GatewayError):
    pass


class OrderNotFound(GatewayError):
    pass


class RateLimitExceeded(GatewayError):
    pass


class AuthenticationError(GatewayError):
    pass


class PermissionDenied(GatewayError):
    """The session's account may not do this (e.g. change a venue it does not operate)."""


class BadRequest(GatewayError):
    """Malformed, unknown or oversized messages (the gateway's Error replies)."""


class RequestTimeout(GatewayError):
    pass


_ERRORS = {
    ResultCode.INSUFFICIENT_BALANCE: InsufficientFunds,
    ResultCode.NOT_VENUE_OPERATOR: PermissionDenied,
    ResultCode.NOT_ADMIN: PermissionDenied,
    ResultCode.NOT_RESOLVER: PermissionDenied,
    ResultCode.UNKNOWN_ORDER: OrderNotFound,
    ResultCode.ORDER_CLOSED: OrderNotFound,
    ResultCode.RATE_LIMITED: RateLimitExceeded,
    ResultCode.NOT_AUTHENTICATED: AuthenticationError,
    ResultCode.MALFORMED_MESSAGE: BadRequest,
    ResultCode.UNKNOWN_MESSAGE: BadRequest,
    ResultCode.MESSAGE_TOO_LARGE: BadRequest,
    ResultCode.BATCH_TOO_LARGE: BadRequest,
    ResultCode.INVALID_REQUEST: BadRequest,
}


def error_of(reply) -> GatewayError:
    return _ERRORS.get(reply.code, InvalidOrder)(reply.code, reply.name, reply.reason, getattr(reply, "leg", 0))


TIF_NAMES = {"GTC": Tif.GTC, "IOC": Tif.IOC, "FOK": Tif.FOK, "PO": Tif.GTC}
STP_NAMES = {"cancel_taker": Stp.CANCEL_TAKER, "cancel_maker": Stp.CANCEL_MAKER, "cancel_both": Stp.CANCEL_BOTH,
             "decrement_both": Stp.DECREMENT_BOTH}
STATUS = {"open": "open", "filled": "closed", "cancelled": "canceled"}
UPDATES_KEPT = 100_000  # order updates waiting for watch_orders (trades for watch_my_trades); the oldest go first


def _iso(ts_ns: int) -> str | None:
    if not ts_ns:
        return None
    return _dt.datetime.fromtimestamp(ts_ns / 1e9, _dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _int(name: str, value) -> int:
    """Engine units are int64 integers: a float (or anything else), or an int past int64, is refused with the
    field's name."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in engine units (price per lot, size in base units), "
                        f"not {type(value).__name__} {value!r}")
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"{name} must fit in int64 (-2**63 .. 2**63 - 1), not {value}")
    return value


def _id(name: str, value) -> int:
    """An order id or client order id as CCXT hands it: a string of decimal digits, or an int."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"{name} must be an order id (decimal digits), not {value!r}")
        value = int(value)
    return _int(name, value)


def _since_limit(since, limit) -> tuple[int, int]:
    """CCXT's ``since`` (ms) and ``limit`` as the engine's ns and a count (0: all)."""
    return count_arg("since", since, SINCE_MAX_MS) * 1_000_000, count_arg("limit", limit)


class Updates:
    """What ``watch_orders`` / ``watch_my_trades`` hand out: CCXT structures as the reports change them, kept (the
    newest UPDATES_KEPT) until a call takes those of its symbol."""

    def __init__(self):
        self.items: collections.deque[dict] = collections.deque(maxlen=UPDATES_KEPT)
        self.arrived: asyncio.Event | None = None  # made by the first ``take``, on the client's loop

    def put(self, item: dict) -> None:
        self.items.append(item)
        if self.arrived is not None:
            self.arrived.set()

    async def take(self, symbol: str | None) -> list[dict]:
        """Those of ``symbol`` (None: all) since the last call, each once (an order updated twice is one), in
        order; waits for one.  The other symbols' stay for a later call."""
        if self.arrived is None:
            self.arrived = asyncio.Event()
        while True:
            seen, out, others = set(), [], []
            while self.items:
                item = self.items.popleft()
                if id(item) in seen:
                    continue
                seen.add(id(item))
                (out if symbol is None or item["symbol"] == symbol else others).append(item)
            self.items.extend(others)
            if out:
                return out
            self.arrived.clear()
            await self.arrived.wait()


class Client:
    def __init__(self, address: str, *, server_key: bytes | str, secret_key_file: str | Path | None = None,
                 public_key: bytes | str | None = None, secret_key: bytes | str | None = None,
                 market_data=None, timeout_s: float = 10.0, context: zmq.asyncio.Context | None = None):
        if secret_key_file is not None:
            public_key, secret_key = load_pair(secret_key_file)
        if public_key is None or secret_key is None:
            raise ValueError("give secret_key_file, or public_key and secret_key (Z85)")
        as_bytes = (lambda k: k.encode() if isinstance(k, str) else k)
        self.address = address
        self.timeout_s = timeout_s
        self.context = context or zmq.asyncio.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.curve_serverkey = as_bytes(server_key)
        self.socket.curve_publickey = as_bytes(public_key)
        self.socket.curve_secretkey = as_bytes(secret_key)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 100_000)
        self.socket.setsockopt(zmq.RCVHWM, 100_000)
        self.market_data = market_data
        self.rids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future] = {}
        self.batches: dict[int, list[int]] = {}  # batch rid -> its requests' rids (an Error refuses them all)
        self.orders: dict[int, dict] = {}  # order id -> CCXT order, kept current by the reports
        self.placed: dict[int, tuple[str, str]] = {}  # client order id -> (type, timeInForce) we asked for
        self.order_updates = Updates()  # for watch_orders
        self.trade_updates = Updates()  # for watch_my_trades
        self.markets: dict[str, m.MarketInfo] = {}
        self.symbols: dict[int, str] = {}  # market id -> its unified symbol
        self.markets_by_id: dict[int, m.MarketInfo] = {}
        self.reader: asyncio.Task | None = None
        self.connected = False

    # ------------------------------------------------------------------ plumbing

    async def connect(self) -> "Client":
        if not self.connected:
            self.socket.connect(self.address)
            self.connected = True
            self.reader = asyncio.get_running_loop().create_task(self._read())
            await self.load_markets()
        return self

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            try:
                await self.reader
            except (asyncio.CancelledError, zmq.ZMQError):
                pass
            self.reader = None
        self.socket.close(linger=0)
        if self.market_data is not None:
            await self.market_data.close()

    async def __aenter__(self):
        return await self.connect()

    async def __aexit__(self, *exc):
        await self.close()

    async def _read(self) -> None:
        while True:
            msg = m.reply_decoder.decode(await self.socket.recv())
            items = msg.items if type(msg) is m.Replies else (msg,)
            answered = []
            for item in items:  # reports first: an answer then shows its command's fills
                kind = type(item)
                if kind is m.ExecutionReport:
                    self._on_report(item)
                elif kind is m.ReportRows:
                    for r in m.report_rows(item).tolist():
                        self._on_report(m.execution_report(r))
                elif kind is m.AckRows:
                    answered += [m.Ack(rid=rid, order_id=order_id, client_id=client_id, cmd_seq=cmd_seq,
                                       durable_seq=durable_seq, count=count, ts=ts)
                                 for rid, order_id, client_id, cmd_seq, durable_seq, count, ts
                                 in m.ack_rows(item).tolist()]
                else:
                    answered.append(item)
            for item in answered:
                rid = getattr(item, "rid", 0)
                for r in self.batches.pop(rid, (rid,)):
                    fut = self.waiting.pop(r, None)
                    if fut is not None and not fut.done():
                        fut.set_result(item)

    def next_rid(self) -> int:
        return next(self.rids)

    async def request(self, msg):
        """Send a request (its ``rid`` from ``next_rid``) and wait for its reply; Reject and Error raise."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[msg.rid] = fut
        await self.socket.send(m.encode(msg))
        return await self._wait(msg.rid, fut)

    async def _wait(self, rid: int, fut: asyncio.Future):
        try:
            reply = await asyncio.wait_for(fut, self.timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(0, "TIMEOUT", f"no reply to request {rid} within {self.timeout_s} s") from None
        finally:
            self.waiting.pop(rid, None)
        if type(reply) is m.Reject or type(reply) is m.Error:
            raise error_of(reply)
        return reply

    async def send_raw(self, payload: bytes) -> None:
        """Send bytes as they are (tests of the gateway's handling of bad input)."""
        await self.socket.send(payload)

    async def expect_reply(self, rid: int):
        """Wait for the reply carrying ``rid`` (after ``send_raw``)."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        try:
            return await asyncio.wait_for(fut, self.timeout_s)
        finally:
            self.waiting.pop(rid, None)

    # ------------------------------------------------------------------ markets

    async def load_markets(self, reload: bool = False) -> dict[str, dict]:
        """The markets by symbol (``BASE/QUOTE``; a perpetual ``BASE/QUOTE:QUOTE``: ``listings.market_symbols``),
        fetched once; ``reload`` fetches them again, with those listed since (a venue's ListMarket, the admin's
        AddMarket)."""
        if reload or not self.markets:
            res = await self.request(m.Markets(rid=self.next_rid()))
            self.symbols = market_symbols((k.market, k.base, k.quote, k.kind) for k in res.markets)
            self.markets = {self.symbols[k.market]: k for k in res.markets}
            self.markets_by_id = {k.market: k for k in res.markets}
        return {sym: {"id": k.market, "symbol": sym, "base": k.base, "quote": k.quote,
                      "precision": {"price": k.tick_size, "amount": k.lot_size},
                      "limits": {"amount": {"min": k.min_size, "max": None}},
                      "tick_size": k.tick_size, "lot_size": k.lot_size, "base_decimals": k.base_decimals,
                      "quote_decimals": k.quote_decimals, "kind": k.kind, "venue": k.venue,
                      "maker_bps": k.maker_bps, "taker_bps": k.taker_bps, "info": k} for sym, k in self.markets.items()}

    def market_id(self, symbol: str | int) -> int:
        if isinstance(symbol, int):
            if symbol not in self.markets_by_id:
                raise InvalidOrder(int(ResultCode.UNKNOWN_MARKET), "UNKNOWN_MARKET", f"no market {symbol}")
            return symbol
        k = self.markets.get(symbol)
        if k is None:
            raise InvalidOrder(int(ResultCode.UNKNOWN_MARKET), "UNKNOWN_MARKET",
                               f"no market {symbol!r}; listed: {sorted(self.markets)}")
        return k.market

    def symbol(self, market: int) -> str:
        return self.symbols.get(market, str(market))

    # ------------------------------------------------------------------ orders: state

    def _order(self, order_id: int, client_id: int, market: int, side: int, price: int, amount: int,
               venue: int) -> dict:
        o = self.orders.get(order_id)
        if o is None:
            kind, tif = self.placed.get(client_id, ("limit", "GTC"))
            o = {"id": str(order_id), "clientOrderId": str(client_id) if client_id else None, "timestamp": None,
                 "datetime": None, "lastTradeTimestamp": None, "symbol": self.symbol(market), "venue": venue,
                 "type": kind, "timeInForce": tif, "postOnly": tif == "PO",
                 "side": "buy" if side == Side.BUY else "sell",
                 "price": price, "average": None, "amount": amount, "filled": 0, "remaining": amount, "cost": 0,
                 "status": "open", "fee": {"cost": 0, "currency": self._quote(market)}, "trades": [], "info": {}}
            self.orders[order_id] = o
        return o

    def _lot(self, market: int) -> int:
        k = self.markets_by_id.get(market)
        return k.lot_size if k is not None else 1

    def _quote(self, market: int) -> str | None:
        k = self.markets_by_id.get(market)
        return k.quote if k is not None else None

    def _trade(self, seq: int, order_id: int, market: int, side: int, price: int, qty: int, fee: int,
               liquidity: str, ts: int) -> dict:
        """A fill as a CCXT trade: ``cost`` the notional in quote units (the price is per lot)."""
        return {"id": str(seq), "order": str(order_id), "timestamp": ts // 1_000_000, "datetime": _iso(ts),
                "symbol": self.symbol(market), "side": "buy" if side == Side.BUY else "sell",
                "takerOrMaker": liquidity, "price": price, "amount": qty, "cost": price * qty // self._lot(market),
                "fee": {"cost": fee, "currency": self._quote(market)}}

    def _from_info(self, info: m.OrderInfo) -> dict:
        o = self._order(info.order_id, info.client_id, info.market, info.side, info.price, info.qty, info.venue)
        o.update(price=info.price, amount=info.qty, filled=info.filled, remaining=info.remaining,
                 status=STATUS[info.status], info=info)
        if info.ts:
            o.update(timestamp=info.ts // 1_000_000, datetime=_iso(info.ts))
        return o

    def _on_report(self, r: m.ExecutionReport) -> None:
        o = self._order(r.order_id, r.client_id, r.market, r.side, r.price, r.remaining, r.venue)
        if r.kind == "fill":
            trade = self._trade(r.seq, r.order_id, r.market, r.side, r.price, r.qty, r.fee, r.liquidity, r.ts)
            lot = self._lot(r.market)
            o["filled"] += r.qty
            o["cost"] += trade["cost"]
            o["fee"]["cost"] += r.fee
            o["average"] = o["cost"] * lot // o["filled"] if o["filled"] else None
            o["lastTradeTimestamp"] = trade["timestamp"]
            o["trades"].append(trade)
            self.trade_updates.put(trade)
            if r.remaining >= 0:
                o["remaining"] = r.remaining
            if r.remaining == 0:
                o["status"] = "closed"
        elif r.kind == "cancel":
            o["remaining"] = r.remaining
            if r.remaining == 0:
                o["status"] = "canceled"
            o["info"] = {"cancel_reason": CancelReason(r.reason).name if r.reason else None,
                         "code": ResultCode(r.code).name if r.code else None}
        else:  # amend: the new price and open size
            o["price"] = r.price
            o["remaining"] = r.remaining
            o["amount"] = o["filled"] + r.remaining
        o["lastCmdSeq"] = r.cmd_seq
        self.order_updates.put(o)

    # ------------------------------------------------------------------ orders: CCXT unified API

    def _place(self, rid: int, symbol, type: str, side: str, amount, price, params: dict) -> m.PlaceOrder:
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}")
        if type not in ("limit", "market"):
            raise ValueError(f"type must be 'limit' or 'market', not {type!r}")
        if price is None:
            raise ValueError("price is required: the limit price, or a market order's protection price")
        if "clientOrderId" not in params:
            raise ValueError("params['clientOrderId'] (a positive int, unique among your open orders) is required")
        tif = params.get("timeInForce", "GTC" if type == "limit" else "IOC")
        if tif not in TIF_NAMES:
            raise ValueError(f"timeInForce must be one of {sorted(TIF_NAMES)}, not {tif!r}")
        post_only = bool(params.get("postOnly", tif == "PO"))
        stp = params.get("selfTradePrevention", "cancel_taker")
        if stp not in STP_NAMES:
            raise ValueError(f"selfTradePrevention must be one of {sorted(STP_NAMES)}, not {stp!r}")
        client_id = _int("clientOrderId", params["clientOrderId"])
        self.placed[client_id] = (type, "PO" if post_only else tif)
        return m.PlaceOrder(rid=rid, market=self.market_id(symbol), side=Side.BUY if side == "buy" else Side.SELL,
                            price=_int("price", price), qty=_int("amount", amount), client_id=client_id,
                            tif=TIF_NAMES[tif], ord_type=OrdType.LIMIT if type == "limit" else OrdType.MARKET,
                            stp=STP_NAMES[stp], post_only=post_only,
                            expire_at=_int("expireAt", params.get("expireAt", 0)),
                            venue=_int("venue", params.get("venue", 0)))

    def _placed_order(self, req: m.PlaceOrder | m.OrderLeg, ack: m.Ack, order_id: int | None = None) -> dict:
        """The order ``req`` made (``order_id``, default the Ack's), once acknowledged; its fill reports come
        before the Ack and may have made it already, with the size left after the first fill as its amount."""
        o = self._order(ack.order_id if order_id is None else order_id, req.client_id, req.market, req.side,
                        req.price, req.qty, req.venue)
        if o["timestamp"] is None:
            o.update(timestamp=ack.ts // 1_000_000, datetime=_iso(ack.ts), amount=req.qty, info=ack)
        return o

    async def create_order(self, symbol, type: str, side: str, amount: int, price: int | None = None,
                           params: dict | None = None) -> dict:
        """Place an order; returns it once the gateway acknowledged it (durable in the journal)."""
        req = self._place(self.next_rid(), symbol, type, side, amount, price, params or {})
        return self._placed_order(req, await self.request(req))

    async def create_orders(self, orders: list[dict]) -> list[dict]:
        """Many orders in one message (``[{symbol, type, side, amount, price, params}, ...]``); each
        result is the order, or ``{"status": "rejected", "clientOrderId", "error": GatewayError}``."""
        loop = asyncio.get_running_loop()
        reqs, futs = [], []
        for spec in orders:
            rid = self.next_rid()
            reqs.append(self._place(rid, spec["symbol"], spec.get("type", "limit"), spec["side"], spec["amount"],
                                    spec.get("price"), spec.get("params") or {}))
            futs.append(loop.create_future())
            self.waiting[rid] = futs[-1]
        batch_rid = self.next_rid()
        self.batches[batch_rid] = [r.rid for r in reqs]
        await self.socket.send(m.encode(m.Batch(rid=batch_rid, requests=reqs)))
        out = []
        for req, fut in zip(reqs, futs):
            try:
                out.append(self._placed_order(req, await self._wait(req.rid, fut)))
            except GatewayError as exc:
                out.append({"status": "rejected", "clientOrderId": str(req.client_id), "error": exc})
        self.batches.pop(batch_rid, None)
        return out

    async def create_multi_leg_order(self, legs: list[dict], params: dict | None = None) -> dict:
        """An all-or-none order of 2..4 legs in distinct markets (any products, any venues): every leg fills in
        full at or better than its limit, or nothing happens.  xos's own call (CCXT has none); each leg is
        shaped as ``create_order``'s arguments of a limit fill-or-kill order: ``{"symbol", "side", "amount",
        "price", "params": {"clientOrderId" (required), "venue", "selfTradePrevention", "reduceOnly"}}``;
        ``params["clientOrderId"]`` is the parent id (a positive int).  Returns, once durable,
        ``{"clientOrderId", "status": "closed", "legs": [the legs' CCXT orders, filled], "info": the Ack}``;
        a refusal raises the ``GatewayError`` of the leg at fault (its ``leg``: 1..4, 0 the whole order)."""
        params = params or {}
        if "clientOrderId" not in params:
            raise ValueError("params['clientOrderId'] (the parent id, a positive int) is required")
        specs = []
        for i, spec in enumerate(legs):
            where = f"legs[{i}]"
            if spec.get("side") not in ("buy", "sell"):
                raise ValueError(f"{where}.side must be 'buy' or 'sell', not {spec.get('side')!r}")
            leg_params = spec.get("params") or {}
            if "clientOrderId" not in leg_params:
                raise ValueError(f"{where}.params['clientOrderId'] (the leg's own client id) is required")
            stp = leg_params.get("selfTradePrevention", "cancel_taker")
            if stp not in STP_NAMES:
                raise ValueError(f"{where}.params['selfTradePrevention'] must be one of {sorted(STP_NAMES)}, "
                                 f"not {stp!r}")
            specs.append(m.OrderLeg(market=self.market_id(spec["symbol"]),
                                    side=Side.BUY if spec["side"] == "buy" else Side.SELL,
                                    price=_int(f"{where}.price", spec["price"]),
                                    qty=_int(f"{where}.amount", spec["amount"]),
                                    client_id=_int(f"{where}.clientOrderId", leg_params["clientOrderId"]),
                                    venue=_int(f"{where}.venue", leg_params.get("venue", 0)), stp=STP_NAMES[stp],
                                    reduce_only=bool(leg_params.get("reduceOnly", False))))
        for leg in specs:
            self.placed[leg.client_id] = ("limit", "FOK")
        parent = _int("clientOrderId", params["clientOrderId"])
        ack = await self.request(m.MultiLegOrder(rid=self.next_rid(), client_id=parent, legs=specs))
        # the legs' orders are numbered in leg order from the Ack's
        orders = [self._placed_order(leg, ack, ack.order_id + k) for k, leg in enumerate(specs)]
        return {"clientOrderId": str(parent), "status": "closed", "legs": orders, "info": ack}

    async def send_order_rows(self, rows: np.ndarray, params: dict | None = None) -> list:
        """Market makers' batch path: ``rows`` (``messages.COMMAND_ROW_DTYPE``) go as one OrderRows
        message, read by the gateway in C; their ``rid`` column is filled in here, and with
        ``params["venue"]`` the venue of every place row (else each row's own ``venue``).  They travel
        as ``params["format"]``: ``messages.PACKED_ROWS`` (the default: ~8 bytes a row of a quoting
        flow) or ``messages.FIXED_ROWS`` (54).  Returns one reply per row, in row order: ``Ack``,
        ``Reject`` or ``Error`` (not raised).  From then on this session's acks and execution reports
        travel as rows of that format (this client unpacks them)."""
        if rows.dtype != m.COMMAND_ROW_DTYPE:
            raise TypeError(f"rows must be messages.COMMAND_ROW_DTYPE, not {rows.dtype}")
        row_format = (params or {}).get("format", m.PACKED_ROWS)
        if row_format not in m.ROW_FORMATS:
            raise ValueError(f"format must be one of {m.ROW_FORMATS} (messages.FIXED_ROWS, PACKED_ROWS), "
                             f"not {row_format!r}")
        loop = asyncio.get_running_loop()
        rows = rows.copy()
        rows["rid"] = [self.next_rid() for _ in range(len(rows))]
        if params and "venue" in params:
            venue = _int("venue", params["venue"])
            if not 0 <= venue < 1 << 32:
                raise ValueError(f"venue must be in 0..{(1 << 32) - 1}, not {venue}")
            rows["venue"][rows["kind"] == Cmd.PLACE] = venue
        rids = rows["rid"].tolist()
        futs = []
        for rid in rids:
            futs.append(loop.create_future())
            self.waiting[rid] = futs[-1]
        batch_rid = self.next_rid()
        self.batches[batch_rid] = rids
        await self.socket.send(m.encode(m.OrderRows(rid=batch_rid, rows=m.pack_rows(rows, row_format),
                                                    format=row_format)))
        out = []
        for rid, fut in zip(rids, futs):
            try:
                out.append(await asyncio.wait_for(fut, self.timeout_s))
            except asyncio.TimeoutError:
                raise RequestTimeout(0, "TIMEOUT", f"no reply to row rid {rid} within {self.timeout_s} s") from None
            finally:
                self.waiting.pop(rid, None)
        self.batches.pop(batch_rid, None)
        return out

    @staticmethod
    def _target(id, params: dict | None) -> dict:
        params = params or {}
        if id is not None:
            return {"order_id": _id("id", id)}
        if "clientOrderId" in params:
            return {"client_id": _id("clientOrderId", params["clientOrderId"])}
        raise ValueError("give the order id, or params['clientOrderId']")

    async def cancel_order(self, id=None, symbol=None, params: dict | None = None) -> dict:
        target = self._target(id, params)
        ack = await self.request(m.CancelOrder(rid=self.next_rid(), **target))
        o = self.orders.get(ack.order_id)
        return o if o is not None else {"id": str(ack.order_id), "status": "canceled", "info": ack}

    async def edit_order(self, id=None, symbol=None, type=None, side=None, amount: int | None = None,
                         price: int | None = None, params: dict | None = None) -> dict:
        """Amend the open size (``amount``: the new remaining) and/or the price (None: keep)."""
        target = self._target(id, params)
        if amount is None:
            current = self.orders.get(_id("id", id)) if id is not None else None
            if current is None:
                raise ValueError("amount (the new open size) is required for an order this client has not seen")
            amount = current["remaining"]
        ack = await self.request(m.AmendOrder(rid=self.next_rid(), qty=_int("amount", amount),
                                                          price=_int("price", price or 0), **target))
        return self.orders.get(ack.order_id) or {"id": str(ack.order_id), "info": ack}

    async def cancel_all_orders(self, symbol=None, params: dict | None = None) -> list[dict]:
        """Cancel this account's open orders in ``symbol`` (None: every market); ``params={"venue": v}`` cancels only
        those placed through venue ``v``."""
        market = self.market_id(symbol) if symbol is not None else 0
        venue = (params or {}).get("venue")
        ack = await self.request(m.MassCancel(rid=self.next_rid(), market=market,
                                              venue=None if venue is None else _int("venue", venue)))
        return [o for o in self.orders.values() if o.get("lastCmdSeq") == ack.cmd_seq]

    async def fetch_order(self, id=None, symbol=None, params: dict | None = None) -> dict:
        target = self._target(id, params)
        res = await self.request(m.OrderStatus(rid=self.next_rid(), **target))
        if res.order is None:
            raise OrderNotFound(int(ResultCode.UNKNOWN_ORDER), "UNKNOWN_ORDER", f"no order {target}")
        return self._from_info(res.order)

    async def fetch_open_orders(self, symbol=None, since=None, limit=None, params: dict | None = None) -> list[dict]:
        """This account's open orders in ``symbol`` (None: every market), placed at or after ``since`` (ms), oldest
        first: the newest ``limit``."""
        market = self.market_id(symbol) if symbol is not None else 0
        since_ns, limit = _since_limit(since, limit)
        res = await self.request(m.OpenOrders(rid=self.next_rid(), market=market))
        placed = [info for info in res.orders if info.ts >= since_ns]  # in order id order: as placed
        return [self._from_info(info) for info in placed[-limit if limit else 0:]]

    async def fetch_closed_orders(self, symbol=None, since=None, limit=None, params: dict | None = None) -> list[dict]:
        """This account's filled and cancelled orders the gateway keeps (at least its newest 1,000), in ``symbol``
        (None: every market), placed at or after ``since`` (ms), oldest closed first: the newest ``limit``."""
        market = self.market_id(symbol) if symbol is not None else 0
        since_ns, limit = _since_limit(since, limit)
        res = await self.request(m.ClosedOrders(rid=self.next_rid(), market=market, since=since_ns, limit=limit))
        return [self._from_info(info) for info in res.orders]

    async def fetch_my_trades(self, symbol=None, since=None, limit=None, params: dict | None = None) -> list[dict]:
        """This account's fills in ``symbol`` (None: every market) at or after ``since`` (ms), oldest first: the
        newest ``limit`` (at most 1,000), as the settlement worker's ledger holds them (``info['as_of_seq']`` on
        each: every fill up to that event seq is in it)."""
        market = self.market_id(symbol) if symbol is not None else 0
        since_ns, limit = _since_limit(since, limit)
        res = await self.request(m.MyTrades(rid=self.next_rid(), market=market, since=since_ns, limit=limit))
        trades = [self._trade(t.seq, t.order_id, t.market, t.side, t.price, t.qty, t.fee, t.liquidity, t.ts)
                  for t in reversed(res.trades)]
        for t in trades:
            t["info"] = {"as_of_seq": res.as_of_seq}
        return trades

    async def fetch_balance(self, params: dict | None = None) -> dict:
        """CCXT balance: per currency ``free``/``used``/``total``, as of the margin worker's last
        checkpoint (``info['as_of_seq']``), plus the margin view in ``info`` (``valued`` False: the account could
        not be valued, its figures 0)."""
        res = await self.request(m.Balances(rid=self.next_rid()))
        out: dict = {"free": {}, "used": {}, "total": {},
                     "info": {"as_of_seq": res.as_of_seq, "equity": res.equity, "margin_used": res.margin_used,
                              "available": res.available, "maintenance": res.maintenance, "valued": res.valued}}
        for b in res.balances:
            row = {"free": b.total - b.held, "used": b.held, "total": b.total}
            out[b.symbol] = row
            for k, v in row.items():
                out[k][b.symbol] = v
        return out

    async def fetch_positions(self, symbols=None, params: dict | None = None) -> list[dict]:
        """CCXT positions: the account's open perpetual positions as the margin worker last valued them
        (``info``: the raw ``PositionInfo`` and ``as_of_seq``; ``adl_rank``: 1 = first to be deleveraged on
        its side).  Engine integers: ``contracts`` in base units, prices per lot (``entryPrice`` the
        average, rounded down), money in quote units."""
        res = await self.request(m.Positions(rid=self.next_rid()))
        wanted = {self.market_id(s) for s in symbols} if symbols is not None else None
        out = []
        for p in res.positions:
            if wanted is not None and p.market not in wanted:
                continue
            lot, size = self._lot(p.market), abs(p.size)  # size in base units; prices are per lot
            out.append({"symbol": self.symbol(p.market), "id": None, "timestamp": None, "datetime": None,
                        "contracts": size, "contractSize": 1, "side": "long" if p.size > 0 else "short",
                        "entryPrice": p.entry * lot // size, "markPrice": p.mark, "notional": p.mark * size // lot,
                        "unrealizedPnl": p.upnl, "initialMargin": p.margin, "maintenanceMargin": p.maintenance,
                        "collateral": p.margin, "liquidationPrice": p.liquidation_price or None,
                        "marginMode": "isolated" if p.isolated else "cross", "adl_rank": p.adl_rank,
                        "info": {"position": p, "as_of_seq": res.as_of_seq}})
        return out

    async def watch_orders(self, symbol=None, since=None, limit=None, params: dict | None = None) -> list[dict]:
        """The orders updated since the last call (waits for at least one)."""
        return await self.order_updates.take(self.symbol(self.market_id(symbol)) if symbol is not None else None)

    async def watch_my_trades(self, symbol=None, since=None, limit=None, params: dict | None = None) -> list[dict]:
        """This account's fills since the last call, as its execution reports tell them (waits for at least one)."""
        return await self.trade_updates.take(self.symbol(self.market_id(symbol)) if symbol is not None else None)

    # ------------------------------------------------------------------ venue, outcome and liquidation commands

    async def send_command(self, request: type[m.VenueCommand], **fields) -> m.Ack:
        """Send a command other than an order (``messages.FIELD_COMMANDS``: a venue operator's, e.g.
        ``m.Allow, venue=2, account=13``; ``m.OutcomeConfig``, ``m.Resolve``, ``m.Convert``;
        ``m.Liquidate``; ``m.SetExposureCap, venue=1, cap_bps=2000``) as this session's account; returns its
        Ack once durable, raises a ``GatewayError`` with the matcher's code when refused (``PermissionDenied``:
        NOT_VENUE_OPERATOR, NOT_RESOLVER)."""
        if request not in m.FIELD_COMMANDS:
            raise TypeError(f"{request!r} is not a venue, outcome, liquidation or exposure-cap command; one of "
                            f"{[c.__struct_config__.tag for c in m.FIELD_COMMANDS]}")
        values = {name: _int(name, value) for name, value in fields.items()}
        return await self.request(request(rid=self.next_rid(), **values))

    async def set_margin_mode(self, marginMode: str, symbol, params: dict | None = None) -> m.Ack:
        """CCXT: ``"isolated"`` or ``"cross"`` margin for this account's position in a perpetual market (only while it
        has no position and no order there: the matcher refuses POSITION_OPEN / ORDERS_OPEN)."""
        if marginMode not in ("isolated", "cross"):
            raise ValueError(f"marginMode must be 'isolated' or 'cross', not {marginMode!r}")
        return await self.request(m.SetMarginMode(rid=self.next_rid(), market=self.market_id(symbol),
                                                  isolated=marginMode == "isolated"))

    async def add_margin(self, symbol, amount: int, params: dict | None = None) -> m.Ack:
        """CCXT: move ``amount`` (quote units) from free into this account's isolated position in ``symbol``."""
        return await self._isolated_margin(symbol, _int("amount", amount))

    async def reduce_margin(self, symbol, amount: int, params: dict | None = None) -> m.Ack:
        """CCXT: take ``amount`` back from the isolated position's margin (it must keep its initial margin)."""
        return await self._isolated_margin(symbol, -_int("amount", amount))

    async def _isolated_margin(self, symbol, amount: int) -> m.Ack:
        return await self.request(m.IsolatedMargin(rid=self.next_rid(), market=self.market_id(symbol), amount=amount))

    # ------------------------------------------------------------------ session

    async def heartbeat(self) -> int:
        """Keeps the session alive for the dead-man switch; returns the gateway's clock (ns)."""
        return (await self.request(m.Heartbeat(rid=self.next_rid()))).server_ns

    async def set_deadman(self, timeout_ms: int) -> None:
        """No message from this session for ``timeout_ms``: the gateway cancels all the account's
        orders.  0 disarms it."""
        await self.request(m.SetDeadman(rid=self.next_rid(), timeout_ms=_int("timeout_ms", timeout_ms)))

    # ------------------------------------------------------------------ market data (delegated)

    def _md(self):
        if self.market_data is None:
            raise RuntimeError("no market-data client: pass market_data=MarketDataClient(...) to Client")
        return self.market_data

    async def fetch_order_book(self, symbol, limit: int | None = None, params: dict | None = None) -> dict:
        return await self._md().fetch_order_book(symbol, limit)

    async def watch_order_book(self, symbol, limit: int | None = None, params: dict | None = None) -> dict:
        return await self._md().watch_order_book(symbol, limit)

    async def watch_trades(self, symbol, since: int | None = None, limit: int | None = None,
                           params: dict | None = None) -> list[dict]:
        return await self._md().watch_trades(symbol, since, limit)


class SyncClient:
    """A ``Client`` for synchronous code: every public coroutine method becomes a blocking call."""

    def __init__(self, *args, **kwargs):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="xos-client", daemon=True)
        self._thread.start()

        async def make():
            return await Client(*args, context=zmq.asyncio.Context(), **kwargs).connect()

        self._client = self._call(make())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: self._call(attr(*args, **kwargs))

    def close(self) -> None:
        self._call(self._client.close())
        self._client.context.term()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

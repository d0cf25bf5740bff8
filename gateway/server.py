"""The order-entry gateway: ``python -m engine.process gateway`` (started by ``xos run``).

One asyncio (uvloop) event loop owns every session.  Clients connect a DEALER to the gateway's
ROUTER over CurveZMQ; pyzmq's ZAP authenticator admits only the public keys in ``[gateway] keys``
and the account of every request is taken from that key (the connection's ZAP User-Id), never
from the message.  Requests become ``COMMAND_DTYPE`` records pushed, one message per burst, into
the matcher's input.  A thread blocks on the event ring and hands each batch of events to the
loop, which routes them: the first event of each of this gateway's commands answers it (Ack only
when the event says the command is durable in the journal; Reject with the code's name), and
fills, cancels and amends go as ExecutionReports to every session of the order's account (maker
and taker).

Commands of one account reach the matcher in the order the gateway sent them (one PUSH
connection), so each account's sent-and-unanswered commands wait in a FIFO and the next event
that is a command's own first event (Accepted, Rejected, Cancelled by the user, Amended) for that
account answers the FIFO's head, after a check that it echoes the command's fields (commands that
other producers send for the account are not taken for ours).
"""
from __future__ import annotations

import asyncio
import collections
import os
import pickle
import sys
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from engine.codes import MESSAGES, ResultCode
from engine.config import Config, load
from engine.process import POLL_MS, Heartbeat, InputClient, Stop
from engine.records import COMMAND_DTYPE, EVENT_DTYPE, CancelReason, Cmd, CmdFlag, Ev, EvFlag

from . import messages as m
from .keys import server_pair

# plain ints on the per-event and per-command paths (enum attribute lookups cost more than the work)
ACCEPTED, REJECTED, FILL, CANCELLED, AMENDED = map(int, (Ev.ACCEPTED, Ev.REJECTED, Ev.FILL, Ev.CANCELLED, Ev.AMENDED))
PLACE, CANCEL, AMEND, MASS_CANCEL = map(int, (Cmd.PLACE, Cmd.CANCEL, Cmd.AMEND, Cmd.MASS_CANCEL))
POST_ONLY, BY_CLIENT_ID, ALL_MARKETS = map(int, (CmdFlag.POST_ONLY, CmdFlag.BY_CLIENT_ID, CmdFlag.ALL_MARKETS))
USER_CANCEL, EXPIRED = int(CancelReason.USER), int(CancelReason.EXPIRED)
MAKER_DONE = int(EvFlag.MAKER_DONE)
EVENT_ACCOUNTS_KINDS = (ACCEPTED, REJECTED, FILL, CANCELLED, AMENDED)
OWN_FIRST_KINDS = frozenset((ACCEPTED, REJECTED, CANCELLED, AMENDED))
CLOSED_KEPT = 1000  # closed orders remembered per account for OrderStatus
LOST_SCAN = 64  # how far into an account's FIFO a matching event proves the commands before it lost
TAKE_MAX = 16384
STOP_GRACE_S = 5.0  # on SIGTERM: time to answer what is in flight


def _code_reply(code: ResultCode) -> tuple[int, str, str]:
    return int(code), code.name, MESSAGES[code]


_F = {name: i for i, name in enumerate(EVENT_DTYPE.names)}  # field positions in ``events.tolist()`` tuples
_KIND, _CODE, _SIDE, _REASON, _FLAGS, _MARKET = (_F[k] for k in ("kind", "code", "side", "reason", "flags", "market"))
_SEQ, _CMD_SEQ, _DURABLE, _TS, _ORDER_ID, _ACCOUNT = (_F[k] for k in ("seq", "cmd_seq", "durable_seq", "ts", "order_id",
                                                                       "account"))
_CLIENT_ID, _PRICE, _QTY, _REMAINING = (_F[k] for k in ("client_id", "price", "qty", "remaining"))
_MAKER_ORDER, _MAKER_ACCOUNT, _MAKER_FEE, _TAKER_FEE = (_F[k] for k in ("maker_order", "maker_account", "maker_fee",
                                                                        "taker_fee"))


class Session:
    """One client connection (a ROUTER routing id) and the account its key belongs to."""

    __slots__ = ("routing_id", "key", "account", "last_seen", "deadman_ms", "deadman_fired", "outbox")

    def __init__(self, routing_id: bytes, key: str, account: int):
        self.routing_id = routing_id
        self.key = key
        self.account = account
        self.last_seen = time.monotonic()
        self.deadman_ms = 0
        self.deadman_fired = False
        self.outbox: list = []


class Pending:
    """A command sent to the matcher and not yet answered."""

    __slots__ = ("session", "account", "rid", "kind", "market", "side", "price", "qty", "ident", "flags")

    def __init__(self, session, account, rid, kind, market, side, price, qty, ident, flags):
        self.session = session  # None: the gateway's own (dead-man) command
        self.account = account
        self.rid = rid
        self.kind = kind
        self.market = market
        self.side = side
        self.price = price
        self.qty = qty
        self.ident = ident
        self.flags = flags

    def answered_by(self, kind: int, ev) -> bool:
        """Is event ``ev`` (a tuple in EVENT_DTYPE order) this command's own first event?"""
        if kind == REJECTED:
            return ev[_CLIENT_ID] == self.ident and ev[_MARKET] == self.market and ev[_PRICE] == self.price \
                and ev[_QTY] == self.qty
        if self.kind == PLACE:
            return kind == ACCEPTED and ev[_ORDER_ID] > 0 and ev[_CLIENT_ID] == self.ident \
                and ev[_MARKET] == self.market and ev[_SIDE] == self.side and ev[_PRICE] == self.price
        if self.kind == MASS_CANCEL:
            return kind == ACCEPTED and ev[_ORDER_ID] == 0 and ev[_MARKET] == self.market
        if self.kind == CANCEL and (kind != CANCELLED or ev[_REASON] != USER_CANCEL) \
                or self.kind == AMEND and kind != AMENDED:
            return False
        target = ev[_CLIENT_ID] if self.flags & BY_CLIENT_ID else ev[_ORDER_ID]
        return target == self.ident


class OrderBookOfAccounts:
    """The orders of the accounts that have keys, as the event stream shows them (for queries
    and to name the client id in execution reports)."""

    def __init__(self):
        self.orders: dict[int, list] = {}  # order id -> [account, client_id, market, side, price, qty, filled, remaining, status, ts]
        self.open_by_client: dict[tuple[int, int], int] = {}
        self.closed: dict[int, collections.deque] = collections.defaultdict(collections.deque)

    def seed(self, rows: np.ndarray, accounts) -> None:
        """Open orders from a matcher snapshot (``ORDER_STATE`` rows)."""
        for r in rows[np.isin(rows["account"], np.fromiter(accounts, np.int64))].tolist():
            order_id, account, client_id, price, qty, filled, remaining = r[:7]
            market, side = r[9], r[11]
            self.orders[order_id] = [account, client_id, market, side, price, qty, filled, remaining, "open", 0]
            self.open_by_client[(account, client_id)] = order_id

    def apply(self, kind: int, ev) -> None:
        """Follow one event (a tuple in EVENT_DTYPE order) of a keyed account."""
        if kind == ACCEPTED:
            if ev[_ORDER_ID] > 0 and ev[_FLAGS] == 0:  # an order (not a mass cancel's or a listing's)
                self.accepted(ev)
        elif kind == FILL:
            maker_remaining = self.maker_remaining(ev)
            self.filled(ev[_ORDER_ID], ev[_QTY], ev[_REMAINING])
            self.filled(ev[_MAKER_ORDER], ev[_QTY], maker_remaining)
        elif kind == CANCELLED:
            self.cancelled(ev[_ORDER_ID], ev[_QTY], ev[_REMAINING])
        elif kind == AMENDED:
            self.amended(ev[_ORDER_ID], ev[_PRICE], ev[_REMAINING])

    def maker_remaining(self, ev) -> int:
        """The maker's open size after a fill (the event carries only the taker's); -1 for a maker
        placed before the table's view began."""
        if ev[_FLAGS] & MAKER_DONE:
            return 0
        o = self.orders.get(ev[_MAKER_ORDER])
        return o[7] - ev[_QTY] if o is not None else -1

    def accepted(self, ev) -> None:
        oid = ev[_ORDER_ID]
        self.orders[oid] = [ev[_ACCOUNT], ev[_CLIENT_ID], ev[_MARKET], ev[_SIDE], ev[_PRICE], ev[_QTY], 0,
                            ev[_REMAINING], "open", ev[_TS]]
        self.open_by_client[(ev[_ACCOUNT], ev[_CLIENT_ID])] = oid

    def client_id(self, order_id: int) -> int:
        o = self.orders.get(order_id)
        return o[1] if o is not None else 0

    def filled(self, order_id: int, qty: int, remaining: int) -> None:
        o = self.orders.get(order_id)
        if o is not None:
            o[6] += qty
            o[7] = remaining
            if remaining == 0:
                self._close(order_id, o, "filled")

    def cancelled(self, order_id: int, qty: int, remaining: int) -> None:
        o = self.orders.get(order_id)
        if o is not None:
            o[7] = remaining
            o[5] -= qty if remaining else 0  # a decrement (STP) shrinks the order; a full cancel keeps its size
            if remaining == 0:
                self._close(order_id, o, "cancelled")

    def amended(self, order_id: int, price: int, remaining: int) -> None:
        o = self.orders.get(order_id)
        if o is not None:
            o[4] = price
            o[7] = remaining
            o[5] = o[6] + remaining

    def _close(self, order_id: int, o: list, status: str) -> None:
        o[8] = status
        self.open_by_client.pop((o[0], o[1]), None)
        kept = self.closed[o[0]]
        kept.append(order_id)
        if len(kept) > CLOSED_KEPT:
            self.orders.pop(kept.popleft(), None)

    @staticmethod
    def info(order_id: int, o: list) -> m.OrderInfo:
        return m.OrderInfo(order_id=order_id, client_id=o[1], market=o[2], side=o[3], price=o[4], qty=o[5],
                           filled=o[6], remaining=o[7], status=o[8], ts=o[9])

    def open_orders(self, account: int, market: int) -> list[m.OrderInfo]:
        return [self.info(oid, o) for oid, o in self.orders.items()
                if o[0] == account and o[8] == "open" and (market == 0 or o[2] == market)]

    def find(self, account: int, order_id: int, client_id: int) -> m.OrderInfo | None:
        if client_id:
            order_id = self.open_by_client.get((account, client_id), 0)
            if not order_id:  # the newest closed order under that client id
                for oid in reversed(self.closed.get(account, ())):
                    o = self.orders.get(oid)
                    if o is not None and o[1] == client_id:
                        return self.info(oid, o)
                return None
        o = self.orders.get(order_id)
        return self.info(order_id, o) if o is not None and o[0] == account else None


class TokenBucket:
    __slots__ = ("tokens", "last")

    def __init__(self, burst: int):
        self.tokens = float(burst)
        self.last = time.monotonic()

    def take(self, now: float, rate: int, burst: int) -> bool:
        self.tokens = min(float(burst), self.tokens + (now - self.last) * rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class KeyTable:
    """The registered public keys (Z85) -> account, re-read from the config file when it changes.
    The ZAP handler thread reads ``accounts`` (replaced whole, never mutated)."""

    def __init__(self, cfg: Config):
        self.path = Path(cfg.path) if cfg.path else None
        self.mtime = self.path.stat().st_mtime_ns if self.path and self.path.exists() else 0
        self.accounts: dict[str, int] = {k.public_key: k.account for k in cfg.gateway.keys}

    def callback(self, domain: str, key: bytes) -> bool:  # pyzmq's CURVE credentials provider
        return key.decode("ascii") in self.accounts

    def reload(self) -> bool:
        """True when the key set changed; a config that does not load keeps the old keys."""
        if self.path is None:
            return False
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return False
        if mtime == self.mtime:
            return False
        self.mtime = mtime
        try:
            cfg = load(self.path)
        except ValueError as exc:
            print(f"xos gateway: keys not reloaded: {exc}", file=sys.stderr, flush=True)
            return False
        fresh = {k.public_key: k.account for k in cfg.gateway.keys}
        changed = fresh != self.accounts
        self.accounts = fresh
        return changed


class GatewayStage:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        g = cfg.gateway
        self.g = g
        self.journaling = cfg.engine.journal
        self.heartbeat = Heartbeat(cfg, "gateway")
        self.keys = KeyTable(cfg)
        public, secret = server_pair(cfg)
        self.context = zmq.Context()
        self.auth = ThreadAuthenticator(self.context)
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=self.keys)
        self.router = self.context.socket(zmq.ROUTER)
        self.router.curve_server = True
        self.router.curve_publickey = public
        self.router.curve_secretkey = secret
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a lost peer raises on send instead of vanishing
        self.router.setsockopt(zmq.SNDHWM, 100_000)
        self.router.setsockopt(zmq.RCVHWM, 100_000)
        # Requests over max_message_bytes get an Error reply; ZeroMQ itself drops a connection that
        # sends one over 16 times that, so no peer can make the gateway buffer without bound.
        self.router.setsockopt(zmq.MAXMSGSIZE, 16 * g.max_message_bytes)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(g.address)
        self.input = InputClient(cfg.input_address, self.context)
        self.sessions: dict[bytes, Session] = {}
        self.by_account: dict[int, set[Session]] = collections.defaultdict(set)
        self.fifo: dict[int, collections.deque[Pending]] = collections.defaultdict(collections.deque)
        self.buckets: dict[int, TokenBucket] = {}
        self.book = OrderBookOfAccounts()
        self.known_accounts = np.zeros(0, np.int64)
        self.refresh_accounts()
        self.cmd_buffer = np.zeros(g.push_batch, dtype=COMMAND_DTYPE)
        self.cmd_rows: list[tuple] = []
        self.cmd_pending: list[Pending] = []
        self.dirty: set[Session] = set()
        self.routed_seq = 0
        self.quiet_until = 0  # events up to here only rebuild the order table (a restarted gateway)
        self.claimed_cmd_seq = 0
        self.ring_cursor = 0
        self.ring_attached = False
        self.stopping = False
        self.counters = collections.Counter()
        self.balance_cache: tuple = (None, None, None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.quit = threading.Event()  # ends the ring thread
        self.failure: Exception | None = None

    # ------------------------------------------------------------------ accounts and sessions

    def refresh_accounts(self) -> None:
        self.known_accounts = np.unique(np.fromiter(self.keys.accounts.values(), np.int64))

    def session_of(self, routing_id: bytes, frame: zmq.Frame) -> Session | None:
        """A new connection's session, from the key ZAP authenticated (None: no longer registered)."""
        key = frame.get("User-Id")
        account = self.keys.accounts.get(key)
        if account is None:
            return None
        s = Session(routing_id, key, account)
        self.sessions[routing_id] = s
        self.by_account[account].add(s)
        return s

    def drop_session(self, s: Session) -> None:
        self.sessions.pop(s.routing_id, None)
        group = self.by_account.get(s.account)
        if group is not None:
            group.discard(s)
        self.dirty.discard(s)
        self.counters["sessions_lost"] += 1

    # ------------------------------------------------------------------ requests

    def on_readable(self) -> None:
        """Drain the ROUTER (its fd is edge-triggered), forward the burst's commands, send replies."""
        router = self.router
        sessions = self.sessions
        try:
            while True:
                try:
                    routing_id = router.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                # the rest of a multipart message is there already; a new connection's first
                # message is read as a Frame, for the key ZAP authenticated
                if routing_id in sessions:
                    frame, data = None, router.recv()
                else:
                    frame = router.recv(copy=False)
                    data = frame.buffer
                extra = 0
                while router.getsockopt(zmq.RCVMORE):
                    router.recv()
                    extra += 1
                self.on_message(routing_id, data, frame, extra)
                if len(self.cmd_rows) >= self.g.push_batch:
                    self.forward()
        finally:
            self.forward()
            self.flush()

    def on_message(self, routing_id: bytes, data, frame: zmq.Frame | None, extra_frames: int) -> None:
        self.counters["messages"] += 1
        s = self.sessions.get(routing_id) if frame is None else self.session_of(routing_id, frame)
        if s is not None and self.keys.accounts.get(s.key) != s.account:
            self.drop_session(s)  # its key was revoked since the session began
            s = None
        to = s if s is not None else routing_id
        if extra_frames:
            self.error(to, 0, ResultCode.MALFORMED_MESSAGE, "expected one frame per request")
            return
        if len(data) > self.g.max_message_bytes:
            self.error(to, 0, ResultCode.MESSAGE_TOO_LARGE, f"{len(data)} bytes > {self.g.max_message_bytes}")
            return
        try:
            req = m.request_decoder.decode(data)
        except msgspec.DecodeError as exc:
            self.reject_undecodable(to, data, exc)
            return
        if s is None:
            self.error(to, req.rid, ResultCode.NOT_AUTHENTICATED, "")
            return
        s.last_seen = time.monotonic()
        s.deadman_fired = False
        if self.stopping:
            self.error(s, req.rid, ResultCode.GATEWAY_STOPPING, "")
            return
        if isinstance(req, m.COMMANDS):
            self.command(s, req)
        elif type(req) is m.Batch:
            if len(req.requests) > self.g.max_batch:
                self.error(s, req.rid, ResultCode.BATCH_TOO_LARGE, f"{len(req.requests)} requests > {self.g.max_batch}")
                return
            for r in req.requests:
                self.command(s, r)
        else:
            self.query(s, req)

    def reject_undecodable(self, to: Session | bytes, data, exc: Exception) -> None:
        """Unknown tag or malformed: tell which, with the request id when it can be read."""
        try:
            raw = m.raw_decoder.decode(data)
        except msgspec.DecodeError:
            raw = None
        rid = raw[1] if isinstance(raw, list) and len(raw) > 1 and type(raw[1]) is int else 0
        rid = rid if -(1 << 63) <= rid < 1 << 63 else 0
        if isinstance(raw, list) and raw and isinstance(raw[0], str) and raw[0] not in m.REQUEST_TAGS:
            self.error(to, rid, ResultCode.UNKNOWN_MESSAGE, f"no request type {raw[0][:40]!r}")
        else:
            self.error(to, rid, ResultCode.MALFORMED_MESSAGE, str(exc)[:200])

    def command(self, s: Session, req) -> None:
        now = time.monotonic()
        bucket = self.buckets.get(s.account)
        if bucket is None:
            bucket = self.buckets[s.account] = TokenBucket(self.g.burst)
        if not bucket.take(now, self.g.rate_per_s, self.g.burst):
            self.counters["rate_limited"] += 1
            self.reject(s, req.rid, ResultCode.RATE_LIMITED,
                        f"more than {self.g.rate_per_s} commands/s (burst {self.g.burst}) for account {s.account}",
                        getattr(req, "client_id", 0))
            return
        t = type(req)
        account = s.account
        if t is m.PlaceOrder:
            p = Pending(s, account, req.rid, PLACE, req.market, int(req.side), req.price, req.qty, req.client_id, 0)
            row = (PLACE, req.side, req.tif, req.ord_type, req.stp, POST_ONLY if req.post_only else 0,
                   0, req.market, 0, account, req.price, req.qty, req.client_id, req.expire_at)
        elif t is m.CancelOrder or t is m.AmendOrder:
            if (req.order_id == 0) == (req.client_id == 0):
                self.reject(s, req.rid, ResultCode.INVALID_REQUEST, "give exactly one of order_id and client_id")
                return
            ident, flags = (req.order_id, 0) if req.order_id else (req.client_id, BY_CLIENT_ID)
            if t is m.CancelOrder:
                p = Pending(s, account, req.rid, CANCEL, 0, 0, 0, 0, ident, flags)
                row = (CANCEL, 0, 0, 0, 0, flags, 0, 0, 0, account, 0, 0, ident, 0)
            else:
                p = Pending(s, account, req.rid, AMEND, 0, 0, req.price, req.qty, ident, flags)
                row = (AMEND, 0, 0, 0, 0, flags, 0, 0, 0, account, req.price, req.qty, ident, 0)
        else:  # MassCancel
            flags = 0 if req.market else ALL_MARKETS
            p = Pending(s, account, req.rid, MASS_CANCEL, req.market, 0, 0, 0, 0, flags)
            row = (MASS_CANCEL, 0, 0, 0, 0, flags, 0, req.market, 0, account, 0, 0, 0, 0)
        self.cmd_rows.append(row)
        self.cmd_pending.append(p)

    def forward(self) -> None:
        """Push the collected commands into the matcher's input as one message."""
        rows = self.cmd_rows
        if not rows:
            return
        n = len(rows)
        buf = self.cmd_buffer[:n] if n <= len(self.cmd_buffer) else np.zeros(n, COMMAND_DTYPE)
        buf[:] = rows
        # the FIFO entries go in before the send: the events can only follow it
        for p in self.cmd_pending:
            self.fifo[p.account].append(p)
        self.input.send(buf)
        self.counters["commands"] += n
        self.cmd_rows = []
        self.cmd_pending = []

    def deadman_cancel(self, s: Session) -> None:
        """The session went silent past its dead-man interval: cancel all its account's orders."""
        s.deadman_fired = True
        self.counters["deadman_fired"] += 1
        p = Pending(None, s.account, 0, MASS_CANCEL, 0, 0, 0, 0, 0, ALL_MARKETS)
        self.cmd_rows.append((MASS_CANCEL, 0, 0, 0, 0, ALL_MARKETS, 0, 0, 0, s.account, 0, 0, 0, 0))
        self.cmd_pending.append(p)
        self.forward()

    def query(self, s: Session, req) -> None:
        t = type(req)
        if t is m.Heartbeat:
            self.send(s, m.HeartbeatAck(rid=req.rid, server_ns=time.time_ns()))
        elif t is m.SetDeadman:
            if req.timeout_ms < 0:
                self.reject(s, req.rid, ResultCode.INVALID_REQUEST, "timeout_ms must not be negative")
                return
            s.deadman_ms = req.timeout_ms
            self.send(s, m.DeadmanSet(rid=req.rid, timeout_ms=req.timeout_ms))
        elif t is m.OpenOrders:
            self.send(s, m.OrdersResult(rid=req.rid, orders=self.book.open_orders(s.account, req.market)))
        elif t is m.OrderStatus:
            if (req.order_id == 0) == (req.client_id == 0):
                self.error(s, req.rid, ResultCode.INVALID_REQUEST, "give exactly one of order_id and client_id")
                return
            self.send(s, m.OrderStatusResult(rid=req.rid, order=self.book.find(s.account, req.order_id, req.client_id)))
        elif t is m.Balances:
            self.send(s, self.balances(s.account, req.rid))
        else:  # Markets
            self.send(s, m.MarketsResult(rid=req.rid, markets=self.market_infos()))

    def market_infos(self) -> list[m.MarketInfo]:
        decimals = {a.symbol: a.decimals for a in self.cfg.assets}
        return [m.MarketInfo(market=k.id, base=k.base, quote=k.quote, base_decimals=decimals[k.base],
                             quote_decimals=decimals[k.quote], tick_size=k.tick_size, lot_size=k.lot_size,
                             min_size=k.min_size) for k in self.cfg.markets]

    def balances(self, account: int, rid: int) -> m.BalancesResult:
        """Per-asset totals and holds from the margin worker's last checkpoint, and its margin view."""
        run = self.cfg.data_path / "run"
        ckpt, view_path = run / "margin.ckpt", run / "margin-view.npy"
        try:
            key = (ckpt.stat().st_mtime_ns, view_path.stat().st_mtime_ns if view_path.exists() else 0)
        except OSError:
            return m.BalancesResult(rid=rid, balances=[], as_of_seq=0)
        if self.balance_cache[0] != key:
            core = pickle.loads(ckpt.read_bytes())
            view = np.load(view_path) if view_path.exists() else None
            self.balance_cache = (key, core, view)
        _, core, view = self.balance_cache
        symbols = {a.id: a.symbol for a in self.cfg.assets}
        rows = [m.BalanceInfo(asset=a, symbol=symbols.get(a, str(a)), total=t, held=h)
                for a, (t, h) in sorted(core.balances(account).items())]
        equity = used = available = 0
        if view is not None:
            hit = np.flatnonzero(view["account"] == account)
            if len(hit):
                r = view[hit[0]]
                equity, used, available = int(r["equity"]), int(r["margin_used"]), int(r["available"])
        return m.BalancesResult(rid=rid, balances=rows, as_of_seq=int(core.cursor), equity=equity,
                                margin_used=used, available=available)

    # ------------------------------------------------------------------ replies

    def send(self, s: Session, reply) -> None:
        s.outbox.append(reply)
        self.dirty.add(s)

    def reject(self, s: Session | None, rid: int, code: ResultCode, detail: str = "", client_id: int = 0,
               cmd_seq: int = 0) -> None:
        if s is None:
            return
        reason = MESSAGES[code] + (f": {detail}" if detail else "")
        self.counters["rejects"] += 1
        self.send(s, m.Reject(rid=rid, code=int(code), name=code.name, reason=reason, client_id=client_id,
                              cmd_seq=cmd_seq))

    def error(self, to: Session | bytes, rid: int, code: ResultCode, detail: str) -> None:
        """An Error reply to a session, or straight to a connection that has none (a revoked key)."""
        self.counters["errors"] += 1
        msg = m.Error(rid=rid, code=int(code), name=code.name, reason=MESSAGES[code] + (f": {detail}" if detail else ""))
        if type(to) is Session:
            self.send(to, msg)
        else:
            self.send_frames(to, m.encode(msg))

    def send_frames(self, routing_id: bytes, payload: bytes) -> bool:
        try:
            self.router.send_multipart((routing_id, payload), zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False  # the peer is gone (ROUTER_MANDATORY tells us)
            if exc.errno == zmq.EAGAIN:
                self.counters["dropped_replies"] += 1  # the client does not read: its queue is full
                return True
            raise

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for s in dirty:
            out, s.outbox = s.outbox, []
            payload = m.encode(out[0] if len(out) == 1 else m.Replies(items=out))
            self.counters["replies"] += len(out)
            if not self.send_frames(s.routing_id, payload):
                self.drop_session(s)
        if dirty and self.router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            # sending may consume the fd's edge: look for requests that arrived meanwhile
            self.loop.call_soon(self.on_readable)

    # ------------------------------------------------------------------ events

    def route(self, events: np.ndarray) -> None:
        """Answer commands and report executions from one batch of ring events (runs on the loop)."""
        last = int(events["seq"][-1])
        if last <= self.routed_seq:
            return  # a restarted matcher republishing what we already routed
        if int(events["seq"][0]) <= self.routed_seq:
            events = events[events["seq"] > self.routed_seq]
        self.routed_seq = last
        keyed = self.known_accounts
        if not len(keyed):
            return
        kinds = events["kind"]
        mine = np.isin(kinds, EVENT_ACCOUNTS_KINDS) & (np.isin(events["account"], keyed) |
                                                     ((kinds == FILL) & np.isin(events["maker_account"], keyed)))
        if not mine.any():
            return
        fifo = self.fifo
        book = self.book
        quiet = self.quiet_until
        for ev in events[mine].tolist():
            kind = ev[_KIND]
            if ev[_SEQ] > quiet:
                account = ev[_ACCOUNT]
                if kind in OWN_FIRST_KINDS and ev[_CMD_SEQ] != self.claimed_cmd_seq and not (
                        kind == CANCELLED and ev[_REASON] == EXPIRED):
                    # a command's own first event (expiries ride on whichever command came next)
                    self.claimed_cmd_seq = ev[_CMD_SEQ]
                    q = fifo.get(account)
                    if q:
                        self.answer(q, kind, ev)
                if kind == FILL:
                    self.report_fill(ev)
                elif kind == CANCELLED:
                    self.report(account, m.ExecutionReport(
                        kind="cancel", order_id=ev[_ORDER_ID], client_id=ev[_CLIENT_ID], market=ev[_MARKET],
                        side=ev[_SIDE], price=ev[_PRICE], qty=ev[_QTY], remaining=ev[_REMAINING], reason=ev[_REASON],
                        code=ev[_CODE], seq=ev[_SEQ], cmd_seq=ev[_CMD_SEQ], ts=ev[_TS]))
                elif kind == AMENDED:
                    self.report(account, m.ExecutionReport(
                        kind="amend", order_id=ev[_ORDER_ID], client_id=ev[_CLIENT_ID], market=ev[_MARKET],
                        side=ev[_SIDE], price=ev[_PRICE], qty=ev[_QTY], remaining=ev[_REMAINING], seq=ev[_SEQ],
                        cmd_seq=ev[_CMD_SEQ], ts=ev[_TS]))
            book.apply(kind, ev)  # after the reports: a fill report reads the maker's size before it
        self.flush()

    def answer(self, q: collections.deque, kind: int, ev) -> None:
        """``ev`` is the first event of a command for this account: answer the command it echoes."""
        for depth, p in enumerate(q):
            if depth == LOST_SCAN:
                return
            if p.answered_by(kind, ev):
                break
        else:
            return  # a command another producer sent for the account
        for _ in range(depth):  # sent before it on the same connection, yet never executed
            lost = q.popleft()
            self.counters["lost"] += 1
            self.reject(lost.session, lost.rid, ResultCode.COMMAND_LOST, "", lost.ident if lost.kind == PLACE else 0)
        q.popleft()
        s = p.session
        if s is None:  # the gateway's own dead-man mass cancel
            return
        if kind == REJECTED:
            code = ResultCode(ev[_CODE])
            self.reject(s, p.rid, code, "", ev[_CLIENT_ID] if p.kind == PLACE else 0, ev[_CMD_SEQ])
            return
        if self.journaling and ev[_DURABLE] < ev[_CMD_SEQ]:
            # the matcher publishes only what the journal holds; an ack must never promise more
            raise RuntimeError(f"event {ev[_SEQ]} of command {ev[_CMD_SEQ]} published with durable_seq "
                               f"{ev[_DURABLE]}: not acknowledging a command that is not durable")
        self.counters["acks"] += 1
        self.send(s, m.Ack(rid=p.rid, order_id=ev[_ORDER_ID], client_id=ev[_CLIENT_ID], cmd_seq=ev[_CMD_SEQ],
                           durable_seq=ev[_DURABLE], count=ev[_QTY] if p.kind == MASS_CANCEL else 0, ts=ev[_TS]))

    def report_fill(self, ev) -> None:
        book = self.book
        taker, maker = ev[_ORDER_ID], ev[_MAKER_ORDER]
        qty, price = ev[_QTY], ev[_PRICE]
        maker_remaining = book.maker_remaining(ev)
        taker_cid, maker_cid = book.client_id(taker), book.client_id(maker)
        side = ev[_SIDE]
        self.report(ev[_ACCOUNT], m.ExecutionReport(
            kind="fill", order_id=taker, client_id=taker_cid, market=ev[_MARKET], side=side, price=price, qty=qty,
            remaining=ev[_REMAINING], fee=ev[_TAKER_FEE], liquidity="taker", seq=ev[_SEQ], cmd_seq=ev[_CMD_SEQ],
            ts=ev[_TS]))
        self.report(ev[_MAKER_ACCOUNT], m.ExecutionReport(
            kind="fill", order_id=maker, client_id=maker_cid, market=ev[_MARKET], side=1 - side, price=price,
            qty=qty, remaining=maker_remaining, fee=ev[_MAKER_FEE], liquidity="maker", seq=ev[_SEQ],
            cmd_seq=ev[_CMD_SEQ], ts=ev[_TS]))

    def report(self, account: int, report: m.ExecutionReport) -> None:
        group = self.by_account.get(account)
        if group:
            self.counters["reports"] += 1
            for s in group:
                self.send(s, report)

    def catch_up(self, consumer) -> None:
        """On the first attach (ring thread): rebuild the order table from the snapshot the matcher
        restored and the ring since.  A gateway restarted on its own reads again, for the table
        only, what its predecessor routed (``quiet_until``)."""
        from engine.process import read_heartbeats
        from engine.ring import RingError
        from engine.snapshot import read_snapshot

        base, orders = 0, None  # the ring's first event follows the restored snapshot (or seq 0)
        path = read_heartbeats(self.cfg).get("matcher", {}).get("restored_from")
        if path:
            try:
                header, state = read_snapshot(path)
                base, orders = header.event_seq, state["orders"]
            except (ValueError, OSError) as exc:
                print(f"xos gateway: open orders not seeded from {path}: {exc}", file=sys.stderr, flush=True)
                return
        resume = consumer.cursor
        if resume > base:
            try:
                consumer.seek(base + 1)
            except RingError as exc:
                print(f"xos gateway: the ring no longer holds events {base + 1}..{resume}: orders placed before "
                      f"this gateway started are missing from its queries ({exc})", file=sys.stderr, flush=True)
                return
            self.quiet_until = resume
        if orders is not None:
            self.loop.call_soon_threadsafe(self.book.seed, orders, self.known_accounts)

    # ------------------------------------------------------------------ the ring thread

    def ring_thread(self) -> None:
        """Attach to the matcher's ring (again after it restarts); hand every batch to the loop and
        consume it once routed."""
        from engine.ring import RingConsumer, RingError

        first = True
        while not self.quit.is_set():
            try:
                consumer = RingConsumer.attach(self.cfg.ring_name, "gateway")
            except RingError:
                time.sleep(0.05)
                continue
            if not consumer.producer_alive() or consumer.producer_closed():
                consumer.detach()
                time.sleep(0.05)
                continue
            if first:  # before any batch is handed over: the loop seeds, then routes
                self.catch_up(consumer)
                first = False
            self.ring_cursor = consumer.cursor
            self.ring_attached = True
            checked = time.monotonic()
            try:
                while not self.quit.is_set():
                    if consumer.wait(POLL_MS * 1_000_000):
                        events = consumer.take(TAKE_MAX)
                        done = threading.Event()
                        self.loop.call_soon_threadsafe(self.route_then_set, events, done)
                        done.wait()
                        consumer.release_to(int(events["seq"][-1]))
                        self.ring_cursor = consumer.cursor
                    now = time.monotonic()
                    if now - checked >= 0.2:
                        checked = now
                        if consumer.producer_closed() or not consumer.producer_alive():
                            print("xos gateway: the matcher's ring is gone; reattaching", file=sys.stderr, flush=True)
                            break
            finally:
                self.ring_attached = False
                consumer.detach()

    def route_then_set(self, events: np.ndarray, done: threading.Event) -> None:
        try:
            self.route(events)
        except Exception as exc:  # ends the process (housekeeping raises it); the supervisor restarts it
            self.failure = exc
        finally:
            done.set()

    # ------------------------------------------------------------------ periodic work

    async def housekeeping(self) -> None:
        next_keys = time.monotonic() + self.g.keys_reload_s
        while True:
            armed = False
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if s.deadman_ms and not s.deadman_fired:
                    armed = True
                    if (now - s.last_seen) * 1000.0 >= s.deadman_ms:
                        self.deadman_cancel(s)
            if now >= next_keys:
                next_keys = now + self.g.keys_reload_s
                if self.keys.reload():
                    self.refresh_accounts()
                    for s in list(self.sessions.values()):
                        if self.keys.accounts.get(s.key) != s.account:
                            self.drop_session(s)
            if self.heartbeat.due():
                self.heartbeat.beat(state="stopping" if self.stopping else "running", **self.status())
            if self.failure is not None:
                raise self.failure
            if Stop.requested:
                return
            await asyncio.sleep(0.01 if armed else 0.05)

    def status(self) -> dict:
        return {"sessions": len(self.sessions), "accounts": len(self.known_accounts),
                "pending": sum(len(q) for q in self.fifo.values()), "routed_seq": self.routed_seq,
                "ring_cursor": self.ring_cursor, "ring_attached": self.ring_attached, **self.counters}

    async def main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.router.getsockopt(zmq.FD), self.on_readable)
        ring = threading.Thread(target=self.ring_thread, name="gateway-ring", daemon=True)
        ring.start()
        self.heartbeat.beat(state="running", **self.status())
        self.loop.call_soon(self.on_readable)
        await self.housekeeping()
        # SIGTERM: answer new requests with GATEWAY_STOPPING, give in-flight commands time to be answered
        self.stopping = True
        deadline = time.monotonic() + STOP_GRACE_S
        while any(self.fifo.values()) and time.monotonic() < deadline and self.ring_attached:
            await asyncio.sleep(0.02)
        self.loop.remove_reader(self.router.getsockopt(zmq.FD))
        self.quit.set()
        ring.join(timeout=1.0)
        return 0

    def run(self) -> int:
        import uvloop

        try:
            code = uvloop.run(self.main())
        finally:
            self.heartbeat.beat(state="stopped", **self.status())
            self.close()
        return code

    def close(self) -> None:
        self.input.close()
        self.router.close(linger=0)
        self.auth.stop()
        self.context.term()
        address = self.g.address
        if address.startswith("ipc://"):
            Path(address[len("ipc://"):]).unlink(missing_ok=True)

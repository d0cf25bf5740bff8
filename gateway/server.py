"""The order-entry gateway: ``python -m engine.process gateway`` (started by ``xos run``).

One asyncio (uvloop) event loop owns every session.  Clients connect a DEALER to the gateway's
ROUTER over CurveZMQ; pyzmq's ZAP authenticator admits only the public keys in ``[gateway] keys``
and the account of every request is taken from that key (the connection's ZAP User-Id), never
from the message.  Requests become ``COMMAND_DTYPE`` records published, one forward per burst, into
the matcher's command ring (shared memory, ``engine/cmdring.pyx``).  The loop also waits on the event
ring's doorbell (a thread only attaches to the ring and watches the matcher live) and routes its
events: the first event of each of this gateway's commands answers it (Ack only
when the event says the command is durable in the journal; Reject with the code's name), and
fills, cancels and amends go as ExecutionReports to every session of the order's account (maker
and taker).

Commands of one account reach the matcher in the order the gateway sent them (one ring), so each
account's sent-and-unanswered commands wait in a FIFO and the next event that is a command's own
first event (Accepted, Rejected, Cancelled by the user, Amended) for that
account answers the FIFO's head, after a check that it echoes the command's fields (commands that
other producers send for the account are not taken for ours).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import sys
import threading
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from engine.api import Leg, multi_leg_commands
from engine.codes import MESSAGES, ResultCode
from engine.config import Config, load
from engine.cmdring import CommandRing
from engine.process import Heartbeat, Stop
from engine.ring import RingError
from engine.records import Cmd, CmdFlag, Ev, EvFlag, MarketKind, select_records
from engine.workers import AssetDef, Listings, MarketDef, kind_mask
from engine.workers.settlement import LedgerReader

from . import messages as m
from .intake import drain_burst, readable, send_pair
from .routing import (ForwardBatch, PendingQueue, ReplyRouter, accounts_trading, client_order_row, compact_orders,
                      order_row, order_rows, take_rows)
from .keys import server_pair
from .listings import learn_from_events, seed_from_state

# plain ints on the per-event and per-command paths (enum attribute lookups cost more than the work)
ACCEPTED, REJECTED, FILL, CANCELLED, AMENDED = map(int, (Ev.ACCEPTED, Ev.REJECTED, Ev.FILL, Ev.CANCELLED, Ev.AMENDED))
PLACE, CANCEL, AMEND, MASS_CANCEL = map(int, (Cmd.PLACE, Cmd.CANCEL, Cmd.AMEND, Cmd.MASS_CANCEL))
POST_ONLY, BY_CLIENT_ID, ALL_MARKETS, BY_VENUE = map(int, (CmdFlag.POST_ONLY, CmdFlag.BY_CLIENT_ID, CmdFlag.ALL_MARKETS,
                                                        CmdFlag.BY_VENUE))
VENUE_ECHO, ORACLE_CONFIG_ECHO = int(Ev.VENUE), int(Ev.ORACLE_CONFIG)  # accepted venue commands, echoed whole
# the first event of an accepted OutcomeConfig or Resolve, Convert, Liquidate (whose account is the target: the
# sender is its client_id); a venue's market halt or resume answers with MarketStatus, an IsolatedMargin with a
# Position event (flags: the command); the rules are ``echoes`` in gateway/routing.pyx
OUTCOME_STATUS, OUTCOME_CONVERT, LIQUIDATION = int(Ev.OUTCOME_STATUS), int(Ev.OUTCOME_CONVERT), int(Ev.LIQUIDATION)
MARKET_STATUS, POSITION = int(Ev.MARKET_STATUS), int(Ev.POSITION)
ANY_LISTING = int(EvFlag.ASSET_LISTING | EvFlag.MARKET_LISTING)  # an Accepted with one of these lists an asset or market
KIND_NAMES = {int(k): k.name.lower() for k in MarketKind}  # the config's names: spot, perpetual, outcome
# a multi-leg order's header waits in the FIFO (its legs do not), answered by its first leg's Accepted or its one
# Rejected
MULTI_LEG = int(Cmd.MULTI_LEG)
OWN_FIRST_KINDS = (ACCEPTED, REJECTED, CANCELLED, AMENDED, VENUE_ECHO, ORACLE_CONFIG_ECHO, OUTCOME_STATUS,
                   OUTCOME_CONVERT, LIQUIDATION, MARKET_STATUS, POSITION)
EVENT_ACCOUNTS_KINDS = OWN_FIRST_KINDS + (FILL,)
# what the loop copies out of the ring (the rest: book levels, balances, marks ... answers no one), and
# the kinds that answer a command (``ReplyRouter`` takes both)
ROUTED, OWN_FIRST = kind_mask(*EVENT_ACCOUNTS_KINDS), kind_mask(*OWN_FIRST_KINDS)
CLOSED_KEPT = 1000  # closed orders remembered per account for OrderStatus and ClosedOrders
TRADES_MAX = 1000  # fills in a MyTrades reply at most (read from the settlement ledger in the ledger thread)
TAKE_MAX = 16384
JOURNAL_WAIT_S = 10.0  # a restarted gateway's journal replay: the longest wait for a batch not in the file yet
STOP_GRACE_S = 5.0  # on SIGTERM: time to answer what is in flight
DRAIN_MAX = 4096  # messages taken off the ROUTER per call into C
ROW_SIZE = m.COMMAND_ROW_DTYPE.itemsize


def config_listings(cfg: Config) -> Listings:
    """The config's assets and markets, which the bootstrap lists: known before the ring is read, so a client
    that connects at once gets them; the snapshot and the ring's listing echoes add what was listed since."""
    listings = Listings()
    ids = {a.symbol: a.id for a in cfg.assets}
    for a in cfg.assets:
        listings.assets[a.id] = AssetDef(a.id, a.symbol, a.decimals)
    for k in cfg.markets:
        listings.markets[k.id] = MarketDef(k.id, k.venue, int(MarketKind[k.kind.upper()]), ids[k.base], ids[k.quote],
                                           k.tick_size, k.lot_size, k.min_size, k.maker_bps, k.taker_bps, k.band_bps)
    return listings


class Session:
    """One client connection (a ROUTER routing id) and the account its key belongs to."""

    __slots__ = ("sid", "routing_id", "key", "account", "last_seen", "deadman_ms", "deadman_fired", "outbox",
                 "row_format", "idle_checked")

    def __init__(self, sid: int, routing_id: bytes, key: str, account: int):
        self.sid = sid  # its number in the pending commands' ``sid`` column
        self.routing_id = routing_id
        self.key = key
        self.account = account
        self.last_seen = time.monotonic()
        self.deadman_ms = 0
        self.deadman_fired = False
        self.outbox: list = []
        self.row_format = 0  # its latest OrderRows' format, its acks and execution reports' (0: it sent none, structs)
        self.idle_checked = 0.0  # when it was last found idle with an open order (``forget_idle_sessions``)


# What a bad row breaks, by the rule number gateway/intake.pyx's row_rule returns.
ROW_RULES = {
    1: lambda r: f"kind {r['kind']} is not 1 (place), 2 (cancel), 3 (amend) or 4 (mass cancel)",
    2: lambda r: f"side {r['side']} is not 0 (buy) or 1 (sell)",
    3: lambda r: f"tif {r['tif']} is not 0 (GTC), 1 (IOC) or 2 (FOK)",
    4: lambda r: f"ord_type {r['ord_type']} is not 0 (limit) or 1 (market)",
    5: lambda r: f"stp {r['stp']} is not 0-3 (engine Stp)",
    6: lambda r: f"flags {r['flags']} not allowed for kind {r['kind']} (place: 1 post-only; cancel, amend: 2 by "
                 f"client id)",
    7: lambda r: "a cancel or amend needs the order id (or the client id with flags 2) in id",
    8: lambda r: f"venue {r['venue']} on a kind {r['kind']} row: only a place has a venue",
}


ORDER_ROW_DTYPE = np.dtype([("order_id", "<i8"), ("account", "<i8"), ("client_id", "<i8"), ("price", "<i8"),
                            ("qty", "<i8"), ("filled", "<i8"), ("remaining", "<i8"), ("ts", "<i8"),
                            ("closed_seq", "<i8"), ("market", "<u4"), ("venue", "<u4"), ("side", "u1"),
                            ("status", "u1")])
STATUS_NAMES = ("open", "filled", "cancelled")  # by a row's status (gateway/routing.pyx sets it)
OPEN = STATUS_NAMES.index("open")


class OrderTable:
    """The orders of the accounts that have keys, as the event stream shows them (for queries and
    to name the client id in execution reports): one numpy row per order, sorted by order id (the
    matcher numbers orders in event order), updated a batch of events at a time (``ReplyRouter.route``
    follows them in C).  Closed orders are kept, at least the last CLOSED_KEPT per account, until the
    table fills and is compacted."""

    def __init__(self, capacity: int = 1 << 14):
        self.rows = np.zeros(capacity, ORDER_ROW_DTYPE)
        self.n = 0

    def seed(self, rows: np.ndarray, accounts) -> None:
        """Open orders from a matcher snapshot (``ORDER_STATE`` rows)."""
        rows = np.sort(rows[np.isin(rows["account"], np.fromiter(accounts, np.int64))], order="order_id")
        new = np.zeros(len(rows), ORDER_ROW_DTYPE)
        for name in ("order_id", "account", "client_id", "price", "qty", "filled", "remaining", "market", "venue",
                     "side"):
            new[name] = rows[name]
        self.insert(new)

    def reserve(self, k: int) -> None:
        """Room for ``k`` more rows: closed orders compacted away first, then a bigger table."""
        if self.n + k > len(self.rows):
            self.compact()
            if self.n + k > len(self.rows):
                grown = np.zeros(2 * (self.n + k), ORDER_ROW_DTYPE)
                grown[:self.n] = self.rows[:self.n]
                self.rows = grown

    def insert(self, new: np.ndarray) -> None:
        if not len(new):
            return
        self.reserve(len(new))
        first = self.n
        self.rows[first:first + len(new)] = new
        self.n += len(new)
        ids = self.rows["order_id"][:self.n]
        if first and ids[first - 1] > ids[first] or (np.diff(ids[first:]) < 0).any():
            # not expected (the matcher numbers orders in event order); keeps the lookups right
            self.rows[:self.n] = np.sort(self.rows[:self.n], order="order_id")

    def compact(self) -> None:
        """Drop closed orders beyond each account's newest CLOSED_KEPT (in C)."""
        self.n = compact_orders(self.rows, self.n, CLOSED_KEPT)

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of order ids, and which of them the table has."""
        col = self.rows["order_id"][:self.n]
        if not self.n:
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(col, ids), self.n - 1)
        return pos, col[pos] == ids

    @staticmethod
    def infos(rows: np.ndarray) -> list[m.OrderInfo]:
        """``rows`` as OrderInfos, their values taken out all at once (``tolist``): a row's fields one by one took
        13 µs an order."""
        info, names = m.OrderInfo, STATUS_NAMES
        return [info(oid, cid, market, side, price, qty, filled, remaining, names[status], ts, venue)
                for oid, _, cid, price, qty, filled, remaining, ts, _, market, venue, side, status in rows.tolist()]

    def open_orders(self, account: int, market: int) -> list[m.OrderInfo]:
        return self.infos(take_rows(self.rows, order_rows(self.rows, self.n, account, market, False)))

    def closed_orders(self, account: int, market: int, since: int, limit: int) -> list[m.OrderInfo]:
        """``account``'s closed orders in ``market`` (0: all) placed at or after ``since``, oldest closed first: the
        newest ``limit`` of them (0: all, at most CLOSED_KEPT: the table may hold more until it is compacted)."""
        rows = take_rows(self.rows, order_rows(self.rows, self.n, account, market, True))
        rows = rows[rows["ts"] >= since]
        rows = rows[np.argsort(rows["closed_seq"], kind="stable")]
        return self.infos(rows[-min(limit or CLOSED_KEPT, CLOSED_KEPT):])

    def closed(self) -> np.ndarray:
        """The closed rows, at most the newest CLOSED_KEPT per account (a copy)."""
        rows = take_rows(self.rows, order_rows(self.rows, self.n, 0, 0, True))  # every account's
        return rows[:compact_orders(rows, len(rows), CLOSED_KEPT)]

    def trading(self, accounts: np.ndarray) -> np.ndarray:
        """Which of ``accounts`` (sorted, unique int64) have an open order."""
        return accounts_trading(self.rows, self.n, accounts)

    def add_history(self, rows: np.ndarray, accounts, last_order_id: int, event_seq: int) -> int:
        """Closed orders a predecessor kept (``closed``) into a table seeded from a snapshot whose last order id and
        event seq are ``last_order_id`` and ``event_seq``: those of ``accounts`` closed by then.  The later orders
        come again from the events after the snapshot, an order open at the snapshot is in the table already:
        neither is taken twice.  Returns how many were added."""
        keep = (rows["status"] != OPEN) & (rows["order_id"] <= last_order_id) & (rows["closed_seq"] <= event_seq) & \
            np.isin(rows["account"], np.fromiter(accounts, np.int64)) & ~self.locate(rows["order_id"])[1]
        self.insert(np.sort(rows[keep], order="order_id"))
        return int(keep.sum())

    def find(self, account: int, order_id: int, client_id: int) -> m.OrderInfo | None:
        """``account``'s order ``order_id``, or its newest under ``client_id`` when that is given."""
        if client_id:
            at = client_order_row(self.rows, self.n, account, client_id)
        else:
            at = order_row(self.rows, self.n, order_id)
            if at >= 0 and self.rows["account"][at] != account:
                at = -1
        return self.infos(self.rows[at:at + 1])[0] if at >= 0 else None


def save_history(path: Path, rows: np.ndarray) -> None:
    """Write ``rows`` (``OrderTable.closed``) for the next gateway, the whole file put in place at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        np.savez(f, rows=rows)
    os.replace(part, path)


def load_history(path: Path) -> np.ndarray | None:
    """The rows ``save_history`` wrote; None when there are none, or (said on stderr) they cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            rows = saved["rows"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        print(f"xos gateway: the closed orders of the last run are not read from {path}: {exc}", file=sys.stderr,
              flush=True)
        return None
    if rows.dtype != ORDER_ROW_DTYPE or rows.ndim != 1:
        print(f"xos gateway: the closed orders of the last run are not read from {path}: rows of {rows.dtype}, "
              f"shape {rows.shape}, not a list of this gateway's order rows", file=sys.stderr, flush=True)
        return None
    return rows


class TokenBucket:
    __slots__ = ("tokens", "last")

    def __init__(self, burst: int):
        self.tokens = float(burst)
        self.last = time.monotonic()

    def take(self, now: float, rate: int, burst: int, n: int = 1) -> bool:
        """Take ``n`` tokens, or none when there are fewer (a multi-leg order counts as its legs, all or none)."""
        tokens = self.tokens + (now - self.last) * rate
        if tokens > burst:
            tokens = burst
        self.last = now
        if tokens < n:
            self.tokens = tokens
            return False
        self.tokens = tokens - n
        return True

    def take_many(self, now: float, rate: int, burst: int, n: int) -> int:
        """Take up to ``n`` tokens; returns how many there were."""
        tokens = self.tokens + (now - self.last) * rate
        if tokens > burst:
            tokens = burst
        self.last = now
        got = n if tokens >= n else int(tokens)
        self.tokens = tokens - got
        return got


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


class MatcherFeed:
    """The gateway's end of the matcher's command ring.  It attaches when it first has commands, and again
    once the matcher has closed the ring (a restart).  A forward that cannot go in yet (the ring full, no ring,
    or the matcher gone) waits here in order and goes first next time (``flush``); meanwhile the gateway reads
    no requests (``GatewayStage.on_readable``)."""

    def __init__(self, name: str):
        self.name = name
        self.ring: CommandRing | None = None
        self.backlog: collections.deque[np.ndarray] = collections.deque()
        self.why_unattached = ""
        self.published = 0  # commands, into every ring so far: the next one's ``send_seq`` (its forwards' order)
        self.ring_base = (0, 0)  # the ring's head when attached, and ``published`` then

    def sent_before(self, matcher_pid: int, first_taken: int) -> int | None:
        """The ``send_seq`` of the first command the matcher ``matcher_pid`` takes from the command ring, which it
        consumes from position ``first_taken`` on (its heartbeat's ``command_ring_from``); the commands before that
        went to its predecessors.  None while this end's ring is one another matcher consumes (that one's own
        heartbeat says)."""
        ring = self.ring
        if ring is None or ring.closed:  # what went into closed rings the matcher never reads
            return self.published
        if ring.consumer_pid != matcher_pid:
            return None
        head, published = self.ring_base
        return published + max(0, first_taken - head)

    def send_batch(self, batch: ForwardBatch) -> None:
        """A forward's commands straight from its batch when nothing waits and the ring has room; else as an
        array, in order, as ``send`` takes them."""
        if not self.backlog and self.ring is not None:
            published = batch.publish(self.ring)
            if published > 0:
                self.published += len(batch)
                return
            if published == 0:  # full: it waits, as ``send`` would keep it
                self.backlog.append(batch.pending()["cmd"].copy())
                return
        self.send(batch.pending()["cmd"].copy())  # no ring, or it closed: attach, as ``send`` does

    def send(self, commands: np.ndarray) -> None:
        if self.backlog:  # the ring took none of late: after those, at the next flush
            self.backlog.append(commands)
        elif not self.publish(commands):
            self.backlog.append(commands)

    def flush(self) -> bool:
        """Publish what waits, in order, as far as the ring takes it; True when nothing is left."""
        while self.backlog and self.publish(self.backlog[0]):
            self.backlog.popleft()
        return not self.backlog

    def publish(self, commands: np.ndarray) -> bool:
        for _ in range(2):  # a ring closed under us: once more, into the next
            if (self.ring is None or self.ring.closed) and not self.attach():
                return False
            if self.ring.publish(commands):
                self.published += len(commands)
                return True
            if not self.ring.closed:
                return False  # full: the matcher (or, if it died, its successor) takes it on
        return False

    def attach(self) -> bool:
        self.close()
        try:
            self.ring = CommandRing.producer(self.name)
        except RingError as exc:
            if str(exc) != self.why_unattached:  # once per reason, not at every retry
                self.why_unattached = str(exc)
                print(f"xos gateway: commands wait ({exc})", file=sys.stderr, flush=True)
            return False
        self.why_unattached = ""
        self.ring_base = (self.ring.stats["head"], self.published)
        return True

    @property
    def unsent(self) -> int:
        return sum(map(len, self.backlog))

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None


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
        self.matcher = MatcherFeed(cfg.command_ring_name)
        self.sessions: dict[bytes, Session] = {}
        self.by_sid: dict[int, Session] = {}
        self.next_sid = 0
        self.by_account: dict[int, set[Session]] = collections.defaultdict(set)
        self.fifo: dict[int, PendingQueue] = collections.defaultdict(PendingQueue)
        self.buckets: dict[int, TokenBucket] = {}
        self.book = OrderTable()
        self.history_path = cfg.history_path
        self.ledger = LedgerReader(cfg.ledger_path)  # for MyTrades, read in its own thread (``ask_ledger``)
        self.ledger_thread = concurrent.futures.ThreadPoolExecutor(1, "xos-gateway-ledger")
        self.history_taken = 0  # the routed seq when the closed orders were last taken for writing
        self.history_seq = 0  # and when those last written were
        self.history_write: asyncio.Future | None = None  # the one in flight
        self.replies = ReplyRouter(ROUTED, OWN_FIRST, self.fifo, self.journaling)
        self.listings = config_listings(cfg)  # every asset and market: the Markets reply
        self.known_accounts = np.zeros(0, np.int64)
        self.refresh_accounts()
        self.next_forward = ForwardBatch()  # the commands of the next forward, in arrival order
        self.dirty: set[Session] = set()
        self.routed_seq = 0
        self.quiet_until = 0  # events up to here only rebuild the order table (a restarted gateway)
        self.lost_before: list | None = None  # [send_seq, journal end, replayed to]: ``expect_answers``
        self.ring_cursor = 0
        self.ring_attached = False
        self.seeded = False  # the order table rebuilt up to where this gateway took over: requests are read
        self.event_consumer = None  # the ring, while the loop routes from it
        self.stopping = False
        self.counters = collections.Counter()
        self.margin_cache: tuple = (0, None)  # (margin-views.json's mtime, ``margin_state``)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.quit = threading.Event()  # ends the ring thread
        self.failure: Exception | None = None
        # each request type's handler: one dict lookup per message instead of isinstance chains
        self.handlers = {t: self.query for t in m.Request.__args__}
        self.handlers.update({t: self.command for t in m.COMMANDS + m.FIELD_COMMANDS})
        self.handlers.update({m.Batch: self.batch, m.OrderRows: self.order_rows, m.MultiLegOrder: self.multi_leg})

    # ------------------------------------------------------------------ accounts and sessions

    def refresh_accounts(self) -> None:
        self.known_accounts = np.unique(np.fromiter(self.keys.accounts.values(), np.int64))
        self.replies.set_keyed(self.known_accounts)

    def session_of(self, routing_id: bytes, key: str) -> Session | None:
        """A new connection's session, from the key ZAP authenticated (None: no longer registered)."""
        account = self.keys.accounts.get(key)
        if account is None:
            return None
        s = Session(self.next_sid, routing_id, key, account)
        self.next_sid += 1
        self.sessions[routing_id] = s
        self.by_sid[s.sid] = s
        self.by_account[account].add(s)
        return s

    def drop_session(self, s: Session, why: str = "sessions_lost") -> None:
        self.sessions.pop(s.routing_id, None)
        self.by_sid.pop(s.sid, None)
        group = self.by_account.get(s.account)
        if group is not None:
            group.discard(s)
        self.dirty.discard(s)
        self.counters[why] += 1

    def forget_idle_sessions(self, now: float) -> None:
        """Drop the sessions silent for ``session_idle_s`` that nothing ties to their client: no dead-man switch
        armed, nothing pending for the account, no open order of it to report on, no reply waiting.  One found
        with an open order is looked at again only after as long (a scan of the order table each time)."""
        idle_s = self.g.session_idle_s
        idle = [s for s in self.sessions.values() if now - s.last_seen >= idle_s and now - s.idle_checked >= idle_s
                and not s.deadman_ms and not s.outbox and not len(self.fifo.get(s.account, ()))]
        if not idle:
            return
        accounts = np.unique(np.fromiter((s.account for s in idle), np.int64, len(idle)))
        trading = set(accounts[self.book.trading(accounts)].tolist())
        for s in idle:
            if s.account in trading:
                s.idle_checked = now
            else:
                self.drop_session(s, "sessions_idle")

    # ------------------------------------------------------------------ requests

    def on_readable(self) -> None:
        """Drain the ROUTER (its fd is edge-triggered), forward the burst's commands, send replies.
        One clock reading per burst: the dead-man switch and the rate limit need no finer time.  While
        forwards wait for room in the matcher's ring, requests wait in ZeroMQ (``resume_intake``), and so they do
        until the order table is rebuilt (``on_events``): a query must not find it empty."""
        if self.matcher.backlog or not self.seeded:
            return
        socket, sessions = self.router.underlying, self.sessions
        push_batch, g = self.g.push_batch, self.g
        now = time.monotonic()
        n = 0
        try:
            while True:
                # in C (gateway/intake.pyx): plain OrderRows messages of sessions joined per session, the rest
                # one by one (with the ZAP User-Id of new routing ids); each session's order is kept
                rows, others, got = drain_burst(socket, sessions, DRAIN_MAX, g.max_message_bytes, g.max_batch,
                                                m.COMMAND_PACKING)
                n += got
                for routing_id, (heads, data, row_format) in rows.items():  # forwarded at push_batch by take_rows
                    s, heads = sessions[routing_id], np.ndarray((len(heads) // 16, 2), np.int64, heads)
                    try:
                        self.on_rows(s, heads, data, row_format, now)
                    except Exception as exc:  # a bug: these requests get an error, the others go on
                        self.internal_error(s, heads[:, 0].tolist(), exc)
                for routing_id, data, user_id, extra in others:
                    self.on_message(routing_id, data, user_id, extra, now)
                    if len(self.next_forward) >= push_batch:
                        self.forward()
                if got < DRAIN_MAX or self.matcher.backlog:
                    break
        except Exception as exc:  # outside any one request: the process ends (housekeeping raises it) and restarts
            self.failure = exc
        finally:
            self.counters["messages"] += n
            self.counters["bursts"] += 1
            self.forward()
            self.flush()

    def on_rows(self, s: Session, heads: np.ndarray, data: bytearray, row_format: int, now: float) -> None:
        """A session's OrderRows messages of one burst that C has checked and read (``heads``: their rid and row
        count; ``data``: their rows joined as fixed rows; ``row_format``: the last one's): on_message and
        order_rows for all of them at once."""
        if self.keys.accounts.get(s.key) != s.account:
            self.drop_session(s)  # its key was revoked since the session began
            for rid in heads[:, 0].tolist():
                self.error(s.routing_id, rid, ResultCode.NOT_AUTHENTICATED, "")
            return
        s.last_seen = now
        s.deadman_fired = False
        if self.stopping:
            for rid in heads[:, 0].tolist():
                self.error(s, rid, ResultCode.GATEWAY_STOPPING, "")
            return
        s.row_format = row_format
        self.take_rows(s, heads, data, now)

    def on_message(self, routing_id: bytes, data: bytes, user_id: str | None, extra_frames: int, now: float) -> None:
        s = self.sessions.get(routing_id) if user_id is None else self.session_of(routing_id, user_id)
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
        except m.UNDECODABLE as exc:
            self.reject_undecodable(to, data, exc)
            return
        if s is None:
            self.error(to, req.rid, ResultCode.NOT_AUTHENTICATED, "")
            return
        s.last_seen = now
        s.deadman_fired = False
        if self.stopping:
            self.error(s, req.rid, ResultCode.GATEWAY_STOPPING, "")
            return
        try:
            self.handlers[type(req)](s, req, now)
        except Exception as exc:  # a bug: this request gets an error, the others go on
            self.internal_error(s, [req.rid], exc)

    def internal_error(self, s: Session, rids: list[int], exc: Exception) -> None:
        """A handler failed on requests (a bug, or the matcher's input failing in a forward): each gets
        GATEWAY_INTERNAL_ERROR naming the exception and the gateway serves on (a command of that forward
        already in its FIFO and not sent gets COMMAND_LOST once a later one is answered).  The traceback
        goes to stderr, the first and then every 1,000th."""
        self.counters["internal_errors"] += 1
        if self.counters["internal_errors"] % 1000 == 1:
            print(f"xos gateway: a request of session {s.sid} (account {s.account}) failed:", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
            sys.stderr.flush()
        detail = f"{type(exc).__name__}: {exc}"[:200]
        for rid in rids:
            self.error(s, rid, ResultCode.GATEWAY_INTERNAL_ERROR, detail)

    def batch(self, s: Session, req: m.Batch, now: float) -> None:
        if len(req.requests) > self.g.max_batch:
            self.error(s, req.rid, ResultCode.BATCH_TOO_LARGE, f"{len(req.requests)} requests > {self.g.max_batch}")
            return
        for r in req.requests:
            self.command(s, r, now)

    def reject_undecodable(self, to: Session | bytes, data, exc: Exception) -> None:
        """Unknown tag or malformed: tell which, with the request id when it can be read."""
        try:
            raw = m.raw_decoder.decode(data)
        except m.UNDECODABLE:
            raw = None
        rid = raw[1] if isinstance(raw, list) and len(raw) > 1 and type(raw[1]) is int else 0
        rid = rid if -(1 << 63) <= rid < 1 << 63 else 0
        if isinstance(raw, list) and raw and isinstance(raw[0], str) and raw[0] not in m.REQUEST_TAGS:
            self.error(to, rid, ResultCode.UNKNOWN_MESSAGE, f"no request type {raw[0][:40]!r}")
        else:
            self.error(to, rid, ResultCode.MALFORMED_MESSAGE, m.explain(exc, raw)[:200])

    def within_rate(self, s: Session, rid: int, client_id: int, now: float, n: int = 1) -> bool:
        """Take ``n`` commands' tokens from the account's bucket, or reject the request RATE_LIMITED."""
        bucket = self.buckets.get(s.account)
        if bucket is None:
            bucket = self.buckets[s.account] = TokenBucket(self.g.burst)
        if bucket.take(now, self.g.rate_per_s, self.g.burst, n):
            return True
        self.counters["rate_limited"] += 1
        self.reject(s, rid, ResultCode.RATE_LIMITED,
                    f"more than {self.g.rate_per_s} commands/s (burst {self.g.burst}) for account {s.account}",
                    client_id)
        return False

    def command(self, s: Session, req, now: float) -> None:
        if not self.within_rate(s, req.rid, getattr(req, "client_id", 0), now):
            return
        t = type(req)
        account = s.account
        if t is m.PlaceOrder:
            row = (PLACE, req.side, req.tif, req.ord_type, req.stp, POST_ONLY if req.post_only else 0,
                   req.venue, req.market, 0, account, req.price, req.qty, req.client_id, req.expire_at)
        elif t is m.CancelOrder or t is m.AmendOrder:
            if (req.order_id == 0) == (req.client_id == 0):
                self.reject(s, req.rid, ResultCode.INVALID_REQUEST, "give exactly one of order_id and client_id")
                return
            ident, flags = (req.order_id, 0) if req.order_id else (req.client_id, BY_CLIENT_ID)
            if t is m.CancelOrder:
                row = (CANCEL, 0, 0, 0, 0, flags, 0, 0, 0, account, 0, 0, ident, 0)
            else:
                row = (AMEND, 0, 0, 0, 0, flags, 0, 0, 0, account, req.price, req.qty, ident, 0)
        elif t is m.MassCancel:
            flags = (0 if req.market else ALL_MARKETS) | (0 if req.venue is None else BY_VENUE)
            row = (MASS_CANCEL, 0, 0, 0, 0, flags, req.venue or 0, req.market, 0, account, 0, 0, 0, 0)
        else:  # a venue command: sent as the session's account, whatever it names
            f = req.fields()
            row = (req.kind, f.get("side", 0), 0, 0, 0, f.get("flags", 0), f.get("venue", 0), f.get("market", 0), 0,
                   account, f.get("price", 0), f.get("qty", 0), f.get("id", 0), f.get("aux", 0))
        self.next_forward.add(s.sid, req.rid, row)

    def multi_leg(self, s: Session, req: m.MultiLegOrder, now: float) -> None:
        """A multi-leg order: its header and Leg records go into the same forward, so one message into the
        matcher's input holds it whole (the matcher stage cuts batches only between units); only the header
        waits in the FIFO.  It counts as its legs against the rate limit."""
        if not self.within_rate(s, req.rid, req.client_id, now, len(req.legs)):
            return
        self.next_forward.add_multi_leg(s.sid, req.rid, multi_leg_commands(s.account, req.client_id, [
            Leg(leg.market, leg.side, leg.price, leg.qty, leg.client_id, leg.venue, leg.stp, leg.reduce_only)
            for leg in req.legs]))

    def order_rows(self, s: Session, req: m.OrderRows, now: float) -> None:
        """An OrderRows message: read and sized here; its rows are rate-limited, checked and made commands in C
        (``take_rows``)."""
        if req.format not in m.ROW_FORMATS:
            self.error(s, req.rid, ResultCode.MALFORMED_MESSAGE,
                       f"rows.format {req.format}: this gateway reads format {m.FIXED_ROWS} ({ROW_SIZE}-byte rows "
                       f"with a venue) and {m.PACKED_ROWS} (packed rows)")
            return
        try:
            rows = m.unpack_rows(req.rows, m.COMMAND_ROW_DTYPE, req.format, self.g.max_batch)
        except m.TooManyRows as exc:
            self.error(s, req.rid, ResultCode.BATCH_TOO_LARGE, f"rows: {exc} (max_batch)")
            return
        except ValueError as exc:
            self.error(s, req.rid, ResultCode.MALFORMED_MESSAGE, f"rows: {exc}")
            return
        s.row_format = req.format
        if len(rows):
            self.take_rows(s, np.array([[req.rid, len(rows)]], np.int64), rows.tobytes(), now)

    def take_rows(self, s: Session, heads: np.ndarray, data, now: float) -> None:
        """Rate-limit a session's row messages (``heads``: rid and row count of each, in order; ``data``:
        their rows joined) as one run of rows, refusing those past the account's tokens row by row, and
        add the rest to the next forward, checked and converted in C (``ForwardBatch.add_rows``)."""
        bucket = self.buckets.get(s.account)
        if bucket is None:
            bucket = self.buckets[s.account] = TokenBucket(self.g.burst)
        total = len(data) // ROW_SIZE
        allowed = bucket.take_many(now, self.g.rate_per_s, self.g.burst, total)
        if allowed < total:
            self.rate_limit_rows(s, np.frombuffer(data, m.COMMAND_ROW_DTYPE)[allowed:])
            starts = np.cumsum(heads[:, 1]) - heads[:, 1]
            heads = heads[starts < allowed].copy()  # the messages with a row within the tokens, the last one cut
            if len(heads):
                heads[-1, 1] = allowed - starts[len(heads) - 1]
            data = data[:allowed * ROW_SIZE]
        if not allowed:
            return
        batch, push_batch = self.next_forward, self.g.push_batch
        if len(batch) + allowed < push_batch:  # the usual case: all of them in the next forward
            self.add_rows(s, heads, data)
            return
        at = 0
        while len(heads):  # forwarded as they would be one message at a time: once push_batch are collected
            ends = np.cumsum(heads[:, 1])
            k = max(1, int(np.searchsorted(ends, push_batch - len(batch), side="right")))
            rows = int(ends[k - 1])
            self.add_rows(s, heads[:k], data[at * ROW_SIZE:(at + rows) * ROW_SIZE])
            at, heads = at + rows, heads[k:]
            if len(batch) >= push_batch:
                self.forward()

    def add_rows(self, s: Session, heads: np.ndarray, data) -> None:
        """Add row messages to the next forward; a message with a bad row is refused whole with an Error
        naming the row and the rule it breaks."""
        refused = self.next_forward.add_rows(s.sid, s.account, heads, data)
        for rid, row, rule, at in refused or ():
            detail = ROW_RULES[rule](np.frombuffer(data[at:at + ROW_SIZE], m.COMMAND_ROW_DTYPE)[0])
            self.error(s, rid, ResultCode.MALFORMED_MESSAGE, f"row {row}: {detail}")

    def rate_limit_rows(self, s: Session, rows: np.ndarray) -> None:
        self.counters["rate_limited"] += len(rows)
        detail = f"more than {self.g.rate_per_s} commands/s (burst {self.g.burst}) for account {s.account}"
        for rid, kind, ident in rows[["rid", "kind", "id"]].tolist():
            self.reject(s, rid, ResultCode.RATE_LIMITED, detail, ident if kind == PLACE else 0)

    def resume_intake(self) -> None:
        """Publish the forwards that waited for room in the matcher's ring; once all are in, read requests
        again (now: the ROUTER's fd gave its edge already)."""
        if self.matcher.flush():
            self.loop.call_soon(self.on_readable)

    def forward(self) -> None:
        """Push the collected commands into the matcher's input as one message."""
        batch = self.next_forward
        if not len(batch):
            return
        try:
            batch.enqueue(self.fifo)  # the FIFOs first: the events can only follow the send
            self.matcher.send_batch(batch)
            self.counters["commands"] += len(batch)
            self.counters["forwards"] += 1
        finally:
            batch.clear()

    def deadman_cancel(self, s: Session) -> None:
        """The session went silent past its dead-man interval: cancel all its account's orders."""
        s.deadman_fired = True
        self.counters["deadman_fired"] += 1
        self.cancel_all_of(s.account)

    def cancel_all_of(self, account: int) -> None:
        """The gateway's own mass cancel of every order of ``account`` (a dead-man switch's)."""
        self.next_forward.add(-1, 0, (MASS_CANCEL, 0, 0, 0, 0, ALL_MARKETS, 0, 0, 0, account, 0, 0, 0, 0))
        self.forward()

    def query(self, s: Session, req, now: float) -> None:
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
        elif t is m.MyTrades:
            self.ask_ledger(s, req)
        elif t is m.ClosedOrders:
            self.send(s, m.OrdersResult(rid=req.rid, orders=self.book.closed_orders(s.account, req.market, req.since,
                                                                                     req.limit)))
        elif t is m.OrderStatus:
            if (req.order_id == 0) == (req.client_id == 0):
                self.error(s, req.rid, ResultCode.INVALID_REQUEST, "give exactly one of order_id and client_id")
                return
            self.send(s, m.OrderStatusResult(rid=req.rid, order=self.book.find(s.account, req.order_id, req.client_id)))
        elif t is m.Balances:
            self.send(s, self.balances(s.account, req.rid))
        elif t is m.Positions:
            self.send(s, self.positions(s.account, req.rid))
        else:  # Markets
            self.send(s, m.MarketsResult(rid=req.rid, markets=self.market_infos()))

    def market_infos(self) -> list[m.MarketInfo]:
        assets = self.listings.assets
        out = []
        for k in sorted(self.listings.markets.values(), key=lambda k: k.market_id):
            # an asset is listed before its markets; only a gateway that lost ring events can lack it
            base, quote = (assets.get(a) or AssetDef(a, str(a), 0) for a in (k.base, k.quote))
            out.append(m.MarketInfo(market=k.market_id, base=base.symbol, quote=quote.symbol,
                                    base_decimals=base.decimals, quote_decimals=quote.decimals,
                                    tick_size=k.tick_size, lot_size=k.lot_size, min_size=k.min_size,
                                    kind=KIND_NAMES[k.kind], venue=k.venue, maker_bps=k.maker_bps,
                                    taker_bps=k.taker_bps))
        return out

    def margin_state(self) -> tuple | None:
        """The margin worker's last published views: (its cursor then, ``margin-view.npy``: equity, margin used,
        available, maintenance per account; ``margin-positions.npy``: ``POSITIONS_VIEW_DTYPE``;
        ``margin-balances.npy``: ``BALANCES_VIEW_DTYPE``, by account), mapped rather than read, again once
        ``margin-views.json`` changed; None before its first.  (Its checkpoint, the book pickled, is hundreds of
        MB for 100,000 accounts: unpickling it took the loop 0.9 s.)"""
        run = self.cfg.data_path / "run"
        paths = (run / "margin-views.json", run / "margin-view.npy", run / "margin-positions.npy",
                 run / "margin-balances.npy")
        try:
            key = paths[0].stat().st_mtime_ns
        except OSError:  # none yet, or replaced between two looks: the previous views are as good
            key = self.margin_cache[0]
        if not key:
            return None
        if self.margin_cache[0] != key:
            try:
                cursor = json.loads(paths[0].read_text())["cursor"]
                views = tuple(np.load(p, mmap_mode="r") if p.exists() else None for p in paths[1:])
            except (OSError, ValueError, KeyError) as exc:  # replaced as we read: the next query looks again
                print(f"xos gateway: the margin worker's views are not read: {exc}", file=sys.stderr, flush=True)
                return self.margin_cache[1]
            self.margin_cache = (key, (cursor, *views))
        return self.margin_cache[1]

    def balances(self, account: int, rid: int) -> m.BalancesResult:
        """Per-asset totals and holds, and the margin view, from the margin worker's last published views."""
        state = self.margin_state()
        if state is None:
            return m.BalancesResult(rid=rid, balances=[], as_of_seq=0)
        cursor, view, _, balances = state
        assets = self.listings.assets
        rows = []
        if balances is not None:
            at = np.searchsorted(balances["account"], [account, account + 1])
            rows = [m.BalanceInfo(asset=a, symbol=assets[a].symbol if a in assets else str(a), total=t, held=h)
                    for _, a, t, h in balances[at[0]:at[1]].tolist()]
        figures = dict(equity=0, margin_used=0, available=0, maintenance=0, valued=True)
        if view is not None:
            at = np.searchsorted(view["account"], account)
            if at < len(view) and view["account"][at] == account:  # (an older worker's view has no ``valued``)
                figures = {name: view[name][at].item() for name in figures if name in view.dtype.names}
        return m.BalancesResult(rid=rid, balances=rows, as_of_seq=cursor, **figures)

    def positions(self, account: int, rid: int) -> m.PositionsResult:
        """The account's open perpetual positions as the margin worker last valued them."""
        state = self.margin_state()
        if state is None or state[2] is None:
            return m.PositionsResult(rid=rid, positions=[], as_of_seq=state[0] if state else 0)
        cursor, _, positions, _ = state
        # a view published before a field existed (an older margin worker's) leaves its default
        fields = [f for f in m.PositionInfo.__struct_fields__ if f in positions.dtype.names]
        at = np.searchsorted(positions["account"], [account, account + 1])  # by account (a scan: 3.5 ms at 400 k)
        mine = positions[at[0]:at[1]]
        return m.PositionsResult(rid=rid, as_of_seq=cursor,
                                 positions=[m.PositionInfo(*row) for row in mine[fields].tolist()])

    def ask_ledger(self, s: Session, req: m.MyTrades) -> None:
        """Answer ``req`` from the settlement ledger in the ledger thread: a query of a thousand fills takes ~5 ms
        (15 ms in one market of eight), which the loop does not wait for (sqlite3 lets go of the GIL)."""
        def answer(done: concurrent.futures.Future) -> None:
            try:
                self.send(s, done.result())
            except Exception as exc:  # sqlite3.Error, a bug: this request gets an error, the others go on
                self.internal_error(s, [req.rid], exc)
            self.flush()

        def answer_on_loop(done: concurrent.futures.Future) -> None:
            try:
                self.loop.call_soon_threadsafe(answer, done)
            except RuntimeError:  # the loop closed: the gateway stopped with the query running
                pass

        self.ledger_thread.submit(self.my_trades, s.account, req).add_done_callback(answer_on_loop)

    def my_trades(self, account: int, req: m.MyTrades) -> m.TradesResult:
        """The account's newest fills from the settlement worker's ledger (indexed by account, in WAL mode: the
        worker does not wait for this read)."""
        as_of, fills = self.ledger.fills(account, min(req.limit or TRADES_MAX, TRADES_MAX), req.market, req.since)
        return m.TradesResult(rid=req.rid, as_of_seq=as_of, trades=[
            m.TradeInfo(f["seq"], f["order_id"], f["market"], f["side"], f["price"], f["qty"], f["fee"], f["role"],
                        f["ts"]) for f in fills])

    # ------------------------------------------------------------------ replies

    def send(self, s: Session, reply) -> None:
        s.outbox.append(reply)
        self.dirty.add(s)

    def reject(self, s: Session | None, rid: int, code: ResultCode, detail: str = "", client_id: int = 0,
               cmd_seq: int = 0, leg: int = 0) -> None:
        if s is None:
            return
        reason = MESSAGES[code] + (f": {detail}" if detail else "")
        self.counters["rejects"] += 1
        self.send(s, m.Reject(rid=rid, code=int(code), name=code.name, reason=reason, client_id=client_id,
                              cmd_seq=cmd_seq, leg=leg))

    def error(self, to: Session | bytes, rid: int, code: ResultCode, detail: str) -> None:
        """An Error reply to a session, or straight to a connection that has none (a revoked key)."""
        self.counters["errors"] += 1
        msg = m.Error(rid=rid, code=int(code), name=code.name, reason=MESSAGES[code] + (f": {detail}" if detail else ""))
        if type(to) is Session:
            self.send(to, msg)
        else:
            self.send_frames(to, m.encode(msg))

    def send_frames(self, routing_id: bytes, payload: bytes) -> bool:
        # copied, in C (pyzmq's send_multipart costs ~3 us; a zero-copy send of a large reply a round trip through
        # its garbage thread)
        err = send_pair(self.router.underlying, routing_id, payload)
        if err == zmq.EHOSTUNREACH:
            return False  # the peer is gone (ROUTER_MANDATORY tells us)
        if err == zmq.EAGAIN:
            self.counters["dropped_replies"] += 1  # the client does not read: its queue is full
        return True

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for s in dirty:
            out, s.outbox = s.outbox, []
            payload = m.encode(out[0] if len(out) == 1 else m.Replies(items=out))
            self.counters["replies"] += len(out)
            if not self.send_frames(s.routing_id, payload):
                self.drop_session(s)
        if dirty:
            self.look_for_requests()

    def look_for_requests(self) -> None:
        """After sends: sending may consume the ROUTER fd's edge, so look for requests that arrived meanwhile."""
        if readable(self.router.underlying):
            self.loop.call_soon(self.on_readable)

    # ------------------------------------------------------------------ events

    def route(self, events: np.ndarray, last: int) -> None:
        """Answer commands and report executions from one batch of ring events, the ``ROUTED`` kinds
        of those up to seq ``last`` (runs on the loop).  The order table, the pairing of each command's
        own first event with the sender's pending command and the execution reports are one pass in C
        (``ReplyRouter.route``, gateway/routing.pyx): a lone order's path meets cold caches, where each
        numpy call or typed memoryview costs several microseconds."""
        self.counters["ring_batches"] += 1
        if last <= self.routed_seq:
            return  # a restarted matcher republishing what we already routed
        after, self.routed_seq = self.routed_seq, last
        replies = self.replies
        n_acks, n_reports, listings = replies.route(events.view(np.uint8), after, self.quiet_until, self.book)
        if listings:  # every listing, whoever sent it (also while a restarted gateway rereads the ring)
            listed = (events["kind"] == ACCEPTED) & ((events["flags"] & ANY_LISTING) != 0) & (events["seq"] > after)
            learn_from_events(self.listings, events[listed])
        if replies.lost or replies.rejects:
            self.refuse(replies.lost, replies.rejects)
        # the usual batch, only acks and reports to sessions that take rows: sent from C, one message a
        # session (at a calm pace the outbox's structs, numpy and Python took ~30 us a batch)
        sent = replies.send_rows(self.router.underlying, n_acks, n_reports, self.by_sid, self.by_account) \
            if (n_acks or n_reports) and not self.dirty else None
        if sent is not None:
            n_replies, reports, dropped, gone = sent
            counters = self.counters
            counters["acks"] += n_acks
            counters["reports"] += reports
            counters["replies"] += n_replies
            counters["dropped_replies"] += dropped
            for s in gone:
                self.drop_session(s)
            if n_replies or dropped or gone:
                self.look_for_requests()
            return
        if n_acks:
            self.acknowledge(replies.acks[:n_acks], replies.ack_sid[:n_acks])
        if n_reports:
            self.report(replies.reports[:n_reports], replies.report_to[:n_reports])
        if self.dirty:
            self.flush()

    def refuse(self, lost: list, rejects: list) -> None:
        """Reject what the batch answered with a Rejected event, and COMMAND_LOST for the commands that never
        executed (``ReplyRouter.answer``, ``take_lost``); a dead-man switch's lost mass cancel goes again."""
        for sid, rid, kind, ident, account in lost:
            self.counters["lost"] += 1
            if sid < 0:
                self.cancel_all_of(account)
                continue
            self.reject(self.by_sid.get(sid), rid, ResultCode.COMMAND_LOST, "",
                        ident if kind == PLACE or kind == MULTI_LEG else 0)
        for sid, rid, kind, parent, code, client_id, cmd_seq, leg in rejects:
            if kind == MULTI_LEG:  # the event carries the failing leg's fields, its number in ``reason``
                detail = f"leg {leg} (client id {client_id})" if leg else "the order as a whole"
                self.reject(self.by_sid.get(sid), rid, ResultCode(code), detail, parent, cmd_seq, leg)
            else:
                self.reject(self.by_sid.get(sid), rid, ResultCode(code), "", client_id if kind == PLACE else 0,
                            cmd_seq)

    def acknowledge(self, acks: np.ndarray, sids: np.ndarray) -> None:
        """Each session's acks (ACK_ROW_DTYPE rows; ``sids``: their sessions), packed or as Ack structs."""
        k = len(acks)
        self.counters["acks"] += k
        one = sids[0]
        groups = ((int(one), acks),) if k == 1 or (sids == one).all() else \
            ((sid, select_records(acks, sids == sid)) for sid in np.unique(sids).tolist())
        for sid, rows in groups:
            s = self.by_sid.get(sid)
            if s is None:
                continue
            if s.row_format:
                self.send(s, m.AckRows(rows=m.pack_rows(rows, s.row_format), format=s.row_format))
            else:
                for rid, order_id, client_id, cmd_seq, durable_seq, count, ts in rows.tolist():
                    self.send(s, m.Ack(rid=rid, order_id=order_id, client_id=client_id, cmd_seq=cmd_seq,
                                       durable_seq=durable_seq, count=count, ts=ts))

    def report(self, rows: np.ndarray, to: np.ndarray) -> None:
        """Execution reports (REPORT_ROW_DTYPE rows, in event order; ``to``: their accounts) to every
        session of each account, packed or as structs."""
        count = len(rows)
        one = to[0]
        groups = ((int(one), rows),) if count == 1 or (to == one).all() else \
            ((a, select_records(rows, to == a)) for a in np.unique(to).tolist())
        for account, part in groups:
            group = self.by_account.get(account)
            if not group:
                continue
            self.counters["reports"] += len(part)
            packed = {}  # by format
            for s in group:
                if s.row_format:
                    if s.row_format not in packed:
                        packed[s.row_format] = m.ReportRows(rows=m.pack_rows(part, s.row_format), format=s.row_format)
                    self.send(s, packed[s.row_format])
                else:
                    for r in part.tolist():
                        self.send(s, m.execution_report(r))

    def catch_up(self, consumer) -> None:
        """On the first attach (ring thread): rebuild the order table and the listings as they stood at the ring
        cursor this gateway takes over (a gateway restarted on its own reads again, for the table and the listings
        only, what its predecessor routed: ``quiet_until``), from the newest snapshot at or before that cursor and
        the events since: from the ring while it still holds them, else made again from the journal as the
        matcher's own recovery makes them.  On a busy engine the ring holds seconds of events, the snapshots are
        a minute apart."""
        from engine.snapshot import load_newest

        resume = consumer.cursor
        state, _, problems = load_newest(self.cfg.data_path / "snapshots", max_event_seq=resume)
        for problem in problems:
            print(f"xos gateway: snapshot skipped: {problem}", file=sys.stderr, flush=True)
        base = int(state["counters"][2]) if state is not None else 0
        if state is not None:  # queued before any batch is routed, as everything below
            self.loop.call_soon_threadsafe(seed_from_state, self.listings, state)
            self.loop.call_soon_threadsafe(self.book.seed, state["orders"], self.known_accounts)
            history = load_history(self.history_path)  # else the orders closed before the snapshot are unknown
            if history is not None:
                counters = state["counters"]
                self.loop.call_soon_threadsafe(self.book.add_history, history, self.known_accounts,
                                               int(counters[3]), int(counters[2]))
        if resume <= base:
            return
        self.quiet_until = resume
        start = self.ring_start(consumer)
        if start is not None and base >= start:
            try:
                consumer.seek(base + 1)
                return  # routed (quietly up to ``resume``) as the ring delivers them
            except RingError:
                pass
        try:
            self.replay_journal(state, resume)
        except (RuntimeError, ValueError, OSError, MemoryError) as exc:  # (an engine of the matcher's size)
            print(f"xos gateway: orders placed before this gateway started are missing from its queries: events "
                  f"{base + 1}..{resume} neither in the ring nor made again from the journal ({exc})",
                  file=sys.stderr, flush=True)

    def ring_start(self, consumer) -> int | None:
        """The seq of the event the ring began after: the snapshot's that the running matcher restored (0: none),
        as its heartbeat says; None when that is not known yet (a matcher still replaying, or not the ring's)."""
        from engine.snapshot import HEADER_SIZE, SnapshotError, parse_header

        beat = self.matcher_beat(consumer.producer_pid)
        if "restored_from" not in beat:
            return None
        if not beat["restored_from"]:
            return 0
        try:
            with open(beat["restored_from"], "rb") as f:
                return parse_header(f.read(HEADER_SIZE)).event_seq
        except (OSError, SnapshotError):
            return None

    def matcher_beat(self, pid: int) -> dict:
        """The last heartbeat of matcher ``pid`` (empty: none of that process yet)."""
        from engine.process import read_heartbeats

        beat = read_heartbeats(self.cfg).get("matcher", {})
        return beat if beat.get("pid") == pid else {}

    def replay_journal(self, state: dict | None, resume: int) -> None:
        """Make the events after ``state`` (a snapshot's, None: from the first command) up to seq ``resume`` again
        and route them on the loop, quietly, a journal batch at a time: the snapshot's state in an engine of the
        matcher's size, then each journaled batch as the matcher ran it (the batches set the events: one
        BookLevel a level a batch).  Waits up to ``JOURNAL_WAIT_S`` for a batch not written yet."""
        from engine.journal import JournalReader
        from engine.matcher import Engine
        from engine.workercore import select_fresh

        size = self.cfg.engine.capacities()
        engine = Engine.from_state(state, **size) if state is not None else Engine(**size)
        reader = JournalReader(self.cfg.data_path / "journal")
        routed, give_up = engine.event_seq, time.monotonic() + JOURNAL_WAIT_S
        while routed < resume:
            for _, commands in reader.read_from(engine.cmd_seq + 1):
                events = engine.process(commands)
                chosen, last, _ = select_fresh(events[events["seq"] <= resume], routed, ROUTED)
                if len(chosen):
                    self.on_loop(self.route, chosen, last)
                routed = last
                if routed >= resume or self.quit.is_set():
                    return
            if time.monotonic() > give_up:
                raise RuntimeError(f"the journal ends at command {engine.cmd_seq}, event {routed}")
            time.sleep(0.01)  # the matcher publishes a batch once it is journaled: the file is about to have it

    def on_loop(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the loop and wait for it (from another thread)."""
        done = threading.Event()

        def call():
            try:
                fn(*args)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(call)
        while not done.wait(0.1) and not self.quit.is_set():
            pass

    # ------------------------------------------------------------------ the ring thread

    def ring_thread(self) -> None:
        """Attach to the matcher's ring (again after it restarts) and hand it to the loop, which routes its events
        as its doorbell rings (``on_events``); from here only watch that the matcher lives.  Nothing is routed
        before the matcher's heartbeat has its marks (``expect_answers``), which it writes before its replay: the
        answers to the commands it takes must come after the lost commands are known."""
        from engine.ring import RingConsumer, RingError

        first = True
        while not self.quit.is_set():
            try:
                consumer = RingConsumer.attach(self.cfg.ring_name, "gateway")
            except RingError:
                time.sleep(0.05)
                continue
            pid, beat = consumer.producer_pid, {}
            while consumer.producer_alive() and not consumer.producer_closed() and not self.quit.is_set():
                beat = self.matcher_beat(pid)
                if "command_ring_from" in beat:
                    break
                time.sleep(0.02)  # written as it starts, before its replay
            if "command_ring_from" not in beat:
                consumer.detach()
                time.sleep(0.05)
                continue
            if first:  # before any batch is routed: the loop seeds, then routes
                self.catch_up(consumer)
                first = False
            consumer.doorbell()
            self.loop.call_soon_threadsafe(self.start_routing, consumer, pid, int(beat["command_ring_from"]),
                                           int(beat["journal_end"]))
            replayed = False
            while not self.quit.wait(0.2):
                if consumer.producer_closed() or not consumer.producer_alive():
                    print("xos gateway: the matcher's ring is gone; reattaching", file=sys.stderr, flush=True)
                    break
                if not replayed:  # it replays while this routes: its end answers the lost when nothing follows
                    beat = self.matcher_beat(pid)
                    if "replayed_to" in beat:
                        self.loop.call_soon_threadsafe(self.replay_done, int(beat["replayed_to"]))
                        replayed = True
            if not self.quit.is_set():  # (when quitting, the loop has stopped routing already)
                stopped = threading.Event()
                self.loop.call_soon_threadsafe(self.stop_routing, stopped)
                while not stopped.wait(0.05) and not self.quit.is_set():
                    pass
            consumer.detach()

    def start_routing(self, consumer, matcher_pid: int, first_taken: int, journal_end: int) -> None:
        if self.quit.is_set():
            return  # queued as the gateway stopped: the ring thread has let the ring go
        self.expect_answers(matcher_pid, first_taken, journal_end)
        self.event_consumer = consumer
        self.ring_cursor = consumer.cursor
        self.ring_attached = True
        self.loop.add_reader(consumer.doorbell(), self.on_events)
        self.on_events()

    def stop_routing(self, stopped: threading.Event | None = None) -> None:
        if self.event_consumer is not None:
            self.loop.remove_reader(self.event_consumer.doorbell())
            self.event_consumer = None
            self.ring_attached = False
        if stopped is not None:
            stopped.set()

    def on_events(self) -> None:
        """The ring's doorbell rang (or more was waiting): route one batch of its events, consume them, and wait on
        the doorbell again, or come back after the loop's other work when more are waiting."""
        consumer = self.event_consumer
        if consumer is None:
            return
        consumer.disarm()
        try:
            events, _, last = consumer.take_kinds(TAKE_MAX, ROUTED)
            marks = self.lost_before
            if marks is not None and len(events) and events["cmd_seq"][-1] > marks[1]:  # past the replay
                cut = int(np.searchsorted(events["cmd_seq"], marks[1], side="right"))
                if cut:
                    self.route(events[:cut], int(events["seq"][cut - 1]))
                self.take_lost()  # before the answers to the commands the matcher takes now
                events = events[cut:]
            self.route_or_skip(events, last)
            consumer.release_to(last)
            self.ring_cursor = consumer.cursor
            if not self.seeded and self.routed_seq >= self.quiet_until:
                self.seeded = True
                self.loop.call_soon(self.on_readable)
            if self.matcher.backlog:  # the matcher took commands: maybe room now
                self.resume_intake()
        except Exception as exc:  # ends the process (housekeeping raises it); the supervisor restarts it
            self.failure = exc
            return
        if consumer.arm():
            return  # the matcher rings for the next events
        if consumer.available():
            self.loop.call_soon(self.on_events)
        # else the ring is closed: the ring thread attaches to the next

    def route_or_skip(self, events: np.ndarray, last: int) -> None:
        """``route`` a batch of the ring's events up to seq ``last``; with none to route, only move past them."""
        if len(events):
            self.route(events, last)
        elif last > self.routed_seq:
            self.routed_seq = last
        marks = self.lost_before
        if marks is not None and marks[2] is not None and self.routed_seq >= marks[2]:
            self.take_lost()

    def expect_answers(self, matcher_pid: int, first_taken: int, journal_end: int) -> None:
        """A matcher's heartbeat marks, written before its replay: the commands its predecessors took (those sent
        before ``MatcherFeed.sent_before``) have their events among the replay's (a command seq up to
        ``journal_end``) or were lost with them.  Once the replay is routed (an event of a later command comes, or
        the matcher says where its replay ended: ``replay_done``), the unanswered ones get COMMAND_LOST
        (``take_lost``); else a lost command with no later one of its account to show it lost
        (``ReplyRouter.answer``) would wait forever."""
        before = self.matcher.sent_before(matcher_pid, first_taken)
        if before is not None:
            self.lost_before = [before, journal_end, None]

    def replay_done(self, replayed_to: int) -> None:
        """The matcher's replay ended at event ``replayed_to``: the lost are known once that is routed."""
        if self.lost_before is not None:
            self.lost_before[2] = replayed_to
            if self.routed_seq >= replayed_to:
                self.take_lost()

    def take_lost(self) -> None:
        before = self.lost_before[0]
        self.lost_before = None
        lost = [p for q in self.fifo.values() if len(q) for p in q.take_sent_before(before)]
        if lost:
            self.refuse(lost, [])
            if self.dirty:
                self.flush()

    # ------------------------------------------------------------------ periodic work

    async def housekeeping(self) -> None:
        next_keys = time.monotonic() + self.g.keys_reload_s
        sweep_every = min(10.0, self.g.session_idle_s / 2)
        next_sweep = time.monotonic() + sweep_every
        next_history = time.monotonic() + self.g.history_s
        while True:
            armed = False
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + sweep_every
                self.forget_idle_sessions(now)
            if now >= next_history:
                next_history = now + self.g.history_s
                self.keep_history()
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
            if self.matcher.backlog:  # the ring full, none yet, or the matcher restarting
                self.resume_intake()
            if self.heartbeat.due():
                self.heartbeat.beat(state="stopping" if self.stopping else "running", **self.status())
            if self.failure is not None:
                raise self.failure
            if Stop.requested:
                return
            await asyncio.sleep(0.01 if armed else 0.05)

    def keep_history(self) -> None:
        """The closed orders, taken now (on the loop, which changes the table), written in a thread for the next
        gateway's status queries: the orders closed before the snapshot it starts from (``add_history``)."""
        if not self.journaling or self.routed_seq == self.history_taken or \
                (self.history_write is not None and not self.history_write.done()):
            return
        self.history_taken = self.routed_seq
        self.history_write = self.loop.run_in_executor(None, self.write_history, self.book.closed(), self.routed_seq)

    def write_history(self, rows: np.ndarray, seq: int) -> None:
        try:
            save_history(self.history_path, rows)
            self.history_seq = seq
        except OSError as exc:
            print(f"xos gateway: the closed orders are not kept for the next run: {exc}", file=sys.stderr, flush=True)

    def status(self) -> dict:
        return {"sessions": len(self.sessions), "accounts": len(self.known_accounts),
                "pending": sum(len(q) for q in self.fifo.values()), "routed_seq": self.routed_seq,
                "ring_cursor": self.ring_cursor, "ring_attached": self.ring_attached, "unsent": self.matcher.unsent,
                "history_seq": self.history_seq,
                **self.counters}

    async def main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.matcher.attach()  # now, so that `xos status` names this gateway (else at the first forward)
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
        self.stop_routing()
        self.quit.set()
        if self.history_write is not None:
            await self.history_write
        if self.journaling:
            self.write_history(self.book.closed(), self.routed_seq)
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
        self.matcher.close()
        self.ledger_thread.shutdown()
        self.ledger.close()
        self.router.close(linger=0)
        self.auth.stop()
        self.context.term()
        address = self.g.address
        if address.startswith("ipc://"):
            Path(address[len("ipc://"):]).unlink(missing_ok=True)

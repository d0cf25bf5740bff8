"""Risk: circuit breakers, price-band watch, order rates and open interest, from the event stream.

``RiskMonitor(config).apply(events)`` returns the commands to feed back through the matcher's input
(a ``COMMAND_DTYPE`` array: ``Halt`` / ``Resume`` with ``account = config.account``, the risk
worker's id); it never touches engine state.  Time is engine time: the events' ``ts`` (ns).

Circuit breaker, per market (parameters: ``config.params(market)``):

- The reference price is the first trade within the sliding window of ``window_s`` before the
  current trade (the trades of the window are kept in a deque).  A trade at ``p`` with
  ``|p - ref| * 10000 > move_bps * ref`` trips the breaker: one ``Halt`` command, state ``halt_sent``.
- ``MarketStatus(halted)`` for the market with our account: state ``halted`` from that event's
  ``ts``; once an event with ``ts >= halted_at + cooldown_s`` is seen, one ``Resume`` command,
  state ``resume_sent``; ``MarketStatus(live)`` returns the market to ``live`` with an empty
  window (the next trade is the new reference).
- A halt by anyone else (``MarketStatus`` with another account, or our Halt rejected
  ``MARKET_STATUS_UNCHANGED``) is ``external``: the breaker neither trips nor resumes until the
  market is live again.  A rejected Resume (someone resumed first) returns to ``live``.
- Replaying events (a restarted worker without state) can only repeat a Halt or Resume the engine
  already applied; the matcher rejects it ``MARKET_STATUS_UNCHANGED`` and changes nothing.

Band watch: a trade with ``|p - last| * 10000 > band_bps * last`` (the market's listed band, ``last``
the previous trade) is counted in ``band_breaches[market]``.

Order rate: ``Accepted`` order events per account per second of engine time (``ts // 1e9``):
``order_rate(account) -> (orders in the current second, peak per second, total)``.

Open interest per venue: ``sum(price * (remaining // lot))`` over open orders, in quote units,
followed per order through Accepted / Fill / Cancelled / Amended (``open_interest(venue)``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..codes import ResultCode
from ..records import COMMAND_DTYPE, Cmd, Ev
from ..workercore import RATE_COLUMNS, RISK_COLUMNS, IntTable, risk_orders
from . import ASSET_LISTING, MARKET_LISTING, EventCore, Listings, kind_mask

# the event columns the breakers read
_CONTROL_COLUMNS = ("seq", "kind", "code", "flags", "side", "market", "venue", "ts", "order_id", "account",
                    "client_id", "price", "qty", "remaining")

# Every kind but the book's levels: each command that changes a level also has one of these, with
# the same ts, so the cool-downs see the same clock without them.
FOLLOWED = kind_mask(Ev.ACCEPTED, Ev.REJECTED, Ev.FILL, Ev.CANCELLED, Ev.AMENDED, Ev.BALANCE, Ev.MARKET_STATUS)
RISK_WORKER_ID = -1001  # default ``account`` of the commands the risk worker sends

LIVE, HALT_SENT, HALTED, RESUME_SENT, EXTERNAL = "live", "halt_sent", "halted", "resume_sent", "external"


@dataclass(frozen=True)
class BreakerParams:
    move_bps: int = 1000
    window_s: float = 10.0
    cooldown_s: float = 30.0


@dataclass
class RiskConfig:
    """Defaults for every market, ``overrides`` per market id (a ``BreakerParams`` or a dict of some
    of its fields), ``account`` = the id the worker's commands carry."""

    move_bps: int = 1000
    window_s: float = 10.0
    cooldown_s: float = 30.0
    overrides: dict = field(default_factory=dict)
    account: int = RISK_WORKER_ID

    def params(self, market: int) -> BreakerParams:
        base = BreakerParams(self.move_bps, self.window_s, self.cooldown_s)
        o = self.overrides.get(market)
        if o is None:
            return base
        if isinstance(o, BreakerParams):
            return o
        return BreakerParams(**{**base.__dict__, **o})


@dataclass
class Breaker:
    move_bps: int
    window_ns: int
    cooldown_ns: int
    state: str = LIVE
    window: deque = field(default_factory=deque)  # (ts, price) of the trades within the window
    halted_at: int = 0
    trips: int = 0


class RiskMonitor(EventCore):
    """See the module docstring."""

    def __init__(self, config: RiskConfig | None = None, *, start_anywhere: bool = True):
        self.config = config or RiskConfig()
        self.start_anywhere = start_anywhere
        self.listings = Listings()
        self.breakers: dict[int, Breaker] = {}
        self.last: dict[int, int] = {}
        self.band_breaches: dict[int, int] = {}
        self.rates = IntTable(RATE_COLUMNS)  # account -> (second, count, peak, total)
        self.orders = IntTable(RISK_COLUMNS)  # order id -> (venue, lot, price, remaining)
        self.oi_table = IntTable(1)  # venue -> open interest
        self._lots = None  # (market ids sorted, their lot sizes), rebuilt after a listing
        self.halts_sent = 0
        self.resumes_sent = 0
        self._cursor = 0
        self._now = 0

    def __setstate__(self, state: dict) -> None:
        """Unpickle a checkpoint, also one written before orders, rates and open interest moved
        into ``IntTable``s."""
        self.__dict__.update(state)
        self._lots = None
        for name, cols in (("orders", RISK_COLUMNS), ("rates", RATE_COLUMNS)):
            old = getattr(self, name)
            if isinstance(old, dict):  # {key: [values]}
                table = IntTable(cols, len(old))
                if old:
                    table.update(np.array(list(old), np.int64), np.array(list(old.values()), np.int64))
                setattr(self, name, table)
        old_oi = self.__dict__.pop("oi", None)
        if "oi_table" not in self.__dict__:
            self.oi_table = IntTable(1, len(old_oi or ()))
            if old_oi:
                self.oi_table.update(np.array(list(old_oi), np.int64), np.array(list(old_oi.values()), np.int64))

    def breaker(self, market: int) -> Breaker:
        b = self.breakers.get(market)
        if b is None:
            p = self.config.params(market)
            b = Breaker(p.move_bps, int(p.window_s * 1e9), int(p.cooldown_s * 1e9))
            self.breakers[market] = b
        return b

    def state(self, market: int) -> str:
        return self.breakers[market].state if market in self.breakers else LIVE

    def order_rate(self, account: int) -> tuple[int, int, int]:
        r = self.rates.get(account)
        if r is None:
            return 0, 0, 0
        current = r[1] if r[0] == self._now // 1_000_000_000 else 0
        return current, r[2], r[3]

    def open_interest(self, venue: int = 0) -> int:
        r = self.oi_table.get(venue)
        return r[0] if r else 0

    @property
    def oi(self) -> dict[int, int]:
        """Open interest per venue."""
        return {v: x[0] for v, x in self.oi_table.to_dict().items()}

    # ----------------------------------------------------------------------------- apply

    FOLLOWED = FOLLOWED

    def _apply(self, new: np.ndarray, last: int) -> np.ndarray:
        """Apply the chosen events (see ``EventCore``); returns the Halt / Resume commands to send
        (COMMAND_DTYPE, possibly empty).

        Orders (open interest) and order rates follow every order event in ``engine.workercore``;
        the breakers, band watch and listings walk only the events that concern them (fills, market
        status, our rejected commands, listings), in order, and a halted market's cool-down is
        checked against every event's ts in between."""
        out: list[tuple[int, int, int]] = []  # (kind, market, ts)
        if len(new) == 0:
            self._cursor = last
            return self._commands(out)
        me = self.config.account
        listings = self.listings
        kind = new["kind"]
        order_id = new["order_id"]
        accepted = kind == Ev.ACCEPTED
        is_listing = accepted & (order_id == 0)
        is_fill = kind == Ev.FILL
        is_status = kind == Ev.MARKET_STATUS
        is_refused = (kind == Ev.REJECTED) & (new["account"] == me) & (new["code"] == ResultCode.MARKET_STATUS_UNCHANGED)
        balance = kind == Ev.BALANCE
        if balance.any():
            listings.accounts.update(np.unique(new["account"][balance]).tolist())
        control = np.flatnonzero(is_listing | is_fill | is_status | is_refused)
        waiting = [m for m, b in self.breakers.items() if b.state == HALTED]
        ts_all = new["ts"]
        # the orders' part, in C; listings first (an order's lot comes from its market's listing,
        # which precedes it)
        orders_part = new[(accepted & (order_id > 0)) | is_fill | (kind == Ev.CANCELLED) | (kind == Ev.AMENDED)]
        pending_orders = len(orders_part) > 0
        ctrl = new[control]
        pos = 0  # the first event not yet checked for cool-downs
        for j, (seq, kind_j, code, flags, side, market, venue, ts, oid, account, client_id, price, qty,
                remaining) in zip(control.tolist(), zip(*(ctrl[c].tolist() for c in _CONTROL_COLUMNS))):
            if waiting:
                self._cooldowns(waiting, ts_all, pos, j + 1, out)
            pos = j + 1
            if kind_j == Ev.FILL:
                self._trade(market, price, ts, out)
            elif kind_j == Ev.ACCEPTED:
                what = listings.classify(kind_j, flags, side, market, venue, oid, account, client_id, price, qty,
                                         remaining)
                if what in (ASSET_LISTING, MARKET_LISTING):
                    listings.learn(what, seq, side, market, venue, account, client_id, price, qty, remaining)
                    self._lots = None
            elif kind_j == Ev.MARKET_STATUS:
                b = self.breaker(market)
                if qty:  # halted
                    if account == me and b.state in (HALT_SENT, LIVE):
                        b.state = HALTED
                        b.halted_at = ts
                        waiting.append(market)
                    elif account != me:
                        b.state = EXTERNAL
                else:  # live again
                    b.state = LIVE
                    b.window.clear()
            else:  # our Halt / Resume refused MARKET_STATUS_UNCHANGED
                b = self.breakers.get(market)
                if b is not None:
                    if b.state == HALT_SENT:
                        b.state = EXTERNAL
                    elif b.state == RESUME_SENT:
                        b.state = LIVE
                        b.window.clear()
        if waiting:
            self._cooldowns(waiting, ts_all, pos, len(new), out)
        if pending_orders:
            risk_orders(self.orders, self.oi_table, self.rates, np.ascontiguousarray(orders_part),
                        self._lots_of(orders_part))
        self._now = int(ts_all.max())
        self._cursor = last
        return self._commands(out)

    def _cooldowns(self, waiting: list, ts: np.ndarray, lo: int, hi: int, out: list) -> None:
        """Events ``lo .. hi-1`` of the batch, each checked (in order) against the halted markets of
        ``waiting``: the first one at or after a market's ``halted_at + cooldown`` sends its Resume."""
        due = []
        for k, m in enumerate(waiting):
            b = self.breakers[m]
            if b.state != HALTED:
                due.append((-1, k, m))
                continue
            hit = np.flatnonzero(ts[lo:hi] >= b.halted_at + b.cooldown_ns)
            if len(hit):
                due.append((lo + int(hit[0]), k, m))
        if not due:
            return
        for at, _, m in sorted(due):
            if at >= 0:
                self.breakers[m].state = RESUME_SENT
                out.append((Cmd.RESUME, m, int(ts[at])))
            waiting.remove(m)

    def _lots_of(self, events: np.ndarray) -> np.ndarray:
        """The lot size of each event's market (1 for a market never listed)."""
        if self._lots is None:
            ms = self.listings.markets
            ids = np.array(sorted(ms), np.int64)
            self._lots = (ids, np.array([ms[m].lot_size for m in ids.tolist()], np.int64),
                          np.array([ms[m].seq for m in ids.tolist()], np.int64))
        ids, lots, listed_at = self._lots
        market = events["market"].astype(np.int64)
        out = np.ones(len(events), np.int64)
        if len(ids):
            at = np.searchsorted(ids, market)
            inside = at < len(ids)
            hit = np.zeros(len(events), bool)
            hit[inside] = ids[at[inside]] == market[inside]
            hit[hit] = listed_at[at[hit]] < events["seq"][hit]  # listed before the event
            out[hit] = lots[at[hit]]
        return out

    def _trade(self, market: int, price: int, ts: int, out: list) -> None:
        m = self.listings.markets.get(market)
        last = self.last.get(market, 0)
        if m is not None and m.band_bps > 0 and last > 0 and abs(price - last) * 10000 > m.band_bps * last:
            self.band_breaches[market] = self.band_breaches.get(market, 0) + 1
        self.last[market] = price
        b = self.breaker(market)
        if b.state != LIVE:
            return
        w = b.window
        while w and w[0][0] < ts - b.window_ns:
            w.popleft()
        ref = w[0][1] if w else price
        w.append((ts, price))
        if abs(price - ref) * 10000 > b.move_bps * ref:
            b.state = HALT_SENT
            b.trips += 1
            out.append((Cmd.HALT, market, ts))

    def _commands(self, out: list) -> np.ndarray:
        cmds = np.zeros(len(out), COMMAND_DTYPE)
        for i, (kind, market, ts) in enumerate(out):
            cmds[i]["kind"] = kind
            cmds[i]["market"] = market
            cmds[i]["ts"] = ts
            cmds[i]["account"] = self.config.account
        self.halts_sent += sum(1 for k, _, _ in out if k == Cmd.HALT)
        self.resumes_sent += sum(1 for k, _, _ in out if k == Cmd.RESUME)
        return cmds


__all__ = ["BreakerParams", "RISK_WORKER_ID", "RiskConfig", "RiskMonitor"]

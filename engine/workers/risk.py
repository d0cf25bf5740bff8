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
from . import ASSET_LISTING, MARKET_LISTING, Listings, fresh_events, rows

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


class RiskMonitor:
    """See the module docstring."""

    def __init__(self, config: RiskConfig | None = None, *, start_anywhere: bool = True):
        self.config = config or RiskConfig()
        self.start_anywhere = start_anywhere
        self.listings = Listings()
        self.breakers: dict[int, Breaker] = {}
        self.last: dict[int, int] = {}
        self.band_breaches: dict[int, int] = {}
        self.rates: dict[int, list] = {}  # account -> [second, count, peak, total]
        self.orders: dict[int, list] = {}  # order id -> [venue, lot, price, remaining]
        self.oi: dict[int, int] = {}
        self.halts_sent = 0
        self.resumes_sent = 0
        self._cursor = 0
        self._now = 0

    @property
    def cursor(self) -> int:
        return self._cursor

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
        return self.oi.get(venue, 0)

    # ----------------------------------------------------------------------------- apply

    def apply(self, events: np.ndarray) -> np.ndarray:
        """Apply a batch (EVENT_DTYPE, seq order; seq <= cursor skipped, a gap raises); returns the
        Halt / Resume commands to send (COMMAND_DTYPE, possibly empty)."""
        if self._cursor == 0 and self.start_anywhere and len(events):
            self._cursor = int(events["seq"][0]) - 1
        new = fresh_events(events, self._cursor)
        out: list[tuple[int, int, int]] = []  # (kind, market, ts)
        if len(new) == 0:
            return self._commands(out)
        me = self.config.account
        listings = self.listings
        orders = self.orders
        oi = self.oi
        waiting = [m for m, b in self.breakers.items() if b.state == HALTED]

        def set_order(o, price, remaining):
            oi[o[0]] = oi.get(o[0], 0) + price * (remaining // o[1]) - o[2] * (o[3] // o[1])
            o[2] = price
            o[3] = remaining

        for (seq, kind, code, flags, side, reason, market, venue, ts, order_id, account, client_id, price, qty,
             remaining, maker_order, maker_account, maker_fee, taker_fee) in rows(new):
            if waiting:
                for m in list(waiting):
                    b = self.breakers[m]
                    if b.state != HALTED:
                        waiting.remove(m)
                    elif ts >= b.halted_at + b.cooldown_ns:
                        b.state = RESUME_SENT
                        out.append((Cmd.RESUME, m, ts))
                        waiting.remove(m)
            if kind == Ev.FILL:
                self._trade(market, price, ts, out)
                o = orders.get(order_id)
                if o is not None:
                    set_order(o, o[2], remaining)
                    if remaining == 0:
                        del orders[order_id]
                k = orders.get(maker_order)
                if k is not None:
                    set_order(k, k[2], k[3] - qty)
                    if k[3] == 0:
                        del orders[maker_order]
            elif kind == Ev.ACCEPTED:
                if order_id > 0:
                    m = listings.markets.get(market)
                    o = [venue, m.lot_size if m else 1, price, 0]
                    orders[order_id] = o
                    set_order(o, price, qty)
                    r = self.rates.get(account)
                    sec = ts // 1_000_000_000
                    if r is None:
                        r = self.rates[account] = [sec, 0, 0, 0]
                    if r[0] != sec:
                        r[0], r[1] = sec, 0
                    r[1] += 1
                    r[3] += 1
                    if r[1] > r[2]:
                        r[2] = r[1]
                else:
                    what = listings.classify(kind, flags, side, market, venue, order_id, account, client_id, price,
                                             qty, remaining)
                    if what in (ASSET_LISTING, MARKET_LISTING):
                        listings.learn(what, seq, side, market, venue, account, client_id, price, qty, remaining)
            elif kind == Ev.CANCELLED or kind == Ev.AMENDED:
                o = orders.get(order_id)
                if o is not None:
                    set_order(o, price, remaining)
                    if remaining == 0:
                        del orders[order_id]
            elif kind == Ev.BALANCE:
                listings.accounts.add(account)
            elif kind == Ev.MARKET_STATUS:
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
            elif kind == Ev.REJECTED and account == me and code == ResultCode.MARKET_STATUS_UNCHANGED:
                b = self.breakers.get(market)
                if b is not None:
                    if b.state == HALT_SENT:
                        b.state = EXTERNAL
                    elif b.state == RESUME_SENT:
                        b.state = LIVE
                        b.window.clear()
        self._now = int(new["ts"].max())
        self._cursor = int(new["seq"][-1])
        return self._commands(out)

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

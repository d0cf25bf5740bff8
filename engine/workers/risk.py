"""Risk: circuit breakers, price-band watch, order rates and open interest, from the event stream.

``RiskMonitor(config).apply(events)`` returns the commands to feed back through the matcher's input
(a ``COMMAND_DTYPE`` array: ``Halt`` / ``Resume`` with ``account = config.account``, the risk
worker's id); it never touches engine state.  Time is engine time: the events' ``ts`` (ns).

Circuit breaker, per market (parameters: ``config.params(market)``):

- The reference price is the first trade within the sliding window of ``window_s`` before the
  current trade (the window keeps the first trade of each distinct ts).  A trade at ``p`` with
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

Venue breakers, per (venue, market) (issue 7, risk groups): a venue's ``VenueMarketRisk`` settings, followed
from their ``Venue`` echo (flags 80: ``client_id`` move bps, ``remaining`` window ms | cool-down ms << 32),
give it its own breaker on the market's trades (the shared book's price), with the rule above; a trip
sends ``VenueMarketHalt(venue, market)`` and the cool-down ``VenueMarketResume``, which stop and restart
only that venue's new orders there (``MarketStatus`` with flags 81 / 82 and the venue answers them).
Move 0 turns a venue's breaker off (a cool-down under way still ends with its Resume). These commands
carry their kind in ``id`` (echoed as ``client_id`` by a ``Rejected``), so a refused one names its breaker.
The market-wide breaker above is unchanged: it applies to every market, venue settings or not, and its
Halt stops every venue's orders there.

Band watch: a trade with ``|p - last| * 10000 > band_bps * last`` (the market's listed band, ``last``
the previous trade) is counted in ``band_breaches[market]``.

Order rate: ``Accepted`` order events per account per second of engine time (``ts // 1e9``):
``order_rate(account) -> (orders in the current second, peak per second, total)``.

Open interest per venue: ``sum(price * (remaining // lot))`` over open orders, in quote units,
followed per order through Accepted / Fill / Cancelled / Amended (``open_interest(venue)``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..codes import ResultCode
from ..records import COMMAND_DTYPE, Cmd, Ev, select_records, unpack_breaker_windows
from ..workercore import RATE_COLUMNS, RISK_COLUMNS, IntTable, band_breaches, breaker_walk, risk_orders, risk_walks
from . import ASSET_LISTING, MARKET_LISTING, EventCore, Listings, kind_mask

# the event columns the breakers read
_CONTROL_COLUMNS = ("seq", "kind", "code", "flags", "side", "market", "venue", "ts", "order_id", "account",
                    "client_id", "price", "qty", "remaining")

# Every kind but the book's levels (most of the stream): each command that changes a level also has
# an event of another kind with the same ts, so the cool-downs see the same clock without them.
FOLLOWED = kind_mask(*(k for k in Ev if k != Ev.BOOK_LEVEL))
_ACCEPTED, _BALANCE, _MARKET_STATUS = int(Ev.ACCEPTED), int(Ev.BALANCE), int(Ev.MARKET_STATUS)
_STATUS_UNCHANGED = int(ResultCode.MARKET_STATUS_UNCHANGED)
_VENUE, _VENUE_RISK = int(Ev.VENUE), int(Cmd.VENUE_MARKET_RISK)
_VENUE_HALT, _VENUE_RESUME = int(Cmd.VENUE_MARKET_HALT), int(Cmd.VENUE_MARKET_RESUME)
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
    # The first trade of each ts within the window (trades at one ts share it, and a reference is
    # always the first trade at or after a time), as two int64 arrays.
    window_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    window_price: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    halted_at: int = 0
    trips: int = 0

    def clear_window(self) -> None:
        self.window_ts = self.window_price = np.zeros(0, np.int64)

    def __setstate__(self, state: dict) -> None:
        """Unpickle, also a checkpoint whose window is a deque of (ts, price) of every trade."""
        old = state.pop("window", None)
        self.__dict__.update(state)
        if old is not None:
            ts = np.array([t for t, _ in old], np.int64)
            price = np.array([p for _, p in old], np.int64)
            first = np.concatenate([[True], ts[1:] != ts[:-1]]) if len(ts) else np.zeros(0, bool)
            self.window_ts, self.window_price = ts[first], price[first]


class RiskMonitor(EventCore):
    """See the module docstring."""

    def __init__(self, config: RiskConfig | None = None, *, start_anywhere: bool = True):
        self.config = config or RiskConfig()
        self.start_anywhere = start_anywhere
        self.listings = Listings()
        self.breakers: dict[int, Breaker] = {}  # market -> its market-wide breaker
        self.venue_breakers: dict[tuple[int, int], Breaker] = {}  # (venue, market) -> the venue's breaker there
        self.venue_markets: dict[int, list] = {}  # market -> the (venue, market) keys with a venue breaker
        self.last: dict[int, int] = {}
        self.band_breaches: dict[int, int] = {}
        self.rates = IntTable(RATE_COLUMNS)  # account -> (second, count, peak, total)
        self.orders = IntTable(RISK_COLUMNS)  # order id -> (venue, lot, price, remaining)
        self.oi_table = IntTable(1)  # venue -> open interest
        self._lots = None  # (market ids sorted, their lot sizes and listing seqs), rebuilt after a listing
        self.halts_sent = 0
        self.resumes_sent = 0
        self._cursor = 0
        self._now = 0

    def __setstate__(self, state: dict) -> None:
        """Unpickle a checkpoint, also one written before orders, rates and open interest moved
        into ``IntTable``s."""
        self.__dict__.update(state)
        self._lots = None
        self.__dict__.setdefault("venue_breakers", {})  # checkpoints from before venue breakers
        self.__dict__.setdefault("venue_markets", {})
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

    def state(self, market: int, venue: int | None = None) -> str:
        """The market-wide breaker's state, or with ``venue`` that venue's breaker's in the market."""
        if venue is not None:
            b = self.venue_breakers.get((venue, market))
            return b.state if b is not None else LIVE
        return self.breakers[market].state if market in self.breakers else LIVE

    def _breaker_of(self, key) -> Breaker:
        """A market id names the market-wide breaker, a (venue, market) pair a venue's."""
        return self.venue_breakers[key] if isinstance(key, tuple) else self.breakers[key]

    def _venue_settings(self, venue: int, market: int, move_bps: int, windows: int) -> None:
        """A VenueMarketRisk echo: the venue's breaker in the market made or retuned (its state kept)."""
        window_ms, cooldown_ms = unpack_breaker_windows(windows)
        key = (venue, market)
        b = self.venue_breakers.get(key)
        if b is None:
            if move_bps <= 0:
                return
            b = self.venue_breakers[key] = Breaker(move_bps, window_ms * 1_000_000, cooldown_ms * 1_000_000)
            self.venue_markets.setdefault(market, []).append(key)
            return
        if b.move_bps <= 0:
            b.clear_window()  # off until now: the next trade is the new reference
        b.move_bps, b.window_ns, b.cooldown_ns = move_bps, window_ms * 1_000_000, cooldown_ms * 1_000_000

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
        out: list[tuple] = []  # (event index, 0 resume / 1 halt, kind, venue, market, ts)
        if len(new) == 0:
            self._cursor = last
            return self._commands(out)
        me = self.config.account
        listings = self.listings
        # The fills between two other control events are one run, applied at once (``_trades``);
        # the others (listings, market status, our refused commands, venue settings) are rare and go one by one.
        others, fills = np.empty(len(new), np.int64), np.empty(len(new), np.int64)
        n_others, n_fills, balances, ts_max = risk_walks(new, me, _STATUS_UNCHANGED, _VENUE_RISK, others, fills)
        others, fills = others[:n_others], fills[:n_fills]
        if balances:
            listings.accounts.update(np.unique(new["account"][new["kind"] == _BALANCE]).tolist())
        waiting = [m for m, b in self.breakers.items() if b.state == HALTED]
        waiting += [key for key, b in self.venue_breakers.items() if b.state == HALTED]
        ts_all = new["ts"]
        ctrl = list(zip(*(select_records(new, others)[c].tolist() for c in _CONTROL_COLUMNS))) if len(others) else []
        pos = 0  # the first event not yet checked for cool-downs
        for j, (seq, kind_j, code, flags, side, market, venue, ts, oid, account, client_id, price, qty,
                remaining) in zip(others.tolist() + [len(new)], ctrl + [(None,) * 14]):
            run = fills[(fills >= pos) & (fills < j)]
            if waiting:
                self._cooldowns(waiting, ts_all, pos, j + 1 if j < len(new) else j, out)
            if len(run):
                self._trades(run, new["market"][run].astype(np.int64), new["price"][run], ts_all[run], out)
            pos = j + 1
            if kind_j is None:
                break
            if kind_j == _ACCEPTED:
                what = listings.classify(kind_j, flags, side, market, venue, oid, account, client_id, price, qty,
                                         remaining)
                if what in (ASSET_LISTING, MARKET_LISTING):
                    listings.learn(what, seq, side, market, venue, account, client_id, price, qty, remaining)
                    self._lots = None
            elif kind_j == _VENUE:
                self._venue_settings(venue, market, client_id, remaining)
            elif kind_j == _MARKET_STATUS:
                if flags in (_VENUE_HALT, _VENUE_RESUME):  # one venue's halt in the market
                    key = (venue, market)
                    b = self.venue_breakers.get(key)
                    if b is None:
                        continue
                else:
                    key = market
                    b = self.breaker(market)
                if qty:  # halted
                    if account == me and b.state in (HALT_SENT, LIVE):
                        b.state = HALTED
                        b.halted_at = ts
                        waiting.append(key)
                    elif account != me:
                        b.state = EXTERNAL
                else:  # live again
                    b.state = LIVE
                    b.clear_window()
            else:  # our Halt / Resume refused MARKET_STATUS_UNCHANGED
                b = (self.venue_breakers.get((venue, market)) if client_id in (_VENUE_HALT, _VENUE_RESUME)
                     else self.breakers.get(market))
                if b is not None:
                    if b.state == HALT_SENT:
                        b.state = EXTERNAL
                    elif b.state == RESUME_SENT:
                        b.state = LIVE
                        b.clear_window()
        # the orders' part, in C (it skips the kinds it does not follow); after the listings, which
        # give an order its market's lot
        risk_orders(self.orders, self.oi_table, self.rates, new, *self._lot_table())
        self._now = ts_max
        self._cursor = last
        return self._commands(out)

    def _cooldowns(self, waiting: list, ts: np.ndarray, lo: int, hi: int, out: list) -> None:
        """Events ``lo .. hi-1`` of the batch, each checked (in order) against the halted breakers of
        ``waiting``: the first one at or after a breaker's ``halted_at + cooldown`` sends its Resume."""
        due = []
        for k, m in enumerate(waiting):
            b = self._breaker_of(m)
            if b.state != HALTED:
                due.append((-1, k, m))
                continue
            hit = np.flatnonzero(ts[lo:hi] >= b.halted_at + b.cooldown_ns)
            if len(hit):
                due.append((lo + int(hit[0]), k, m))
        if not due:
            return
        for at, k, m in sorted(due):
            if at >= 0:
                self._breaker_of(m).state = RESUME_SENT
                if isinstance(m, tuple):
                    out.append((at, 0, _VENUE_RESUME, m[0], m[1], int(ts[at])))
                else:
                    out.append((at, 0, Cmd.RESUME, 0, m, int(ts[at])))
            waiting.remove(m)

    def _lot_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The listed markets' ids (sorted), lot sizes and listing seqs, as ``risk_orders`` reads them."""
        if self._lots is None:
            ms = self.listings.markets
            ids = np.array(sorted(ms), np.int64)
            self._lots = (ids, np.array([ms[m].lot_size for m in ids.tolist()], np.int64),
                          np.array([ms[m].seq for m in ids.tolist()], np.int64))
        return self._lots

    def _trades(self, at: np.ndarray, market: np.ndarray, price: np.ndarray, ts: np.ndarray, out: list) -> None:
        """A run of fills (batch positions ``at``, in order): band watch, last price and breakers,
        one market at a time with numpy."""
        by_market = np.argsort(market, kind="stable")
        sorted_markets = market[by_market]
        starts = np.flatnonzero(np.concatenate([[True], sorted_markets[1:] != sorted_markets[:-1]]))
        for lo, hi in zip(starts.tolist(), starts[1:].tolist() + [len(by_market)]):
            rows = by_market[lo:hi]
            self._market_trades(int(sorted_markets[lo]), at[rows], price[rows], ts[rows], out)

    def _market_trades(self, market: int, at: np.ndarray, price: np.ndarray, ts: np.ndarray, out: list) -> None:
        m = self.listings.markets.get(market)
        if m is not None and m.band_bps > 0:
            breaches = band_breaches(price, self.last.get(market, 0), m.band_bps)
            if breaches:
                self.band_breaches[market] = self.band_breaches.get(market, 0) + breaches
        self.last[market] = int(price[-1])
        self._run_breaker(self.breaker(market), Cmd.HALT, 0, market, at, price, ts, out)
        for venue, _ in self.venue_markets.get(market, ()):
            b = self.venue_breakers[(venue, market)]
            if b.move_bps > 0:
                self._run_breaker(b, _VENUE_HALT, venue, market, at, price, ts, out)

    @staticmethod
    def _run_breaker(b: Breaker, halt_kind: int, venue: int, market: int, at: np.ndarray, price: np.ndarray,
                     ts: np.ndarray, out: list) -> None:
        """One breaker over a run of the market's trades: the first trade beyond ``move_bps`` of its reference
        sends ``halt_kind`` (Halt, or VenueMarketHalt for ``venue``) and stops it."""
        if b.state != LIVE:
            return
        end, b.window_ts, b.window_price = breaker_walk(b.window_ts, b.window_price, ts, price, b.window_ns, b.move_bps)
        if end >= 0:  # the breaker stops at a trip
            b.state = HALT_SENT
            b.trips += 1
            out.append((int(at[end]), 1, halt_kind, venue, market, int(ts[end])))

    def _commands(self, out: list) -> np.ndarray:
        """The batch's Halt / Resume (and venue Halt / Resume) commands in the order of the events that
        caused them (at one event a Resume goes first)."""
        if not out:
            return np.zeros(0, COMMAND_DTYPE)
        out = [cmd[2:] for cmd in sorted(out, key=lambda cmd: cmd[:2])]
        cmds = np.zeros(len(out), COMMAND_DTYPE)
        for i, (kind, venue, market, ts) in enumerate(out):
            cmds[i]["kind"] = kind
            cmds[i]["venue"] = venue
            cmds[i]["market"] = market
            cmds[i]["ts"] = ts
            cmds[i]["account"] = self.config.account
            if kind in (_VENUE_HALT, _VENUE_RESUME):
                cmds[i]["id"] = kind  # echoed by a Rejected: names the venue breaker a refusal is for
        self.halts_sent += sum(1 for k, *_ in out if k in (Cmd.HALT, _VENUE_HALT))
        self.resumes_sent += sum(1 for k, *_ in out if k in (Cmd.RESUME, _VENUE_RESUME))
        return cmds


__all__ = ["BreakerParams", "RISK_WORKER_ID", "RiskConfig", "RiskMonitor"]

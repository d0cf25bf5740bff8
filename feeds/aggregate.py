"""Checks prices, converts them to ticks, and aggregates them per market into OraclePrice commands.

State is kept in numpy arrays, one row per fed market and one column per source of that market;
the checks and the rounds are C loops over them (``feeds.kernels``), so a round over a thousand
markets with its intake takes tens of microseconds.

**Ticks.** A price (a float, quote per base unit) becomes the market's price units (quote's
smallest unit per lot, as orders use) as ``ticks = round_half_even(price × f)`` with ``f`` the
double nearest to ``10^quote_decimals × lot_size / (10^base_decimals × tick_size)``, one IEEE
multiplication and ``rint`` (round half to even), so every run and machine gets the same ticks; the command's
price is ``ticks × tick_size``.  Tick counts are capped at 2^53 (where a double stops telling
neighbouring ticks apart) and at ``MAX_MONEY // tick_size``.

**Checks**, in order, the first failing one names the reason (counted per source, the feed goes
on): ``unknown_market`` (the source does not feed that market), ``not_finite``, ``not_positive``,
``bad_timestamp`` (≤ 0), ``future_timestamp`` (beyond ``future_tolerance_s`` ahead of the feed's
clock), ``too_large``, ``below_one_tick`` (rounds to 0 ticks), ``out_of_order`` (older than the
source's last price for the market).

**Aggregation**, per market every ``interval_s``: the sources whose last price is at most
``stale_after_s`` old are fresh (the others are dropped and counted ``stale_drops``); a source
further than ``max_deviation_bps`` from the median of the fresh ones is dropped and counted
``deviation_drops``; if at least ``quorum`` sources remain, the median of those is the oracle
price (for an even count the mean of the two middle ones, ties to the even tick), else the
market's oracle is stale and nothing is sent.  The command's source time (``aux``) is the oldest
timestamp among the sources used, so the price is no older than it claims; an update whose source
time would not be after the last one sent for the market is held back (counted) rather than sent,
because the matcher refuses oracle updates that do not move forward in time.  Rounds run on each
market's grid (``interval_s`` from its first round); one the feed was too late for is skipped.
"""
from __future__ import annotations

import numpy as np

from engine.config import Config
from engine.records import COMMAND_DTYPE

from .kernels import REASONS, check_and_keep, run_round
from .sources import Rejects

MAX_MONEY = 1 << 62
MAX_TICKS = 1 << 53
# the first offending row of each refusal reason, in words (``ingest``)
REFUSALS = {
    "unknown_market": "the source feeds no market {market}",
    "not_finite": "market {market}: price {price!r} is not a finite number",
    "not_positive": "market {market}: price {price!r} is not positive",
    "bad_timestamp": "market {market}: timestamp {ts} is not a positive ns time",
    "future_timestamp": "market {market}: timestamp {ts} is {ahead:.3f} s ahead of the feed's clock",
    "too_large": "market {market}: price {price!r} is beyond the market's largest price",
    "below_one_tick": "market {market}: price {price!r} rounds to 0 ticks",
    "out_of_order": "market {market}: timestamp {ts} is older than the source's last ({last})",
}


class Aggregator:
    def __init__(self, cfg: Config):
        f = cfg.feeds
        listed = {m.id: m for m in cfg.markets}
        decimals = {a.symbol: a.decimals for a in cfg.assets}
        self.account = f.account
        self.future_ns = int(f.future_tolerance_s * 1e9)
        feeds = f.markets
        n, width = len(feeds), max((len(m.sources) for m in feeds), default=1)
        self.sources = [[name for name in m.sources] for m in feeds]  # per row, column -> source
        self.feed_id = np.array([m.id for m in feeds], dtype=np.int64)
        self.market = np.array([m.market for m in feeds], dtype=np.int64)
        self.venue = np.array([listed[m.market].venue for m in feeds], dtype=np.int64)
        self.tick_size = np.array([listed[m.market].tick_size for m in feeds], dtype=np.int64)
        self.factor = np.array([
            10.0 ** decimals[listed[m.market].quote] * listed[m.market].lot_size
            / (10.0 ** decimals[listed[m.market].base] * listed[m.market].tick_size) for m in feeds])
        self.max_ticks = np.minimum(MAX_TICKS, MAX_MONEY // np.maximum(self.tick_size, 1))
        self.quorum = np.array([m.quorum for m in feeds], dtype=np.int64)
        self.stale_ns = np.array([int(m.stale_after_s * 1e9) for m in feeds], dtype=np.int64)
        self.max_deviation_bps = np.array([m.max_deviation_bps for m in feeds], dtype=np.int64)
        self.interval_ns = np.array([int(m.interval_s * 1e9) for m in feeds], dtype=np.int64)
        self.n_sources = np.array([len(m.sources) for m in feeds], dtype=np.int64)
        # where each source's observations go: market id -> (row, column), -1 where it feeds none
        top = max((m.market for m in feeds), default=0) + 1
        self.slot_of: dict[str, np.ndarray] = {s.name: np.full(top, -1, dtype=np.int64) for s in f.sources}
        for row, m in enumerate(feeds):
            for col, name in enumerate(m.sources):
                self.slot_of[name][m.market] = row * width + col
        self.width = width
        # per (row, column): the source's last accepted price and its time, counters
        self.ticks = np.zeros((n, width), dtype=np.int64)
        self.ts = np.zeros((n, width), dtype=np.int64)
        self.observations = np.zeros((n, width), dtype=np.int64)
        self.stale_drops = np.zeros((n, width), dtype=np.int64)
        self.deviation_drops = np.zeros((n, width), dtype=np.int64)
        self.deviation = np.full((n, width), np.nan)  # bps from the last round's median (status)
        self.in_quorum = np.zeros((n, width), dtype=bool)
        # per row: the oracle's state
        self.next_due = np.zeros(n, dtype=np.int64)
        self.fresh = np.zeros(n, dtype=bool)
        self.price_ticks = np.zeros(n, dtype=np.int64)
        self.price_ts = np.zeros(n, dtype=np.int64)
        self.quorum_size = np.zeros(n, dtype=np.int64)
        self.last_sent_ts = np.zeros(n, dtype=np.int64)
        self.sent = np.zeros(n, dtype=np.int64)
        self.stale_rounds = np.zeros(n, dtype=np.int64)
        self.held_back = np.zeros(n, dtype=np.int64)
        self.row_of_market = {int(m): row for row, m in enumerate(self.market)}

    # ------------------------------------------------------------------ intake
    def ingest(self, source: str, rejects: Rejects, batch: np.ndarray, now_ns: int) -> int:
        """Checks a source's observations and keeps the accepted ones as its latest prices.

        Refused rows are counted in ``rejects`` by reason; returns how many were accepted.
        """
        if not len(batch):
            return 0
        reason = np.empty(len(batch), np.uint8)
        accepted = check_and_keep(self, self.slot_of[source], batch, now_ns, reason)
        if accepted < len(batch):
            counts = np.bincount(reason, minlength=len(REASONS))
            for code in np.flatnonzero(counts[1:]) + 1:
                i = int(np.argmax(reason == code))
                market, price, ts = int(batch["market"][i]), float(batch["price"][i]), int(batch["ts"][i])
                slot = self.slot_of[source][market] if 0 <= market < len(self.slot_of[source]) else -1
                last = int(self.ts.flat[slot]) if slot >= 0 else 0
                rejects.add(REASONS[code], int(counts[code]), REFUSALS[REASONS[code]].format(
                    market=market, price=price, ts=ts, ahead=(ts - now_ns) / 1e9, last=last))
        return accepted

    # ------------------------------------------------------------------ rounds
    def next_due_ns(self) -> int | None:
        return int(self.next_due.min()) if len(self.next_due) else None

    def aggregate(self, now_ns: int) -> np.ndarray:
        """One round for every market whose interval has come: the OraclePrice commands to send."""
        if not len(self.next_due) or self.next_due.min() > now_ns:  # a wake-up for a heartbeat or a push
            return np.zeros(0, COMMAND_DTYPE)
        # a fresh buffer each round: the send may still hold the last one, and numpy copies
        # structured rows slowly (~70 us for a round's 64 KB; zeroed memory costs ~3)
        out = np.zeros(len(self.next_due), COMMAND_DTYPE)
        return out[:run_round(self, now_ns, out)]

    # ------------------------------------------------------------------ status
    def status(self, now_ns: int) -> tuple[dict, dict]:
        """(per market, per source and market) status for heartbeats and ``xos feeds status``.

        Every value is computed per column with numpy and read out with ``tolist`` (a thousand
        markets' status is rebuilt every second)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            price = self.price_ticks / self.factor
            last_price = self.ticks / self.factor[:, None]
        age_s = (now_ns - self.ts) / 1e9
        deviation = np.round(self.deviation, 3)
        stale = (self.ts == 0) | (now_ns - self.ts > self.stale_ns[:, None])
        markets, slots = {}, {}
        per_market = zip(self.market.tolist(), self.feed_id.tolist(), self.venue.tolist(), self.fresh.tolist(),
                         price.tolist(), self.price_ticks.tolist(), (self.price_ticks * self.tick_size).tolist(),
                         self.price_ts.tolist(), self.quorum.tolist(), self.quorum_size.tolist(), self.sent.tolist(),
                         self.stale_rounds.tolist(), self.held_back.tolist(), self.sources)
        per_slot = zip(self.ts.tolist(), last_price.tolist(), age_s.tolist(), deviation.tolist(),
                       self.in_quorum.tolist(), stale.tolist(), self.observations.tolist(), self.stale_drops.tolist(),
                       self.deviation_drops.tolist())
        for (market, feed_id, venue, fresh, price_, ticks, units, source_ts, quorum, in_quorum, sent, stale_rounds,
             held_back, names), slot in zip(per_market, per_slot):
            key = str(market)
            markets[key] = {
                "feed_id": feed_id, "venue": venue, "state": "fresh" if fresh else "stale",
                "price": price_ if ticks else None, "price_ticks": ticks, "price_units": units,
                "source_ts": source_ts, "quorum": quorum, "in_quorum": in_quorum, "sources": len(names),
                "sent": sent, "stale_rounds": stale_rounds, "held_back": held_back,
            }
            for col, (name, ts, last, age, dev, quorate, old, obs, stale_drops, deviation_drops) in enumerate(
                    zip(names, *slot)):
                slots.setdefault(name, {})[key] = {
                    "last_price": last if ts else None, "age_s": age if ts else None,
                    "deviation_bps": None if dev != dev else dev, "in_quorum": quorate, "stale": old,
                    "observations": obs, "stale_drops": stale_drops, "deviation_drops": deviation_drops,
                }
        return markets, slots

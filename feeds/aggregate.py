"""Checks prices, converts them to ticks, and aggregates them per market into OraclePrice commands.

State is kept in numpy arrays, one row per fed market and one column per source of that market,
so a round over a thousand markets is a handful of array operations.

**Ticks.** A price (a float, quote per base unit) becomes the market's price units (quote's
smallest unit per lot, as orders use) as ``ticks = round_half_even(price × f)`` with ``f`` the
double nearest to ``10^quote_decimals × lot_size / (10^base_decimals × tick_size)``, one IEEE
multiplication and ``numpy.rint``, so every run and machine gets the same ticks; the command's
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
time would be older than the last one sent for the market is held back (counted) rather than
sent, because the matcher refuses oracle updates that go back in time.
"""
from __future__ import annotations

import numpy as np

from engine.config import Config
from engine.records import COMMAND_DTYPE, Cmd

from .sources import Rejects

MAX_MONEY = 1 << 62
MAX_TICKS = 1 << 53
NO_PRICE = np.iinfo(np.int64).max


def masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the median of ``values`` where ``mask`` (int64; even counts: the mean of the two
    middle values, ties to even); 0 for a row with nothing selected."""
    k = mask.sum(axis=1)
    x = np.where(mask, values, NO_PRICE)
    x.sort(axis=1)
    rows = np.arange(len(x))
    some = k > 0
    lo = np.where(some, x[rows, np.where(some, (k - 1) // 2, 0)], 0)
    hi = np.where(some, x[rows, np.where(some, k // 2, 0)], 0)
    half, odd = np.divmod(lo + hi, 2)
    return half + (odd & (half & 1))


def deviation_limit(median: np.ndarray, bps: np.ndarray) -> np.ndarray:
    """floor(median × bps / 10000) without overflowing int64 (median < 2^53, bps ≤ 10000)."""
    q, r = np.divmod(median, 10_000)
    return q * bps + (r * bps) // 10_000


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
        self.columns = np.arange(width)[None, :] < np.array([len(m.sources) for m in feeds]).reshape(n, 1)
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
        slots_of = self.slot_of[source]
        market, price, ts = batch["market"], batch["price"], batch["ts"]
        known = (market >= 0) & (market < len(slots_of))
        slot = np.where(known, slots_of[np.clip(market, 0, len(slots_of) - 1)], -1)
        row, col = np.divmod(np.maximum(slot, 0), self.width)
        with np.errstate(invalid="ignore", over="ignore"):
            ticks_f = np.rint(price * self.factor[row])
        max_ticks = self.max_ticks[row]
        in_range = np.isfinite(ticks_f) & (ticks_f <= max_ticks)
        ticks = np.where(in_range, ticks_f, 0).astype(np.int64)
        checks = (
            ("unknown_market", slot < 0, "the source feeds no market {market}"),
            ("not_finite", ~np.isfinite(price), "market {market}: price {price!r} is not a finite number"),
            ("not_positive", price <= 0, "market {market}: price {price!r} is not positive"),
            ("bad_timestamp", ts <= 0, "market {market}: timestamp {ts} is not a positive ns time"),
            ("future_timestamp", ts > now_ns + self.future_ns,
             "market {market}: timestamp {ts} is {ahead:.3f} s ahead of the feed's clock"),
            ("too_large", ~in_range, "market {market}: price {price!r} is beyond the market's largest price"),
            ("below_one_tick", ticks < 1, "market {market}: price {price!r} rounds to 0 ticks"),
            ("out_of_order", ts < self.ts[row, col],
             "market {market}: timestamp {ts} is older than the source's last ({last})"),
        )
        ok = np.ones(len(batch), dtype=bool)
        for reason, failed, text in checks:
            bad = ok & failed
            if bad.any():
                i = int(np.argmax(bad))
                rejects.add(reason, int(bad.sum()), text.format(
                    market=int(market[i]), price=float(price[i]), ts=int(ts[i]),
                    ahead=(int(ts[i]) - now_ns) / 1e9, last=int(self.ts[row[i], col[i]])))
                ok &= ~bad
        accepted = np.flatnonzero(ok)
        if len(accepted):
            # the last row for a slot wins (rows come in time order per source)
            flat = slot[accepted]
            _, last_rev = np.unique(flat[::-1], return_index=True)
            keep = accepted[len(accepted) - 1 - last_rev]
            self.ticks[row[keep], col[keep]] = ticks[keep]
            self.ts[row[keep], col[keep]] = ts[keep]
            np.add.at(self.observations, (row[accepted], col[accepted]), 1)
        return len(accepted)

    # ------------------------------------------------------------------ rounds
    def next_due_ns(self) -> int | None:
        return int(self.next_due.min()) if len(self.next_due) else None

    def aggregate(self, now_ns: int) -> np.ndarray:
        """One round for every market whose interval has come: the OraclePrice commands to send."""
        due = np.flatnonzero(self.next_due <= now_ns)
        if not len(due):
            return np.zeros(0, COMMAND_DTYPE)
        # on the interval's grid, so rounds keep their rate; one that fell behind starts afresh
        follow = self.next_due[due] + self.interval_ns[due]
        self.next_due[due] = np.where(follow > now_ns, follow, now_ns + self.interval_ns[due])
        prices, times = self.ticks[due], self.ts[due]
        have = self.columns[due] & (times > 0)
        fresh = have & (now_ns - times <= self.stale_ns[due, None])
        self.stale_drops[due] += have & ~fresh
        median = masked_median(prices, fresh)
        diff = np.abs(prices - median[:, None])
        deviating = fresh & (diff > deviation_limit(median, self.max_deviation_bps[due])[:, None])
        self.deviation_drops[due] += deviating
        with np.errstate(invalid="ignore", divide="ignore"):
            self.deviation[due] = np.where(fresh, diff * 1e4 / median[:, None], np.nan)
        kept = fresh & ~deviating
        count = kept.sum(axis=1)
        ok = count >= self.quorum[due]
        price = masked_median(prices, kept)
        source_ts = np.where(kept, times, NO_PRICE).min(axis=1)
        held = ok & (source_ts < self.last_sent_ts[due])
        send = ok & ~held
        self.in_quorum[due] = kept & ok[:, None]
        self.fresh[due] = ok
        self.stale_rounds[due] += ~ok
        self.held_back[due] += held
        self.quorum_size[due] = np.where(ok, count, 0)
        rows = due[send]
        self.price_ticks[rows] = price[send]
        self.price_ts[rows] = source_ts[send]
        self.last_sent_ts[rows] = source_ts[send]
        self.sent[rows] += 1
        out = np.zeros(len(rows), COMMAND_DTYPE)
        out["kind"] = Cmd.ORACLE_PRICE
        out["venue"] = self.venue[rows]
        out["market"] = self.market[rows]
        out["account"] = self.account
        out["price"] = price[send] * self.tick_size[rows]
        out["qty"] = count[send]
        out["id"] = self.feed_id[rows]
        out["aux"] = source_ts[send]
        return out

    # ------------------------------------------------------------------ status
    def status(self, now_ns: int) -> tuple[dict, dict]:
        """(per market, per source and market) status for heartbeats and ``xos feeds status``."""
        markets, slots = {}, {}
        for row, market in enumerate(self.market.tolist()):
            markets[str(market)] = {
                "feed_id": int(self.feed_id[row]), "venue": int(self.venue[row]),
                "state": "fresh" if self.fresh[row] else "stale",
                "price": float(self.price_ticks[row] / self.factor[row]) if self.price_ticks[row] else None,
                "price_ticks": int(self.price_ticks[row]), "price_units": int(self.price_ticks[row] * self.tick_size[row]),
                "source_ts": int(self.price_ts[row]), "quorum": int(self.quorum[row]),
                "in_quorum": int(self.quorum_size[row]), "sources": len(self.sources[row]),
                "sent": int(self.sent[row]), "stale_rounds": int(self.stale_rounds[row]),
                "held_back": int(self.held_back[row]),
            }
            for col, name in enumerate(self.sources[row]):
                ts = int(self.ts[row, col])
                dev = float(self.deviation[row, col])
                slots.setdefault(name, {})[str(market)] = {
                    "last_price": float(self.ticks[row, col] / self.factor[row]) if ts else None,
                    "age_s": (now_ns - ts) / 1e9 if ts else None,
                    "deviation_bps": None if dev != dev else round(dev, 3),
                    "in_quorum": bool(self.in_quorum[row, col]),
                    "stale": not ts or now_ns - ts > int(self.stale_ns[row]),
                    "observations": int(self.observations[row, col]),
                    "stale_drops": int(self.stale_drops[row, col]),
                    "deviation_drops": int(self.deviation_drops[row, col]),
                }
        return markets, slots

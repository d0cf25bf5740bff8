"""Settlement: a durable double-entry ledger of the matcher's events, in SQLite.

``SettlementLedger(path).apply(events)`` applies a batch in ONE SQLite transaction together with the
new cursor (the seq of the last applied event), so every event is applied exactly once even across
crashes: events with ``seq <= cursor`` are skipped (idempotent replay), a batch that does not
continue at ``cursor + 1`` raises ``SequenceGapError``, and a batch that fails half way is rolled
back whole (cursor unchanged).  The database runs in WAL mode with ``synchronous=FULL``, so a batch
is durable once ``apply`` returns.

Ledger (journal ``entries`` with ``postings`` legs; each entry's legs sum to zero per asset):

- Deposit / withdrawal (``Balance`` event, amount ``qty = ±a``): the account ``+qty``, the external
  world (``EXTERNAL_ACCOUNT``) ``-qty``.
- ``Fill`` of ``qty`` at ``price`` in a market with lot ``L``: ``notional = price * (qty // L)``;
  the buyer ``+qty`` base and ``-(notional + buyer_fee)`` quote, the seller ``-qty`` base and
  ``+(notional - seller_fee)`` quote, ``FEE_ACCOUNT`` ``+(buyer_fee + seller_fee)`` quote.  The taker
  is the event's account and side, the maker its ``maker_account``; fees are the event's.

So an account's ledger balance of an asset equals the matcher's ``free + held`` and the fee
account's equals ``Engine.fees(asset)``; the external account holds minus each asset's outstanding
total.  Assets and markets are recorded from listing ``Accepted`` events (see ``Listings``).
Amounts are exact int64 (SQLite INTEGER); a materialised ``balances`` table is updated in the same
transaction, and ``check()`` recomputes it from the postings.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from ..records import Ev, Side
from . import ASSET_LISTING, MARKET_LISTING, AssetDef, Listings, MarketDef, SequenceGapError, fresh_events, rows

FEE_ACCOUNT = -1
EXTERNAL_ACCOUNT = -2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS assets (asset INTEGER PRIMARY KEY, symbol TEXT NOT NULL, decimals INTEGER NOT NULL,
    seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS markets (market INTEGER PRIMARY KEY, venue INTEGER NOT NULL, kind INTEGER NOT NULL,
    base INTEGER NOT NULL, quote INTEGER NOT NULL, tick_size INTEGER NOT NULL, lot_size INTEGER NOT NULL,
    min_size INTEGER NOT NULL, maker_bps INTEGER NOT NULL, taker_bps INTEGER NOT NULL, band_bps INTEGER NOT NULL,
    seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (account INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY, cmd_seq INTEGER NOT NULL, ts INTEGER NOT NULL,
    kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS postings (seq INTEGER NOT NULL, leg INTEGER NOT NULL, account INTEGER NOT NULL,
    asset INTEGER NOT NULL, amount INTEGER NOT NULL, PRIMARY KEY (seq, leg)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS postings_account ON postings (account, asset, seq);
CREATE TABLE IF NOT EXISTS balances (account INTEGER NOT NULL, asset INTEGER NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (account, asset)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fills (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, market INTEGER NOT NULL,
    taker_order INTEGER NOT NULL, taker_account INTEGER NOT NULL, taker_side INTEGER NOT NULL,
    maker_order INTEGER NOT NULL, maker_account INTEGER NOT NULL, price INTEGER NOT NULL, qty INTEGER NOT NULL,
    notional INTEGER NOT NULL, taker_fee INTEGER NOT NULL, maker_fee INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS fills_taker ON fills (taker_account, seq);
CREATE INDEX IF NOT EXISTS fills_maker ON fills (maker_account, seq);
INSERT OR IGNORE INTO meta (key, value) VALUES ('cursor', 0), ('schema', 1);
"""


class LedgerError(RuntimeError):
    """An event the ledger cannot account for (e.g. a fill in a market it never saw listed)."""


class SettlementLedger:
    """Durable double-entry ledger; see the module docstring."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._load()

    def _load(self) -> None:
        """(Re)load the in-memory caches from the database."""
        db = self.db
        self._cursor = db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()[0]
        self.listings = Listings()
        for asset, symbol, decimals, seq in db.execute("SELECT asset, symbol, decimals, seq FROM assets"):
            self.listings.assets[asset] = AssetDef(asset, symbol, decimals, seq)
        for r in db.execute("SELECT market, venue, kind, base, quote, tick_size, lot_size, min_size, maker_bps, "
                            "taker_bps, band_bps, seq FROM markets"):
            self.listings.markets[r[0]] = MarketDef(*r)
        self.listings.accounts = {a for (a,) in db.execute("SELECT account FROM accounts")}

    @property
    def cursor(self) -> int:
        """Seq of the last event applied (0 before any)."""
        return self._cursor

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------------------- apply

    def apply(self, events: np.ndarray) -> int:
        """Apply ``events`` (EVENT_DTYPE, seq order) exactly once; returns how many were new."""
        new = fresh_events(events, self._cursor)
        if len(new) == 0:
            return 0
        listings = self.listings
        markets = listings.markets
        asset_rows, market_rows, account_rows, entry_rows, posting_rows, fill_rows = [], [], [], [], [], []
        delta: dict[tuple[int, int], int] = {}

        def post(seq, leg, account, asset, amount):
            posting_rows.append((seq, leg, account, asset, amount))
            key = (account, asset)
            delta[key] = delta.get(key, 0) + amount

        cmd_seqs = new["cmd_seq"].tolist()
        try:
            for i, (seq, kind, code, flags, side, reason, market, venue, ts, order_id, account, client_id, price,
                    qty, remaining, maker_order, maker_account, maker_fee, taker_fee) in enumerate(rows(new)):
                if kind == Ev.FILL:
                    m = markets.get(market)
                    if m is None:
                        raise LedgerError(f"event {seq}: fill in market {market}, which was never listed")
                    notional = price * (qty // m.lot_size)
                    if side == Side.BUY:
                        buyer, seller, buyer_fee, seller_fee = account, maker_account, taker_fee, maker_fee
                    else:
                        buyer, seller, buyer_fee, seller_fee = maker_account, account, maker_fee, taker_fee
                    entry_rows.append((seq, cmd_seqs[i], ts, "fill"))
                    post(seq, 0, buyer, m.base, qty)
                    post(seq, 1, seller, m.base, -qty)
                    post(seq, 2, buyer, m.quote, -(notional + buyer_fee))
                    post(seq, 3, seller, m.quote, notional - seller_fee)
                    post(seq, 4, FEE_ACCOUNT, m.quote, buyer_fee + seller_fee)
                    fill_rows.append((seq, ts, market, order_id, account, side, maker_order, maker_account, price, qty,
                                      notional, taker_fee, maker_fee))
                elif kind == Ev.BALANCE:
                    entry_rows.append((seq, cmd_seqs[i], ts, "deposit" if qty > 0 else "withdrawal"))
                    post(seq, 0, account, market, qty)
                    post(seq, 1, EXTERNAL_ACCOUNT, market, -qty)
                    if account not in listings.accounts:
                        listings.accounts.add(account)
                        account_rows.append((account, seq))
                elif kind == Ev.ACCEPTED and order_id == 0:
                    what = listings.classify(kind, flags, side, market, venue, order_id, account, client_id, price,
                                             qty, remaining)
                    if what == ASSET_LISTING:
                        d = listings.learn(what, seq, side, market, venue, account, client_id, price, qty, remaining)
                        asset_rows.append((d.asset_id, d.symbol, d.decimals, seq))
                    elif what == MARKET_LISTING:
                        d = listings.learn(what, seq, side, market, venue, account, client_id, price, qty, remaining)
                        market_rows.append((d.market_id, d.venue, d.kind, d.base, d.quote, d.tick_size, d.lot_size,
                                            d.min_size, d.maker_bps, d.taker_bps, d.band_bps, seq))
            last = int(new["seq"][-1])
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                # the cursor is checked again inside the transaction: another writer on the same file
                # (a second instance after a restart) cannot make us apply anything twice
                stored = db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()[0]
                if stored != self._cursor:
                    raise SequenceGapError(f"cursor moved under us: expected {self._cursor}, database has {stored}")
                db.executemany("INSERT INTO assets VALUES (?, ?, ?, ?)", asset_rows)
                db.executemany("INSERT INTO markets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", market_rows)
                db.executemany("INSERT INTO accounts VALUES (?, ?)", account_rows)
                db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", entry_rows)
                db.executemany("INSERT INTO postings VALUES (?, ?, ?, ?, ?)", posting_rows)
                db.executemany("INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", fill_rows)
                db.executemany(
                    "INSERT INTO balances (account, asset, amount) VALUES (?, ?, ?) "
                    "ON CONFLICT (account, asset) DO UPDATE SET amount = amount + excluded.amount",
                    [(a, s, v) for (a, s), v in delta.items()],
                )
                db.execute("UPDATE meta SET value = ? WHERE key = 'cursor'", (last,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException:
            self._load()  # forget what this batch taught the caches
            raise
        self._cursor = last
        return len(new)

    # ----------------------------------------------------------------------------- queries

    def balances(self, account: int) -> dict[int, int]:
        """``{asset: total}`` for every asset the ledger ever posted to ``account``."""
        return dict(self.db.execute("SELECT asset, amount FROM balances WHERE account = ? ORDER BY asset", (account,)))

    def balance(self, account: int, asset: int) -> int:
        r = self.db.execute("SELECT amount FROM balances WHERE account = ? AND asset = ?", (account, asset)).fetchone()
        return r[0] if r else 0

    def fee_balance(self, asset: int) -> int:
        """Fees collected in ``asset`` (equals ``Engine.fees(asset)``)."""
        return self.balance(FEE_ACCOUNT, asset)

    def accounts(self) -> list[int]:
        """Every account with postings (internal ones, ``FEE_ACCOUNT`` and ``EXTERNAL_ACCOUNT``, excluded)."""
        return [a for (a,) in self.db.execute("SELECT DISTINCT account FROM balances WHERE account > 0 ORDER BY account")]

    def fills(self, account: int, limit: int = 100) -> list[dict]:
        """The account's most recent fills, newest first: seq, ts, market, side, price, qty, fee, role
        (``maker`` / ``taker``), counterparty, order_id."""
        out = []
        q = ("SELECT seq, ts, market, taker_side, price, qty, taker_fee, 'taker', maker_account, taker_order "
             "FROM fills WHERE taker_account = ?1 "
             "UNION ALL SELECT seq, ts, market, 1 - taker_side, price, qty, maker_fee, 'maker', taker_account, "
             "maker_order FROM fills WHERE maker_account = ?1 ORDER BY seq DESC LIMIT ?2")
        for seq, ts, market, side, price, qty, fee, role, counterparty, order_id in self.db.execute(q, (account, limit)):
            out.append(dict(seq=seq, ts=ts, market=market, side=side, price=price, qty=qty, fee=fee, role=role,
                            counterparty=counterparty, order_id=order_id))
        return out

    def assets(self) -> dict[int, AssetDef]:
        return dict(self.listings.assets)

    def markets(self) -> dict[int, MarketDef]:
        return dict(self.listings.markets)

    def check(self) -> None:
        """Verify the ledger: every entry's legs sum to zero per asset, and the materialised balances
        equal the sums of the postings (computed with Python integers).  Raises ``LedgerError``."""
        sums: dict[tuple[int, int], int] = {}
        per_entry: dict[tuple[int, int], int] = {}
        for seq, account, asset, amount in self.db.execute("SELECT seq, account, asset, amount FROM postings"):
            sums[(account, asset)] = sums.get((account, asset), 0) + amount
            per_entry[(seq, asset)] = per_entry.get((seq, asset), 0) + amount
        unbalanced = [k for k, v in per_entry.items() if v != 0]
        if unbalanced:
            raise LedgerError(f"entries whose legs do not sum to zero (seq, asset): {unbalanced[:10]}")
        stored = {(a, s): v for a, s, v in self.db.execute("SELECT account, asset, amount FROM balances")}
        if stored != sums:
            diff = sorted(k for k in stored.keys() | sums.keys() if stored.get(k, 0) != sums.get(k, 0))
            raise LedgerError(f"materialised balances differ from the postings at {diff[:10]}")


__all__ = ["EXTERNAL_ACCOUNT", "FEE_ACCOUNT", "LedgerError", "SettlementLedger"]

"""Settlement: a durable double-entry ledger of the matcher's events, in SQLite.

``SettlementLedger(path).apply(events)`` applies a batch in ONE SQLite transaction together with the
new cursor (the seq of the last applied event), so every event is applied exactly once even across
crashes: events with ``seq <= cursor`` are skipped (idempotent replay), a batch that does not
continue at ``cursor + 1`` raises ``SequenceGapError``, and a batch that fails half way is rolled
back whole (cursor unchanged).  The database runs in WAL mode with ``synchronous=FULL``, so a batch
is durable once ``apply`` returns.

Ledger (one journal row per event that moves money, keyed by its event seq, with its legs; each
entry's legs sum to zero per asset):

- Deposit / withdrawal (``Balance`` event, amount ``qty = ±a``): an ``entries`` row with two
  ``postings`` legs: the account ``+qty``, the external world (``EXTERNAL_ACCOUNT``) ``-qty``.
- ``Fill`` of ``qty`` at ``price`` in a market with lot ``L``: one ``fills`` row, which carries its
  five legs (``buyer``, ``seller``, ``base``, ``quote``, ``buyer_quote``, ``seller_quote``, ``fee``):
  ``notional = price * (qty // L)``; the buyer ``+qty`` base and ``buyer_quote = -(notional +
  buyer_fee)`` quote, the seller ``-qty`` base and ``seller_quote = notional - seller_fee`` quote,
  ``FEE_ACCOUNT`` ``fee = buyer_fee + seller_fee`` quote.  The taker is the event's account and
  side, the maker its ``maker_account``; fees are the event's.
- ``VenueTransfer`` (reason ``r``, amount ``qty`` into the account's free balance): an ``entries``
  row named after the reason with two legs, the account ``+qty`` and ``-qty`` on the venue bucket it
  moved against: ``STAKE_ACCOUNT`` (every venue's locked stake) for stake lock, release and
  slashes, ``FEE_ACCOUNT`` for fee sweeps.
- A ``Fill`` in a perpetual market moves no base and no notional: its row's legs are the fees only
  (the base legs skip perpetual markets).  Its ``Position`` events carry the realised PnL, an
  ``entries`` row ``realised_pnl`` with two legs: the account ``+pnl``, ``POSITION_ACCOUNT`` ``-pnl``
  (what the other side's still-open positions owe).

So an account's ledger balance of an asset equals the matcher's ``free + held``, the fee account's
equals ``Engine.fees(asset)`` plus every venue's uncollected fees, the stake account's every venue's
locked stake; the external account holds minus each asset's outstanding
total.  Assets and markets are recorded from listing ``Accepted`` events (see ``Listings``).
Amounts are exact int64 (SQLite INTEGER).  The ``balances`` table holds every account's balances as
of event ``balances_cursor`` (in ``meta``); the legs after it are summed in memory (and summed again
from the tables on open) and folded into the table, with ``balances_cursor``, in every
``BALANCES_EVERY``-th transaction (or once ``FOLD_LEGS`` legs wait) and at close: one upsert per account and
asset per fold rather than per batch.  Queries add the two; ``check()`` recomputes both from the legs.  A batch is
worked out with numpy (no per-event Python loop) and written with one ``executemany`` per table.  Schema 1 files
(fills posted as five ``postings`` rows) are migrated on open.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..records import Ev, MarketKind, OutcomeChange, Side, Transfer
from . import ASSET_LISTING, MARKET_LISTING, AssetDef, EventCore, Listings, MarketDef, SequenceGapError, kind_mask

_ACCEPTED, _FILL, _BALANCE, _BUY = int(Ev.ACCEPTED), int(Ev.FILL), int(Ev.BALANCE), int(Side.BUY)
_VENUE_TRANSFER, _POSITION = int(Ev.VENUE_TRANSFER), int(Ev.POSITION)
_SPOT = int(MarketKind.SPOT)
_OUTCOME_POSITION = int(Ev.OUTCOME_POSITION)
# SQL: the fill moves base (a spot market's; a perpetual's or an outcome market's moves none)
_SPOT_FILL = f"market IN (SELECT market FROM markets WHERE kind = {_SPOT})"
_TRANSFER_NAMES = {int(t): t.name.lower() for t in Transfer}

# listings (Accepted with no order), fills, deposits / withdrawals, venue transfers and perpetual
# positions (their realised PnL) move the ledger
# an Accepted only when it is a listing's (or another command's of no order): an order's Accepted moves no money
FOLLOWED = kind_mask(Ev.FILL, Ev.BALANCE, Ev.VENUE_TRANSFER, Ev.POSITION, Ev.OUTCOME_POSITION, orderless=(Ev.ACCEPTED,))

BALANCES_EVERY = 32  # transactions between two folds of the summed legs into the balances table
# legs kept unfolded at most (in memory, and sorted again for each query): 32 transactions of a worker's largest
# takes would be millions; config B's 800,000 deposits folded at once took 2.3 s
FOLD_LEGS = 1 << 18
CURSOR_COMMIT_S = 0.05  # a cursor moved only by events with nothing to post is committed at most this late

FEE_ACCOUNT = -1  # every venue's uncollected fees (venue 0's are the protocol's ``Engine.fees``)
EXTERNAL_ACCOUNT = -2
STAKE_ACCOUNT = -3  # every venue's locked stake (bonded + unbonding)
POSITION_ACCOUNT = -4  # minus the realised PnL of perpetual positions: what their open counterparts owe
LIQUIDATION_ACCOUNT = -5  # an insurance fund's payment to a liquidated account passes through it (nets to 0)
OUTCOME_ACCOUNT = -6  # the outcome markets' collateral paid in cash (collateral less the events' advances)
FUNDING_ACCOUNT = -7  # funding payments pass through it: an ApplyFunding's transfers sum to 0, so it stays at 0
_OUTCOME_ENTRY = {int(c): f"outcome_{c.name.lower()}" for c in OutcomeChange}
# every leg (account, asset, amount) of the entries after a seq (?1): the postings and each fill's legs
LEGS_AFTER = ("SELECT account, asset, amount FROM postings WHERE seq > ?1 "
              f"UNION ALL SELECT buyer, base, qty FROM fills WHERE seq > ?1 AND {_SPOT_FILL} "
              f"UNION ALL SELECT seller, base, -qty FROM fills WHERE seq > ?1 AND {_SPOT_FILL} "
              "UNION ALL SELECT buyer, quote, buyer_quote FROM fills WHERE seq > ?1 "
              "UNION ALL SELECT seller, quote, seller_quote FROM fills WHERE seq > ?1 "
              f"UNION ALL SELECT {FEE_ACCOUNT}, quote, fee FROM fills WHERE seq > ?1")

# the ledger account each VenueTransfer reason moves against: stake lock, release and slashes the locked stake,
# fee sweeps the fee pools, an insurance fund's payment to a liquidated account (two events, fund - and target +)
# the transit account, an ADL haircut (entry values of open positions cut) what open positions owe, funding
# payments and their remainder the funding transit account
_LAST_REASON_SLOT = max(int(t) for t in Transfer) + 1
_TRANSFER_COUNTER = np.zeros(_LAST_REASON_SLOT + 1, np.int64)  # 0: a reason this ledger does not know
for _t, _account in ((Transfer.STAKE_LOCK, STAKE_ACCOUNT), (Transfer.STAKE_RELEASE, STAKE_ACCOUNT),
                     (Transfer.SLASH_INSURANCE, STAKE_ACCOUNT), (Transfer.SLASH_PROTOCOL, STAKE_ACCOUNT),
                     (Transfer.FEE_OPERATOR, FEE_ACCOUNT), (Transfer.FEE_INSURANCE, FEE_ACCOUNT),
                     (Transfer.FEE_PROTOCOL, FEE_ACCOUNT), (Transfer.INSURANCE_SHORTFALL, LIQUIDATION_ACCOUNT),
                     (Transfer.ADL_SHORTFALL, POSITION_ACCOUNT), (Transfer.FUNDING, FUNDING_ACCOUNT),
                     (Transfer.FUNDING_REMAINDER, FUNDING_ACCOUNT)):
    _TRANSFER_COUNTER[int(_t)] = _account

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
    notional INTEGER NOT NULL, taker_fee INTEGER NOT NULL, maker_fee INTEGER NOT NULL,
    cmd_seq INTEGER NOT NULL DEFAULT 0, buyer INTEGER NOT NULL DEFAULT 0, seller INTEGER NOT NULL DEFAULT 0,
    base INTEGER NOT NULL DEFAULT 0, quote INTEGER NOT NULL DEFAULT 0, buyer_quote INTEGER NOT NULL DEFAULT 0,
    seller_quote INTEGER NOT NULL DEFAULT 0, fee INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS fills_taker ON fills (taker_account, seq);
CREATE INDEX IF NOT EXISTS fills_maker ON fills (maker_account, seq);
INSERT OR IGNORE INTO meta (key, value) VALUES ('cursor', 0), ('schema', 2);
INSERT OR IGNORE INTO meta (key, value) SELECT 'balances_cursor', value FROM meta WHERE key = 'cursor';
"""

FILL_LEG_COLUMNS = ("cmd_seq", "buyer", "seller", "base", "quote", "buyer_quote", "seller_quote", "fee")

# schema 1 -> 2: a fill's five postings (legs 0..4) and its entry become columns of its fills row
MIGRATE_1_2 = """
UPDATE fills SET
    cmd_seq = (SELECT cmd_seq FROM entries e WHERE e.seq = fills.seq),
    buyer = (SELECT account FROM postings p WHERE p.seq = fills.seq AND p.leg = 0),
    base = (SELECT asset FROM postings p WHERE p.seq = fills.seq AND p.leg = 0),
    seller = (SELECT account FROM postings p WHERE p.seq = fills.seq AND p.leg = 1),
    quote = (SELECT asset FROM postings p WHERE p.seq = fills.seq AND p.leg = 2),
    buyer_quote = (SELECT amount FROM postings p WHERE p.seq = fills.seq AND p.leg = 2),
    seller_quote = (SELECT amount FROM postings p WHERE p.seq = fills.seq AND p.leg = 3),
    fee = (SELECT amount FROM postings p WHERE p.seq = fills.seq AND p.leg = 4);
DELETE FROM postings WHERE seq IN (SELECT seq FROM fills);
DELETE FROM entries WHERE kind = 'fill';
UPDATE meta SET value = 2 WHERE key = 'schema';
"""

_FILL_INSERT = ("INSERT INTO fills (seq, ts, market, taker_order, taker_account, taker_side, maker_order, "
                "maker_account, price, qty, notional, taker_fee, maker_fee, " + ", ".join(FILL_LEG_COLUMNS) +
                ") VALUES (" + ", ".join("?" * 21) + ")")


def account_fills(db: sqlite3.Connection, account: int, limit: int, market: int = 0, since_ns: int = 0) -> list[dict]:
    """The account's most recent fills in ``db`` (a ledger's), newest first, in ``market`` (0: every market), at or
    after ``since_ns``: seq, ts, market, side, price, qty, fee, role (``maker`` / ``taker``), counterparty,
    order_id.  The two sides' indexes (``fills_taker``, ``fills_maker``) are walked back from the newest and
    merged, up to ``limit``, and ``since_ns`` becomes a seq to stop at (``first_fill_at``): what a query costs is
    the rows it returns (and those of other markets it passes), however many fills the account has."""
    where = " AND seq >= :first" + (" AND market = :market" if market else "")
    q = (f"SELECT seq, ts, market, taker_side, price, qty, taker_fee, 'taker', maker_account, taker_order "
         f"FROM fills WHERE taker_account = :account{where} "
         f"UNION ALL SELECT seq, ts, market, 1 - taker_side, price, qty, maker_fee, 'maker', taker_account, "
         f"maker_order FROM fills WHERE maker_account = :account{where} ORDER BY seq DESC LIMIT :limit")
    names = ("seq", "ts", "market", "side", "price", "qty", "fee", "role", "counterparty", "order_id")
    values = dict(account=account, limit=limit, market=market, first=first_fill_at(db, since_ns) if since_ns else 0)
    return [dict(zip(names, row)) for row in db.execute(q, values)]


def first_fill_at(db: sqlite3.Connection, since_ns: int) -> int:
    """The seq of the first fill at or after ``since_ns`` (past the last one when none is): a binary search over the
    fills' seqs, as their times never go back (the matcher's clock does not)."""
    lo, hi = 0, (db.execute("SELECT max(seq) FROM fills").fetchone()[0] or 0) + 1
    while lo < hi:  # the first seq from which every fill is at or after since_ns
        mid = (lo + hi) // 2
        row = db.execute("SELECT ts FROM fills WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)).fetchone()
        if row is None or row[0] >= since_ns:
            hi = mid
        else:
            lo = mid + 1
    return lo


class LedgerReader:
    """A ledger read by another process while its settlement worker writes it (WAL: neither waits): a read-only
    connection, opened once the worker has made the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db: sqlite3.Connection | None = None

    def connected(self) -> bool:
        if self.db is None and self.path.exists():
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                      check_same_thread=False)
        return self.db is not None

    def fills(self, account: int, limit: int, market: int = 0, since_ns: int = 0) -> tuple[int, list[dict]]:
        """(the ledger's cursor, ``account_fills``), read in one transaction; (0, []) before the ledger exists."""
        if not self.connected():
            return 0, []
        self.db.execute("BEGIN")
        try:
            cursor = self.db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()[0]
            return cursor, account_fills(self.db, account, limit, market, since_ns)
        finally:
            self.db.execute("COMMIT")

    def account(self, account: int, limit: int) -> tuple[int, dict[int, int], dict[int, str], list[dict]]:
        """(the ledger's cursor, ``{asset: total}`` for every asset posted to ``account``, ``{asset: symbol}`` of
        the listed assets, its newest ``limit`` fills), read in one transaction; the totals are the balances the
        worker folded plus the legs after them, as ``SettlementLedger.balances`` gives them.  A reader never writes
        (a writer's handle folds the legs as it closes, and the worker would then find the file moved under it)."""
        if not self.connected():
            raise FileNotFoundError(f"no settlement ledger at {self.path}")
        db = self.db
        db.execute("BEGIN")
        try:
            cursor = db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()[0]
            folded = db.execute("SELECT value FROM meta WHERE key = 'balances_cursor'").fetchone()[0]
            totals = dict(db.execute(
                "SELECT asset, SUM(amount) FROM (SELECT asset, amount FROM balances WHERE account = ?2 UNION ALL "
                f"SELECT asset, amount FROM ({LEGS_AFTER}) WHERE account = ?2) GROUP BY asset ORDER BY asset",
                (folded, account)))
            symbols = dict(db.execute("SELECT asset, symbol FROM assets"))
            return cursor, totals, symbols, account_fills(db, account, limit)
        finally:
            db.execute("COMMIT")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class LedgerError(RuntimeError):
    """An event the ledger cannot account for (e.g. a fill in a market it never saw listed)."""


class SettlementLedger(EventCore):
    """Durable double-entry ledger; see the module docstring."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._migrate()
        self._load()

    def _migrate(self) -> None:
        db = self.db
        if db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] >= 2:
            return
        have = {r[1] for r in db.execute("PRAGMA table_info(fills)")}
        db.execute("BEGIN IMMEDIATE")
        try:
            for c in FILL_LEG_COLUMNS:
                if c not in have:
                    db.execute(f"ALTER TABLE fills ADD COLUMN {c} INTEGER NOT NULL DEFAULT 0")
            for stmt in MIGRATE_1_2.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _load(self) -> None:
        """(Re)load the in-memory caches from the database."""
        db = self.db
        self._cursor = db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()[0]
        self._durable_cursor = self._cursor  # what the file holds; _cursor runs ahead over batches with nothing to post
        self._last_commit = time.monotonic()
        self.listings = Listings()
        for asset, symbol, decimals, seq in db.execute("SELECT asset, symbol, decimals, seq FROM assets"):
            self.listings.assets[asset] = AssetDef(asset, symbol, decimals, seq)
        for r in db.execute("SELECT market, venue, kind, base, quote, tick_size, lot_size, min_size, maker_bps, "
                            "taker_bps, band_bps, seq FROM markets"):
            self.listings.markets[r[0]] = MarketDef(*r)
        self.listings.accounts = {a for (a,) in db.execute("SELECT account FROM accounts")}
        self._marr = None  # market arrays for the fills (``_market_arrays``)
        self._balances_cursor = db.execute("SELECT value FROM meta WHERE key = 'balances_cursor'").fetchone()[0]
        # the legs after balances_cursor, as (accounts, assets, amounts) arrays not yet folded
        legs = db.execute(LEGS_AFTER, (self._balances_cursor,)).fetchall()
        rows = np.array(legs, np.int64).reshape(-1, 3)
        self._unfolded = [(rows[:, 0], rows[:, 1], rows[:, 2])] if len(rows) else []
        self._unfolded_sums = None
        self._transactions = 0

    @property
    def durable_cursor(self) -> int:
        """Seq of the last event whose effect (and cursor) is committed: a batch with nothing to post
        moves only the cursor, and that is committed with the next batch that posts something, by
        ``flush`` or after ``CURSOR_COMMIT_S`` (the worker releases the ring only up to here)."""
        return self._durable_cursor

    def flush(self) -> None:
        """Commit a cursor that ran ahead over batches with nothing to post."""
        if self._cursor == self._durable_cursor:
            return
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            moved = self._moved()
            if moved:
                raise SequenceGapError(moved)
            db.execute("UPDATE meta SET value = ? WHERE key = 'cursor'", (self._cursor,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._durable_cursor = self._cursor
        self._last_commit = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self._unfolded:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if not self._moved():  # else the file has moved on without us: its legs are all there
                    self._fold(self._cursor)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        self.db.close()

    def _moved(self) -> str:
        """Why the file is not where this handle left it (another writer), or ''."""
        stored = dict(self.db.execute("SELECT key, value FROM meta WHERE key IN ('cursor', 'balances_cursor')"))
        if stored["cursor"] != self._durable_cursor:
            return f"cursor moved under us: expected {self._durable_cursor}, database has {stored['cursor']}"
        if stored["balances_cursor"] != self._balances_cursor:
            return (f"balances moved under us: folded up to {self._balances_cursor} here, "
                    f"{stored['balances_cursor']} in the database")
        return ""

    def _unfolded_now(self) -> dict[tuple[int, int], int]:
        """``_unfolded_by_key`` for a query: a handle that only reads follows the writer (the file
        moved, it reloads)."""
        if self._moved():
            self._load()
        return self._unfolded_by_key()

    def _unfolded_by_key(self) -> dict[tuple[int, int], int]:
        """The legs after ``balances_cursor`` summed per (account, asset) (cached until the next batch)."""
        if self._unfolded_sums is None:
            self._unfolded_sums = {}
            if self._unfolded:
                acct, asset, amounts = (np.concatenate(c) for c in zip(*self._unfolded))
                # int64 wraps, so each sum is exact whenever it fits (a balance's change does)
                order = np.lexsort((asset, acct))
                acct, asset, amounts = acct[order], asset[order], amounts[order]
                start = np.flatnonzero(np.concatenate([[True], (acct[1:] != acct[:-1]) | (asset[1:] != asset[:-1])]))
                sums = np.add.reduceat(amounts, start)
                self._unfolded_sums = dict(zip(zip(acct[start].tolist(), asset[start].tolist()), sums.tolist()))
        return self._unfolded_sums

    def _fold(self, cursor: int) -> None:
        """Inside a transaction: add the unfolded legs to the balances table, which is then as of ``cursor``."""
        self.db.executemany(
            "INSERT INTO balances (account, asset, amount) VALUES (?, ?, ?) "
            "ON CONFLICT (account, asset) DO UPDATE SET amount = amount + excluded.amount",
            [(a, s, v) for (a, s), v in self._unfolded_by_key().items()],
        )
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'balances_cursor'", (cursor,))

    # ----------------------------------------------------------------------------- apply

    FOLLOWED = FOLLOWED

    def _apply(self, new: np.ndarray, last: int) -> int:
        """Apply the chosen events exactly once, with the cursor moving to ``last``; returns how
        many events (of every kind) were new."""
        if last == self._cursor:
            return 0
        listings = self.listings
        asset_rows, market_rows, account_rows, entry_rows, posting_rows, fill_rows = [], [], [], [], [], []
        kind = new["kind"]
        try:
            # listings (rare), in order
            for i in np.flatnonzero(kind == _ACCEPTED).tolist():  # of no order (FOLLOWED)
                e = new[i]
                args = (int(e["side"]), int(e["market"]), int(e["venue"]), int(e["account"]), int(e["client_id"]),
                        int(e["price"]), int(e["qty"]), int(e["remaining"]))
                what = listings.classify(Ev.ACCEPTED, int(e["flags"]), args[0], args[1], args[2], 0, *args[3:])
                seq = int(e["seq"])
                if what == ASSET_LISTING:
                    d = listings.learn(what, seq, *args)
                    asset_rows.append((d.asset_id, d.symbol, d.decimals, seq))
                elif what == MARKET_LISTING:
                    d = listings.learn(what, seq, *args)
                    self._marr = None
                    market_rows.append((d.market_id, d.venue, d.kind, d.base, d.quote, d.tick_size, d.lot_size,
                                        d.min_size, d.maker_bps, d.taker_bps, d.band_bps, seq))
            legs_acct, legs_asset, legs_amount = [], [], []
            fills = new.take(np.flatnonzero(kind == _FILL))
            if len(fills):
                seq = fills["seq"]
                market = fills["market"].astype(np.int64)
                ids, lot, base_of, quote_of, listed_at, nonspot_of = self._market_arrays()
                at = np.searchsorted(ids, market)
                ok = np.zeros(len(fills), bool)
                inside = at < len(ids)
                ok[inside] = (ids[at[inside]] == market[inside]) & (listed_at[at[inside]] < seq[inside])
                if not ok.all():
                    k = int(np.flatnonzero(~ok)[0])
                    raise LedgerError(f"event {int(seq[k])}: fill in market {int(market[k])}, which was never listed")
                qty, price, side = fills["qty"], fills["price"], fills["side"]
                taker, maker = fills["account"], fills["maker_account"]
                taker_fee, maker_fee = fills["taker_fee"], fills["maker_fee"]
                notional = price * (qty // lot[at])
                buy = side == _BUY
                buyer, seller = np.where(buy, taker, maker), np.where(buy, maker, taker)
                buyer_fee, seller_fee = np.where(buy, taker_fee, maker_fee), np.where(buy, maker_fee, taker_fee)
                base, quote = base_of[at], quote_of[at]
                # a perpetual fill moves no base and no notional: its fees here, its realised PnL
                # with the Position event
                nonspot = nonspot_of[at] != 0
                paid = np.where(nonspot, 0, notional)
                base_qty = np.where(nonspot, 0, qty)
                buyer_quote, seller_quote, fee = -(paid + buyer_fee), paid - seller_fee, buyer_fee + seller_fee
                fill_rows = np.column_stack([
                    seq, fills["ts"], market, fills["order_id"], taker, side.astype(np.int64), fills["maker_order"],
                    maker, price, qty, notional, taker_fee, maker_fee, fills["cmd_seq"], buyer, seller, base, quote,
                    buyer_quote, seller_quote, fee]).tolist()
                fee_acct = np.full(len(fills), FEE_ACCOUNT, np.int64)
                legs_acct += [buyer, seller, buyer, seller, fee_acct]
                legs_asset += [base, base, quote, quote, quote]
                legs_amount += [base_qty, -base_qty, buyer_quote, seller_quote, fee]
            positions = new.take(np.flatnonzero(kind == _POSITION))
            if len(positions):  # realised PnL, against the other side's open positions
                ids, _, _, quote_of, _, _ = self._market_arrays()
                pnl_quote = quote_of[np.searchsorted(ids, positions["market"].astype(np.int64))]
                for seq, cmd_seq, ts, account, asset, pnl in zip(
                        *(positions[c].tolist() for c in ("seq", "cmd_seq", "ts", "account")), pnl_quote.tolist(),
                        positions["maker_fee"].tolist()):
                    if pnl:
                        entry_rows.append((seq, cmd_seq, ts, "realised_pnl"))
                        posting_rows += [(seq, 0, account, asset, pnl), (seq, 1, POSITION_ACCOUNT, asset, -pnl)]
                pnl_rows = positions["maker_fee"] != 0
                legs_acct += [positions["account"][pnl_rows], np.full(int(pnl_rows.sum()), POSITION_ACCOUNT, np.int64)]
                legs_asset += [pnl_quote[pnl_rows]] * 2
                legs_amount += [positions["maker_fee"][pnl_rows], -positions["maker_fee"][pnl_rows]]
            outcome = new.take(np.flatnonzero(kind == _OUTCOME_POSITION))
            outcome = outcome[outcome["maker_fee"] != 0]
            if len(outcome):  # cash between an account and an outcome market's collateral
                ids, _, _, quote_of, _, _ = self._market_arrays()
                o_quote = quote_of[np.searchsorted(ids, outcome["market"].astype(np.int64))]
                for seq, cmd_seq, ts, account, asset, cash, why in zip(
                        *(outcome[c].tolist() for c in ("seq", "cmd_seq", "ts", "account")), o_quote.tolist(),
                        outcome["maker_fee"].tolist(), outcome["reason"].tolist()):
                    entry_rows.append((seq, cmd_seq, ts, _OUTCOME_ENTRY.get(why, "outcome")))
                    posting_rows += [(seq, 0, account, asset, cash), (seq, 1, OUTCOME_ACCOUNT, asset, -cash)]
                legs_acct += [outcome["account"], np.full(len(outcome), OUTCOME_ACCOUNT, np.int64)]
                legs_asset += [o_quote] * 2
                legs_amount += [outcome["maker_fee"], -outcome["maker_fee"]]
            # two-leg entries: deposits / withdrawals against the outside world, venue transfers
            # against the locked stake or the fee pools
            moves = new.take(np.flatnonzero((kind == _BALANCE) | (kind == _VENUE_TRANSFER)))
            if len(moves):
                is_transfer = moves["kind"] == _VENUE_TRANSFER
                reason = moves["reason"].astype(np.int64)
                counter = np.where(~is_transfer, EXTERNAL_ACCOUNT, _TRANSFER_COUNTER[np.clip(reason, 0, _LAST_REASON_SLOT)])
                if (counter == 0).any():
                    bad = moves[counter == 0][0]
                    raise LedgerError(f"VenueTransfer seq {int(bad['seq'])}: unknown reason {int(bad['reason'])}")
                for seq, cmd_seq, ts, account, asset, qty, other, why, moved in zip(
                        *(moves[c].tolist() for c in ("seq", "cmd_seq", "ts", "account", "market", "qty")),
                        counter.tolist(), reason.tolist(), is_transfer.tolist()):
                    name = _TRANSFER_NAMES.get(why, "transfer") if moved else "deposit" if qty > 0 else "withdrawal"
                    entry_rows.append((seq, cmd_seq, ts, name))
                    posting_rows.append((seq, 0, account, asset, qty))
                    posting_rows.append((seq, 1, other, asset, -qty))
                    if account not in listings.accounts:
                        listings.accounts.add(account)
                        account_rows.append((account, seq))
                legs_acct += [moves["account"], counter]
                legs_asset += [moves["market"].astype(np.int64)] * 2
                legs_amount += [moves["qty"], -moves["qty"]]
            if legs_acct:
                self._unfolded.append((np.concatenate(legs_acct), np.concatenate(legs_asset),
                                       np.concatenate(legs_amount)))
                self._unfolded_sums = None
            if not (asset_rows or market_rows or account_rows or entry_rows or posting_rows or fill_rows) and \
                    time.monotonic() - self._last_commit < CURSOR_COMMIT_S:
                applied = last - self._cursor  # nothing to post (e.g. only oracle events): the cursor waits
                self._cursor = last
                return applied
            self._transactions += 1
            fold = self._transactions % BALANCES_EVERY == 0 or sum(len(a) for a, _, _ in self._unfolded) >= FOLD_LEGS
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                # checked again inside the transaction: another writer on the same file (a second
                # instance after a restart) cannot make us apply or fold anything twice
                moved = self._moved()
                if moved:
                    raise SequenceGapError(moved)
                if asset_rows:
                    db.executemany("INSERT INTO assets VALUES (?, ?, ?, ?)", asset_rows)
                if market_rows:
                    db.executemany("INSERT INTO markets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", market_rows)
                if account_rows:
                    db.executemany("INSERT INTO accounts VALUES (?, ?)", account_rows)
                if entry_rows:
                    db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", entry_rows)
                if posting_rows:
                    db.executemany("INSERT INTO postings VALUES (?, ?, ?, ?, ?)", posting_rows)
                if fill_rows:
                    db.executemany(_FILL_INSERT, fill_rows)
                if fold:
                    self._fold(last)
                db.execute("UPDATE meta SET value = ? WHERE key = 'cursor'", (last,))
                db.execute("COMMIT")
                self._durable_cursor = last
                self._last_commit = time.monotonic()
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except BaseException:
            self._load()  # forget what this batch taught the caches
            raise
        if fold:
            self._unfolded, self._unfolded_sums, self._balances_cursor = [], None, last
        applied = last - self._cursor
        self._cursor = last
        return applied

    def _market_arrays(self):
        """Listed market ids (sorted) and, aligned: lot size, base, quote, listing seq, not spot (1/0: moves no base)."""
        markets = self.listings.markets
        if self._marr is None:
            ms = [markets[m] for m in sorted(markets)]
            self._marr = tuple(np.array(c, np.int64) for c in (
                [m.market_id for m in ms], [m.lot_size for m in ms], [m.base for m in ms], [m.quote for m in ms],
                [m.seq for m in ms], [m.kind != _SPOT for m in ms]))
        return self._marr

    # ----------------------------------------------------------------------------- queries

    @contextmanager
    def _reading(self):
        """The table and the unfolded legs from one consistent state of the file (a read transaction:
        a writer's fold cannot land between the two reads)."""
        if self.db.in_transaction:
            yield self._unfolded_now()
            return
        self.db.execute("BEGIN")
        try:
            yield self._unfolded_now()
        finally:
            self.db.execute("COMMIT")

    def balances(self, account: int) -> dict[int, int]:
        """``{asset: total}`` for every asset the ledger ever posted to ``account``."""
        with self._reading() as unfolded:
            out = dict(self.db.execute("SELECT asset, amount FROM balances WHERE account = ?", (account,)))
        for (a, asset), amount in unfolded.items():
            if a == account:
                out[asset] = out.get(asset, 0) + amount
        return dict(sorted(out.items()))

    def balance(self, account: int, asset: int) -> int:
        with self._reading() as unfolded:
            r = self.db.execute("SELECT amount FROM balances WHERE account = ? AND asset = ?",
                                (account, asset)).fetchone()
        return (r[0] if r else 0) + unfolded.get((account, asset), 0)

    def fee_balance(self, asset: int) -> int:
        """Fees collected in ``asset`` (equals ``Engine.fees(asset)``)."""
        return self.balance(FEE_ACCOUNT, asset)

    def accounts(self) -> list[int]:
        """Every account with postings (internal ones, ``FEE_ACCOUNT`` and ``EXTERNAL_ACCOUNT``, excluded)."""
        with self._reading() as unfolded:
            stored = {a for (a,) in self.db.execute("SELECT DISTINCT account FROM balances WHERE account > 0")}
        return sorted(stored | {a for a, _ in unfolded if a > 0})

    def fills(self, account: int, limit: int = 100) -> list[dict]:
        """The account's most recent fills, newest first (``account_fills``)."""
        return account_fills(self.db, account, limit)

    def assets(self) -> dict[int, AssetDef]:
        return dict(self.listings.assets)

    def markets(self) -> dict[int, MarketDef]:
        return dict(self.listings.markets)

    def check(self) -> None:
        """Verify the ledger: every entry's legs sum to zero per asset (a fill's legs also match its
        fees), and the materialised balances equal the sums of all legs (computed with Python
        integers).  Raises ``LedgerError``."""
        sums: dict[tuple[int, int], int] = {}
        per_entry: dict[tuple[int, int], int] = {}
        for seq, account, asset, amount in self.db.execute("SELECT seq, account, asset, amount FROM postings"):
            sums[(account, asset)] = sums.get((account, asset), 0) + amount
            per_entry[(seq, asset)] = per_entry.get((seq, asset), 0) + amount
        unbalanced = [k for k, v in per_entry.items() if v != 0]
        q = ("SELECT seq, buyer, seller, base, quote, qty, buyer_quote, seller_quote, fee, taker_fee, maker_fee, "
             f"{_SPOT_FILL} FROM fills")
        for seq, buyer, seller, base, quote, qty, bq, sq, fee, tf, mf, spot in self.db.execute(q):
            qty = qty if spot else 0
            for key, amount in (((buyer, base), qty), ((seller, base), -qty), ((buyer, quote), bq),
                                ((seller, quote), sq), ((FEE_ACCOUNT, quote), fee)):
                sums[key] = sums.get(key, 0) + amount
            if bq + sq + fee != 0 or fee != tf + mf:
                unbalanced.append((seq, quote))
        if unbalanced:
            raise LedgerError(f"entries whose legs do not sum to zero (seq, asset): {unbalanced[:10]}")
        with self._reading() as unfolded:
            stored = {(a, s): v for a, s, v in self.db.execute("SELECT account, asset, amount FROM balances")}
        for key, amount in unfolded.items():
            stored[key] = stored.get(key, 0) + amount
        if stored != sums:
            diff = sorted(k for k in stored.keys() | sums.keys() if stored.get(k, 0) != sums.get(k, 0))
            raise LedgerError(f"materialised balances differ from the postings at {diff[:10]}")


__all__ = ["EXTERNAL_ACCOUNT", "FEE_ACCOUNT", "POSITION_ACCOUNT", "STAKE_ACCOUNT", "LedgerError", "SettlementLedger"]

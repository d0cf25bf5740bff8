"""Worker cores (engine/workers) against a real matcher: settlement, margin and risk consume every
event of seeded mixed streams, in batches, and must agree with the engine's own state."""
from __future__ import annotations

import collections
import json
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from bench.orders import CONFIGS, generate
from engine.codes import ResultCode
from engine.config import Config, EngineSection
from engine.matcher import Engine
from engine.records import COMMAND_DTYPE, EVENT_DTYPE, Cmd, Ev, EvFlag, MarketKind, Side
from engine.workers import EVFLAG_ASSET_LISTING, Listings, SequenceGapError, kind_mask, make_core, rows, select_fresh
from engine.workercore import revalue_cells
from engine.workers.margin import MarginBook, MarginConfig, ValuationOverflow, value_of, weight_bits
from engine.workers.positions import PositionBook
from engine.workers.risk import HALTED, LIVE, RiskConfig, RiskMonitor
from engine.workers.settlement import (BALANCES_EVERY, EXTERNAL_ACCOUNT, POSITION_ACCOUNT, STAKE_ACCOUNT, LedgerError,
                                      SettlementLedger)
from engine.workers.settlement import FOLLOWED as SETTLEMENT_FOLLOWED
from generators import ENGINE_KWARGS, StreamGenerator, VenueRiskStreamGenerator, VenueStreamGenerator, run_stream

N_COMMANDS = 12_000


def batches(events: np.ndarray, rng: random.Random, max_size: int = 2500):
    i = 0
    while i < len(events):
        n = rng.randint(1, max_size)
        yield events[i:i + n]
        i += n


@pytest.fixture(scope="module", params=[11, 29])
def stream(request):
    """(engine after the stream, every event of it in seq order)."""
    e = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed=request.param)
    events = np.concatenate([ev for _, ev in run_stream(e, gen, N_COMMANDS, chunk=400)])
    assert events["seq"][0] == 1 and np.all(np.diff(events["seq"]) == 1)
    assert (events["kind"] == Ev.FILL).sum() > 500
    return e, events


def assert_settlement_matches(e: Engine, ledger: SettlementLedger) -> None:
    for a in e.accounts():
        engine_totals = {asset: free + held for asset, (free, held) in e.balances(a).items()}
        ours = ledger.balances(a)
        for asset in engine_totals.keys() | ours.keys():
            assert ours.get(asset, 0) == engine_totals.get(asset, 0), (a, asset)
    assert set(ledger.accounts()) <= set(e.accounts())
    venues = e.venues()
    stake_asset = e.venue_params().stake_asset
    for asset in e.assets():
        a = asset.asset_id
        pools = e.fees(a) + sum(e.venue_fees(v.venue_id).get(a, 0) for v in venues if v.venue_id)
        assert ledger.fee_balance(a) == pools
        locked = sum(v.stake + v.unbonding for v in venues) if a == stake_asset else 0
        assert ledger.balance(STAKE_ACCOUNT, a) == locked
    ledger.check()


def assert_margin_matches(e: Engine, book: MarginBook) -> None:
    for a in e.accounts():
        for asset, (free, held) in e.balances(a).items():
            assert book.balance(a, asset) == (free + held, held), (a, asset)
        assert set(book.balances(a)) <= set(e.balances(a))


# ------------------------------------------------------------------------------- settlement


def test_settlement_matches_engine(stream, tmp_path):
    e, events = stream
    ledger = SettlementLedger(tmp_path / "ledger.sqlite")
    rng = random.Random(1)
    for batch in batches(events, rng):
        assert ledger.apply(batch) == len(batch)
    assert ledger.cursor == events["seq"][-1]
    assert_settlement_matches(e, ledger)
    # listings were learned from the stream alone
    assert {m.market_id for m in e.markets()} == set(ledger.markets())
    for m in e.markets():
        d = ledger.markets()[m.market_id]
        assert (d.base, d.quote, d.lot_size, d.tick_size, d.maker_bps, d.taker_bps, d.band_bps) == (
            m.base, m.quote, m.lot_size, m.tick_size, m.maker_bps, m.taker_bps, m.band_bps)
    assert {a.asset_id: (a.symbol, a.decimals) for a in e.assets()} == {
        k: (v.symbol, v.decimals) for k, v in ledger.assets().items()}
    # the external account holds minus every asset's outstanding total
    for asset in ledger.assets():
        inside = sum(ledger.balance(a, asset) for a in ledger.accounts()) + ledger.fee_balance(asset)
        assert ledger.balance(EXTERNAL_ACCOUNT, asset) == -inside
    # fills per account, both roles
    fills = events[events["kind"] == Ev.FILL]
    a = int(fills["account"][0])
    mine = ledger.fills(a, limit=1 << 30)
    assert len(mine) == int((fills["account"] == a).sum() + (fills["maker_account"] == a).sum())
    assert [f["seq"] for f in mine] == sorted((f["seq"] for f in mine), reverse=True)
    f0 = next(f for f in mine if f["seq"] == int(fills["seq"][0]))
    assert f0["role"] == "taker" and f0["side"] == int(fills["side"][0]) and f0["fee"] == int(fills["taker_fee"][0])
    assert f0["counterparty"] == int(fills["maker_account"][0])
    assert len(ledger.fills(a, limit=3)) == min(3, len(mine))
    ledger.close()



@pytest.mark.parametrize("seed", range(3))
def test_an_accounts_fills_by_market_and_since_as_a_filter_of_all_of_them(tmp_path, seed):
    """``account_fills`` (the gateway's MyTrades, through ``LedgerReader``) against a Python filter of every fill:
    by account on either side, market, time (``since`` found by ``first_fill_at``'s binary search, ties of time
    included) and limit, newest first; an empty ledger and a ledger not made yet read as nothing."""
    from engine.workers.settlement import LedgerReader, account_fills, first_fill_at

    assert LedgerReader(tmp_path / "none.sqlite").fills(1, 10) == (0, [])
    ledger = SettlementLedger(tmp_path / "fills.sqlite")
    assert account_fills(ledger.db, 1, 10, 0, 5) == []  # no fills yet
    rng = random.Random(seed)
    rows, seq, ts = [], 0, 1000
    for _ in range(3000):
        seq += rng.randint(1, 5)
        ts += rng.choice([0, 0, 1, 7])  # times that repeat, never go back
        taker, maker = rng.sample(range(1, 7), 2)
        rows.append((seq, ts, rng.randint(1, 4), seq, taker, rng.randint(0, 1), seq + 1, maker, rng.randint(90, 110),
                     rng.randint(1, 9), 0, rng.randint(-2, 5), rng.randint(-2, 5)))
    ledger.db.execute("BEGIN")
    ledger.db.executemany("INSERT INTO fills (seq, ts, market, taker_order, taker_account, taker_side, maker_order, "
                          "maker_account, price, qty, notional, taker_fee, maker_fee) "
                          "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    ledger.db.execute("COMMIT")
    reader = LedgerReader(ledger.path)
    for account, market, since, limit in [(1, 0, 0, 10**6), (2, 3, 0, 50), (3, 0, rows[1500][1], 10**6),
                                          (4, 2, rows[2900][1], 7), (5, 0, ts + 1, 10), (6, 1, rows[0][1], 1),
                                          (9, 0, 0, 10)]:
        expected = []
        for s, t, mk, t_order, taker, side, m_order, maker, price, qty, _, t_fee, m_fee in rows:
            if (market and mk != market) or t < since:
                continue
            if taker == account:
                expected.append((s, t, mk, side, price, qty, t_fee, "taker", maker, t_order))
            if maker == account:
                expected.append((s, t, mk, 1 - side, price, qty, m_fee, "maker", taker, m_order))
        expected = sorted(expected, reverse=True)[:limit]
        cursor, got = reader.fills(account, limit, market, since)
        assert [tuple(f.values()) for f in got] == expected
        assert cursor == ledger.cursor
    assert first_fill_at(ledger.db, rows[-1][1] + 1) == rows[-1][0] + 1  # past the last
    assert first_fill_at(ledger.db, 0) == 0
    reader.close()
    ledger.close()


def test_an_account_read_while_the_worker_writes_leaves_its_ledger_alone(stream, tmp_path):
    """``LedgerReader.account`` (what ``xos account`` reads) gives the writer's balances, fills and cursor while legs
    wait unfolded, and never writes: the writer goes on to the end.  ``xos account`` opened a writer's handle, whose
    close folded the legs, and the running settlement worker then stopped on "balances moved under us"."""
    from typer.testing import CliRunner

    from engine.cli import app
    from engine.workers.settlement import LedgerReader

    e, events = stream
    config = tmp_path / "xos.toml"
    config.write_text(f'[engine]\ndata_dir = "{tmp_path}"\n')
    ledger = SettlementLedger(tmp_path / "settlement.sqlite")
    reader, read = LedgerReader(ledger.path), 0
    for batch in batches(events, random.Random(4)):
        ledger.apply(batch)
        if not ledger._unfolded or read >= 3:
            continue
        read += 1
        for account in ledger.accounts()[:8]:
            cursor, totals, symbols, fills = reader.account(account, 5)
            assert cursor == ledger.cursor and totals == ledger.balances(account) and totals
            assert fills == ledger.fills(account, 5) and symbols == {a: d.symbol for a, d in ledger.assets().items()}
        out = CliRunner().invoke(app, ["account", str(account), "--config", str(config)])
        assert out.exit_code == 0 and f"(ledger at event {ledger.cursor})" in out.output, out.output
        assert "not seen" not in out.output
    assert read == 3
    stranger = max(ledger.accounts()) + 1
    out = CliRunner().invoke(app, ["account", str(stranger), "--config", str(config)])
    assert out.exit_code == 0 and "no balances and no fills: an account the ledger has not seen" in out.output
    reader.close()
    assert_settlement_matches(e, ledger)
    ledger.close()
    with pytest.raises(FileNotFoundError, match="no settlement ledger at"):
        LedgerReader(tmp_path / "none.sqlite").account(1, 5)


def test_settlement_crash_replay_and_reopen(stream, tmp_path):
    e, events = stream
    path = tmp_path / "ledger.sqlite"
    ledger = SettlementLedger(path)
    n = len(events)
    cuts = [0, n // 5, 2 * n // 5, 3 * n // 5, n]
    assert ledger.apply(events[cuts[0]:cuts[1]]) == cuts[1]
    # crash after COMMIT, before the caller learned of it: the caller replays the same batch
    ledger.close()
    ledger = SettlementLedger(path)
    assert ledger.cursor == cuts[1]
    assert ledger.apply(events[cuts[0]:cuts[1]]) == 0  # nothing twice
    # replay overlapping the applied part: only the new tail counts
    assert ledger.apply(events[cuts[1] - 100:cuts[2]]) == cuts[2] - cuts[1]
    # a batch that fails half way is rolled back whole (here: a fill in a market never listed)
    bad = events[cuts[2]:cuts[3]].copy()
    k = int(np.flatnonzero(bad["kind"] == Ev.FILL)[len(np.flatnonzero(bad["kind"] == Ev.FILL)) // 2])
    bad["market"][k] = 999
    before = {a: ledger.balances(a) for a in e.accounts()}
    with pytest.raises(LedgerError, match="never listed"):
        ledger.apply(bad)
    assert ledger.cursor == cuts[2]
    assert {a: ledger.balances(a) for a in e.accounts()} == before
    # the good batch then applies, and a second handle on the same file continues after it
    assert ledger.apply(events[cuts[2]:cuts[3]]) == cuts[3] - cuts[2]
    other = SettlementLedger(path)
    assert other.cursor == cuts[3]
    assert other.apply(events[cuts[3] - 1:]) == n - cuts[3]
    # the first handle's view is stale: it refuses rather than apply anything twice
    with pytest.raises(SequenceGapError, match="cursor moved"):
        ledger.apply(events[cuts[3]:])
    assert_settlement_matches(e, other)
    other.close()  # folds every leg into the balances table
    ledger.close()  # stale: folds nothing twice
    reopened = SettlementLedger(path)
    assert_settlement_matches(e, reopened)
    reopened.close()


def test_settlement_folds_balances_every_few_transactions(stream, tmp_path):
    """Balances are exact between folds, after a fold, across a reopen without close (a crash) and
    against a second handle that folded first."""
    e, events = stream
    path = tmp_path / "ledger.sqlite"
    ledger = SettlementLedger(path)
    crash_checked = False
    for i, batch in enumerate(batches(events, random.Random(3), 300)):
        ledger.apply(batch)
        folded = ledger.db.execute("SELECT value FROM meta WHERE key = 'balances_cursor'").fetchone()[0]
        if not crash_checked and 0 < folded < ledger.cursor:  # folded once, legs after it not yet
            assert i >= BALANCES_EVERY
            crashed = SettlementLedger(path)  # what a restart after a crash sees
            assert {a: crashed.balances(a) for a in e.accounts()} == {a: ledger.balances(a) for a in e.accounts()}
            crashed.check()
            crashed.db.close()
            crash_checked = True
    assert crash_checked
    assert_settlement_matches(e, ledger)
    second = SettlementLedger(path)
    second.close()  # it folds first
    account, asset = e.accounts()[0], e.assets()[0].asset_id
    deposit = np.zeros(1, EVENT_DTYPE)  # the stream's next event (the shared engine stays as it is)
    for field, value in (("kind", Ev.BALANCE), ("seq", int(events["seq"][-1]) + 1), ("account", account),
                         ("market", asset), ("qty", 5)):
        deposit[field] = value
    with pytest.raises(SequenceGapError, match="balances moved"):
        ledger.apply(deposit)
    # at the end, or where it last posted with only events it does not post after it (its cursor waits for them)
    assert not len(select_fresh(events, ledger.cursor, SETTLEMENT_FOLLOWED)[0])
    before = ledger.balance(account, asset)  # a query follows the file (it reloads)
    assert before == sum(f + h for f, h in [e.balances(account)[asset]])
    ledger.db.close()
    third = SettlementLedger(path)
    third.apply(events[third.cursor:])  # what its cursor waited for (seq k is events[k - 1])
    assert third.apply(deposit) == 1 and third.balance(account, asset) == before + 5
    third.check()
    third.close()


def test_settlement_folds_as_soon_as_many_legs_wait(stream, tmp_path, monkeypatch):
    """A transaction that leaves ``FOLD_LEGS`` legs or more unfolded folds them (a setup's deposits, taken in a
    few large batches, waited 32 transactions and then took seconds to fold); the balances stay exact."""
    from engine.workers import settlement

    monkeypatch.setattr(settlement, "FOLD_LEGS", 200)
    e, events = stream
    ledger = SettlementLedger(tmp_path / "ledger.sqlite")
    folds = 0
    for batch in batches(events, random.Random(5), 400):
        ledger.apply(batch)
        waiting = sum(len(a) for a, _, _ in ledger._unfolded)
        folded = ledger.db.execute("SELECT value FROM meta WHERE key = 'balances_cursor'").fetchone()[0]
        assert waiting < 200  # folded in the transaction that reached the bound
        folds += folded == ledger.cursor
    assert folds > len(events) // 400 // BALANCES_EVERY
    assert_settlement_matches(e, ledger)
    ledger.check()
    ledger.close()


def test_settlement_gap_raises(stream, tmp_path):
    _, events = stream
    ledger = SettlementLedger(tmp_path / "ledger.sqlite")
    ledger.apply(events[:1000])
    with pytest.raises(SequenceGapError, match="gap"):
        ledger.apply(events[1001:2000])
    with pytest.raises(SequenceGapError, match="not contiguous"):
        ledger.apply(np.concatenate([events[1000:1500], events[1501:2000]]))
    with pytest.raises(SequenceGapError):
        ledger.apply(events[1000:2000][::-1].copy())
    assert ledger.cursor == 1000
    assert ledger.apply(events[1000:2000]) == 1000
    assert ledger.apply(events[:0]) == 0
    ledger.close()


def test_select_fresh():
    ev = np.zeros(5, dtype=EVENT_DTYPE)
    ev["seq"] = np.arange(4, 9)
    ev["kind"] = [Ev.FILL, Ev.BOOK_LEVEL, Ev.FILL, Ev.BOOK_LEVEL, 0]
    chosen, last = select_fresh(ev, 5)
    assert list(chosen["seq"]) == [6, 7, 8] and last == 8
    assert [len(select_fresh(ev, c)[0]) for c in (8, 20)] == [0, 0] and select_fresh(ev, 20)[1] == 20
    assert list(select_fresh(ev, 3)[0]["seq"]) == [4, 5, 6, 7, 8]  # every kind, also unknown ones
    chosen, last = select_fresh(ev, 3, kind_mask(Ev.FILL))
    assert list(chosen["seq"]) == [4, 6] and last == 8
    with pytest.raises(SequenceGapError, match="gap: cursor is 2"):
        select_fresh(ev, 2)
    broken = ev[[0, 1, 3]]
    with pytest.raises(SequenceGapError, match="seq 5 is followed by 7"):
        select_fresh(broken, 3)
    with pytest.raises(TypeError):
        select_fresh(np.zeros(3, COMMAND_DTYPE), 0)


def test_kind_mask_follows_a_kind_whole_or_only_its_events_of_no_order():
    ev = np.zeros(4, dtype=EVENT_DTYPE)
    ev["seq"] = np.arange(1, 5)
    ev["kind"] = [Ev.ACCEPTED, Ev.ACCEPTED, Ev.FILL, Ev.BALANCE]
    ev["order_id"] = [0, 9, 9, 0]
    chosen, last = select_fresh(ev, 0, kind_mask(Ev.FILL, orderless=(Ev.ACCEPTED,)))
    assert chosen["seq"].tolist() == [1, 3] and last == 4
    assert select_fresh(ev, 0, kind_mask(Ev.ACCEPTED))[0]["seq"].tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"kinds \[1\] are both followed whole and orderless"):
        kind_mask(Ev.ACCEPTED, orderless=(Ev.ACCEPTED,))


def test_settlement_posts_the_same_whether_it_follows_every_accepted_or_listings_only(tmp_path):
    """Its FOLLOWED leaves orders' Accepted out of what it copies; the ledger it keeps is the one it kept when it
    took them all (and dropped them)."""
    wl = generate(CONFIGS["A"].replace(commands=4000))
    e = Engine(**wl.engine_kwargs)
    events = np.concatenate([e.process(wl.setup), e.process(wl.prefill), e.process(wl.stream)])
    ledgers = []
    whole = kind_mask(*SettlementLedger.FOLLOWED.nonzero()[0].tolist())  # the mask before orderless kinds
    for name, followed in (("orderless", None), ("whole", whole)):
        ledger = SettlementLedger(tmp_path / f"{name}.db")
        if followed is not None:
            ledger.FOLLOWED = followed
        for i in range(0, len(events), 777):
            ledger.apply(events[i:i + 777])
        ledgers.append(ledger)
    a, b = ledgers
    assert a.cursor == b.cursor == int(events["seq"][-1])
    assert a.accounts() == b.accounts() and len(a.accounts()) > 1
    assert [(a.balances(x), a.fills(x, 10_000)) for x in a.accounts()] == \
        [(b.balances(x), b.fills(x, 10_000)) for x in b.accounts()]
    assert a.assets() == b.assets() and a.markets() == b.markets() and len(a.markets())
    for ledger in ledgers:
        ledger.check()
        ledger.close()


def test_listing_inference():
    e = Engine(**ENGINE_KWARGS)
    ev = np.concatenate([
        e.add_asset(1, "USD", 6), e.add_asset(2, "BTC", 8),
        e.add_market(1, 2, 1, tick_size=1, lot_size=1, min_size=1, maker_bps=-2, taker_bps=5, band_bps=300),
        e.add_market(3, 1, 2, tick_size=5, lot_size=10, min_size=20),
        e.deposit(7, 1, 100), e.mass_cancel(7, 1), e.mass_cancel(7),
        # asset 3 (a market 3 exists), empty symbol, the unused account field set: the flag decides
        e.submit(Cmd.ADD_ASSET, market=3, price=0, account=7),
        e.submit(Cmd.ADD_ASSET, market=4, price=0, account=7),  # no market 4: an asset
    ])
    listings = Listings()
    kinds = []
    for (seq, kind, code, flags, side, reason, market, venue, ts, order_id, account, client_id, price, qty,
         remaining, *_rest) in rows(ev):
        if kind == Ev.BALANCE:
            listings.accounts.add(account)
        if kind != Ev.ACCEPTED:
            continue
        what = listings.classify(kind, flags, side, market, venue, order_id, account, client_id, price, qty, remaining)
        kinds.append(what)
        if what in ("asset", "market"):
            listings.learn(what, seq, side, market, venue, account, client_id, price, qty, remaining)
    assert kinds == ["asset", "asset", "market", "market", "mass_cancel", "mass_cancel", "asset", "asset"]
    assert (listings.markets[3].base, listings.markets[3].lot_size, listings.markets[3].min_size) == (1, 10, 20)
    m = listings.markets[1]
    assert (m.base, m.quote, m.maker_bps, m.taker_bps, m.band_bps) == (2, 1, -2, 5, 300)
    assert listings.assets[2].symbol == "BTC" and listings.assets[2].decimals == 8
    assert listings.classify(Ev.ACCEPTED, EVFLAG_ASSET_LISTING, 0, 3, 0, 0, 7, 0, 0, 0, 0) == "asset"


# ------------------------------------------------------------------------------- margin


def reference_rates(e: Engine, marks: dict[int, int], v: int) -> dict[int, Fraction]:
    """Straightforward route search: breadth first from the valuation asset, lowest market id first."""
    rate = {v: Fraction(1)}
    frontier = [v]
    markets = sorted(e.markets(), key=lambda m: m.market_id)
    while frontier:
        nxt = []
        for a in frontier:
            for m in markets:
                p = marks.get(m.market_id, 0)
                if p and m.quote == a and m.base not in rate:
                    rate[m.base] = rate[a] * p / m.lot_size
                    nxt.append(m.base)
                elif p and m.base == a and m.quote not in rate:
                    rate[m.quote] = rate[a] * m.lot_size / p
                    nxt.append(m.quote)
        frontier = nxt
    return rate


def test_margin_matches_engine_and_equity_formula(stream):
    e, events = stream
    cuts = {2: 500, 3: 2000, "SOL": 1000}
    book = MarginBook(MarginConfig(valuation_asset="USD", haircut_bps=cuts, default_haircut_bps=100), accounts=2)
    for batch in batches(events, random.Random(2)):
        book.apply(batch)
    assert book.cursor == events["seq"][-1]
    assert_margin_matches(e, book)
    view = book.balances_view()  # what the gateway reads: every non-zero balance, by account then asset
    assert view.tolist() == [(a, asset, t, h) for a in sorted(book.index)
                             for asset, (t, h) in sorted(book.balances(a).items())] and len(view) > 50
    marks = {m.market_id: e.last_price(m.market_id) for m in e.markets()}
    assert {k: v for k, v in marks.items() if v} == book.marks
    rates = reference_rates(e, marks, 1)
    assert rates == book.rates() and len(rates) >= 4
    haircut = {1: 100, 2: 500, 3: 2000, 4: 1000, 5: 100}
    snap = book.snapshot()
    assert list(snap["account"]) == sorted(book.index) != list(book.index)  # by id, though rows came otherwise
    for row in snap[:: max(1, len(snap) // 6)]:
        a = int(row["account"])
        equity = used = 0
        exact = Fraction(0)
        for asset, (free, held) in e.balances(a).items():
            if asset not in rates:
                continue
            weight = rates[asset] * Fraction(10000 - haircut[asset], 10000)
            w, s = weight_bits(weight)
            assert Fraction(w, 1 << s) <= weight < Fraction(w + 1, 1 << s)
            equity += ((free + held) * w) // (1 << s)
            used += (held * w) // (1 << s)
            exact += (free + held) * weight
        assert int(row["equity"]) == equity and int(row["margin_used"]) == used
        assert int(row["available"]) == equity - used
        # the only rounding: 31-bit weights and one floor per asset
        assert 0 <= exact - equity <= len(rates) + exact / (1 << 29)


@pytest.mark.parametrize("seed", range(4))
def test_adl_ranks_are_the_exact_order_where_float_ratios_tie(seed):
    """``adl_ranks`` against the definition (per market and side: unrealised PnL per unit of margin, descending,
    exactly; ties by account) on positions whose ratios tie often: many at their entry price (0), equal
    fractions written differently (2/4, 3/6), and values near 2**60 whose float ratios are equal though the
    fractions are not."""
    from collections import defaultdict

    from engine.workers.margin import adl_ranks

    rng = np.random.default_rng(seed)
    n = 3000
    market = rng.integers(1, 4, n)
    size = rng.choice([-3, -1, 2, 5], n)
    margin = rng.choice([0, 1, 2, 4, 6, 3], n)
    big = (1 << 60) + rng.integers(0, 4, n)
    upnl = np.where(rng.random(n) < 0.4, 0, rng.choice([-3, 1, 2, 3, 6], n) * np.where(rng.random(n) < 0.3, big, 1))
    account = rng.permutation(n) + 1
    ranks = adl_ranks(market, size, upnl, margin, account)
    groups = defaultdict(list)
    for i in range(n):
        groups[int(market[i]), int(np.sign(size[i]))].append(
            (-Fraction(int(upnl[i]), max(int(margin[i]), 1)), int(account[i]), i))
    expected = np.zeros(n, np.int64)
    for members in groups.values():
        for rank, (_, _, i) in enumerate(sorted(members), 1):
            expected[i] = rank
    assert ranks.tolist() == expected.tolist()
    ratio = upnl / np.maximum(margin, 1)
    assert len(np.unique(ratio)) < len({Fraction(int(u), max(int(m), 1)) for u, m in zip(upnl, margin)})


@pytest.mark.parametrize("seed", range(3))
def test_liquidation_prices_are_the_formula_and_never_wrap(seed):
    """``liquidation_prices`` against its formula in fractions (x = (M - m - E + n mark) / (n (1 - k)) for a long,
    (E + n mark - M + m) / (n (1 + k)) for a short, k = maintenance_bps / (10000 leverage)), on ordinary positions
    mixed with ones whose equity terms, requirement, size or mark reach int64's ends (their sums and products do
    not fit in int64) and with maintenance as large as the notional (k = 1)."""
    from engine.workers.margin import liquidation_prices

    rng = np.random.default_rng(seed)
    n = 4000
    lot = rng.choice([1, 10, 1000], n)
    size = rng.integers(-500, 500, n) * lot
    mark = rng.integers(1, 100_000, n)
    leverage = rng.integers(1, 101, n)
    mm = np.where(rng.random(n) < 0.05, 10000, rng.integers(1, 10001, n))
    terms = rng.integers(-10 ** 9, 10 ** 9, (4, n))
    requirement = rng.integers(0, 10 ** 8, n)
    own = rng.integers(0, 10 ** 6, n)
    top = np.iinfo(np.int64).max
    for values, low, unit in ((terms[0], -top, 1), (terms[3], -top, 1), (requirement, 0, 1), (size, -top, lot),
                              (mark, 1, 1)):
        huge = rng.random(n) < 0.05
        values[huge] = (rng.integers(low, top, n) // unit * unit)[huge]  # a size in whole lots
    prices = liquidation_prices(size, lot, mark, leverage, mm, terms, requirement, own)
    for i in range(n):
        lots = abs(int(size[i])) // int(lot[i])
        equity = sum(int(t) for t in terms[:, i])
        k = Fraction(int(mm[i]), 10000 * int(leverage[i]))
        m_now, m_own, at = int(requirement[i]), int(own[i]), int(mark[i])
        if lots == 0:
            expected = 0
        elif size[i] > 0:
            a = m_now - m_own - equity + lots * at
            if a <= 0:
                expected = 0  # never
            elif k == 1:
                expected = at  # under now and at any price
            else:
                expected = max(min(math.floor(Fraction(a) / (lots * (1 - k))), at), 0)
        else:
            x = max(math.floor(Fraction(equity + lots * at - m_now + m_own) / (lots * (1 + k))) + 1, at)
            expected = x if x <= top else 0
        assert int(prices[i]) == expected, (i, int(size[i]), int(lot[i]), at, equity, m_now, m_own)


def test_revalue_cells_exact():
    """Each row's sum of ``floor(amount * weight)`` over its cells, a cell's amounts added first, is exact whatever
    its amounts (any int64, signs mixed, several to a cell), weights (of 2**31 and more, or tiny) and rows; a row
    whose exact sum does not fit in int64 is refused (value 0), and only such a row."""
    rng = np.random.default_rng(5)
    width, nrows = 12, 60
    w = rng.integers(1 << 30, 1 << 31, size=width, dtype=np.int64)
    w[4] = 0
    s = np.array([-3, -10, 0, 32, 40, 61, 62, 90, 120, 130, 35, 33], np.int64)  # -3, -10: weights of 2**31 and more
    cells = np.sort(rng.integers(0, nrows * width, size=900))  # duplicates: one cell's amounts come apart
    amounts = rng.integers(-(1 << 63), 1 << 63, size=len(cells), dtype=np.int64)
    small = rng.random(len(cells)) < 0.6
    amounts[small] = rng.integers(-(1 << 20), 1 << 20, size=int(small.sum()))
    amounts[::7] = (1 << 63) - 1  # cells whose amounts add past int64
    values, over = revalue_cells(cells, amounts, w, s, nrows + 1)
    exact = collections.defaultdict(int)
    summed = collections.defaultdict(int)
    for cell, amount in zip(cells.tolist(), amounts.tolist()):
        summed[cell] += amount
    for cell, amount in summed.items():
        row, col = divmod(cell, width)
        exact[row] += value_of(amount, int(w[col]), int(s[col]))
    fits = {row for row, v in exact.items() if -(1 << 63) <= v < 1 << 63}
    assert set(over.tolist()) == set(exact) - fits and 5 < len(fits) < len(exact) - 5
    assert values.tolist() == [exact[row] if row in fits else 0 for row in range(nrows + 1)]
    for bad, why in ((cells[::-1], "cells not in order"), (cells + width, "a cell outside")):
        with pytest.raises(ValueError, match=why):
            revalue_cells(bad.copy(), amounts, w, s, nrows)
    for weight in (-1, 1 << 31):
        with pytest.raises(ValueError, match=f"column 4's weight {weight} is not in 0 .. 2\\*\\*31 - 1"):
            revalue_cells(cells, amounts, np.where(np.arange(width) == 4, weight, w), s, nrows)
    for weight in (Fraction(1), Fraction(3, 10**12), Fraction(10**15, 7), Fraction(1, 3), Fraction(2**40 + 1)):
        w1, s1 = weight_bits(weight)
        assert 1 << 30 <= w1 < 1 << 31
        approx = Fraction(w1, 1 << s1) if s1 >= 0 else Fraction(w1 << -s1)
        assert approx <= weight < approx * (1 + Fraction(1, 1 << 30))


def test_the_account_view_is_bounded_per_account_not_by_the_assets_supply(tmp_path):
    """Two accounts hold 2**61 and 2**60 BTC.  At 1.5 USD a BTC (price 15, lot 10) the supply is worth 1.1 x 2**62,
    past what the old bound let through as a whole, yet each account's equity fits: the view is exact.  At 4.5 USD
    account 1's (1.1 x 2**63) does not fit: it alone is not valued (``valued`` False, figures 0), the error names
    it, the others' view is published, and the book goes on."""
    e, recorded = recording_engine(**ENGINE_KWARGS)
    e.add_asset(1, "USD", 2)
    e.add_asset(2, "BTC", 8)
    e.add_market(5, 2, 1, tick_size=1, lot_size=10, min_size=10)
    e.deposit(1, 2, 1 << 61)
    e.deposit(2, 2, 1 << 60)
    for account in (8, 9):
        e.deposit(account, 1, 1_000)
        e.deposit(account, 2, 1_000)
    book = MarginBook(MarginConfig(valuation_asset="USD"))
    for price, client_id in ((15, 1), (45, 2)):
        e.place(8, 5, Side.BUY, price, 10, client_id)
        e.place(9, 5, Side.SELL, price, 10, client_id)
        feed(book, recorded)
        assert book.marks == {5: price}
        if price == 15:
            view = book.snapshot()
            assert view["account"].tolist() == [1, 2, 8, 9]
            assert view["equity"][:2].tolist() == [(1 << 61) * 3 // 2, (1 << 60) * 3 // 2]
    from types import SimpleNamespace

    from engine.process import publish_views
    from gateway import messages as m
    from gateway.server import GatewayStage

    with pytest.raises(ValuationOverflow, match=r"the valuation of account 1 does not fit in int64") as caught:
        book.snapshot()
    partial = caught.value.partial
    assert partial[["account", "valued"]].tolist() == [(1, False), (2, True), (8, True), (9, True)]
    big = (1 << 60) * 9 // 2
    assert partial[["equity", "margin_used", "available"]][:2].tolist() == [(0, 0, 0), (big, 0, big)]
    run = tmp_path / "run"
    run.mkdir()
    errors = publish_views(book, run, "margin")  # the others' figures are published all the same
    assert errors == [f"view published without them: {caught.value}"]
    assert np.load(run / "margin-view.npy").tolist() == partial.tolist()
    assert len(book.balances_view()) == 6
    gateway = SimpleNamespace(margin_state=lambda: (7, partial, None, book.balances_view()),
                              listings=SimpleNamespace(assets={}))
    assert GatewayStage.balances(gateway, 1, rid=3) == m.BalancesResult(  # what a client is told
        rid=3, balances=[m.BalanceInfo(asset=2, symbol="2", total=1 << 61, held=0)], as_of_seq=7, valued=False)
    assert GatewayStage.balances(gateway, 2, rid=4).equity == big and GatewayStage.balances(gateway, 2, rid=4).valued


def test_an_account_whose_amounts_add_up_past_int64_is_named():
    """Balance plus unrealised PnL (and outcome values) past int64, across the terms or inside one (two positions
    of one cell), or an available (equity - margin used) past it: refused, naming the account, never published
    wrong; amounts that cancel are exact."""
    e, recorded = recording_engine(**ENGINE_KWARGS)
    e.add_asset(1, "USD", 2)
    e.deposit(7, 1, 1 << 61)
    e.deposit(8, 1, 5)
    book = MarginBook()
    feed(book, recorded)
    cell = np.array([book.index[7] * book.total.shape[1] + int(book.col_of[1])])
    big = np.array([1 << 62])
    for sparse in (((cell, big), (cell, big)), ((np.r_[cell, cell], np.r_[big, big]),)):
        with pytest.raises(ValuationOverflow, match=r"the valuation of account 7 does not fit in int64"):
            book.revalue((book.total,), sparse)
    cancelled = ((np.r_[cell, cell], np.r_[big, -big]), (cell, big), (cell, -big))
    assert book.revalue((book.total,), cancelled).tolist() == [1 << 61, 5]
    book.total[book.index[8], book.col_of[1]] = -(1 << 63) + 5  # white-box: a debt no matcher allows
    book.held[book.index[8], book.col_of[1]] = 10
    with pytest.raises(ValuationOverflow, match=r"the valuation of account 8 does not fit in int64") as caught:
        book.snapshot()
    assert caught.value.partial[["account", "equity", "valued"]].tolist() == [(7, 1 << 61, True), (8, 0, False)]


def test_the_account_view_is_the_dense_rule_over_positions_and_outcomes():
    """The view's sums run over the cells in use: on streams of cross and isolated perpetual positions and of
    outcome shares, each account's equity, margin used and maintenance equal the rule over every cell, in Python
    integers (balance + cross and isolated unrealised PnL + outcome values, each cell floored once)."""
    import collections

    import generators

    checked = set()
    for name, extra in (("LeveragedPerpStreamGenerator", {}), ("IsolatedMarginStreamGenerator", {}),
                        ("OutcomeStreamGenerator", dict(outcome_share=0.1, resolve_after=4_000))):
        e = Engine(**ENGINE_KWARGS)
        book = MarginBook(MarginConfig(valuation_asset=1))
        stream = getattr(generators, name)(3, limits=dict(ENGINE_KWARGS), **extra)
        for i, (_, ev) in enumerate(run_stream(e, stream, 3_000, chunk=100)):
            book.apply(ev)
            if i % 5:
                continue
            n, width = book.n_accounts, book.total.shape[1]
            w, s = book.weights()
            extra_equity, extra_maint = collections.Counter(), collections.Counter()
            perp = book.perp
            for k in np.flatnonzero(perp.isolated[:len(perp)] != 0).tolist():
                extra_equity[int(perp.row[k]), int(perp.quote[k])] += int(perp.upnl[k])
                extra_maint[int(perp.row[k]), int(perp.quote[k])] += int(perp.maint[k])
            cells, values = book._outcome_values()
            for cell, value in zip(cells.tolist(), values.tolist()):
                extra_equity[divmod(cell, width)] += value
            view = book.snapshot()
            by_account = {int(r["account"]): r for r in view}
            for row in range(n):
                def valued(amount, col):
                    return value_of(amount, int(w[col]), int(s[col]))
                cols = range(len(book.asset_of))
                equity = sum(valued(int(book.total[row, c]) + int(book.upnl_sum[row, c]) + extra_equity[row, c], c)
                             for c in cols)
                used = sum(valued(int(book.held[row, c]), c) for c in cols)
                maint = sum(valued(int(book.maint_sum[row, c]) + extra_maint[row, c], c) for c in cols)
                got = by_account[int(book.account_ids[row])]
                assert (int(got["equity"]), int(got["margin_used"]), int(got["maintenance"])) == (equity, used, maint)
            checked.add((name, bool(extra_equity), bool(book.upnl_sum.any())))
    assert {name for name, extra_cells, _ in checked if extra_cells} == {"IsolatedMarginStreamGenerator",
                                                                          "OutcomeStreamGenerator"}
    assert ("LeveragedPerpStreamGenerator", False, True) in checked


def test_margin_gap_raises(stream):
    _, events = stream
    book = MarginBook()
    book.apply(events[:500])
    with pytest.raises(SequenceGapError):
        book.apply(events[501:900])
    book.apply(events[:900])
    assert book.cursor == int(events["seq"][899])


# ------------------------------------------------------------------------------- risk

SEC = 1_000_000_000


def test_risk_breaker_halts_once_and_resumes():
    e = Engine(**ENGINE_KWARGS)
    cfg = RiskConfig(move_bps=1000, window_s=60, cooldown_s=30, overrides={2: {"move_bps": 50}})
    risk = RiskMonitor(cfg, start_anywhere=False)
    sent = []
    t = [100 * SEC]

    def run(events):
        cmds = risk.apply(events)
        sent.extend(cmds.tolist())
        if len(cmds):
            run(e.process(cmds))  # fed back through the matcher's input, as the worker stage does
        return events

    def trade(price, qty=1):
        t[0] += SEC
        run(e.place(2, 1, Side.SELL, price, qty, client_id=t[0], ts=t[0]))
        return run(e.place(1, 1, Side.BUY, price, qty, client_id=t[0] + 1, ts=t[0]))

    run(np.concatenate([e.add_asset(1, "USD", 2), e.add_asset(2, "BTC", 0),
                        e.add_market(1, 2, 1, tick_size=1, lot_size=1, min_size=1, band_bps=0)]))
    run(np.concatenate([e.deposit(1, 1, 10**9), e.deposit(2, 2, 10**6)]))
    for p in (1000, 1010, 990, 1050):
        assert (trade(p)["kind"] == Ev.FILL).sum() == 1
    assert sent == [] and risk.state(1) == LIVE
    trade(920)  # 8 % below the window's first trade (1000): still inside 10 %
    assert sent == []
    ev = trade(899)  # 10.1 % below: trips
    assert (ev["kind"] == Ev.FILL).sum() == 1
    assert [(c[0], c[7], c[9]) for c in sent] == [(Cmd.HALT, 1, cfg.account)]  # kind, market, account
    assert risk.state(1) == HALTED and risk.breakers[1].trips == 1
    # the market is halted: new orders are refused, and nothing trips twice
    ev = trade(850)
    assert set(ev["code"][ev["kind"] == Ev.REJECTED].tolist()) == {ResultCode.MARKET_HALTED}
    assert len(sent) == 1
    # engine time moves on (other commands); the cool-down counts from the MarketStatus event
    halted_at = risk.breakers[1].halted_at
    run(e.deposit(1, 1, 1, ts=halted_at + 29 * SEC))
    assert len(sent) == 1
    run(e.deposit(1, 1, 1, ts=halted_at + 30 * SEC))
    assert [c[0] for c in sent] == [Cmd.HALT, Cmd.RESUME] and risk.state(1) == LIVE
    assert risk.halts_sent == 1 and risk.resumes_sent == 1
    t[0] = halted_at + 31 * SEC
    assert (trade(860)["kind"] == Ev.FILL).sum() == 1  # trading again; the window starts afresh
    assert len(sent) == 2
    # an operator's halt is not the breaker's: no resume from the worker
    run(e.halt(1, account=77, ts=t[0]))
    trade(500)
    run(e.deposit(1, 1, 1, ts=t[0] + 3600 * SEC))
    assert len(sent) == 2 and risk.state(1) == "external"
    # order rate: account 1's accepted buys, one per second of engine time
    assert risk.order_rate(1)[1:] == (1, 7)  # the two placed while halted were rejected


def test_venue_breaker_halts_only_its_venue_and_resumes():
    """A venue's VenueMarketRisk breaker trips on the shared book's trades and halts that venue's orders only;
    the cool-down resumes it; the market-wide breaker (looser here) stays live."""
    e = Engine(**ENGINE_KWARGS)
    cfg = RiskConfig(move_bps=5000, window_s=60, cooldown_s=30)
    risk = RiskMonitor(cfg, start_anywhere=False)
    sent = []
    t = [100 * SEC]
    admin, op1, op2 = 99, 10, 11

    def run(events):
        cmds = risk.apply(events)
        sent.extend(cmds.tolist())
        if len(cmds):
            run(e.process(cmds))
        return events

    def trade(price, venue=2):
        t[0] += SEC
        run(e.place(2, 1, Side.SELL, price, 1, client_id=t[0], ts=t[0], venue=venue))
        return run(e.place(1, 1, Side.BUY, price, 1, client_id=t[0] + 1, ts=t[0], venue=venue))

    run(np.concatenate([e.add_asset(1, "USD", 2), e.add_asset(2, "BTC", 0),
                        e.add_market(1, 2, 1, tick_size=1, lot_size=1, min_size=1, band_bps=0)]))
    run(np.concatenate([e.deposit(a, asset, 10**9) for a in (1, 2, op1, op2) for asset in (1, 2)]))
    run(e.set_venue_params(admin, stake_asset=2, min_stake=1, unbond_period=1, protocol_account=800, admin=admin))
    for venue, op in ((1, op1), (2, op2)):
        run(e.launch_venue(op, venue, 10, insurance_account=900 + venue))
        run(e.offer_market(op, venue, 1))
    ev = run(e.set_venue_risk(op1, 1, 1, breaker_move_bps=500, breaker_window_ms=60_000, breaker_cooldown_ms=30_000))
    assert ev[0]["kind"] == Ev.VENUE and risk.venue_breakers[(1, 1)].move_bps == 500
    for p in (1000, 1040, 960):
        trade(p)
    assert sent == [] and risk.state(1, venue=1) == LIVE
    trade(949)  # 5.1 % below the window's first trade: venue 1's breaker trips (the market's 50 % does not)
    assert [(c[0], c[6], c[7], c[9]) for c in sent] == [(Cmd.VENUE_MARKET_HALT, 1, 1, cfg.account)]
    assert risk.state(1, venue=1) == HALTED and risk.state(1) == LIVE
    assert e.venue_market_risk(1, 1).halted
    ev = trade(950, venue=1)
    assert set(ev["code"][ev["kind"] == Ev.REJECTED].tolist()) == {ResultCode.VENUE_MARKET_HALTED}
    assert (trade(950, venue=2)["kind"] == Ev.FILL).sum() == 1  # venue 2 trades on in the same book
    halted_at = risk.venue_breakers[(1, 1)].halted_at
    run(e.deposit(1, 1, 1, ts=halted_at + 29 * SEC))
    assert len(sent) == 1
    run(e.deposit(1, 1, 1, ts=halted_at + 30 * SEC))
    assert [c[0] for c in sent] == [Cmd.VENUE_MARKET_HALT, Cmd.VENUE_MARKET_RESUME]
    assert risk.state(1, venue=1) == LIVE and not e.venue_market_risk(1, 1).halted
    assert risk.halts_sent == 1 and risk.resumes_sent == 1
    # the operator's own halt is not the breaker's: no resume from the worker
    t[0] = halted_at + 31 * SEC
    run(e.venue_halt(op1, 1, 1, ts=t[0]))
    assert risk.state(1, venue=1) == "external"
    run(e.deposit(1, 1, 1, ts=t[0] + 3600 * SEC))
    assert len(sent) == 2
    run(e.venue_resume(op1, 1, 1, ts=t[0] + 3600 * SEC))
    run(e.set_venue_risk(op1, 1, 1))  # move 0: the venue's breaker is off
    t[0] += 3600 * SEC
    trade(500)
    assert len(sent) == 2 and risk.state(1, venue=1) == LIVE


def test_venue_breaker_stream_with_feedback():
    """VenueRiskStreamGenerator's stream (venue breaker settings, venue halts by others) with the risk
    worker's commands fed back: every command it sent got exactly one answer, one Halt per trip."""
    e = Engine(**ENGINE_KWARGS)
    gen = VenueRiskStreamGenerator(3, limits={k: v for k, v in ENGINE_KWARGS.items() if k != "max_venues"})
    cfg = RiskConfig(move_bps=400, window_s=0.004, cooldown_s=0.002, account=-1002)  # not the generator's -1001
    risk = RiskMonitor(cfg)
    all_events = []

    def feed(events):
        all_events.append(events)
        cmds = risk.apply(events)
        if len(cmds):
            feed(e.process(cmds))

    for _, events in run_stream(e, gen, 8000, chunk=300):
        feed(events)
    events = np.concatenate(all_events)
    mine = events[(events["kind"] == Ev.MARKET_STATUS) & (events["account"] == cfg.account)]
    refused = events[(events["kind"] == Ev.REJECTED) & (events["account"] == cfg.account)]
    assert len(mine) + len(refused) == risk.halts_sent + risk.resumes_sent
    trips = sum(b.trips for b in risk.breakers.values())
    venue_trips = sum(b.trips for b in risk.venue_breakers.values())
    assert risk.halts_sent == trips + venue_trips and venue_trips >= 1
    venue_mine = mine[mine["flags"] == Cmd.VENUE_MARKET_HALT]
    assert len(venue_mine) >= 1 and set(zip(venue_mine["venue"].tolist(), venue_mine["market"].tolist())) <= set(
        risk.venue_breakers)


@pytest.mark.parametrize("seed", [7, 8])
def test_risk_stream_with_feedback(seed, tmp_path):
    """All three cores on one stream whose risk commands go back into the engine."""
    e = Engine(**ENGINE_KWARGS)
    gen = StreamGenerator(seed=seed)
    cfg = RiskConfig(move_bps=150, window_s=0.004, cooldown_s=0.002)
    risk = RiskMonitor(cfg)
    ledger = SettlementLedger(tmp_path / "l.sqlite")
    book = MarginBook()
    all_events = []

    def feed(events):
        all_events.append(events)
        ledger.apply(events)
        book.apply(events)
        cmds = risk.apply(events)
        if len(cmds):
            feed(e.process(cmds))

    for _, events in run_stream(e, gen, 8000, chunk=300):
        feed(events)
    events = np.concatenate(all_events)
    assert np.all(np.diff(events["seq"]) == 1)
    assert risk.halts_sent >= 1 and risk.resumes_sent >= 1
    mine = events[(events["kind"] == Ev.MARKET_STATUS) & (events["account"] == cfg.account)]
    refused = events[(events["kind"] == Ev.REJECTED) & (events["account"] == cfg.account)]
    # every command the worker sent got exactly one answer, and each trip sent exactly one Halt
    assert len(mine) + len(refused) == risk.halts_sent + risk.resumes_sent
    assert risk.halts_sent == sum(b.trips for b in risk.breakers.values())
    assert int((mine["qty"] == 1).sum()) >= 1 and int((mine["qty"] == 0).sum()) >= 1
    print(f"seed {seed}: {risk.halts_sent} halts, {risk.resumes_sent} resumes, {len(refused)} refused, "
          f"band breaches {risk.band_breaches}")
    assert_settlement_matches(e, ledger)
    assert_margin_matches(e, book)
    # open interest per venue = resting notional in the books
    oi = 0
    for m in e.markets():
        for o in e.l3(m.market_id):
            oi += o.price * (o.remaining // m.lot_size)
    assert risk.open_interest(0) == oi
    # order rates count every accepted order
    accepted = events[(events["kind"] == Ev.ACCEPTED) & (events["order_id"] > 0)]
    for a in np.unique(accepted["account"]).tolist():
        assert risk.order_rate(a)[2] == int((accepted["account"] == a).sum())
        assert risk.order_rate(a)[1] >= 1
    # band watch counted against the listed bands (fills only in banded markets)
    banded = {m.market_id for m in e.markets() if m.band_bps}
    assert set(risk.band_breaches) <= banded
    ledger.close()


def test_make_core(tmp_path):
    from engine.config import Config, EngineSection

    cfg = Config(engine=EngineSection(data_dir=str(tmp_path / "data")))
    e = Engine(**ENGINE_KWARGS)
    ev = np.concatenate([e.add_asset(1, "USD", 2), e.add_asset(2, "BTC", 0),
                         e.add_market(1, 2, 1, tick_size=1, lot_size=1, min_size=1)])
    for role in ("settlement", "margin", "risk"):
        core = make_core(role, cfg)
        out = core.apply(ev)
        if role == "risk":
            assert out.dtype == COMMAND_DTYPE and len(out) == 0
        assert core.cursor == 3
        getattr(core, "close", lambda: None)()
    with pytest.raises(ValueError):
        make_core("nope", cfg)


def test_histogram_percentiles_equal_hdrh():
    from hdrh.histogram import HdrHistogram

    from engine.process import histogram_percentiles, latency_histogram

    for seed in range(10):
        r = random.Random(seed)
        hist = latency_histogram()
        for _ in range(r.randint(1, 3000)):
            hist.record_value(r.choice([r.randint(1, 10**4), r.randint(1000, 10**10)]))
        ps = (50, 99, 99.9, 100)
        assert histogram_percentiles(hist, ps) == hist.get_percentile_to_value_dict(list(ps))
    assert histogram_percentiles(HdrHistogram(1, 1000, 3), (50,)) == {}


def test_percentiles_between_two_beats_are_the_windows_alone():
    """A heartbeat's ``latency_counts`` minus an earlier one's: the percentiles of a histogram that recorded
    only what came between (a benchmark's timed part without its setup's slow start)."""
    from engine.process import histogram_counts, histogram_percentiles, latency_histogram, percentiles_between

    ps = (50, 99, 99.9, 100)
    for seed in range(10):
        r = random.Random(seed)
        cumulative, window = latency_histogram(), latency_histogram()
        for _ in range(r.randint(0, 2000)):  # the setup: slow
            cumulative.record_value(r.randint(10**8, 10**10))
        before = histogram_counts(cumulative)
        for _ in range(r.randint(1, 2000)):
            value = r.choice([r.randint(1, 10**4), r.randint(1000, 10**7)])
            cumulative.record_value(value)
            window.record_value(value)
        assert percentiles_between(before, histogram_counts(cumulative), ps) == histogram_percentiles(window, ps)
    assert percentiles_between(before, before, ps) == {}
    earlier, restarted = latency_histogram(), latency_histogram()  # a process restarted between the beats
    earlier.record_value(10**9)
    restarted.record_value(5)
    with pytest.raises(ValueError, match="not one histogram's"):
        percentiles_between(histogram_counts(earlier), histogram_counts(restarted), ps)


def taken(events: np.ndarray, rng: random.Random, keep: np.ndarray, max_size: int = 2500):
    """What a ring consumer's ``take_kinds`` hands a worker: (chosen, first, last) per take, with
    takes that overlap what was already applied (a worker back at its checkpoint) now and then."""
    i = 0
    while i < len(events):
        back = rng.randint(0, min(i, 300)) if rng.random() < 0.2 else 0
        n = rng.randint(0, max_size)
        lo, hi = i - back, min(i + n, len(events))
        batch = events[lo:hi]
        kind = batch["kind"]
        chosen = batch[(kind < len(keep)) & (keep[np.minimum(kind, len(keep) - 1)] != 0)]
        yield chosen, lo + 1, hi  # the stream's seqs are 1, 2, ...
        i = hi


def test_apply_taken_equals_apply(stream, tmp_path):
    """Each core fed the ring's chosen kinds ends where it ends fed whole batches; a gap raises."""
    e, events = stream
    whole = make_core("settlement", Config(engine=EngineSection(data_dir=str(tmp_path / "a"))))
    chosen = make_core("settlement", Config(engine=EngineSection(data_dir=str(tmp_path / "b"))))
    margin_a, margin_b = MarginBook(MarginConfig(), accounts=2), MarginBook(MarginConfig(), accounts=2)
    risk_a, risk_b = RiskMonitor(start_anywhere=False), RiskMonitor(start_anywhere=False)
    for batch in batches(events, random.Random(5)):
        whole.apply(batch)
        margin_a.apply(batch)
        risk_a.apply(batch)
    for core in (chosen, margin_b, risk_b):
        for args in taken(events, random.Random(6), core.FOLLOWED):
            core.apply_taken(*args)
        assert core.cursor == int(events["seq"][-1])
    assert_settlement_matches(e, chosen)
    assert_margin_matches(e, margin_b)
    assert np.array_equal(margin_a.total, margin_b.total) and np.array_equal(margin_a.held, margin_b.held)
    assert risk_a.oi == risk_b.oi and risk_a.rates.to_dict() == risk_b.rates.to_dict()
    assert risk_a.last == risk_b.last and risk_a.orders.to_dict() == risk_b.orders.to_dict()
    fresh = MarginBook(MarginConfig(), accounts=2)
    with pytest.raises(SequenceGapError, match="gap: cursor is 0"):
        fresh.apply_taken(events[4:10], 5, 10)
    for core in (whole, chosen):
        core.close()


@pytest.mark.parametrize("seed", range(4))
def test_breaker_and_band_watch_equal_a_trade_by_trade_model(seed):
    """Runs of fills applied at once give the Halts, band breaches and last prices of the rule
    applied trade by trade (the module docstring's), whatever the batching."""
    from collections import deque

    rng = random.Random(seed)
    e = Engine(**ENGINE_KWARGS)
    bands = {1: 30, 2: 200, 3: 0}
    moves = {1: 50, 2: 300, 3: 10**4}
    listing = np.concatenate([e.add_asset(1, "USD", 2), e.add_asset(2, "BTC", 0)] + [
        e.add_market(m, 2, 1, tick_size=1, lot_size=1, min_size=1, band_bps=bands[m]) for m in bands])
    window_ns = 5 * SEC
    cfg = RiskConfig(move_bps=1000, window_s=5, overrides={m: {"move_bps": b} for m, b in moves.items()})
    events = np.zeros(4000, EVENT_DTYPE)
    events["seq"] = np.arange(len(listing) + 1, len(listing) + 1 + len(events))
    price = {m: 10_000 for m in bands}
    ts = 100 * SEC
    for ev in events:
        ts += rng.choice([0, 0, 0, SEC // 10, SEC, 3 * SEC])
        m = rng.choice(list(bands))
        ev["ts"], ev["market"] = ts, m
        if rng.random() < 0.01:  # the market is live again (an operator's Resume)
            ev["kind"], ev["account"] = Ev.MARKET_STATUS, 77
            continue
        price[m] = max(1, price[m] + rng.choice([-1, 1]) * rng.choice([1, 5, 20, 60]))
        ev["kind"], ev["price"], ev["qty"] = Ev.FILL, price[m], 1
    # the model, trade by trade
    halts, breaches, last = [], {}, {}
    window, live = {m: deque() for m in bands}, dict.fromkeys(bands, True)
    for kind, m, p, t in zip(*(events[c].tolist() for c in ("kind", "market", "price", "ts"))):
        if kind == Ev.MARKET_STATUS:
            live[m] = True
            window[m].clear()
            continue
        prev = last.get(m, 0)
        if bands[m] and prev > 0 and abs(p - prev) * 10000 > bands[m] * prev:
            breaches[m] = breaches.get(m, 0) + 1
        last[m] = p
        if not live[m]:
            continue
        w = window[m]
        while w and w[0][0] < t - window_ns:
            w.popleft()
        ref = w[0][1] if w else p
        w.append((t, p))
        if abs(p - ref) * 10000 > moves[m] * ref:
            live[m] = False
            halts.append((m, t))
    assert len(halts) > 5 and sum(breaches.values()) > 5
    risk = RiskMonitor(cfg, start_anywhere=False)
    risk.apply(listing)
    sent = []
    for batch in batches(events, rng, 300):
        sent += [(int(c["market"]), int(c["ts"])) for c in risk.apply(batch) if c["kind"] == Cmd.HALT]
    assert sent == halts and risk.band_breaches == breaches and risk.last == last


def ledger_and_book_after(events: np.ndarray, tmp_path, seed: int) -> tuple[SettlementLedger, MarginBook]:
    """A settlement ledger and a margin book fed ``events`` in the same random batches."""
    ledger = SettlementLedger(tmp_path / "ledger.sqlite")
    book = MarginBook(MarginConfig(), accounts=2)
    for batch in batches(events, random.Random(seed)):
        ledger.apply(batch)
        book.apply(batch)
    return ledger, book


def test_workers_follow_venue_transfers(tmp_path):
    """Stake locks, releases, slashes and fee sweeps move the ledger's and the margin book's balances
    as they move the matcher's, and buy holds follow each order's own venue fee, on a stream over
    many venues."""
    e = Engine(**ENGINE_KWARGS)
    gen = VenueStreamGenerator(6, limits=dict(ENGINE_KWARGS))
    events = np.concatenate([ev for _, ev in run_stream(e, gen, 10_000, chunk=250)])
    reasons = set(events["reason"][events["kind"] == Ev.VENUE_TRANSFER].tolist())
    assert reasons >= {1, 2, 3, 4}
    ledger, book = ledger_and_book_after(events, tmp_path, seed=9)
    assert_settlement_matches(e, ledger)
    assert_margin_matches(e, book)
    names = {k for (k,) in ledger.db.execute("SELECT DISTINCT kind FROM entries")}
    assert names >= {"stake_lock", "stake_release", "slash_insurance", "slash_protocol"}
    ledger.close()


def test_margin_checkpoint_from_before_per_order_fees(stream):
    """A pickled book whose orders lack the taker-fee column (all venue 0's) continues exactly."""
    import pickle

    from engine.workercore import IntTable

    e, events = stream
    half = len(events) // 2
    book = MarginBook(MarginConfig(), accounts=2)
    book.apply(events[:half])
    current = book.orders.to_dict()
    keys, vals = book.orders.arrays()
    book.orders = IntTable(5, len(keys))  # the earlier layout: row, market index, side, price, remaining
    book.orders.update(keys, vals[:, :5])
    restored = pickle.loads(pickle.dumps(book))
    assert restored.orders.to_dict() == current
    restored.apply(events[half:])
    assert_margin_matches(e, restored)


@pytest.mark.parametrize("generator", ["PerpStreamGenerator", "LeveragedPerpStreamGenerator"])
def test_workers_follow_perpetual_fills_and_positions(tmp_path, generator):
    """A perpetual fill moves no base and no notional in the ledger, only its fees; realised PnL moves
    between the account and POSITION_ACCOUNT, which ends at minus what the open positions owe.  The
    margin book's balances and holds (orders' quote holds, positions' margins) equal the matcher's,
    and its positions the matcher's sizes; at 1x and at the leverage MarketRisk sets."""
    from collections import defaultdict

    import generators

    from engine.records import MarketKind

    e = Engine(**ENGINE_KWARGS)
    gen = getattr(generators, generator)(4, limits=dict(ENGINE_KWARGS))
    events = np.concatenate([ev for _, ev in run_stream(e, gen, 12_000, chunk=250)])
    assert (events["kind"] == Ev.POSITION).sum() > 100 and (events["maker_fee"][events["kind"] == Ev.POSITION] != 0).any()
    ledger, book = ledger_and_book_after(events, tmp_path, seed=12)
    assert_settlement_matches(e, ledger)
    assert_margin_matches(e, book)
    markets = {m.market_id: m for m in e.markets()}
    risks = {r.market_id: r for r in e.market_risks()}
    upnl_sum, maint_sum = defaultdict(int), defaultdict(int)
    for p in e.positions():  # valued at the matcher's mark (its Mark events)
        m, risk = markets[p.market], risks[p.market]
        mark, lots = risk.mark, abs(p.size) // m.lot_size
        assert book.perp_marks.get(p.market, 0) == mark
        upnl = 0 if p.size == 0 else (mark * lots - p.entry_value) * (1 if p.size > 0 else -1)
        maint = -(-(-(-mark * lots // risk.max_leverage)) * risk.maintenance_bps // 10000)
        assert book.position(p.account, p.market) == {"size": p.size, "entry": p.entry_value, "margin": p.margin,
                                                      "upnl": upnl, "maintenance": maint}, p
        upnl_sum[p.account, m.quote] += upnl
        maint_sum[p.account, m.quote] += maint
    for (account, asset), v in upnl_sum.items():
        r, c = book.index[account], book.col_of[asset]
        assert (book.upnl_sum[r, c], book.maint_sum[r, c]) == (v, maint_sum[account, asset])
    assert book.upnl_sum.sum() == sum(upnl_sum.values()) and book.maint_sum.sum() == sum(maint_sum.values())
    # ADL ranks: per market and side, unrealised PnL per unit of margin descending, ties by account
    from fractions import Fraction

    upnl_of = {(p.account, p.market): (p.size, book.position(p.account, p.market)["upnl"], p.margin)
               for p in e.positions() if p.size}
    view = {(int(v["account"]), int(v["market"])): int(v["adl_rank"]) for v in book.positions_view()}
    assert set(view) == set(upnl_of)
    groups = defaultdict(list)
    for (account, market), (size, upnl, margin) in upnl_of.items():
        groups[market, size > 0].append((-Fraction(upnl, max(margin, 1)), account))
    for (market, _), members in groups.items():
        for rank, (_, account) in enumerate(sorted(members), 1):
            assert view[account, market] == rank
    # under maintenance: the matcher's equity in the quote asset (free + the positions' margin and unrealised
    # PnL; order holds do not count) below the positions' maintenance
    margins = defaultdict(int)
    for p in e.positions():
        margins[p.account, markets[p.market].quote] += p.margin
    expected = sorted((book.index[a], q) for (a, q), mm in maint_sum.items()
                      if mm > 0 and e.balance(a, q)[0] + margins[a, q] + upnl_sum[a, q] < mm)
    rows_found, assets_found = book.under_maintenance()
    assert sorted(zip(rows_found.tolist(), assets_found.tolist())) == expected
    set_by_command = {m.market_id: m.max_leverage for m in e.market_risks() if m.max_leverage != 1}
    assert {k: v for k, v in book.leverage.items() if v != 1} == set_by_command
    assert bool(set_by_command) == (generator == "LeveragedPerpStreamGenerator")
    owed = defaultdict(int)
    for p in e.positions():
        owed[markets[p.market].quote] += p.entry_value if p.size > 0 else -p.entry_value
    assert any(m.kind == MarketKind.PERPETUAL for m in markets.values()) and owed
    for asset in e.assets():
        assert ledger.balance(POSITION_ACCOUNT, asset.asset_id) == -owed.get(asset.asset_id, 0)
    ledger.close()
    reopened = SettlementLedger(tmp_path / "ledger.sqlite")  # the legs summed again from the tables
    assert_settlement_matches(e, reopened)
    reopened.close()


def test_margin_book_sends_liquidate_when_the_mark_moves_below_maintenance():
    """A trade at a new price moves the mark and revalues every position of its market: the 10x long whose
    loss takes its equity below maintenance gets one Liquidate (naming it, the asset and its market's risk
    group), its counterparty short none; while it stays under, again only after a second of engine time."""
    from engine.records import MarketKind
    from engine.workers.margin import LIQUIDATE_RETRY_NS, MARGIN_WORKER_ID

    e = Engine(**ENGINE_KWARGS)
    setup = [e.add_asset(1, "USDT", 2), e.add_asset(2, "BTC", 8),
             e.add_market(5, 2, 1, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL),
             e.set_venue_params(9, stake_asset=2, min_stake=1, unbond_period=1, protocol_account=8, admin=9),
             e.market_risk(9, 5, max_leverage=10, maintenance_bps=5000)]
    setup += [e.deposit(account, 1, 2_000) for account in (1, 2, 3, 4)]
    setup += [e.place(1, 5, Side.BUY, 1000, 10, 1), e.place(2, 5, Side.SELL, 1000, 10, 1)]
    book = MarginBook()
    assert len(book.apply(np.concatenate(setup))) == 0
    assert not (np.concatenate(setup)["kind"] == Ev.REJECTED).any()
    assert book.position(1, 5) == {"size": 10, "entry": 10_000, "margin": 1000, "upnl": 0, "maintenance": 500}

    def trade(price, client_id, ts):
        return np.concatenate([e.place(3, 5, Side.BUY, price, 1, client_id, ts=ts),
                               e.place(4, 5, Side.SELL, price, 1, client_id, ts=ts)])

    # accounts 3 and 4 trade one lot at 880 (the mark: no oracle, no book left): the long's equity
    # 2000 - 1200 = 800 >= maintenance 440
    assert len(book.apply(trade(880, 1, 10))) == 0
    assert book.position(1, 5)["upnl"] == -1200
    # the long is liquidatable at or below 842 (equity 420 < 421 there; at 843, 430 >= 422), the short
    # (equity 2000 + 1200, maintenance 440) only far above
    view = book.positions_view()
    assert view[["account", "market", "size", "mark", "upnl"]].tolist() == [(1, 5, 10, 880, -1200), (2, 5, -10, 880, 1200),
                                                                             (3, 5, 1, 880, 0), (4, 5, -1, 880, 0)]
    assert view["liquidation_price"][0] == 842 and view["liquidation_price"][1] > 1100
    # at 820: equity 2000 - 1800 = 200 < maintenance 410
    sent = book.apply(trade(820, 2, 20))
    assert sent[["kind", "account", "id", "market", "venue", "ts"]].tolist() == [(Cmd.LIQUIDATE, MARGIN_WORKER_ID, 1, 1, 0, 20)]
    assert book.position(1, 5) == {"size": 10, "entry": 10_000, "margin": 1000, "upnl": -1800, "maintenance": 410}
    rows_now, assets_now = book.under_maintenance()
    assert rows_now.tolist() == [book.index[1]] and assets_now.tolist() == [1]
    # still under at 815: not again within a second of engine time, then again
    assert len(book.apply(trade(815, 3, 30))) == 0
    again = book.apply(trade(810, 4, 20 + LIQUIDATE_RETRY_NS))
    assert again[["kind", "id", "market"]].tolist() == [(Cmd.LIQUIDATE, 1, 1)] and book.liquidations == 2


@pytest.mark.parametrize("accounts, assets", [((1, 4, 7, 9), (1, 2, 3)), ((9, 4, 7, 1), (3, 1, 2))])
def test_the_balances_view_is_by_account_then_asset_whatever_order_they_came_in(accounts, assets):
    """The book gives rows and columns as accounts and assets come: in id order (the view is the cells as
    found) or not (the view is sorted); either way it is every non-zero balance, by account id then asset id."""
    e = Engine(**ENGINE_KWARGS)
    events = [e.add_asset(a, f"A{a}", 0) for a in assets]
    events.append(e.add_market(5, 2, 1, tick_size=1, lot_size=1, min_size=1))
    for i, a in enumerate(accounts):
        events += [e.deposit(a, asset, 1_000 * a + asset) for asset in assets[i % 2:]]
    events.append(e.place(accounts[0], 5, Side.BUY, 10, 3, 1))  # a hold
    book = MarginBook()
    book.apply(np.concatenate(events))
    assert book.account_ids[:len(accounts)].tolist() == list(accounts) and book.asset_of.tolist() == list(assets)
    view = book.balances_view()
    assert view.tolist() == [(a, asset, t, h) for a in sorted(accounts) for asset, (t, h) in
                             sorted(book.balances(a).items())]
    assert len(view) == 10 and view["held"].sum() == 30


def test_margin_stage_publishes_account_and_position_views(tmp_path):
    """The margin worker's views as the gateway and ``xos account`` read them: one row per account
    (with the maintenance requirement), one per open position (with its liquidation price), one per non-zero
    balance, and the cursor they are at least as new as."""
    from typer.testing import CliRunner

    from engine.cli import app
    from engine.process import publish_views
    from engine.records import MarketKind

    e = Engine(**ENGINE_KWARGS)
    events = [e.add_asset(1, "USDT", 2), e.add_asset(2, "BTC", 8),
              e.add_market(5, 2, 1, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL)]
    events += [e.deposit(a, 1, 50_000) for a in (1, 2)]
    events += [e.place(1, 5, Side.BUY, 1000, 10, 1), e.place(2, 5, Side.SELL, 1000, 10, 1)]
    book = MarginBook()
    book.apply(np.concatenate(events))
    cfg = Config(engine=EngineSection(data_dir=str(tmp_path)))
    (tmp_path / "run").mkdir()
    assert publish_views(book, cfg.data_path / "run", "margin") == []
    accounts = np.load(tmp_path / "run" / "margin-view.npy")
    positions = np.load(tmp_path / "run" / "margin-positions.npy")
    balances = np.load(tmp_path / "run" / "margin-balances.npy")
    assert json.loads((tmp_path / "run" / "margin-views.json").read_text()) == {"cursor": book.cursor}
    assert [(a, asset, t, h) for a, asset, t, h in balances.tolist()] == \
        [(a, asset, t, h) for a in (1, 2) for asset, (t, h) in sorted(book.balances(a).items())]
    assert accounts[["account", "equity", "maintenance"]].tolist() == [(1, 50_000, 5000), (2, 50_000, 5000)]
    assert positions[["account", "market", "size", "entry", "mark"]].tolist() == [(1, 5, 10, 10_000, 1000),
                                                                                  (2, 5, -10, 10_000, 1000)]
    assert positions["liquidation_price"][0] == 0  # a fully collateralised long cannot be liquidated
    config = tmp_path / "xos.toml"
    config.write_text(f'[engine]\ndata_dir = "{tmp_path}"\n')
    ledger = SettlementLedger(tmp_path / "settlement.sqlite")
    ledger.apply(np.concatenate(events))
    ledger.close()
    out = CliRunner().invoke(app, ["account", "1", "--config", str(config)])
    assert "maintenance 5000" in out.output and "position market 5 size 10 entry 10000" in out.output, out.output
    assert "ADL rank 1 cross" in out.output



def test_a_costly_checkpoint_comes_no_sooner_than_its_share_of_the_time_allows(monkeypatch):
    """A worker checkpoints every ``checkpoint_s`` while events flow and when its ring goes idle, but a
    checkpoint that took 0.4 s (config B's margin book) waits 2 s: checkpoints take at most a fifth of the
    worker.  Half a ring of events not yet durable cannot wait, and a durable core commits every batch."""
    import time
    from types import SimpleNamespace

    from engine import process
    from engine.config import WorkersSection
    from engine.process import WorkerStage

    now = 1000.0
    monkeypatch.setattr(time, "monotonic", lambda: now)
    cfg = Config(workers=WorkersSection(checkpoint_s=1.0))
    stage = SimpleNamespace(cfg=cfg, durable=False, pending=10, checkpoint_every=100, last_checkpoint=now,
                            checkpoint_cost_s=0.005, has_views=False, views_cursor=-1, core=SimpleNamespace(cursor=9))

    def after(seconds: float, idle: bool) -> bool:
        stage.last_checkpoint = now - seconds
        return WorkerStage.checkpoint_due(stage, idle)

    assert process.CHECKPOINT_SHARE == 0.2
    assert [after(s, False) for s in (0.5, 0.99, 1.0)] == [False, False, True]  # a cheap one: every checkpoint_s
    assert [after(s, True) for s in (0.01, 0.03, 0.5)] == [False, True, True]  # and soon after the ring goes idle
    stage.checkpoint_cost_s = 0.4
    assert [after(s, False) for s in (1.0, 1.99, 2.01)] == [False, False, True]
    assert [after(s, True) for s in (0.5, 1.99, 2.01)] == [False, False, True]
    stage.pending = 0
    assert not after(5.0, True)  # nothing to make durable
    stage.has_views = True  # and views older than the core: a half ring's checkpoint left them
    assert after(5.0, True) and not after(0.5, True)
    stage.views_cursor = 9
    assert not after(5.0, True)
    stage.pending = 100
    assert after(0.1, False)  # a half ring
    stage.pending, stage.durable = 1, True
    assert after(0.0, False)


def test_a_checkpoint_for_the_rings_room_publishes_views_only_every_checkpoint_s(monkeypatch):
    """Every checkpoint saves the core and releases the ring; the views go with it only once they are
    ``checkpoint_s`` old (half a ring of events can come much sooner) and, when costly, their share of the time
    allows, and the count and time of checkpoints and views are kept for the heartbeat.  Views left behind the
    core are published once the ring is idle (the test above)."""
    import time
    from types import SimpleNamespace

    from engine.config import WorkersSection
    from engine.process import WorkerStage

    now = 1000.0
    monkeypatch.setattr(time, "monotonic", lambda: now)
    saved, published, released = [], [], []
    stage = SimpleNamespace(cfg=Config(workers=WorkersSection(checkpoint_s=1.0)), last_views=now - 0.5, views_cursor=3,
                            checkpoint=SimpleNamespace(save=saved.append), publish_view=lambda: published.append(now),
                            core=SimpleNamespace(cursor=40), taken_seq=40, pending=7, checkpoints=0,
                            checkpoint_total_s=0.0, views=0, views_total_s=0.0, views_cost_s=0.1,
                            consumer=SimpleNamespace(cursor=10, release_to=released.append))
    assert not WorkerStage.views_due(stage)
    WorkerStage.make_durable(stage, views=WorkerStage.views_due(stage))
    assert (len(saved), published, released, stage.pending, stage.checkpoints) == (1, [], [40], 0, 1)
    assert stage.views_cursor == 3  # the views are behind the core: an idle ring publishes them (above)
    now += 0.5
    assert WorkerStage.views_due(stage)
    WorkerStage.make_durable(stage, views=True)
    assert len(saved) == 2 and published == [now] and stage.last_views == now and stage.checkpoints == 2
    assert stage.views_cursor == 40 and stage.views == 1 and stage.views_total_s == 0.0  # (the clock stood still)
    stage.views_cost_s = 0.4  # views that took 0.4 s come 2 s apart, however soon a half ring is checkpointed
    now += 1.5
    assert not WorkerStage.views_due(stage)
    now += 0.5
    assert WorkerStage.views_due(stage)


def test_a_view_that_cannot_be_made_is_removed_not_left_older_than_the_cursor(tmp_path, capsys):
    """A margin view whose values overflow is not published and its last file goes: the others and the cursor
    file still are, so a reader never takes an old view for one as new as the cursor."""
    from types import SimpleNamespace

    from engine.process import WorkerStage
    from engine.workers.margin import BALANCES_VIEW_DTYPE

    class Core:
        cursor = 7

        def snapshot(self):
            raise OverflowError("valuations could exceed int64")

        def balances_view(self):
            return np.zeros(2, BALANCES_VIEW_DTYPE)

    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "margin-view.npy", np.zeros(1))  # the last checkpoint's
    stage = SimpleNamespace(core=Core(), cfg=Config(engine=EngineSection(data_dir=str(tmp_path))), role="margin",
                            view_errors=0)
    WorkerStage.publish_view(stage)
    assert not (run / "margin-view.npy").exists() and len(np.load(run / "margin-balances.npy")) == 2
    assert json.loads((run / "margin-views.json").read_text()) == {"cursor": 7} and stage.view_errors == 1
    assert "margin: view not published: valuations could exceed int64 (1 times)" in capsys.readouterr().err
    WorkerStage.publish_view(stage)
    WorkerStage.publish_view(stage)
    assert stage.view_errors == 3 and capsys.readouterr().err.count("not published") == 1  # the 1st, 2nd, 4th ...


def recording_engine(**kwargs) -> tuple[Engine, list]:
    """A Cython engine and the list its events are recorded in, one array per command."""
    e = Engine(**kwargs)
    recorded = []
    process = e.process

    def recording(cmds):
        out = process(cmds)
        recorded.append(out)
        return out

    e.process = recording
    return e, recorded


def recording_liq_world() -> tuple[Engine, list]:
    """``test_liquidation.liq_world`` on the Cython engine, and the list its events (and every later command's)
    are recorded in, one array per command."""
    from test_liquidation import liq_world

    e, recorded = recording_engine(**ENGINE_KWARGS)
    return liq_world(lambda **kw: e), recorded


def built_with(world, *args) -> tuple[Engine, list]:
    """``world(engine_cls, *args)`` of a matcher test module on a recording Cython engine."""
    made = []

    def engine_cls(**kw):
        made.append(recording_engine(**kw))
        return made[0][0]

    world(engine_cls, *args)
    return made[0]


def feed(book: MarginBook, recorded: list) -> np.ndarray:
    """Apply every event recorded since the last call (the list is emptied); returns the commands sent."""
    events = np.concatenate(recorded) if recorded else np.zeros(0, EVENT_DTYPE)
    recorded.clear()
    return book.apply(events)


def liquidated_by(e: Engine, cmds: np.ndarray) -> np.ndarray:
    """Process the worker's commands through the matcher; its Liquidation events."""
    events = e.process(cmds)
    assert not (events["kind"] == Ev.REJECTED).any(), events[events["kind"] == Ev.REJECTED]["code"]
    return events[events["kind"] == Ev.LIQUIDATION]


def test_margin_book_leaves_order_holds_out_of_the_equity():
    """The matcher's equity is free + margins + unrealised: a resting order's hold is not equity.  A 10x long
    (2,000 deposited, margin 1,000) with a resting bid holding 250 is under maintenance at 850 (equity 750 + 1,000
    - 1,500 = 250 < 425), though free + held + unrealised (500) is not: the worker sends it, the matcher accepts."""
    e, recorded = recording_engine(**ENGINE_KWARGS)
    e.add_asset(1, "USDT", 2)
    e.add_asset(2, "BTC", 8)
    e.add_market(5, 2, 1, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL)
    e.set_venue_params(9, stake_asset=2, min_stake=1, unbond_period=1, protocol_account=8, admin=9)
    e.market_risk(9, 5, max_leverage=10, maintenance_bps=5000)
    for account in (1, 2, 3, 4):
        e.deposit(account, 1, 2_000)
    e.place(1, 5, Side.BUY, 1000, 10, 1)
    e.place(2, 5, Side.SELL, 1000, 10, 1)
    e.place(1, 5, Side.BUY, 500, 5, 2)  # rests: holds 5 x 50
    assert e.balance(1, 1) == (750, 1250)
    book = MarginBook()
    assert len(feed(book, recorded)) == 0
    for price, client_id in ((880, 1), (850, 2)):
        e.place(3, 5, Side.BUY, price, 1, client_id)
        e.place(4, 5, Side.SELL, price, 1, client_id)
        sent = feed(book, recorded)
        if price == 880:  # 750 + 1,000 - 1,200 = 550 >= 440
            assert len(sent) == 0
    assert book.perp_marks[5] == 850 and book.position(1, 5)["upnl"] == -1500
    total, held = book.balance(1, 1)
    assert total + book.upnl_sum[book.index[1], book.col_of[1]] >= 425  # the old rule would not send
    assert sent[["kind", "id", "market", "venue", "aux"]].tolist() == [(Cmd.LIQUIDATE, 1, 1, 0, 0)]
    liquidation = liquidated_by(e, sent)
    assert [(int(x["account"]), int(x["price"]), int(x["qty"])) for x in liquidation] == [(1, 250, 425)]


@pytest.mark.parametrize("generator", ["LeveragedPerpStreamGenerator", "IsolatedMarginStreamGenerator"])
def test_a_margin_checkpoint_holds_only_the_cells_in_use_and_continues_exactly(monkeypatch, generator):
    """The balances and holds are pickled as their non-zero cells, the position columns cut to the slots in use,
    and the position sums not at all: the cross slots give them again, exactly (sized for 1,024 accounts with one
    in use, the wire benchmark's book pickled ~870 KB once a second, and its fsync held the matcher's durable
    writes back; config B's pickled 523 MB).  Checkpointed and restored after every chunk of a leveraged
    perpetual stream (with isolated positions, in the second), with room for only twice the rows and slots in use
    so that the positions (and then a run of new accounts) coming later grow it: each restored book equals the
    one pickled, and the book ends where the one that never stopped ends."""
    import collections
    import pickle

    import generators

    from engine.workers import margin, positions

    monkeypatch.setattr(margin, "MIN_ROWS", 1)
    monkeypatch.setattr(positions, "MIN_SLOTS", 1)
    e = Engine(**ENGINE_KWARGS)
    whole, book, grown = MarginBook(), MarginBook(), collections.Counter()
    stream = getattr(generators, generator)(7, limits=dict(ENGINE_KWARGS))
    for _, ev in run_stream(e, stream, 3_000, chunk=60):
        whole.apply(ev)
        rows_before, slots_before = len(book.account_ids), len(book.perp.row)
        book.apply(ev)
        grown.update(slots=len(book.perp.row) > slots_before, isolated=bool(book.perp.isolated.any()))
        state, perp = book.__getstate__(), book.perp.__getstate__()
        n, k = len(book.index), len(book.asset_of)
        assert len(state["account_ids"]) == n and not {name for name, _ in margin.POSITION_SUMS} & set(state)
        for name in ("total", "held"):  # the non-zero cells of the rows and columns in use
            dense, cells = getattr(book, name), state[name]
            assert isinstance(cells, margin.SparseCells) and cells.width == dense.shape[1]
            assert cells.cells.tolist() == [r * cells.width + c for r in range(n) for c in range(k) if dense[r, c]]
            assert cells.values.tolist() == dense[:n, :k][dense[:n, :k] != 0].tolist()
        assert {len(perp[name]) for name in positions._COLUMNS} == {len(book.perp.slots)}
        data = pickle.dumps(book, protocol=pickle.HIGHEST_PROTOCOL)
        if rows_before == 1024:  # the first: a book as made, sized for 1,024 accounts
            assert len(data) < sum(getattr(book, name).nbytes for name in margin.ACCOUNT_ARRAYS) / 20
        restored = pickle.loads(data)
        for name in margin.ACCOUNT_ARRAYS:
            assert (getattr(restored, name)[:n] == getattr(book, name)[:n]).all(), name
        book = restored
        n, k = len(book.index), len(book.perp.slots)
        assert len(book.account_ids) == max(1, 2 * n) and len(book.perp.row) == max(1, 2 * k)
    assert book.margin_sum.any() and book.upnl_sum.any() and book.maint_sum.any()
    assert (grown["isolated"] > 0) == (generator == "IsolatedMarginStreamGenerator") and book.index == whole.index
    assert grown["slots"] or generator == "IsolatedMarginStreamGenerator"  # (its slots are made at setup)
    asset = next(iter(e.assets())).asset_id
    more = np.concatenate([e.deposit(10_000 + i, asset, 5) for i in range(3 * n)])  # past the rows restored
    whole.apply(more)
    book.apply(more)
    n = len(book.index)
    assert n == len(whole.index) and len(book.account_ids) >= n
    assert_margin_matches(e, book)
    for name in ("account_ids", *margin.ACCOUNT_ARRAYS):
        assert (getattr(book, name)[:n] == getattr(whole, name)[:n]).all(), name
    for name in positions._COLUMNS:
        assert (getattr(book.perp, name)[:k] == getattr(whole.perp, name)[:k]).all(), name
    assert book.perp.by_market.keys() == whole.perp.by_market.keys()


def test_margin_checkpoint_from_before_margin_modes():
    """A checkpoint pickled before margin modes and the unified account (no ``margin_sum``, no ``isolated`` column,
    (row, asset) pairs under maintenance, no collateral state) reads with every position cross: ``margin_sum`` the
    slots' margins, the rest empty."""
    import pickle

    from generators import LeveragedPerpStreamGenerator

    e = Engine(**ENGINE_KWARGS)
    gen = LeveragedPerpStreamGenerator(5, limits=dict(ENGINE_KWARGS))
    book = MarginBook()
    for _, ev in run_stream(e, gen, 3_000, chunk=250):
        book.apply(ev)
    assert book.margin_sum.any()
    old = {k: v for k, v in book.__dict__.items()
           if k not in ("margin_sum", "isolated_sent", "valuation", "collateral", "venue_weights", "oracles")}
    old["under"] = np.zeros((0, 2), np.int64)
    old["perp"] = PositionBook.__new__(PositionBook)
    old["perp"].__dict__.update({k: v for k, v in book.perp.__dict__.items() if k != "isolated"})
    restored = MarginBook.__new__(MarginBook)
    restored.__setstate__(pickle.loads(pickle.dumps(old)))
    assert (restored.margin_sum == book.margin_sum).all() and not restored.perp.isolated.any()
    assert restored.under.shape == (0, 3) and restored.valuation == 0 and restored.oracles == {}
    assert_margin_matches(e, restored)


def test_margin_book_liquidates_an_isolated_position_alone():
    """``test_isolated_margin.iso_world``: A is long 10 lots isolated in PERP (margin 1,000) and 5 lots cross in
    PERP2 (margin 500, 500 free).  PERP's mark falls to 905: the isolated position's margin + unrealised (1,000 -
    950 = 50) is under its maintenance (453); the worker sends Liquidate with aux PERP (the listing venue, the
    quote asset) and no cross one (cross equity 500 + 500 >= 250), and the matcher accepts it: only PERP closes."""
    from test_isolated_margin import A, PERP, PERP2, USD, iso_world, mark

    e, recorded = built_with(iso_world)
    book = MarginBook()
    assert len(feed(book, recorded)) == 0
    slot = book.perp.slots.get(book.index[A] * (1 << 24) + PERP)[0]
    assert book.perp.isolated[slot] == 1
    r, c = book.index[A], book.col_of[USD]
    # the cross sums hold PERP2 alone
    assert (book.margin_sum[r, c], book.maint_sum[r, c], book.cross_equity(np.array([r]))[0, c]) == (500, 250, 1000)
    mark(e, PERP, 950)  # 1,000 - 500 = 500 >= 475
    assert len(feed(book, recorded)) == 0
    view = {int(v["market"]): v for v in book.positions_view() if v["account"] == A}
    assert (int(view[PERP]["isolated"]), int(view[PERP2]["isolated"])) == (1, 0)
    # the isolated long's own liquidation price: 1,000 + 10 (x - 1,000) < x / 2 below 947.4; the cross long's from
    # its 1,000 of cross equity: 1,000 + 5 (x - 1,000) < x / 4 below 842.1
    assert (view[PERP]["liquidation_price"], view[PERP2]["liquidation_price"]) == (947, 842)
    mark(e, PERP, 905)
    sent = feed(book, recorded)
    assert sent[["kind", "id", "venue", "market", "aux"]].tolist() == [(Cmd.LIQUIDATE, A, 0, USD, PERP)]
    liquidation = liquidated_by(e, sent)
    assert [(int(x["maker_order"]), int(x["price"]), int(x["qty"])) for x in liquidation] == [(PERP, 50, 453)]
    assert e.position(A, PERP).size == 0 and e.position(A, PERP2).size == 50
    assert len(feed(book, recorded)) == 0
    assert book.position(A, PERP)["size"] == 0 and book.position(A, PERP2)["size"] == 50
    assert_margin_matches(e, book)
    # the cross position alone now: PERP2 falling under its cross maintenance gives a cross Liquidate
    mark(e, PERP2, 795)
    sent = feed(book, recorded)
    assert sent[["kind", "id", "venue", "market", "aux"]].tolist() == [(Cmd.LIQUIDATE, A, 0, USD, 0)]
    assert len(liquidated_by(e, sent)) == 1


@pytest.mark.parametrize("seed", range(3))
def test_workers_follow_liquidations_insurance_and_adl(tmp_path, seed):
    """Random price crashes with keepers' Liquidate commands (``test_liquidation``): liquidation IOC orders
    (which hold nothing), the insurance fund's takeovers and payments, ADL closes and haircuts.  The ledger
    and the margin book end equal to the matcher (balances, holds, positions, marks), the insurance
    payments' transit account at 0 and POSITION_ACCOUNT at minus what the open positions owe."""
    from collections import defaultdict

    from engine.workers.settlement import LIQUIDATION_ACCOUNT
    from test_liquidation import USD, random_crash_commands

    e, recorded = recording_liq_world()
    for name, fields in random_crash_commands(seed):
        if name == "deposit" and fields["amount"] <= 0:
            continue
        getattr(e, name)(**fields)
    events = np.concatenate(recorded)
    kinds = set(events["kind"].tolist())
    assert {Ev.LIQUIDATION, Ev.DELEVERAGE, Ev.LIQUIDATED, Ev.MARK} <= kinds, kinds
    assert ((events["kind"] == Ev.ACCEPTED) & (events["flags"] & EvFlag.LIQUIDATION != 0)).any()
    ledger, book = ledger_and_book_after(events, tmp_path, seed=seed)
    assert_settlement_matches(e, ledger)
    assert_margin_matches(e, book)
    owed = defaultdict(int)
    for p in e.positions():
        assert book.position(p.account, p.market)["size"] == p.size
        owed[USD] += p.entry_value if p.size > 0 else -p.entry_value
    assert ledger.balance(POSITION_ACCOUNT, USD) == -owed[USD]
    assert ledger.balance(LIQUIDATION_ACCOUNT, USD) == 0
    assert book.perp_marks == {r.market_id: r.mark for r in e.market_risks() if r.mark}
    ledger.close()


def test_margin_book_never_sends_an_insurance_fund_to_liquidation():
    """After the crash scenario the protocol account (venue 0's fund) holds the positions it took over; the
    margin book knows it as a fund (VenueParams' echo) and sends Liquidate only for traders."""
    from test_liquidation import FEED, PERP, PROTOCOL, crash_scenario

    e, recorded = recording_liq_world()
    crash_scenario(e)
    e.oracle_price(FEED, 0, PERP, 600, feed_id=1, source_ts=10)  # far down: the fund's long is under too
    book = MarginBook()
    sent = np.concatenate([book.apply(ev) for ev in recorded])
    assert book.insurance_funds == {PROTOCOL} and e.position(PROTOCOL, PERP).size > 0
    rows, _ = book.under_maintenance()
    assert book.index[PROTOCOL] in rows.tolist()
    assert PROTOCOL not in sent["id"].tolist()


def assert_outcome_values(e: Engine, book: MarginBook) -> int:
    """The account view values outcome shares at the last trade: YES lots x price, NO lots x (payout -
    price), at cost before any trade; returns how many (account, asset) values were compared."""
    from collections import defaultdict

    markets = {m.market_id: m for m in e.markets()}
    payout = {o.market: o.payout for o in e.outcomes()}
    expected = defaultdict(int)
    for p in e.positions():
        if p.market in payout and p.size:
            mark, lots = book.marks.get(p.market, 0), abs(p.size) // markets[p.market].lot_size
            value = lots * (mark if p.size > 0 else payout[p.market] - mark) if mark else p.entry_value
            expected[book.index[p.account], markets[p.market].quote] += value
    cells, values = book._outcome_values()
    got = defaultdict(int)
    for cell, value in zip(cells.tolist(), values.tolist()):
        r, c = divmod(cell, book.total.shape[1])
        got[r, int(book.asset_of[c])] += value
    assert {k: v for k, v in got.items() if v} == {k: v for k, v in expected.items() if v}
    return len(expected)


@pytest.mark.parametrize("seed", [1, 2])
def test_workers_follow_outcome_markets(tmp_path, seed):
    """Outcome markets (minting, transfers, merges, converts, resolutions; ``OutcomeStreamGenerator``): the
    ledger posts each move's cash against OUTCOME_ACCOUNT, which ends at the markets' collateral less the
    events' advances, and moves no base; the margin book's balances and holds (a sell holds at its NO leg,
    payout - price) equal the matcher's."""
    from collections import defaultdict

    import generators

    from engine.workers.settlement import OUTCOME_ACCOUNT

    e = Engine(**ENGINE_KWARGS)
    gen = generators.OutcomeStreamGenerator(seed, limits=dict(ENGINE_KWARGS), outcome_share=0.1, resolve_after=4_000)
    chunks, live = [], MarginBook()
    open_no_legs = valued = 0
    for _, ev in run_stream(e, gen, 10_000, chunk=250):  # holds and values checked while outcome orders rest
        chunks.append(ev)
        live.apply(ev)
        assert_margin_matches(e, live)
        open_no_legs += sum(1 for o in e.outcomes() if o.state == 1 for r in e.l3(o.market) if r.side == Side.SELL)
        valued += assert_outcome_values(e, live)
    assert open_no_legs > 0 and valued > 0
    events = np.concatenate(chunks)
    kinds = events["kind"]
    assert (kinds == Ev.OUTCOME_POSITION).sum() > 100 and (kinds == Ev.OUTCOME_CONVERT).any()
    assert (events[kinds == Ev.OUTCOME_STATUS]["reason"] >= 3).any()  # a market resolved mid-stream
    ledger, book = ledger_and_book_after(events, tmp_path, seed=seed)
    assert_settlement_matches(e, ledger)
    assert_margin_matches(e, book)
    markets = {m.market_id: m for m in e.markets()}
    cash_in = defaultdict(int)
    for o in e.outcomes():
        cash_in[markets[o.market].quote] += o.collateral
    quote_of_event = {o.event: markets[o.market].quote for o in e.outcomes() if o.event}
    for ev in e.outcome_events():
        cash_in[quote_of_event[ev.event]] -= ev.advance
    for asset in e.assets():
        assert ledger.balance(OUTCOME_ACCOUNT, asset.asset_id) == cash_in.get(asset.asset_id, 0)
    ledger.close()



def test_margin_book_columns_follow_listed_assets_not_their_ids():
    """Assets with large ids take the next columns: the arrays stay as wide as the assets in use (a book
    sized by asset id made a 131 MB checkpoint for two oracle assets listed at ids 1000 and 1001)."""
    e = Engine(max_orders=1 << 12, max_accounts=1 << 10, max_markets=64, max_assets=2048)
    events = np.concatenate([e.add_asset(1000, "USDT", 2), e.add_asset(2000, "BTC", 8),
                             e.add_market(7, 2000, 1000, tick_size=1, lot_size=1, min_size=1),
                             e.deposit(5, 1000, 10_000), e.deposit(6, 2000, 30),
                             e.place(5, 7, Side.BUY, 100, 10, 1), e.place(6, 7, Side.SELL, 100, 4, 1)])
    book = MarginBook(accounts=4, assets=2)
    book.apply(events)
    assert book.total.shape[1] == 2 and book.asset_of.tolist() == [1000, 2000]
    assert_margin_matches(e, book)
    assert book.balances(5) == {1000: (10_000 - 400, 600), 2000: (4, 0)} and book.balance(6, 2000) == (26, 0)
    assert book.balance(6, 1) == (0, 0) and book.balance(6, 10**6) == (0, 0)


def test_settlement_cursor_waits_over_batches_with_nothing_to_post(tmp_path, monkeypatch):
    """Batches of events the ledger posts nothing for (oracle prices) move only its cursor, which is committed
    with the next batch that posts, by ``flush`` or once ``CURSOR_COMMIT_S`` has passed; the worker keeps them
    in the ring until then (``durable_cursor``), so a crash in between replays them, harmlessly."""
    from engine.workers import settlement

    e = Engine(**ENGINE_KWARGS)
    setup = np.concatenate([e.add_asset(1, "USD", 2), e.add_asset(2, "BTC", 8),
                            e.add_market(3, 2, 1, tick_size=1, lot_size=1, min_size=1), e.deposit(7, 1, 500)])
    quiet = np.zeros(3, EVENT_DTYPE)
    quiet["kind"] = Ev.ORACLE
    quiet["seq"] = np.arange(len(setup) + 1, len(setup) + 4)
    monkeypatch.setattr(settlement, "CURSOR_COMMIT_S", 3600.0)
    ledger = SettlementLedger(tmp_path / "ledger.sqlite")
    ledger.apply(setup)
    assert ledger.cursor == ledger.durable_cursor == len(setup)
    ledger.apply(quiet)
    assert ledger.cursor == len(setup) + 3 and ledger.durable_cursor == len(setup)
    reopened = SettlementLedger(tmp_path / "ledger.sqlite")  # a crash now: the file has the older cursor
    assert reopened.cursor == len(setup)
    reopened.db.close()
    more = e.deposit(7, 1, 5)
    more["seq"] = len(setup) + 4
    ledger.apply(more)  # posts: the cursor goes with it
    assert ledger.durable_cursor == len(setup) + 4 and ledger.balance(7, 1) == 505
    quiet["seq"] += 4
    ledger.apply(quiet)
    ledger.flush()
    assert ledger.durable_cursor == ledger.cursor == len(setup) + 7
    ledger.close()
    assert SettlementLedger(tmp_path / "ledger.sqlite").cursor == len(setup) + 7


@pytest.mark.parametrize("seed", [3, 4])
def test_workers_follow_funding_and_margin_tiers(tmp_path, seed):
    """Funding payments (VenueTransfer 10) and their remainders (11) pass through FUNDING_ACCOUNT, which stays at
    0; the margin book follows the free balances and mirrors margin tiers: each position's maintenance is the
    matcher's rule on its tiered initial margin (``ReferenceEngine._initial_margin``)."""
    from engine.reference import ReferenceEngine
    from engine.workers.settlement import FUNDING_ACCOUNT

    import generators

    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = generators.FundingPerpStreamGenerator(seed, limits=dict(ENGINE_KWARGS))
    events = np.concatenate([ev for _, ev in run_stream(e, gen, 8_000, chunk=250)])
    transfers = events[events["kind"] == Ev.VENUE_TRANSFER]["reason"]
    assert (transfers == 10).sum() > 20 and (transfers == 11).any() and (events["kind"] == Ev.FUNDING).any()
    assert any(len(t.brackets) > 1 for t in e.margin_tiers())
    ledger, book = ledger_and_book_after(events, tmp_path, seed=seed)
    assert_settlement_matches(e, ledger)
    assert_margin_matches(e, book)
    for asset in e.assets():
        assert ledger.balance(FUNDING_ACCOUNT, asset.asset_id) == 0
    ledger.close()
    tiered = 0
    for p in e.positions():
        m = e._markets[p.market]
        if m.kind != MarketKind.PERPETUAL or p.size == 0:
            continue
        initial = e._initial_margin(m, m.mark * (abs(p.size) // m.lot))
        assert book.position(p.account, p.market)["maintenance"] == -(-initial * m.maint_bps // 10000), p
        tiered += initial != -(-m.mark * (abs(p.size) // m.lot) // m.leverage)
    assert tiered > 0  # some positions reach past the first bracket


def test_margin_worker_schedules_funding():
    """The margin worker is the funding scheduler: once the engine clock (its events' ts) passes a perpetual
    market's funding time (the first multiple of the interval after the listing or FundingConfig, then the
    Funding event's next time), it sends one ApplyFunding, which the matcher accepts; never twice for one time."""
    from engine.records import MarketKind
    from engine.workers.margin import LIQUIDATE_RETRY_NS, MARGIN_WORKER_ID

    e = Engine(**ENGINE_KWARGS)
    book = MarginBook()
    out = []

    def run(events):
        out.append(events)
        return book.apply(events)

    assert len(run(np.concatenate([
        e.add_asset(1, "USDT", 2, ts=5), e.add_asset(2, "BTC", 8, ts=5),
        e.add_market(5, 2, 1, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL, ts=5),
        e.set_venue_params(9, stake_asset=2, min_stake=1, unbond_period=1, protocol_account=8, admin=9, ts=5),
        e.funding_config(9, 5, interval_ns=100, sample_interval_ns=10, cap=1_000_000, ts=150),
        e.deposit(1, 1, 10_000, ts=160), e.deposit(2, 1, 10_000, ts=160),
        e.place(1, 5, Side.BUY, 1000, 3, 1, ts=170), e.place(2, 5, Side.SELL, 1000, 3, 1, ts=170)]))) == 0
    assert book.funding_due[5] == 200  # FundingConfig at 150, interval 100
    sent = run(e.deposit(1, 1, 1, ts=199))
    assert len(sent) == 0
    sent = run(e.deposit(1, 1, 1, ts=205))
    assert sent[["kind", "account", "market", "ts"]].tolist() == [(Cmd.APPLY_FUNDING, MARGIN_WORKER_ID, 5, 205)]
    assert len(run(e.deposit(1, 1, 1, ts=206))) == 0  # not twice for the same time
    sent["ts"] = 207
    funded = e.process(sent)
    assert funded["kind"][-1] == Ev.FUNDING and not (funded["kind"] == Ev.REJECTED).any()
    assert len(run(funded)) == 0 and book.funding_due[5] == 300  # the Funding event's next time
    assert run(e.deposit(1, 1, 1, ts=301))["kind"].tolist() == [Cmd.APPLY_FUNDING] and book.fundings == 2
    # not applied (say the matcher refused it): the same time is tried again only after the retry interval
    assert len(run(e.deposit(1, 1, 1, ts=350))) == 0
    retry = run(e.deposit(1, 1, 1, ts=301 + LIQUIDATE_RETRY_NS))
    assert retry["kind"].tolist() == [Cmd.APPLY_FUNDING] and book.fundings == 3
    # a quiet engine: no event, but wall time passes the next funding time (the worker's idle tick)
    funded = e.process(retry)
    assert funded["kind"][-1] == Ev.FUNDING and len(run(funded)) == 0 and book.funding_due[5] == 400 + LIQUIDATE_RETRY_NS // 100 * 100
    assert len(book.idle(book.funding_due[5] - 1)) == 0
    assert book.idle(book.funding_due[5])[["kind", "market"]].tolist() == [(Cmd.APPLY_FUNDING, 5)]


def test_margin_book_follows_the_unified_account():
    """``test_collateral.world``: T holds 100 BTC (80 % at the BTC/USD spot oracle) and borrows USD for a 10x long
    of 500 in the USD perpetual.  The worker mirrors the valuation asset, the weights and the prices: at a BTC price
    of 90 the unified equity (85 x 90 x 0.8 - 2,000 = 4,120) is above the maintenance (2,400) and nothing is sent; at
    60 (2,080 < 2,400) the worker sends Liquidate(T, venue 0, USD) and the matcher accepts it, its Liquidation event
    carrying the same equity and maintenance."""
    from test_collateral import BUY, MAKER, PERP, SPOT, T, USD, move_oracle, world

    from engine.records import Tif

    e, recorded = built_with(world)
    book = MarginBook()
    assert len(feed(book, recorded)) == 0
    e.place(T, PERP, BUY, 100, 500, 1, tif=Tif.IOC)
    e.cancel(MAKER, client_id=1)
    e.cancel(MAKER, client_id=2)
    move_oracle(e, PERP, 96, 2)
    e.withdraw(T, 2, 15)
    move_oracle(e, SPOT, 90, 2)
    assert len(feed(book, recorded)) == 0
    assert book.valuation == USD and book.balance(T, USD) == (0, 5_000)
    row = np.array([book.index[T]])
    equity, requirement, missing, under = book.unified(row, np.array([0]))
    assert (equity[0], requirement[0], missing[0], under[0]) == (4_120, 2_400, False, False)
    move_oracle(e, SPOT, 60, 3)
    sent = feed(book, recorded)
    assert sent[["kind", "id", "venue", "market", "aux"]].tolist() == [(Cmd.LIQUIDATE, T, 0, USD, 0)]
    liquidation = liquidated_by(e, sent)
    assert [(int(x["price"]), int(x["qty"])) for x in liquidation] == [(2_080, 2_400)]
    assert e.position(T, PERP).size == 0
    assert len(feed(book, recorded)) == 0
    assert_margin_matches(e, book)


def test_margin_book_liquidates_a_loan_without_a_position():
    """``test_collateral``'s loan: T borrows USD against its BTC for a 10x long and closes it (reduce-only) at a loss
    of 700: no position, a USD debt.  While the BTC covers it (100 x 9 x 80 % = 720) nothing is sent; at 8 (640 <
    700) the worker sends Liquidate(T, venue 0, USD) and the matcher accepts it (the fund buys the BTC)."""
    from test_collateral import BUY, PERP, PROTOCOL, SELL, SPOT, T, USD, move_oracle, world

    from engine.records import Tif

    e, recorded = built_with(world)
    e.deposit(PROTOCOL, USD, 100_000)
    e.place(T, PERP, BUY, 100, 700, 1, tif=Tif.IOC)
    e.place(T, PERP, SELL, 99, 700, 2, tif=Tif.IOC, reduce_only=True)
    assert e.position(T, PERP).size == 0 and e.balance(T, USD) == (-700, 0)
    book = MarginBook()
    move_oracle(e, SPOT, 9, 2)
    assert len(feed(book, recorded)) == 0
    assert_margin_matches(e, book)
    # the account view values as the matcher does: BTC at the oracle x its weight (720), the USD debt at full (-700);
    # the view's weights are rounded down to 31 significant bits, so it may show one unit less
    view = book.snapshot()
    equity = int(view["equity"][view["account"] == T][0])
    assert book.valuation_asset() == USD and 19 <= equity <= 20, equity
    move_oracle(e, SPOT, 8, 3)
    sent = feed(book, recorded)
    assert sent[["kind", "id", "venue", "market", "aux"]].tolist() == [(Cmd.LIQUIDATE, T, 0, USD, 0)]
    liquidation = liquidated_by(e, sent)
    assert [(int(x["price"]), int(x["qty"])) for x in liquidation] == [(-60, 0)]
    assert len(feed(book, recorded)) == 0 and book.balance(T, USD) == (0, 0)


def test_margin_book_sends_no_unified_liquidate_while_a_price_is_missing():
    """T also borrows ETH for a long in the ETH-quoted perpetual (ETH priced by a spot oracle that times out).  The
    BTC price falls to 20: unified equity 1,600 against 2,500 of USD maintenance, but ETH's oracle went stale and T
    owes an ETH requirement, so the matcher would refuse (COLLATERAL_PRICE_MISSING) and the worker sends nothing;
    a fresh ETH price (1,600 < 2,600) and it sends, and the matcher accepts."""
    from test_collateral import ADMIN, BUY, ETH, ETHSPOT, FEED, MAKER, PERP, PERPE, SPOT, T, USD, world

    from engine.codes import ResultCode as RC
    from engine.records import Tif

    e, recorded = built_with(world)
    e.set_collateral_asset(ADMIN, ETH, ETHSPOT, 9_000)
    e.configure_oracle(ADMIN, 0, ETHSPOT, feed_id=3, feed_account=FEED, timeout_ns=1_000)
    e.oracle_price(FEED, 0, ETHSPOT, 2, feed_id=3, source_ts=1)
    e.place(T, PERP, BUY, 100, 500, 1, tif=Tif.IOC)
    e.place(T, PERPE, BUY, 100, 10, 2, tif=Tif.IOC)  # holds 100 ETH, borrowed
    assert e.balance(T, ETH) == (-100, 100)
    book = MarginBook()
    assert len(feed(book, recorded)) == 0
    e.oracle_price(FEED, 0, SPOT, 20, feed_id=2, source_ts=2, ts=5_000)  # and ETH's oracle goes stale
    assert (recorded[-1]["kind"] == Ev.ORACLE_STATUS).any()
    assert len(feed(book, recorded)) == 0
    equity, requirement, missing, under = book.unified(np.array([book.index[T]]), np.array([0]))
    assert (equity[0], requirement[0], missing[0], under[0]) == (1_600, 2_500, True, True)
    refused = e.liquidate(MAKER, T, 0, USD)
    assert refused["code"].tolist() == [RC.COLLATERAL_PRICE_MISSING]
    e.oracle_price(FEED, 0, ETHSPOT, 2, feed_id=3, source_ts=2, ts=5_000)
    sent = feed(book, recorded)
    assert sent[["kind", "id", "venue", "market", "aux"]].tolist() == [(Cmd.LIQUIDATE, T, 0, USD, 0)]
    liquidation = liquidated_by(e, sent)
    assert [(int(x["price"]), int(x["qty"])) for x in liquidation] == [(1_600, 2_600)]


@pytest.mark.parametrize("seed, under_seen, huge_seen", [(4, True, False), (7, False, True)])
def test_margin_book_unified_and_isolated_figures_equal_the_reference(seed, under_seen, huge_seen):
    """``IsolatedCollateralStreamGenerator`` (loans against BTC and ETH, collateral price moves, stale oracles, venue
    weights, isolated positions) on the reference engine, fed to the worker in chunks: after every chunk, for every
    account with an open cross position, the worker's unified equity, maintenance and missing price at its risk
    group's weights equal the reference's ``_unified`` (clamped to int64; the streams have no outcome shares, the one
    part the worker counts as 0; seed 7's huge balances take the exact Python-integer path), and every open
    isolated position's margin + unrealised and maintenance its ``_position_equity``."""
    from engine.reference import ReferenceEngine
    from engine.workercore import largest_cross_positions

    from generators import IsolatedCollateralStreamGenerator

    e = ReferenceEngine(**ENGINE_KWARGS)
    gen = IsolatedCollateralStreamGenerator(seed, limits=dict(ENGINE_KWARGS))
    book = MarginBook()
    compared = isolated = priced_out = under = huge = 0
    markets = {}
    for _, events in run_stream(e, gen, 20_000, chunk=100):
        book.apply(events)
        if not book.valuation:
            continue
        markets = markets or {m.market_id: m for m in e.markets()}
        pb = book.perp
        n = len(pb)
        slots = np.flatnonzero((pb.size[:n] != 0) & (pb.isolated[:n] == 0))
        slots = slots[np.lexsort((-pb.maint[slots], pb.row[slots]))]
        first = slots[np.r_[True, pb.row[slots][1:] != pb.row[slots][:-1]]] if len(slots) else slots
        rows, venues = pb.row[first], book._venue_of_market()[pb.market[first]]
        assert (largest_cross_positions(pb, book.n_accounts)[rows] == first).all()
        equity, requirement, missing, short = book.unified(rows, venues)
        for i, (row, venue) in enumerate(zip(rows.tolist(), venues.tolist())):
            account = int(book.account_ids[row])
            want = e._unified(account, venue, {}, True)
            clamped = tuple(max(min(x, (1 << 63) - 1), -(1 << 63)) for x in want[:2])  # the view's int64
            assert (int(equity[i]), int(requirement[i]), bool(missing[i])) == clamped + want[2:], (account, venue)
            assert bool(short[i]) == (want[0] < want[1])
            compared += 1
            priced_out += want[2]
            under += (not want[2]) and want[0] < want[1]
            huge += want[0] != clamped[0]
        for s in np.flatnonzero((pb.size[:n] != 0) & (pb.isolated[:n] != 0)).tolist():
            account, market = int(book.account_ids[pb.row[s]]), int(pb.market[s])
            assert (account, market) in e.margin_modes()
            assert (int(pb.margin[s] + pb.upnl[s]), int(pb.maint[s])) == e._position_equity(account, e._markets[market])
            isolated += 1
    assert compared > 100 and isolated > 10 and priced_out > 0, (compared, isolated, priced_out)
    assert ((under > 0), (huge > 0)) == (under_seen, huge_seen)  # seed 4: accounts under; seed 7: a huge equity


def test_margin_worker_process_liquidates_an_isolated_position_through_the_matchers_input(tmp_path):
    """As processes (``xos run``'s supervisor, the ring, the matcher's input): LONG is isolated in the perpetual (5
    lots, margin 500) and cross long 5 lots in a second one (margin 500, 1,000 free); a trade moves the isolated
    market's mark to 905 (its margin + unrealised 500 - 475 = 25 < maintenance 227).  The margin worker's one
    Liquidate names the isolated market in ``aux``; the matcher liquidates that position alone (the fund takes it:
    no bids), the cross one stays."""
    from test_engine_processes import CommandRecorder, replay_journal, run_until_a_worker_answers

    from engine.records import Tif
    from engine.workers.margin import MARGIN_WORKER_ID

    ADMIN, FUND, LONG, SHORT, X, Y = 5090, 5091, 5001, 5002, 5003, 5004
    r = CommandRecorder()
    r.add_asset(41, "USDT", 2)
    r.add_asset(42, "BTC", 8)
    for market in (41, 43):
        r.add_market(market, 42, 41, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL)
    r.set_venue_params(ADMIN, stake_asset=42, min_stake=1, unbond_period=1, protocol_account=FUND, admin=ADMIN)
    for market in (41, 43):
        r.market_risk(ADMIN, market, max_leverage=10, maintenance_bps=5000)
    for account, amount in ((LONG, 2_000), (SHORT, 50_000), (X, 50_000), (Y, 50_000), (FUND, 50_000)):
        r.deposit(account, 41, amount)
    r.set_margin_mode(LONG, 41, True)
    for market in (41, 43):
        r.place(SHORT, market, Side.SELL, 1000, 5, market)
        r.place(LONG, market, Side.BUY, 1000, 5, market, tif=Tif.IOC)
    r.place(X, 41, Side.BUY, 905, 1, 1)  # the isolated market's mark to 905
    r.place(Y, 41, Side.SELL, 905, 1, 1, tif=Tif.IOC)
    cfg, journaled = run_until_a_worker_answers(tmp_path, np.concatenate(r.commands))  # the keeper's Liquidate
    keeper = journaled[journaled["kind"] == Cmd.LIQUIDATE]
    assert keeper[["account", "id", "market", "venue", "aux"]].tolist() == [(MARGIN_WORKER_ID, LONG, 41, 0, 41)]
    engine, events = replay_journal(cfg)
    assert not (events["kind"] == Ev.REJECTED).any()
    done = events[events["kind"] == Ev.LIQUIDATED]
    assert done[["account", "maker_order"]].tolist() == [(LONG, 41)]
    assert engine.position(LONG, 41).size == 0 and engine.position(LONG, 43).size == 5


def test_xos_account_says_when_the_account_could_not_be_valued(tmp_path):
    """``xos account`` prints an account's margin figures from the view, or that it could not be valued."""
    from typer.testing import CliRunner

    from engine.cli import app
    from engine.config import load
    from engine.workers.margin import VIEW_DTYPE

    path = tmp_path / "xos.toml"
    path.write_text(f'[engine]\ndata_dir = "{tmp_path / "data"}"\n')
    cfg = load(path)
    (cfg.data_path / "run").mkdir(parents=True)
    SettlementLedger(cfg.ledger_path).close()
    view = np.array([(5, 0, 0, 0, 0, False), (6, 10, 4, 6, 0, True)], VIEW_DTYPE)
    np.save(cfg.data_path / "run" / "margin-view.npy", view)
    unvalued = CliRunner().invoke(app, ["account", "5", "--config", str(path)])
    valued = CliRunner().invoke(app, ["account", "6", "--config", str(path)])
    assert unvalued.exit_code == valued.exit_code == 0, (unvalued.output, valued.output)
    assert "equity not valued: it does not fit in int64" in unvalued.output and "equity 0" not in unvalued.output
    assert "equity 10  margin used 4  available 6  maintenance 0" in valued.output

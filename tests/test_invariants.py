"""Accounting and book invariants, on hypothesis-driven command sequences and on seeded streams.

After every step (and every chunk of a generated stream) both implementations must satisfy:

- no book is crossed: best bid < best ask whenever both exist;
- every open order has filled + remaining == qty, 0 < remaining, remaining on lot; order ids are
  unique across all books; ``order(id)`` returns the same view; levels are in price order and
  ``l2`` agrees with ``l3``; ``open_orders`` counts them;
- per account and asset, held == the holds of the account's open orders (buy:
  ``lots_remaining * (price + ceil(price * max(taker_bps, 0) / 10000))`` of the quote asset,
  sell: ``remaining`` of the base asset);
- per asset, sum over accounts of free + held, plus fees(asset), == deposits - withdrawals
  (from the Balance events);
- no balance and no fee pool is negative;
- events: seq dense, cmd_seq of the command, a Balance event's free/held are the balance after.
"""
from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.records import COMMAND_DTYPE, CancelReason, Cmd, Ev, OrdType, Side, Tif
from engine.reference import ReferenceEngine

from generators import ENGINE_KWARGS, StreamGenerator, run_stream

try:
    from engine.matcher import Engine
except ImportError:  # pragma: no cover - conftest already fails the run when the build is missing
    Engine = None

IMPLEMENTATIONS = {"reference": ReferenceEngine}
if Engine is not None:
    IMPLEMENTATIONS["cython"] = Engine


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def buy_hold(remaining: int, price: int, lot: int, taker_bps: int) -> int:
    return (remaining // lot) * (price + _ceil_div(price * max(taker_bps, 0), 10000))


def check_invariants(e, net: dict[int, int]) -> None:
    """Assert every state invariant of the module docstring; ``net`` is deposits - withdrawals."""
    markets = {m.market_id: m for m in e.markets()}
    assets = [a.asset_id for a in e.assets()]
    expected_held: dict[tuple[int, int], int] = defaultdict(int)
    seen_ids: set[int] = set()
    n_open = 0
    for mid, m in markets.items():
        bid, ask = e.best_bid(mid), e.best_ask(mid)
        assert bid >= 0 and ask >= 0
        if bid and ask:
            assert bid < ask, f"market {mid} crossed: bid {bid} >= ask {ask}"
        book = list(e.l3(mid))
        bids = [o for o in book if o.side == Side.BUY]
        asks = [o for o in book if o.side == Side.SELL]
        assert book == bids + asks, f"market {mid}: l3 is not bids then asks"
        assert [o.price for o in bids] == sorted((o.price for o in bids), reverse=True)
        assert [o.price for o in asks] == sorted(o.price for o in asks)
        assert bid == (bids[0].price if bids else 0)
        assert ask == (asks[0].price if asks else 0)
        l2_bids, l2_asks = e.l2(mid, depth=len(book) + 1)
        for side_orders, levels in ((bids, l2_bids), (asks, l2_asks)):
            agg: dict[int, list[int]] = {}
            for o in side_orders:
                agg.setdefault(o.price, [0, 0])
                agg[o.price][0] += o.remaining
                agg[o.price][1] += 1
            assert [tuple(lv) for lv in levels] == [(p, q, c) for p, (q, c) in agg.items()], f"market {mid}: l2 != l3"
        for o in book:
            n_open += 1
            assert o.order_id not in seen_ids, f"order id {o.order_id} twice in the books"
            seen_ids.add(o.order_id)
            assert o.market == mid
            assert 0 < o.remaining, o
            assert o.filled >= 0 and o.filled + o.remaining == o.qty, o  # STP decrements come off qty too
            assert o.remaining % m.lot_size == 0, o
            assert o.price > 0 and o.price % m.tick_size == 0, o
            assert e.order(o.order_id) == o
            if o.side == Side.BUY:
                expected_held[(o.account, m.quote)] += buy_hold(o.remaining, o.price, m.lot_size, m.taker_bps)
            else:
                expected_held[(o.account, m.base)] += o.remaining
    assert e.open_orders == n_open

    totals: dict[int, int] = defaultdict(int)
    for account in e.accounts():
        bals = e.balances(account)
        for asset in set(bals) | {a for (acc, a) in expected_held if acc == account}:
            free, held = bals.get(asset, (0, 0))
            assert (free, held) == tuple(e.balance(account, asset))
            assert free >= 0, f"account {account} asset {asset}: free {free} < 0"
            assert held >= 0, f"account {account} asset {asset}: held {held} < 0"
            assert held == expected_held.get((account, asset), 0), (
                f"account {account} asset {asset}: held {held} != open orders' holds "
                f"{expected_held.get((account, asset), 0)}"
            )
            totals[asset] += free + held
    known = set(e.accounts())
    assert all(acc in known for acc, _ in expected_held), "an open order of an unknown account"
    for asset in assets:
        fees = e.fees(asset)
        assert fees >= 0, f"asset {asset}: fee pool {fees} < 0"
        assert totals.get(asset, 0) + fees == net.get(asset, 0), (
            f"asset {asset}: balances {totals.get(asset, 0)} + fees {fees} != deposits - withdrawals "
            f"{net.get(asset, 0)}"
        )


def account_events(e, cmds: np.ndarray, events: np.ndarray, first_seq: int, first_cmd: int, net) -> None:
    """Per-batch event checks; adds the Balance events' amounts into ``net``."""
    if len(events):
        assert events["seq"].tolist() == list(range(first_seq, first_seq + len(events))), "event seq not dense"
    cmd_seqs = events["cmd_seq"]
    assert np.all(np.diff(cmd_seqs) >= 0), "events out of command order"
    assert set(cmd_seqs.tolist()) == set(range(first_cmd, first_cmd + len(cmds))), "a command without events"
    assert e.cmd_seq == first_cmd + len(cmds) - 1
    assert e.event_seq == first_seq + len(events) - 1
    bal = events[events["kind"] == Ev.BALANCE]
    for asset, qty in zip(bal["market"].tolist(), bal["qty"].tolist()):
        net[asset] += qty
    # a rejected command: only expiries (step 2) before its Rejected, only BookLevels after it
    kinds = events["kind"].tolist()
    reasons = events["reason"].tolist()
    seqs = cmd_seqs.tolist()
    for i in np.flatnonzero(events["kind"] == Ev.REJECTED).tolist():
        j = i - 1
        while j >= 0 and seqs[j] == seqs[i]:
            assert kinds[j] == Ev.CANCELLED and reasons[j] == CancelReason.EXPIRED, (
                f"event {events[j]} before the Rejected of its command"
            )
            j -= 1
        j = i + 1
        while j < len(seqs) and seqs[j] == seqs[i]:
            assert kinds[j] == Ev.BOOK_LEVEL, f"event {events[j]} after the Rejected of its command"
            j += 1


# --- hypothesis state machine ---------------------------------------------------------------------

ACCOUNTS = st.sampled_from([1, 2, 3])
MARKETS = {
    # id: (base, quote, tick, lot, min_size, maker, taker, band)
    1: (2, 1, 5, 10, 10, -2, 7, 0),
    2: (3, 1, 1, 1, 2, 10, 30, 3000),
    3: (3, 2, 1, 1, 1, -1000, 1000, 0),
}
AMOUNTS = st.one_of(
    st.integers(1, 3000), st.integers(3000, 10**7), st.sampled_from([0, -1, 1 << 62, (1 << 62) + 1, (1 << 61)])
)


def make_machine(engine_cls):
    class EngineMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.e = engine_cls(max_orders=48, max_accounts=8, max_markets=4, max_assets=4)
            self.net: dict[int, int] = defaultdict(int)
            self.ts = 0
            self.order_ids: list[int] = []

        def run(self, kind: int, **fields) -> np.ndarray:
            cmd = np.zeros(1, dtype=COMMAND_DTYPE)
            cmd["kind"] = kind
            cmd["ts"] = self.ts
            for name, value in fields.items():
                cmd[name] = value
            first_seq, first_cmd = self.e.event_seq + 1, self.e.cmd_seq + 1
            events = self.e.process(cmd)
            account_events(self.e, cmd, events, first_seq, first_cmd, self.net)
            for ev in events[events["kind"] == Ev.BALANCE]:
                assert tuple(self.e.balance(int(ev["account"]), int(ev["market"]))) == (
                    int(ev["remaining"]),
                    int(ev["taker_fee"]),
                )
            accepted = events[(events["kind"] == Ev.ACCEPTED) & (events["order_id"] > 0)]
            self.order_ids.extend(accepted["order_id"].tolist())
            return events

        @initialize()
        def listings(self):
            for aid, sym in ((1, "USD"), (2, "BTC"), (3, "ETH")):
                self.e.add_asset(aid, sym, 6)
            for mid, (base, quote, tick, lot, mn, maker, taker, band) in MARKETS.items():
                ev = self.e.add_market(mid, base, quote, tick_size=tick, lot_size=lot, min_size=mn,
                                       maker_bps=maker, taker_bps=taker, band_bps=band)
                assert ev["kind"][0] == Ev.ACCEPTED
            for account in (1, 2, 3):
                for asset in (1, 2, 3):
                    self.run(Cmd.DEPOSIT, account=account, market=asset, qty=2000)

        @rule(account=ACCOUNTS, asset=st.integers(0, 4), amount=AMOUNTS)
        def deposit(self, account, asset, amount):
            self.run(Cmd.DEPOSIT, account=account, market=asset, qty=amount)

        @rule(account=ACCOUNTS, asset=st.integers(1, 3), amount=AMOUNTS, everything=st.booleans())
        def withdraw(self, account, asset, amount, everything):
            if everything:
                amount = self.e.balance(account, asset)[0] or amount
            self.run(Cmd.WITHDRAW, account=account, market=asset, qty=amount)

        @rule(
            account=ACCOUNTS,
            market=st.sampled_from([1, 2, 3]),
            side=st.sampled_from([0, 1, 0, 1, 2]),
            ticks=st.integers(1, 12),
            lots=st.integers(0, 8),
            tif=st.sampled_from([Tif.GTC, Tif.GTC, Tif.IOC, Tif.FOK]),
            market_order=st.booleans(),
            stp=st.integers(0, 3),
            post_only=st.booleans(),
            expire=st.one_of(st.just(0), st.integers(1, 40)),
            client_id=st.integers(1, 5),
        )
        def place(self, account, market, side, ticks, lots, tif, market_order, stp, post_only, expire, client_id):
            self._place(account, market, side, ticks, lots, tif, market_order, stp, post_only, expire, client_id)

        @rule(
            account=ACCOUNTS,
            market=st.sampled_from([1, 2, 3]),
            side=st.integers(0, 1),
            ticks=st.integers(8, 12),
            lots=st.integers(1, 4),
            stp=st.integers(0, 3),
            client_id=st.integers(1, 5),
        )
        def place_resting(self, account, market, side, ticks, lots, stp, client_id):
            """A plain GTC limit near the middle of the price range: builds books that cross."""
            ticks = ticks - 2 if side == Side.BUY else ticks + 2
            self._place(account, market, side, ticks, lots, Tif.GTC, False, stp, False, 0, client_id)

        @rule(
            account=ACCOUNTS,
            market=st.sampled_from([1, 2, 3]),
            side=st.integers(0, 1),
            ticks=st.integers(6, 16),
            lots=st.integers(1, 10),
            tif=st.sampled_from([Tif.GTC, Tif.IOC, Tif.FOK]),
            stp=st.integers(0, 3),
            client_id=st.integers(1, 5),
        )
        def place_crossing(self, account, market, side, ticks, lots, tif, stp, client_id):
            """An order priced through the middle: trades, self-trades, partial fills."""
            ticks = ticks + 4 if side == Side.BUY else max(1, ticks - 4)
            self._place(account, market, side, ticks, lots, tif, False, stp, False, 0, client_id)

        @rule(seed=st.integers(0, 2**32 - 1), n=st.integers(5, 25))
        def burst(self, seed, n):
            """A seeded burst of orders around the middle of the range, one command each."""
            r = random.Random(seed)
            for _ in range(n):
                side = r.randint(0, 1)
                tif = r.choice([Tif.GTC, Tif.GTC, Tif.GTC, Tif.IOC, Tif.FOK])
                ticks = r.randint(7, 13)
                self._place(r.choice([1, 2, 3]), r.choice([1, 2, 3]), side, ticks, r.randint(1, 6), tif,
                            r.random() < 0.1, r.randint(0, 3), r.random() < 0.1,
                            r.choice([0, 0, 0, r.randint(1, 30)]), r.randint(1, 30))
                if r.random() < 0.2:
                    self.ts += r.randint(0, 10)

        def _place(self, account, market, side, ticks, lots, tif, market_order, stp, post_only, expire, client_id):
            base, quote, tick, lot, mn, maker, taker, band = MARKETS[market]
            ord_type = OrdType.LIMIT
            if market_order and tif != Tif.GTC:
                ord_type = OrdType.MARKET
            flags = 1 if post_only and tif == Tif.GTC and ord_type == OrdType.LIMIT else 0
            aux = self.ts + expire if expire and tif == Tif.GTC else 0
            self.run(Cmd.PLACE, account=account, market=market, side=side, price=ticks * tick, qty=lots * lot,
                     tif=tif, ord_type=ord_type, stp=stp, flags=flags, id=client_id, aux=aux)

        @rule(account=ACCOUNTS, pick=st.integers(0, 1 << 20), by_client=st.booleans(), other=st.booleans())
        def cancel(self, account, pick, by_client, other):
            target = self._target(pick, by_client)
            if target is not None and not other:
                account, ident = target
            else:
                ident = pick % 50
            self.run(Cmd.CANCEL, account=account, id=ident, flags=2 if by_client else 0)

        @rule(
            account=ACCOUNTS,
            pick=st.integers(0, 1 << 20),
            by_client=st.booleans(),
            dticks=st.sampled_from([None, 0, -2, -1, 1, 2, 6, -6]),
            dlots=st.integers(-3, 3),
        )
        def amend(self, account, pick, by_client, dticks, dlots):
            target = self._target(pick, by_client)
            if target is None:
                self.run(Cmd.AMEND, account=account, id=pick % 50, flags=2 if by_client else 0, qty=10)
                return
            account, ident = target
            o = self._pick(pick)
            tick, lot = MARKETS[o.market][2], MARKETS[o.market][3]
            price = 0 if dticks is None else max(0, o.price + dticks * tick)
            qty = max(0, o.remaining + dlots * lot)
            self.run(Cmd.AMEND, account=account, id=ident, flags=2 if by_client else 0, price=price, qty=qty)

        @rule(account=ACCOUNTS, market=st.sampled_from([None, 1, 2, 3, 7]))
        def mass_cancel(self, account, market):
            if market is None:
                self.run(Cmd.MASS_CANCEL, account=account, flags=4)
            else:
                self.run(Cmd.MASS_CANCEL, account=account, market=market)

        @rule(dt=st.integers(1, 30), back=st.booleans())
        def advance(self, dt, back):
            self.ts += dt
            ts, self.ts = self.ts, (max(0, self.ts - 2 * dt) if back else self.ts)  # a stale ts must not go back
            self.run(Cmd.CANCEL, account=1, id=0)
            self.ts = ts

        @rule(kind=st.sampled_from([0, 5, 18, 99]), side=st.integers(0, 255), price=st.integers(-(1 << 63), (1 << 63) - 1))
        def garbage(self, kind, side, price):
            self.run(kind, account=1, market=1, side=side, price=price, qty=10, id=1)

        def _open(self):
            return [o for m in MARKETS for o in self.e.l3(m)]

        def _pick(self, pick):
            book = self._open()
            return book[pick % len(book)] if book else None

        def _target(self, pick, by_client):
            o = self._pick(pick)
            if o is None:
                return None
            return o.account, (o.client_id if by_client else o.order_id)

        @invariant()
        def invariants(self):
            if self.e.markets():
                check_invariants(self.e, self.net)
            assert self.e.now >= 0

        @precondition(lambda self: len(self.order_ids) > 0)
        @rule(pick=st.integers(0, 1 << 20))
        def closed_order_is_not_open(self, pick):
            oid = self.order_ids[pick % len(self.order_ids)]
            view = self.e.order(oid)
            in_books = [o for o in self._open() if o.order_id == oid]
            assert (view is None) == (not in_books)

    EngineMachine.__name__ = f"EngineMachine_{engine_cls.__name__}"
    EngineMachine.TestCase.settings = settings(
        max_examples=80,
        stateful_step_count=50,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    return EngineMachine


TestReferenceMachine = make_machine(ReferenceEngine).TestCase
if Engine is not None:
    TestCythonMachine = make_machine(Engine).TestCase


# --- seeded streams -------------------------------------------------------------------------------


def _stream_invariants(engine_cls, seed: int, n_commands: int, check_every: int, **gen_opts) -> None:
    e = engine_cls(**ENGINE_KWARGS)
    gen = StreamGenerator(seed, limits=dict(ENGINE_KWARGS), **gen_opts)
    net: dict[int, int] = defaultdict(int)
    fills = 0
    last_cmd = last_seq = 0
    for cmds, events in run_stream(e, gen, n_commands, chunk=check_every):
        account_events(e, cmds, events, last_seq + 1, last_cmd + 1, net)
        last_cmd += len(cmds)
        last_seq += len(events)
        fills += int(np.count_nonzero(events["kind"] == Ev.FILL))
        check_invariants(e, net)
    assert fills > 0


@pytest.mark.parametrize("seed", [11, 12])
def test_generated_stream_invariants(engine_cls, seed):
    _stream_invariants(engine_cls, seed, n_commands=15_000, check_every=250)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_generated_stream_invariants_long(engine_cls, seed):
    _stream_invariants(engine_cls, seed, n_commands=150_000, check_every=500)

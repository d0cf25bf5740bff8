"""Hypothesis stateful tests of the unified account's perpetual rules: random sequences of orders,
cancels, reduce-only closes, oracle moves, deposits and withdrawals, and keepers' Liquidate commands
over thinly funded leveraged accounts, run through the Cython engine and the reference model side by
side, checking after every command:

- the two engines emit the same events (so they hold the same state);
- per perpetual market the positions sum to 0, held = order holds + position margins, per asset
  balances + fee pools + stakes - the open positions' signed entry values = deposits - withdrawals
  (``test_perp.check_perp_invariants``): funding-free PnL and liquidation transfers sum to zero;
- every liquidation ends with the target's equity at or above 0 and nothing left uncovered (the
  insurance fund and ADL took the rest), and a Liquidate the matcher refuses changes nothing;
- the mark is always on the tick grid and published (a Mark event) whenever it changes.
"""
from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from engine.matcher import Engine
from engine.records import Ev, MarketKind, Tif
from engine.reference import ReferenceEngine
from test_perp import check_perp_invariants

USD, BTC = 1, 2
PERP = 5
TICK, LOT = 5, 10
ADMIN, FEED, PROTOCOL, KEEPER = 99, 77, 800, 55
TRADERS = [30, 31, 32, 33, 34, 35]
CAPS = dict(max_orders=400, max_accounts=64, max_markets=8, max_assets=4, max_venues=4)


class PerpMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.engines = (Engine(**CAPS), ReferenceEngine(**CAPS))
        self.net: dict[int, int] = defaultdict(int)
        self.ts = 1
        self.source_ts = 0
        self.client_id = 0
        self.last_mark = 0
        self.run(lambda e: e.add_asset(USD, "USD", 2))
        self.run(lambda e: e.add_asset(BTC, "BTC", 8))
        self.run(lambda e: e.add_market(PERP, BTC, USD, tick_size=TICK, lot_size=LOT, min_size=LOT,
                                        kind=MarketKind.PERPETUAL, maker_bps=-1, taker_bps=5))
        self.run(lambda e: e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1,
                                              protocol_account=PROTOCOL, admin=ADMIN))
        self.run(lambda e: e.market_risk(ADMIN, PERP, max_leverage=10, maintenance_bps=5000, impact_lots=2,
                                         liquidation_slice=3))
        self.run(lambda e: e.configure_oracle(ADMIN, 0, PERP, feed_id=1, feed_account=FEED, timeout_ns=10**15))
        for account, amount in [(t, 1_500) for t in TRADERS] + [(PROTOCOL, 1_500)]:
            self.deposit(account, amount)
        self.oracle_to(1000)

    def run(self, command):
        """The command on both engines at the next engine time; they must agree.  Returns the events."""
        self.ts += 1
        got, want = (command(e) for e in self.engines)
        assert got.tobytes() == want.tobytes(), "engines disagree"
        for m in got[got["kind"] == Ev.MARK]:
            assert m["price"] % TICK == 0
            self.last_mark = int(m["price"])
        for done in got[got["kind"] == Ev.LIQUIDATED]:
            assert done["price"] >= 0 and done["client_id"] == 0, done  # equity after >= 0, nothing uncovered
        return got

    @property
    def ref(self) -> ReferenceEngine:
        return self.engines[1]

    def deposit(self, account: int, amount: int) -> None:
        events = self.run(lambda e: e.deposit(account, USD, amount, ts=self.ts))
        if events["kind"][0] == Ev.BALANCE:
            self.net[USD] += amount

    def oracle_to(self, price: int) -> None:
        self.source_ts += 1
        self.run(lambda e: e.oracle_price(FEED, 0, PERP, price, feed_id=1, source_ts=self.source_ts, ts=self.ts))

    @rule(account=st.sampled_from(TRADERS), buy=st.booleans(), offset=st.integers(-8, 8), lots=st.integers(1, 6),
          tif=st.sampled_from([Tif.GTC, Tif.GTC, Tif.IOC, Tif.FOK]))
    def place(self, account, buy, offset, lots, tif):
        self.client_id += 1
        price = max(TICK, (self.last_mark or 1000) + offset * TICK)
        self.run(lambda e: e.place(account, PERP, 0 if buy else 1, price, lots * LOT, self.client_id, tif=tif,
                                   ts=self.ts))

    @rule(pair=st.permutations(TRADERS), lots=st.integers(1, 8), offset=st.integers(-3, 3))
    def trade(self, pair, lots, offset):
        """One trader rests an order near the mark, another takes it: positions open, grow, shrink and flip."""
        maker, taker = pair[:2]
        self.client_id += 1
        price = max(TICK, (self.last_mark or 1000) + offset * TICK)
        side = self.client_id % 2
        self.run(lambda e: e.place(maker, PERP, side, price, lots * LOT, self.client_id, ts=self.ts))
        self.run(lambda e: e.place(taker, PERP, 1 - side, price, lots * LOT, self.client_id, tif=Tif.IOC,
                                   ts=self.ts))

    @rule(account=st.sampled_from(TRADERS), lots=st.integers(1, 6))
    def reduce_only_close(self, account, lots):
        p = self.ref.position(account, PERP)
        if p is None or p.size == 0:
            return
        self.client_id += 1
        side = 1 if p.size > 0 else 0
        price = TICK if side == 1 else 100 * (self.last_mark or 1000)
        self.run(lambda e: e.place(account, PERP, side, price, min(lots * LOT, abs(p.size)), self.client_id,
                                   tif=Tif.IOC, reduce_only=True, ts=self.ts))

    @rule(pick=st.integers(0, 10**6))
    def cancel(self, pick):
        orders = sorted(self.ref._orders)
        if orders:
            oid = orders[pick % len(orders)]
            account = self.ref._orders[oid].account
            self.run(lambda e: e.cancel(account, order_id=oid, ts=self.ts))

    @rule(move_bps=st.integers(-1500, 1500))
    def oracle_move(self, move_bps):
        base = self.last_mark or 1000
        self.oracle_to(max(TICK, (base + base * move_bps // 10000) // TICK * TICK))

    @rule(move_bps=st.integers(-2500, 2500))
    def crash_then_keepers(self, move_bps):
        """A large oracle move, then a keeper tries every account (the margin worker's job)."""
        self.oracle_move(move_bps)
        for account in TRADERS:
            self.liquidate(account)

    @rule(account=st.sampled_from(TRADERS + [PROTOCOL]))
    def liquidate(self, account):
        before = self.ref.balances(account), self.ref.position(account, PERP)
        events = self.run(lambda e: e.liquidate(KEEPER, account, 0, USD, ts=self.ts))
        if events["kind"][0] == Ev.REJECTED:
            assert (self.ref.balances(account), self.ref.position(account, PERP)) == before

    @rule(account=st.sampled_from(TRADERS), amount=st.integers(1, 2_000), withdraw=st.booleans())
    def move_cash(self, account, amount, withdraw):
        if withdraw:
            events = self.run(lambda e: e.withdraw(account, USD, amount, ts=self.ts))
            if events["kind"][0] == Ev.BALANCE:
                self.net[USD] -= amount
        else:
            self.deposit(account, amount)

    @invariant()
    def perpetual_invariants(self):
        check_perp_invariants(self.ref, self.net)
        assert self.engines[0].market_risks() == self.ref.market_risks()


PerpMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=60, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
test_perp_machine = PerpMachine.TestCase

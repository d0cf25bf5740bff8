"""Hypothesis stateful tests of outcome markets: random sequences of YES bids and NO asks (minting,
transferring and merging shares), cancels, Converts on a three-outcome event, deposits, and
resolutions (the resolver's proposals, the admin's overturns, the clock finalising them) run through
the Cython engine and the reference model side by side, checking after every command:

- the two engines emit the same events (so they hold the same state);
- per outcome market YES shares outstanding = NO shares outstanding (with the event's converted NO) =
  collateral / payout, and a final market holds nothing; per asset, balances + fee pools + collateral
  - event advances = deposits - withdrawals; no balance negative
  (``test_outcome_stream.check_stream_invariants``).
"""
from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.matcher import Engine
from engine.records import MarketKind, Tif
from engine.reference import ReferenceEngine
from test_outcome_stream import check_stream_invariants

USD, BTC = 1, 2
BINARY, EVENT_MARKETS, EVENT = 3, (4, 5, 6), 7
PAYOUT, TICK, LOT = 1000, 10, 1
ADMIN, RESOLVER, PROTOCOL = 99, 98, 97
TRADERS = [30, 31, 32, 33]
WINDOW = 5  # engine clock ticks (one per command)
CAPS = dict(max_orders=300, max_accounts=32, max_markets=8, max_assets=4, max_venues=4)
MARKETS = (BINARY,) + EVENT_MARKETS


class OutcomeMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.engines = (Engine(**CAPS), ReferenceEngine(**CAPS))
        self.net: dict[int, int] = defaultdict(int)
        self.ts = 1
        self.client_id = 0
        self.run(lambda e: e.add_asset(USD, "USD", 2))
        self.run(lambda e: e.add_asset(BTC, "BTC", 8))
        self.run(lambda e: e.set_venue_params(ADMIN, stake_asset=BTC, min_stake=1, unbond_period=1,
                                              protocol_account=PROTOCOL, admin=ADMIN))
        for market in MARKETS:
            self.run(lambda e, m=market: e.add_market(m, BTC, USD, tick_size=TICK, lot_size=LOT, min_size=LOT,
                                                      kind=MarketKind.OUTCOME, maker_bps=-2, taker_bps=10))
            self.run(lambda e, m=market: e.configure_outcome(ADMIN, m, payout=PAYOUT, resolver=RESOLVER,
                                                             dispute_window=WINDOW, event=EVENT if m != BINARY else 0))
        for account in TRADERS:
            self.run(lambda e, a=account: e.deposit(a, USD, 50_000))
            self.net[USD] += 50_000

    def run(self, command):
        """The command on both engines at the next engine time; they must agree.  Returns the events."""
        self.ts += 1
        got, want = (command(e) for e in self.engines)
        assert got.tobytes() == want.tobytes(), "engines disagree"
        return got

    @property
    def ref(self) -> ReferenceEngine:
        return self.engines[1]

    @rule(account=st.sampled_from(TRADERS), market=st.sampled_from(MARKETS), buy=st.booleans(),
          price=st.integers(0, PAYOUT // TICK), lots=st.integers(1, 20), tif=st.sampled_from([Tif.GTC, Tif.IOC]))
    def place(self, account, market, buy, price, lots, tif):
        """A YES bid (buy) or a NO bid (sell) at a YES price; 0 and the payout itself are refused."""
        self.client_id += 1
        self.run(lambda e: e.place(account, market, 0 if buy else 1, price * TICK, lots * LOT, self.client_id,
                                   tif=tif, ts=self.ts))

    @rule(pair=st.permutations(TRADERS), market=st.sampled_from(MARKETS), price=st.integers(1, PAYOUT // TICK - 1),
          lots=st.integers(1, 20), yes_rests=st.booleans())
    def cross(self, pair, market, price, lots, yes_rests):
        """A YES bid and a NO bid at the same YES price meet: a pair is minted, shares change hands or
        (between holders of both sides) a pair is burnt."""
        resting, taking = pair[:2]
        self.client_id += 1
        side = 0 if yes_rests else 1
        self.run(lambda e: e.place(resting, market, side, price * TICK, lots * LOT, self.client_id, ts=self.ts))
        self.run(lambda e: e.place(taking, market, 1 - side, price * TICK, lots * LOT, self.client_id, tif=Tif.IOC,
                                   ts=self.ts))

    @rule(pick=st.integers(0, 10**6))
    def cancel(self, pick):
        orders = sorted(self.ref._orders)
        if orders:
            oid = orders[pick % len(orders)]
            account = self.ref._orders[oid].account
            self.run(lambda e: e.cancel(account, order_id=oid, ts=self.ts))

    @rule(account=st.sampled_from(TRADERS), market=st.sampled_from(EVENT_MARKETS), lots=st.integers(1, 10))
    def convert(self, account, market, lots):
        """NO on one outcome of the event into YES on the others (refused without enough NO)."""
        self.run(lambda e: e.convert(account, market, lots * LOT, ts=self.ts))

    @precondition(lambda self: self.ts > 60)  # trading first: a resolved market takes no more orders
    @rule(market=st.sampled_from((BINARY, EVENT_MARKETS[0])), yes=st.booleans(),
          sender=st.sampled_from([RESOLVER, RESOLVER, ADMIN, TRADERS[0]]))
    def resolve(self, market, yes, sender):
        """The resolver proposes; the admin overturns within the window; anyone else is refused."""
        self.run(lambda e: e.resolve(sender, market, yes, ts=self.ts))

    @rule(account=st.sampled_from(TRADERS), amount=st.integers(1, 5_000))
    def deposit(self, account, amount):
        self.run(lambda e: e.deposit(account, USD, amount, ts=self.ts))
        self.net[USD] += amount

    @invariant()
    def outcome_invariants(self):
        check_stream_invariants(self.ref, self.net)
        assert self.engines[0].outcomes() == self.ref.outcomes()


OutcomeMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=60, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
test_outcome_machine = OutcomeMachine.TestCase

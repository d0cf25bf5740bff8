"""Hypothesis stateful tests of venues: random sequences of venue and order commands run through
the Cython engine and the reference model side by side, checking after every command:

- the two engines emit the same events and hold the same state;
- conservation per asset: balances + protocol fees + every venue's uncollected fees + every
  venue's locked stake = deposits (stake and fee conservation);
- no fill between venues that may not trade (judged on the venue table before the command);
- risk groups: a venue status change or policy change moves no balance and touches no order;
  a halted venue's orders neither trade nor change while other venues trade.
"""
from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.matcher import Engine
from engine.records import Ev, Side, VenueStatus
from engine.reference import ReferenceEngine
from engine.state import canonical_state

USD, BTC, OKB = 1, 2, 3
MARKET = 1
ADMIN, PROTOCOL = 99, 98
TRADERS = [11, 12, 13, 14]
OPERATORS = {1: 21, 2: 22, 3: 23, 4: 24}
CAPS = dict(max_orders=500, max_accounts=64, max_markets=4, max_assets=4, max_venues=8)


def eligible(venues: dict, a: int, b: int) -> bool:
    """The rule of docs/ARCHITECTURE.md "Venues", from VenueViews."""
    if a == b:
        return True
    va, vb = venues[a], venues[b]

    def mask(v):
        return v.accepts if v.status in (VenueStatus.LIVE, VenueStatus.WINDING_DOWN) else 0

    return bool((mask(va) >> vb.pool) & (mask(vb) >> va.pool) & 1)


class VenueMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.engines = (Engine(**CAPS), ReferenceEngine(**CAPS))
        self.deposits = {USD: 0, BTC: 0, OKB: 0}
        self.ts = 1
        self.client_id = 0
        self.last_events = None
        self.run(lambda e: e.add_asset(USD, "USD", 2))
        self.run(lambda e: e.add_asset(BTC, "BTC", 2))
        self.run(lambda e: e.add_asset(OKB, "OKB", 2))
        self.run(lambda e: e.add_market(MARKET, BTC, USD, tick_size=1, lot_size=1, min_size=1, maker_bps=-1,
                                        taker_bps=4))
        for account in TRADERS + list(OPERATORS.values()):
            for asset in (USD, BTC, OKB):
                self.run(lambda e, a=account, s=asset: e.deposit(a, s, 1_000_000))
                self.deposits[asset] += 1_000_000
        self.run(lambda e: e.set_venue_params(ADMIN, stake_asset=OKB, min_stake=100, unbond_period=50,
                                              protocol_account=PROTOCOL, admin=ADMIN))
        for venue in (1, 2, 3):  # venue 4 is left to the launch rule
            self.launch(venue, 1_000, venue % 2)

    @property
    def cy(self):
        return self.engines[0]

    def run(self, command, advance: bool = True):
        """The command on both engines; they must agree.  Returns the Cython engine's events."""
        self.ts += advance
        before = {v.venue_id: v for v in self.cy.venues()}
        got, want = (command(e) for e in self.engines)
        assert got.tobytes() == want.tobytes(), "engines disagree"
        fills = got[got["kind"] == Ev.FILL]
        for f in fills:
            assert eligible(before, int(f["venue"]), int(f["client_id"])), "fill between ineligible venues"
            assert before[int(f["client_id"])].status in (VenueStatus.LIVE, VenueStatus.WINDING_DOWN)
        self.last_events = got
        return got

    # ------------------------------------------------------------------ rules

    @rule(venue=st.sampled_from(sorted(OPERATORS)), stake=st.integers(50, 5_000), access=st.integers(0, 1))
    def launch(self, venue, stake, access):
        self.run(lambda e: e.launch_venue(OPERATORS[venue], venue, stake, insurance_account=900 + venue,
                                          access=access, ts=self.ts))
        self.run(lambda e: e.offer_market(OPERATORS[venue], venue, MARKET, ts=self.ts))
        for account in TRADERS[:3]:
            self.run(lambda e, a=account: e.allow(OPERATORS[venue], venue, a, ts=self.ts))

    @rule(venue=st.sampled_from(sorted(OPERATORS)), pool=st.integers(0, 3), accepts=st.integers(1, 15))
    def policy(self, venue, pool, accepts):
        snapshot = self._settled_state()
        self.run(lambda e: e.set_venue_policy(OPERATORS[venue], venue, pool, accepts | (1 << pool), ts=self.ts),
                 advance=False)
        assert self._untouched_state() == snapshot

    @rule(venue=st.sampled_from(sorted(OPERATORS)), status=st.sampled_from(list(VenueStatus)))
    def status(self, venue, status):
        snapshot = self._settled_state()
        self.run(lambda e: e.set_venue_status(OPERATORS[venue], venue, status, ts=self.ts), advance=False)
        assert self._untouched_state() == snapshot

    @rule(venue=st.sampled_from(sorted(OPERATORS)), account=st.sampled_from(TRADERS))
    def allow(self, venue, account):
        self.run(lambda e: e.allow(OPERATORS[venue], venue, account, ts=self.ts))

    @rule(venue=st.sampled_from(sorted(OPERATORS)), maker=st.integers(-5, 5), extra=st.integers(0, 20),
          op=st.integers(0, 6000), ins=st.integers(0, 4000))
    def fees(self, venue, maker, extra, op, ins):
        self.run(lambda e: e.set_venue_fees(OPERATORS[venue], venue, maker_bps=maker, taker_bps=abs(maker) + extra,
                                            operator_bps=op, insurance_bps=ins, ts=self.ts))

    @rule(orders=st.lists(st.tuples(st.sampled_from(TRADERS), st.integers(0, 4), st.sampled_from([Side.BUY, Side.SELL]),
                                    st.integers(95, 105), st.integers(1, 50), st.booleans()), min_size=1, max_size=6))
    def place(self, orders):
        for account, venue, side, price, qty, ioc in orders:
            self.client_id += 1
            halted = {v.venue_id for v in self.cy.venues() if v.status == VenueStatus.HALTED}
            frozen = [o for o in self.cy.l3(MARKET) if o.venue in halted]
            self.run(lambda e: e.place(account, MARKET, side, price, qty, self.client_id, venue=venue,
                                       tif=1 if ioc else 0, stp=1, ts=self.ts))
            still = {o.order_id: o for o in self.cy.l3(MARKET)}
            for o in frozen:  # a halted venue's orders are not traded (its own takers are refused)
                assert still.get(o.order_id) == o

    @precondition(lambda self: self.cy.open_orders > 0)
    @rule(data=st.data())
    def cancel(self, data):
        o = data.draw(st.sampled_from(self.cy.l3(MARKET)))
        self.run(lambda e: e.cancel(o.account, order_id=o.order_id, ts=self.ts))

    @rule(venue=st.sampled_from(sorted(OPERATORS)), amount=st.integers(1, 3_000))
    def unbond(self, venue, amount):
        self.run(lambda e: e.unbond(OPERATORS[venue], venue, amount, ts=self.ts))

    @rule(venue=st.sampled_from(sorted(OPERATORS)), amount=st.integers(1, 3_000))
    def add_stake(self, venue, amount):
        self.run(lambda e: e.add_stake(OPERATORS[venue], venue, amount, ts=self.ts))

    @rule(venue=st.sampled_from(sorted(OPERATORS)), amount=st.integers(1, 3_000), shortfall=st.integers(0, 3_000))
    def slash(self, venue, amount, shortfall):
        self.run(lambda e: e.slash(ADMIN, venue, amount, shortfall=shortfall, ts=self.ts))

    @rule(venue=st.sampled_from(sorted(OPERATORS)), asset=st.sampled_from([USD, BTC]))
    def sweep(self, venue, asset):
        self.run(lambda e: e.sweep_fees(OPERATORS[venue], venue, asset, ts=self.ts))

    @rule(dt=st.integers(1, 80))
    def wait(self, dt):
        self.ts += dt
        self.run(lambda e: e.deposit(TRADERS[0], USD, 1, ts=self.ts))  # any command moves the clock
        self.deposits[USD] += 1

    # ------------------------------------------------------------------ invariants

    def _settled_state(self):
        """The state once everything due at the next instant (unbond releases) has happened: a
        command at that instant runs first, so the next one at the same ts changes only itself."""
        self.wait(1)
        return self._untouched_state()

    def _untouched_state(self):
        """Balances, fee pools and books: what a status or policy change must not move."""
        e = self.cy
        return (tuple((a, tuple(sorted(e.balances(a).items()))) for a in e.accounts()),
                tuple(e.l3(MARKET)), tuple(e.fees(a) for a in (USD, BTC, OKB)),
                tuple(tuple(e.venue_fees(v.venue_id).items()) for v in e.venues()))

    @invariant()
    def engines_agree(self):
        assert canonical_state(self.engines[0]) == canonical_state(self.engines[1])

    @invariant()
    def every_asset_is_conserved(self):
        e = self.cy
        for asset, deposited in self.deposits.items():
            in_accounts = sum(sum(e.balance(a, asset)) for a in e.accounts())
            collected = sum(e.venue_fees(v.venue_id).get(asset, 0) for v in e.venues())
            staked = sum(v.stake + v.unbonding for v in e.venues()) if asset == OKB else 0
            assert in_accounts + e.fees(asset) + collected + staked == deposited, asset
            assert all(n >= 0 for v in e.venues() for n in e.venue_fees(v.venue_id).values())


TestVenueMachine = VenueMachine.TestCase
TestVenueMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])

"""A canonical dump of an engine's state and its hash, equal across implementations."""
from __future__ import annotations

import hashlib


def canonical_state(engine) -> tuple:
    markets = tuple(engine.markets())
    books = tuple(tuple(engine.l3(m.market_id)) for m in markets)
    balances = tuple(
        (account, tuple(sorted(engine.balances(account).items()))) for account in engine.accounts()
    )
    fees = tuple(engine.fees(a.asset_id) for a in engine.assets())
    lasts = tuple(engine.last_price(m.market_id) for m in markets)
    counters = (engine.cmd_seq, engine.event_seq, engine.last_order_id, engine.now)
    venues = tuple(
        (v, tuple(engine.venue_markets(v.venue_id)), tuple(engine.allowed(v.venue_id)),
         engine.venue_fee_schedule(v.venue_id), tuple(engine.venue_fees(v.venue_id).items()))
        for v in engine.venues()
    )
    regions = tuple((account, r) for account in engine.accounts() if (r := engine.region(account)))
    venue_state = (tuple(engine.venue_params()), venues, regions, tuple(engine.volumes()))
    oracles = tuple(engine.oracles())
    positions = (tuple(engine.positions()), tuple(engine.market_risks()), tuple(engine.outcomes()),
                 tuple(engine.outcome_events()), tuple(engine.venue_market_risks()), tuple(engine.exposure_caps()),
                 tuple(engine.fundings()), tuple(engine.margin_tiers()), tuple(engine.margin_modes()),
                 tuple(engine.collateral_assets()), tuple(engine.venue_collaterals()))
    # counters last: tests compare states without them as ``canonical_state(e)[:-1]``
    return (tuple(engine.assets()), markets, books, balances, fees, lasts, venue_state, oracles, positions,
            counters)


def state_hash(engine) -> str:
    return hashlib.sha256(repr(canonical_state(engine)).encode()).hexdigest()

"""Venues at the edges: config -> commands, and the engine state as the journal says it is.

The matcher owns venue state (``engine/matcher.pyx``, docs/ARCHITECTURE.md "Venues"); this module
turns a ``[venues]`` config section or one venue's TOML into the commands that set it up, and
answers the ``xos venue`` tools, which send commands through the matcher's input and read the
result back from the journal: they replay it (newest snapshot + the rest) through a fresh engine,
so what they print is exactly what the matcher holds for every journaled command.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import Config, VenueLaunchConfig
from .records import COMMAND_DTYPE, Cmd, VenueAccess, pack_venue_fees

ACCESS = {"permissionless": VenueAccess.PERMISSIONLESS, "allow-list": VenueAccess.ALLOW_LIST}


def _commands(rows: list[dict]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=COMMAND_DTYPE)
    for i, row in enumerate(rows):
        for name, value in row.items():
            out[i][name] = value
    return out


def pool_mask(pools: list[int]) -> int:
    """The accepted-pool mask of a list of pools (empty: every pool) as the int64 a command holds."""
    if not pools:
        return -1
    mask = sum(1 << p for p in set(pools))
    return mask - (1 << 64) if mask >= 1 << 63 else mask


def launch_rows(v: VenueLaunchConfig, cfg: Config) -> list[dict]:
    """LaunchVenue and the commands that give the new venue its configuration, sent by its operator."""
    ids = cfg.asset_ids()
    access = int(ACCESS[v.access])
    common = dict(account=v.operator, venue=v.id)
    rows = [dict(kind=Cmd.LAUNCH_VENUE, qty=v.stake, side=access, id=v.insurance_account, **common)]
    pool = access if v.pool is None else v.pool
    if pool != access or v.trades_with:
        rows.append(dict(kind=Cmd.VENUE_POLICY, side=pool, aux=pool_mask(v.trades_with), **common))
    if v.blocked_regions:
        rows.append(dict(kind=Cmd.VENUE_ACCESS, side=access, qty=pool_mask(v.blocked_regions), **common))
    if v.maker_bps or v.taker_bps or v.operator_bps or v.insurance_bps:
        rows.append(dict(kind=Cmd.VENUE_FEES, aux=pack_venue_fees(v.maker_bps, v.taker_bps, v.operator_bps,
                                                                  v.insurance_bps), **common))
    for i, t in enumerate(v.tiers):
        rows.append(dict(kind=Cmd.VENUE_FEE_TIER, side=i + 1, market=ids[v.tier_asset], price=t.min_volume,
                         qty=int(round(v.tier_epoch_s * 1e9)), aux=pack_venue_fees(t.maker_bps, t.taker_bps), **common))
    rows += [dict(kind=Cmd.OFFER_MARKET, market=m, **common) for m in v.markets]
    rows += [dict(kind=Cmd.ALLOW, id=a, **common) for a in v.allow]
    return rows


def oracle_rows(cfg: Config) -> list[dict]:
    """OracleConfig for each ``[[feeds.markets]]``, sent by the admin: the oracle of the market's
    listing venue (where the feed sends its prices) takes that feed's id and account."""
    venue_of = {m.id: m.venue for m in cfg.markets}
    return [dict(kind=Cmd.ORACLE_CONFIG, account=cfg.venues.admin, venue=venue_of[f.market], market=f.market,
                 id=f.id, aux=cfg.feeds.account, qty=int(round(f.oracle_timeout_s * 1e9))) for f in cfg.feeds.markets]


def venue_commands(cfg: Config) -> np.ndarray:
    """The config's staking parameters, venue launches and oracles (the bootstrap runs them after
    the listings and deposits: operators stake from their deposits)."""
    s = cfg.venues
    if not s.admin:
        return np.zeros(0, dtype=COMMAND_DTYPE)
    rows = [dict(kind=Cmd.VENUE_PARAMS, account=s.admin, market=cfg.asset_ids()[s.stake_asset], qty=s.min_stake,
                 price=int(round(s.unbond_period_s * 1e9)), id=s.protocol_account, aux=s.admin)]
    rows += market_config_rows(cfg) + collateral_rows(cfg)
    for v in s.launch:
        rows += launch_rows(v, cfg)
    return _commands(rows + oracle_rows(cfg))


def collateral_rows(cfg: Config) -> list[dict]:
    """With ``[margin] unified``, the admin's CollateralAsset of the valuation asset (price market 0) and of each asset
    in ``haircuts_bps`` (its price market: ``MarginSection.price_market``), at weight 10000 - haircut."""
    mg = cfg.margin
    if not mg.unified:
        return []
    ids = cfg.asset_ids()
    row = dict(kind=Cmd.COLLATERAL_ASSET, account=cfg.venues.admin)
    rows = [dict(row, market=ids[mg.valuation_asset], id=0, qty=10000 - mg.haircuts_bps.get(mg.valuation_asset, 0))]
    for sym, haircut in sorted(mg.haircuts_bps.items(), key=lambda kv: ids[kv[0]]):
        if sym != mg.valuation_asset:
            rows.append(dict(row, market=ids[sym], id=mg.price_market(cfg, sym).id, qty=10000 - haircut))
    return rows


def market_config_rows(cfg: Config) -> list[dict]:
    """The admin's MarketRisk of each leveraged perpetual and OutcomeConfig of each outcome market in ``[[markets]]``
    (before any order: MarketRisk needs a market without open orders)."""
    rows = []
    for m in cfg.markets:
        if m.max_leverage:
            rows.append(dict(kind=Cmd.MARKET_RISK, account=cfg.venues.admin, market=m.id, price=m.max_leverage,
                             qty=m.maintenance_bps))
        if m.payout:
            rows.append(dict(kind=Cmd.OUTCOME_CONFIG, account=cfg.venues.admin, market=m.id, price=m.payout,
                             id=m.resolver, qty=int(round(m.dispute_window_s * 1e9))))
    return rows


def launch_commands(v: VenueLaunchConfig, cfg: Config) -> np.ndarray:
    return _commands(launch_rows(v, cfg))


# ---------------------------------------------------------------- reading the engine back


def journal_end(cfg: Config) -> int:
    from .journal import JournalReader

    last = 0
    directory = cfg.data_path / "journal"
    if directory.is_dir():
        for first, cmds in JournalReader(directory).read_from(1):
            last = first + len(cmds) - 1
    return last


def rebuild(cfg: Config, watch: set[int] = frozenset()):
    """The engine as of the journal's end (newest snapshot + the rest), and the events of the
    command sequences in ``watch`` (``{cmd_seq: events}``)."""
    from .journal import JournalReader
    from .matcher import Engine
    from .snapshot import load_newest

    journal = cfg.data_path / "journal"
    if not journal.is_dir():
        raise FileNotFoundError(f"no journal at {journal} (has `xos run` run with this config?)")
    state, _, _ = load_newest(cfg.data_path / "snapshots", max_cmd_seq=min(watch, default=1 << 62) - 1)
    size = cfg.engine.capacities()
    engine = Engine.from_state(state, **size) if state is not None else Engine(**size)
    found = {}
    for first, cmds in JournalReader(journal).read_from(engine.cmd_seq + 1):
        events = engine.process(cmds)
        for seq in watch:
            if first <= seq < first + len(cmds):
                found[seq] = events[events["cmd_seq"] == seq]
    return engine, found


def await_journaled(cfg: Config, sent: np.ndarray, after: int, timeout_s: float = 10.0) -> list[int]:
    """The sequences the matcher gave ``sent`` (matched field by field, all but the intake
    timestamp, in order after ``after``); waits until all are journaled."""
    from .journal import JournalReader

    fields = [n for n in COMMAND_DTYPE.names if n != "ts"]
    want = [tuple(c[n].item() for n in fields) for c in sent]
    deadline = time.monotonic() + timeout_s
    while True:
        seqs: list[int] = []
        directory = Path(cfg.data_path / "journal")
        if directory.is_dir():
            for first, cmds in JournalReader(directory).read_from(after + 1):
                for i, c in enumerate(cmds):
                    if len(seqs) < len(want) and tuple(c[n].item() for n in fields) == want[len(seqs)]:
                        seqs.append(first + i)
        if len(seqs) == len(want):
            return seqs
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(want) - len(seqs)} of {len(want)} commands not journaled after {timeout_s} s "
                               "(is the engine running with this config and journaling on?)")
        time.sleep(0.05)

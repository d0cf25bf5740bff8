"""The engine's TOML configuration (msgspec at the edge): decoding, checks, built-in default.

Every error names the file and the field, e.g.
``config error in xos.toml: markets[0].base: unknown asset 'BTX'``.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Literal

import msgspec

from .records import MarketKind

DEFAULT_CONFIG = "default.toml"  # shipped in engine/data/
MAX_CPU_LATENCY_US = 2_000_000_000  # the kernel's own default PM QoS CPU latency: no constraint


class ConfigError(ValueError):
    """A configuration problem, naming the file and the field."""


class EngineSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str = "xos"  # shared-memory and socket names derive from it
    data_dir: str = "xos-data"  # journal, snapshots, worker databases (relative to the config file)
    input: str = ""  # ZeroMQ address of the matcher's input; default ipc under /tmp from the name
    ring_capacity: int = 1 << 20  # events in the shared-memory ring (a power of two)
    batch_max: int = 4096  # commands the matcher takes per batch at most
    fsync: Literal["always", "off"] = "always"
    journal: bool = True  # off only to measure what journaling costs: each run starts empty (engine/supervisor.py)
    snapshot_interval_s: float = 60.0  # 0: only at a clean shutdown
    snapshot_keep: int = 3
    max_orders: int = 1 << 20
    max_accounts: int = 1 << 20
    max_markets: int = 4096
    max_assets: int = 1024
    # The most microseconds an idle CPU may take to wake, held as a PM QoS request (/dev/cpu_dma_latency)
    # for as long as the engine runs: each order crosses about ten process wake-ups, and an idle CPU in a
    # deep idle state (or a VM's halted vCPU) takes tens of microseconds each.  0 keeps idle CPUs polling,
    # which costs power and, on a shared host, other tenants' CPU.  -1 leaves the host's setting.
    cpu_latency_us: int = -1

    def capacities(self) -> dict:
        """The matcher's table sizes, as ``Engine`` and ``Engine.from_state`` take them."""
        return dict(max_orders=self.max_orders, max_accounts=self.max_accounts, max_markets=self.max_markets,
                    max_assets=self.max_assets)


class AssetConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: int
    symbol: str
    decimals: int


class MarketConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: int
    base: str
    quote: str
    tick_size: int
    lot_size: int
    min_size: int
    kind: Literal["spot", "perpetual", "outcome"] = "spot"
    maker_bps: int = 0
    taker_bps: int = 0
    band_bps: int = 0
    venue: int = 0
    # perpetual: MarketRisk, sent at bootstrap by [venues] admin (0: none, the engine's 1x)
    max_leverage: int = 0
    maintenance_bps: int = 5000  # of the initial margin
    # outcome: OutcomeConfig, sent at bootstrap by [venues] admin when payout is set (0: configured later by a
    # command; until configured the market is not tradable)
    payout: int = 0  # quote units per lot a winning share pays
    resolver: int = 0  # the account that resolves it
    dispute_window_s: float = 0.0  # engine clock


class AccountConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: int
    deposits: dict[str, int] = {}


class RiskSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    move_bps: int = 1000  # circuit breaker: price move from the window's first trade
    window_s: float = 10.0
    cooldown_s: float = 30.0


class MarginSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    valuation_asset: str = ""
    haircuts_bps: dict[str, int] = {}
    # the bootstrap declares these to the matcher ([venues] admin's CollateralAsset), which turns the unified
    # account on: one equity over every asset at its haircut (docs/ARCHITECTURE.md "Unified account")
    unified: bool = False

    def price_market(self, cfg: "Config", symbol: str) -> "MarketConfig | None":
        """The market that prices ``symbol`` in the valuation asset: the lowest id with it as base and the valuation
        asset as quote, spot or perpetual."""
        return min((m for m in cfg.markets if m.base == symbol and m.quote == self.valuation_asset
                    and m.kind != "outcome"), key=lambda m: m.id, default=None)


class WorkersSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    heartbeat_s: float = 1.0  # each process writes a heartbeat this often
    # margin and risk checkpoint this often while events flow (and every half ring), unless checkpoints would
    # take more than a fifth of the worker's time (engine.process.CHECKPOINT_SHARE)
    checkpoint_s: float = 1.0
    # margin, risk and settlement look at the ring every nap_us while events flow rather than being woken
    # by the matcher at every batch (a syscall for it and, on few cores, a preemption of it or the gateway);
    # 0: woken at every batch.  Each look costs a worker a pass of fixed cost whatever the batch (~250-450 us
    # of CPU): on two cores at 300,000 orders/s, 5 ms rather than 1 ms gave the answer path back a tenth of a
    # core; 20 ms rather than 5 ms took order-to-ack p50 down a fifth at 1,000 to 100,000 orders/s
    nap_us: int = 20000
    stale_after_s: float = 10.0  # the supervisor restarts a process silent for longer
    restart: bool = True


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` as (host, port); ValueError naming what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not host:port (port 0-65535; 0 picks a free one)")
    return host, int(port)


class MetricsSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = False  # `xos run` serves Prometheus metrics (engine/metrics.py)
    address: str = "127.0.0.1:9464"  # host:port of its HTTP endpoint (port 0: a free one, said in the log)


class GatewayKey(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    account: int
    public_key: str  # the client's CurveZMQ public key, Z85 (40 characters); remove the line to revoke


class GatewaySection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True
    address: str = "tcp://127.0.0.1:7100"  # the order-entry ROUTER
    server_key: str = ""  # the server's secret key file (`xos keys new`); default DATA/gateway/server.key_secret
    keys: list[GatewayKey] = []  # re-read while running: a key removed here is revoked within keys_reload_s
    keys_reload_s: float = 1.0
    max_message_bytes: int = 1 << 20  # larger requests get an Error reply
    max_batch: int = 4096  # requests in one Batch
    rate_per_s: int = 200_000  # commands per second per account (token bucket refill)
    burst: int = 50_000  # token bucket depth
    push_batch: int = 4096  # commands forwarded to the matcher in one message at most
    # A session silent this long, with no dead-man switch, nothing pending and no open order of its account, is
    # forgotten: a client that went away without a word leaves nothing behind (ZeroMQ does not say), and one
    # still there gets a new session with its next request.
    session_idle_s: float = 600.0
    # The closed orders (the newest 1000 an account) are written this often for the next gateway, and at a clean
    # stop: its status queries know the orders closed before the snapshot it starts from.
    history_s: float = 10.0

    def __post_init__(self):
        for name in ("keys_reload_s", "max_message_bytes", "max_batch", "rate_per_s", "burst", "push_batch",
                     "session_idle_s", "history_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"gateway.{name} must be positive")
        seen: set[str] = set()
        for i, k in enumerate(self.keys):
            if k.account <= 0:
                raise ValueError(f"gateway.keys[{i}].account must be positive")
            if len(k.public_key) != 40:
                raise ValueError(f"gateway.keys[{i}].public_key must be a 40-character Z85 CurveZMQ key")
            if k.public_key in seen:
                raise ValueError(f"gateway.keys[{i}].public_key is listed twice (a key names one account)")
            seen.add(k.public_key)


class MarketDataSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True
    address: str = "tcp://127.0.0.1:7101"  # PUB: L2 increments, trades, L3
    snapshot_address: str = "tcp://127.0.0.1:7102"  # ROUTER: snapshots on request
    nap_us: int = 1000  # as workers.nap_us, for the market data service (0: woken at every batch)


class FileSourceConfig(msgspec.Struct, tag="file", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """Replays recorded prices (CSV or JSONL rows: ts_ns, market, price[, source]) re-timed to now."""

    name: str
    path: str  # relative to the config file; "builtin:NAME" = a file shipped in feeds/data
    rows_from: str = ""  # only the rows whose `source` column is this ("" = every row)
    speed: float = 1.0  # recorded seconds per wall second
    loop: bool = True  # start again at the end (else the source goes silent, and stale)

    def __post_init__(self):
        if not self.name or not self.path:
            raise ValueError("a file source needs a name and a path")
        if not self.speed > 0:
            raise ValueError(f"feeds source {self.name!r}: speed must be positive")


class SimulatedSourceConfig(msgspec.Struct, tag="simulated", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """A seeded random walk with jumps, one step per market every step_s."""

    name: str
    start_prices: dict[int, float]  # market id -> first price (quote per base unit)
    seed: int = 0
    step_s: float = 1.0
    vol_bps: float = 10.0  # standard deviation of one step's log return, in basis points
    jump_probability: float = 0.0  # per step and market
    jump_bps: float = 500.0  # size of a jump (either direction)

    def __post_init__(self):
        if not self.name or not self.start_prices:
            raise ValueError("a simulated source needs a name and start_prices")
        if not (self.step_s > 0 and self.vol_bps >= 0 and 0 <= self.jump_probability <= 1 and self.jump_bps >= 0):
            raise ValueError(f"feeds source {self.name!r}: step_s > 0, vol_bps >= 0, jump_probability in 0..1, "
                             "jump_bps >= 0")
        if not all(p > 0 and p != float("inf") for p in self.start_prices.values()):
            raise ValueError(f"feeds source {self.name!r}: start_prices must be positive and finite")


class PushSourceConfig(msgspec.Struct, tag="push", tag_field="kind", forbid_unknown_fields=True, frozen=True):
    """Operators and tests push prices over ZeroMQ (CurveZMQ; only authorized keys get in)."""

    name: str
    bind: str  # e.g. "tcp://127.0.0.1:7103"
    keys_dir: str = ""  # server.key_secret + authorized/*.key; default DATA/feeds/NAME (created on start)

    def __post_init__(self):
        if not self.name or not self.bind:
            raise ValueError("a push source needs a name and a bind address")


class FeedMarketConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: int  # the feed id, carried in every OraclePrice command it produces
    market: int  # engine market id (its venue comes from the market's listing)
    sources: list[str]
    quorum: int = 1  # fresh, agreeing sources needed for a price
    stale_after_s: float = 5.0  # a source without an update for longer is left out
    max_deviation_bps: int = 200  # a source further than this from the median is left out
    interval_s: float = 1.0  # one OraclePrice per interval while a quorum holds
    oracle_timeout_s: float = 5.0  # the matcher marks the market's oracle stale after this long without a price


class FeedsSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = False  # `xos run` starts the feeds process
    account: int = 0  # the feed's account, carried in every OraclePrice
    future_tolerance_s: float = 2.0  # a source timestamp further ahead of the feed's clock is rejected
    sources: list[FileSourceConfig | SimulatedSourceConfig | PushSourceConfig] = []
    markets: list[FeedMarketConfig] = []

    def check(self, cfg: "Config", fail) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            fail("feeds.sources", "source names must be unique")
        if self.enabled and self.account <= 0:
            fail("feeds.account", "must be a positive account id when feeds are enabled")
        if self.enabled and not self.markets:
            fail("feeds.markets", "at least one market needs a feed when feeds are enabled")
        if not self.future_tolerance_s >= 0:
            fail("feeds.future_tolerance_s", "must not be negative")
        if self.markets and not cfg.venues.admin:
            fail("venues.admin", "the [venues] admin configures the matcher's oracle of each [[feeds.markets]]: set it")
        listed = {m.id for m in cfg.markets}
        seen_ids: set[int] = set()
        seen_markets: set[int] = set()
        for i, m in enumerate(self.markets):
            where = f"feeds.markets[{i}]"
            if m.id <= 0 or m.id in seen_ids:
                fail(f"{where}.id", f"feed ids must be positive and unique, not {m.id}")
            if m.market not in listed:
                fail(f"{where}.market", f"unknown market {m.market}")
            if m.market in seen_markets:
                fail(f"{where}.market", f"market {m.market} has two feeds")
            seen_ids.add(m.id)
            seen_markets.add(m.market)
            for name in m.sources:
                if name not in names:
                    fail(f"{where}.sources", f"unknown source {name!r}")
            if len(set(m.sources)) != len(m.sources):
                fail(f"{where}.sources", "a source is listed twice")
            if not 1 <= m.quorum <= len(m.sources):
                fail(f"{where}.quorum", f"must be in 1..{len(m.sources)} (the number of sources), not {m.quorum}")
            if not (m.stale_after_s > 0 and m.interval_s > 0 and m.oracle_timeout_s > 0):
                fail(where, "stale_after_s, interval_s and oracle_timeout_s must be positive")
            if not 1 <= m.max_deviation_bps <= 10000:
                fail(f"{where}.max_deviation_bps", f"must be in 1..10000, not {m.max_deviation_bps}")
        for s in self.sources:
            if isinstance(s, SimulatedSourceConfig):
                for market in s.start_prices:
                    if market not in seen_markets:
                        fail(f"feeds.sources.{s.name}.start_prices", f"market {market} has no feed")


class FeeTierConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    min_volume: int  # traded notional (tier asset units) in the previous epoch that earns the tier
    maker_bps: int = 0
    taker_bps: int = 0


class VenueLaunchConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One venue: what LaunchVenue and its operator's first commands set (also the file
    `xos venue launch` reads)."""

    id: int
    operator: int  # the operator's account: it stakes from its free balance and may change the venue
    insurance_account: int
    stake: int  # stake asset units, at least venues.min_stake
    access: Literal["permissionless", "allow-list"] = "permissionless"
    pool: int | None = None  # matching pool 0..63 (default: 0 permissionless, 1 allow-list)
    trades_with: list[int] = []  # pools its orders may trade with (empty: every pool)
    markets: list[int] = []  # market ids it offers
    allow: list[int] = []  # allow-list accounts
    blocked_regions: list[int] = []  # region tags (0..63) that may not place orders
    maker_bps: int = 0
    taker_bps: int = 0
    operator_bps: int = 0  # shares of its collected fees; the protocol gets the rest
    insurance_bps: int = 0
    tiers: list[FeeTierConfig] = []  # ascending min_volume, at most 4
    tier_asset: str = ""  # fills in markets quoted in this asset count towards tiers
    tier_epoch_s: float = 30 * 86400.0

    def check(self, cfg: "Config", where: str, fail) -> None:
        if not 1 <= self.id < 1 << 16:
            fail(f"{where}.id", f"must be in 1..65535, not {self.id}")
        if self.operator <= 0 or self.insurance_account <= 0 or self.insurance_account == self.operator:
            fail(f"{where}.insurance_account", "operator and insurance account must be positive and differ")
        if self.pool is not None and not 0 <= self.pool <= 63:
            fail(f"{where}.pool", f"must be in 0..63, not {self.pool}")
        pool = self.pool if self.pool is not None else int(self.access == "allow-list")
        if any(not 0 <= p <= 63 for p in self.trades_with) or (self.trades_with and pool not in self.trades_with):
            fail(f"{where}.trades_with", "pools in 0..63, including the venue's own")
        if any(not 0 <= r <= 63 for r in self.blocked_regions):
            fail(f"{where}.blocked_regions", "region tags are 0..63")
        listed = {m.id for m in cfg.markets}
        for m in self.markets:
            if m not in listed:
                fail(f"{where}.markets", f"unknown market {m}")
        if any(a <= 0 for a in self.allow):
            fail(f"{where}.allow", "account ids must be positive")
        fee_pairs = [(self.maker_bps, self.taker_bps)] + [(t.maker_bps, t.taker_bps) for t in self.tiers]
        if not all(-1000 <= mk <= tk <= 1000 and mk + tk >= 0 for mk, tk in fee_pairs):
            fail(f"{where}.maker_bps", "fees must satisfy -1000 <= maker <= taker <= 1000 and maker + taker >= 0")
        if not (0 <= self.operator_bps and 0 <= self.insurance_bps and self.operator_bps + self.insurance_bps <= 10000):
            fail(f"{where}.operator_bps", "operator_bps + insurance_bps must be in 0..10000")
        volumes = [t.min_volume for t in self.tiers]
        if len(volumes) > 4 or any(v <= 0 for v in volumes) or volumes != sorted(set(volumes)):
            fail(f"{where}.tiers", "at most 4 tiers with positive, strictly ascending min_volume")
        if self.tiers and self.tier_asset not in cfg.asset_ids():
            fail(f"{where}.tier_asset", f"unknown asset {self.tier_asset!r}")
        if self.tiers and not self.tier_epoch_s * 1e9 >= 1:
            fail(f"{where}.tier_epoch_s", "must be positive")


class VenuesSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Staking parameters and the venues the bootstrap launches (`[venues]`, `[[venues.launch]]`)."""

    admin: int = 0  # the admin account; 0: no VenueParams at bootstrap, so no venue can launch
    protocol_account: int = 0  # receives slashed stake (after the insurance fund) and fee remainders
    stake_asset: str = ""
    min_stake: int = 0
    unbond_period_s: float = 7 * 86400.0  # engine clock
    launch: list[VenueLaunchConfig] = []

    def check(self, cfg: "Config", fail) -> None:
        if not self.admin:
            if self.launch:
                fail("venues.admin", "launching venues needs the staking parameters (admin, stake asset, ...)")
            return
        if self.admin < 0 or self.protocol_account <= 0:
            fail("venues.protocol_account", "admin and protocol account must be positive")
        if self.stake_asset not in cfg.asset_ids():
            fail("venues.stake_asset", f"unknown asset {self.stake_asset!r}")
        if self.min_stake <= 0 or not self.unbond_period_s >= 0:
            fail("venues.min_stake", "must be positive, and unbond_period_s not negative")
        seen_ids, seen_insurance = set(), set()
        for i, v in enumerate(self.launch):
            v.check(cfg, f"venues.launch[{i}]", fail)
            if v.id in seen_ids or v.insurance_account in seen_insurance:
                fail(f"venues.launch[{i}]", "venue ids and insurance accounts must be unique")
            if v.insurance_account == self.protocol_account:
                fail(f"venues.launch[{i}].insurance_account", "must not be the protocol account")
            if v.stake < self.min_stake:
                fail(f"venues.launch[{i}].stake", f"below venues.min_stake ({self.min_stake})")
            seen_ids.add(v.id)
            seen_insurance.add(v.insurance_account)


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    engine: EngineSection = EngineSection()
    assets: list[AssetConfig] = []
    markets: list[MarketConfig] = []
    accounts: list[AccountConfig] = []
    risk: RiskSection = RiskSection()
    margin: MarginSection = MarginSection()
    workers: WorkersSection = WorkersSection()
    metrics: MetricsSection = MetricsSection()
    gateway: GatewaySection = GatewaySection()
    marketdata: MarketDataSection = MarketDataSection()
    feeds: FeedsSection = FeedsSection()
    venues: VenuesSection = VenuesSection()
    path: str = ""  # where it was read from (set by load, not by the file)

    @property
    def data_path(self) -> Path:
        base = Path(self.path).parent if self.path else Path.cwd()
        return (base / self.engine.data_dir).resolve()

    @property
    def ledger_path(self) -> Path:
        """The settlement worker's ledger (SQLite, WAL)."""
        return self.data_path / "settlement.sqlite"

    @property
    def history_path(self) -> Path:
        """The closed orders a gateway leaves to the next (``gateway.history_s``)."""
        return self.data_path / "gateway" / "closed_orders.npz"

    @property
    def input_address(self) -> str:
        return self.engine.input or f"ipc:///tmp/{self.engine.name}-input"

    @property
    def ring_name(self) -> str:
        return f"{self.engine.name}-events"

    @property
    def command_ring_name(self) -> str:
        return f"{self.engine.name}-commands"

    @property
    def command_ring_capacity(self) -> int:
        """The gateway's command ring holds its largest forward twice over: up to push_batch commands, then
        the message that crosses it (a Batch of max_batch requests, each at most a multi-leg order's
        MAX_LEGS + 1 records); at least 65,536 (4 MiB)."""
        from .api import MAX_LEGS

        largest = self.gateway.push_batch + self.gateway.max_batch * (MAX_LEGS + 1)
        return max(1 << 16, 1 << (2 * largest - 1).bit_length())

    def asset_ids(self) -> dict[str, int]:
        return {a.symbol: a.id for a in self.assets}


KINDS = {"spot": MarketKind.SPOT, "perpetual": MarketKind.PERPETUAL, "outcome": MarketKind.OUTCOME}


def _wide_ints(value, path: str):
    """(path, value) of each int in a decoded config that does not fit in int64, the widest command field."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(1 << 63) <= value < 1 << 63:
            yield path, value
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            yield from _wide_ints(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _wide_ints(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _wide_ints(item, f"{path}.{key}")


def _check(cfg: Config, where: str) -> None:
    def fail(field: str, why: str) -> None:
        raise ConfigError(f"config error in {where}: {field}: {why}")

    for path, value in _wide_ints(cfg, ""):
        fail(path, f"must fit in int64 (-2**63 .. 2**63 - 1), not {value}")

    e = cfg.engine
    cap = e.ring_capacity
    if cap < 1024 or cap & (cap - 1):
        fail("engine.ring_capacity", f"must be a power of two >= 1024, not {cap}")
    if e.snapshot_interval_s < 0 or e.snapshot_keep < 1:
        fail("engine.snapshot_interval_s", "must not be negative, and snapshot_keep at least 1")
    if not 1 <= e.batch_max <= cap // 2:
        fail("engine.batch_max", f"must be in 1..ring_capacity/2, not {e.batch_max}")
    if not -1 <= e.cpu_latency_us <= MAX_CPU_LATENCY_US:
        fail("engine.cpu_latency_us",
             f"must be -1 (the host's setting) or 0..{MAX_CPU_LATENCY_US}, not {e.cpu_latency_us}")
    for name in ("max_orders", "max_accounts", "max_markets", "max_assets"):
        if getattr(e, name) < 1:
            fail(f"engine.{name}", "must be positive")
    if not e.name.replace("-", "").replace("_", "").isalnum():
        fail("engine.name", f"letters, digits, '-' and '_' only, not {e.name!r}")
    symbols: dict[str, int] = {}
    ids: set[int] = set()
    for i, a in enumerate(cfg.assets):
        if not 1 <= a.id <= e.max_assets:
            fail(f"assets[{i}].id", f"must be in 1..engine.max_assets ({e.max_assets}), not {a.id}")
        if a.id in ids:
            fail(f"assets[{i}].id", f"duplicate asset id {a.id}")
        if a.symbol in symbols:
            fail(f"assets[{i}].symbol", f"duplicate symbol {a.symbol!r}")
        if not (1 <= len(a.symbol) <= 16 and a.symbol.isascii() and a.symbol.isprintable()):
            fail(f"assets[{i}].symbol", f"1..16 printable ASCII characters, not {a.symbol!r}")
        if not 0 <= a.decimals <= 18:
            fail(f"assets[{i}].decimals", f"must be in 0..18, not {a.decimals}")
        ids.add(a.id)
        symbols[a.symbol] = a.id
    market_ids: set[int] = set()
    for i, m in enumerate(cfg.markets):
        if not 1 <= m.id <= e.max_markets:
            fail(f"markets[{i}].id", f"must be in 1..engine.max_markets ({e.max_markets}), not {m.id}")
        if m.id in market_ids:
            fail(f"markets[{i}].id", f"duplicate market id {m.id}")
        market_ids.add(m.id)
        for side in ("base", "quote"):
            if getattr(m, side) not in symbols:
                fail(f"markets[{i}].{side}", f"unknown asset {getattr(m, side)!r}")
        if m.base == m.quote:
            fail(f"markets[{i}].quote", "must differ from base")
        for name in ("tick_size", "lot_size", "min_size"):
            if getattr(m, name) <= 0:
                fail(f"markets[{i}].{name}", "must be positive")
        if m.min_size % m.lot_size:
            fail(f"markets[{i}].min_size", "must be a multiple of lot_size")
        if not (-1000 <= m.maker_bps <= m.taker_bps <= 1000 and m.maker_bps + m.taker_bps >= 0):
            fail(f"markets[{i}].maker_bps", "fees must satisfy -1000 <= maker <= taker <= 1000 and maker + taker >= 0")
        if not 0 <= m.band_bps <= 10000:
            fail(f"markets[{i}].band_bps", "must be in 0..10000")
        if m.venue != 0:
            fail(f"markets[{i}].venue", "only venue 0 exists until venues are launched")
        if m.kind != "perpetual" and m.max_leverage:
            fail(f"markets[{i}].max_leverage", "only a perpetual market has leverage")
        if m.max_leverage and not (1 <= m.max_leverage <= 100 and 1 <= m.maintenance_bps <= 10000):
            fail(f"markets[{i}].max_leverage", "must be in 1..100, and maintenance_bps in 1..10000")
        if m.kind != "outcome" and (m.payout or m.resolver or m.dispute_window_s):
            fail(f"markets[{i}].payout", "payout, resolver and dispute_window_s are an outcome market's")
        if m.payout and not (m.payout >= 2 * m.tick_size and m.payout % m.tick_size == 0):
            fail(f"markets[{i}].payout", "must be at least 2 ticks, on the tick")
        if m.payout and (m.resolver <= 0 or not m.dispute_window_s >= 0):
            fail(f"markets[{i}].resolver", "an outcome market needs a resolver account > 0 and dispute_window_s >= 0")
        if (m.max_leverage or m.payout) and not cfg.venues.admin:
            fail(f"markets[{i}].kind", "its MarketRisk / OutcomeConfig is sent by [venues] admin, which is not set")
    for i, acct in enumerate(cfg.accounts):
        if acct.id <= 0:
            fail(f"accounts[{i}].id", "must be positive")
        for sym, amount in acct.deposits.items():
            if sym not in symbols:
                fail(f"accounts[{i}].deposits", f"unknown asset {sym!r}")
            if amount <= 0:
                fail(f"accounts[{i}].deposits.{sym}", "must be positive")
    if cfg.margin.valuation_asset and cfg.margin.valuation_asset not in symbols:
        fail("margin.valuation_asset", f"unknown asset {cfg.margin.valuation_asset!r}")
    for sym, bps in cfg.margin.haircuts_bps.items():
        if sym not in symbols:
            fail("margin.haircuts_bps", f"unknown asset {sym!r}")
        if not 0 <= bps <= 10000:
            fail(f"margin.haircuts_bps.{sym}", "must be in 0..10000")
        if cfg.margin.unified and sym != cfg.margin.valuation_asset and cfg.margin.price_market(cfg, sym) is None:
            fail(f"margin.haircuts_bps.{sym}", f"the unified account needs a {sym}/{cfg.margin.valuation_asset} "
                                               "spot or perpetual market to price it")
    if cfg.margin.unified and not (cfg.margin.valuation_asset and cfg.venues.admin):
        fail("margin.unified", "needs margin.valuation_asset and a [venues] admin (who declares the collateral)")
    if cfg.metrics.enabled:
        try:
            parse_address(cfg.metrics.address)
        except ValueError as exc:
            fail("metrics.address", str(exc))
    if cfg.workers.heartbeat_s <= 0 or cfg.workers.checkpoint_s <= 0:
        fail("workers", "heartbeat_s and checkpoint_s must be positive")
    for section, nap_us in (("workers", cfg.workers.nap_us), ("marketdata", cfg.marketdata.nap_us)):
        if not 0 <= nap_us <= 100_000:
            fail(f"{section}.nap_us", f"must be in 0..100000 (microseconds), not {nap_us}")
    if cfg.risk.move_bps <= 0 or cfg.risk.window_s <= 0 or cfg.risk.cooldown_s < 0:
        fail("risk", "move_bps and window_s must be positive, cooldown_s not negative")
    cfg.feeds.check(cfg, fail)
    cfg.venues.check(cfg, fail)

def loads(text: str, where: str = "<string>") -> Config:
    try:
        cfg = msgspec.toml.decode(text.encode(), type=Config)
    except msgspec.ValidationError as exc:  # names the field: "... - at `$.markets[0].tick_size`"
        raise ConfigError(f"config error in {where}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config error in {where}: not valid TOML: {exc}") from None
    _check(cfg, where)
    return cfg


def load(path: str | Path | None = None) -> Config:
    """The config at ``path``, or the built-in default shipped with the package."""
    if path is None:
        text = importlib.resources.files("engine.data").joinpath(DEFAULT_CONFIG).read_text()
        cfg = loads(text, f"<built-in {DEFAULT_CONFIG}>")
        return msgspec.structs.replace(cfg, path=str(Path.cwd() / "xos.toml"))
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"config error in {p}: cannot read it: {exc.strerror}") from None
    cfg = loads(text, str(p))
    return msgspec.structs.replace(cfg, path=str(p.resolve()))

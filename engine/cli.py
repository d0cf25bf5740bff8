"""The ``xos`` command line (typer): run the engine, inspect it, benchmark it."""
from __future__ import annotations

import json
import time
from typing import Optional

import typer

from . import codes as result_codes

app = typer.Typer(help="xos: an open exchange engine.", no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(help="Benchmarks (each prints its figures and can write JSON).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


BENCHMARKS = {
    "matcher": "the matcher alone on config A or B: throughput, latency percentiles, check against the reference",
    "burst": "the matcher's steady order flow before and after a burst of open orders (its indexes shrink back)",
    "pipeline": "the whole engine as processes: matcher, journal, ring and the three workers",
    "ring": "the shared-memory event ring: events/s to 1 or 3 consumer processes, one-hop latency",
    "journal": "the journal: append+commit by fsync mode and batch size, fsync latency, replay speed",
    "replay": "recovery: journal replay speed, restart from snapshot + journal suffix",
    "crash": "kill -9 the matcher at random points: nothing acknowledged lost, no fill twice",
    "workers": "the settlement, margin and risk cores: events per second each",
    "wire": "orders over ZeroMQ through the whole engine to durable acks: closed and open loop, ceiling, bare path",
    "gateway_table": "the gateway's order table: each query's and each history write's cost to its loop, by size",
    "hops": "ZeroMQ's bare round trip between two processes, plain and over CurveZMQ: the latency floor",
    "path": "a lone order's path through the engine at a calm pace, step by step from its send to its ack",
    "stalls": "how long the machine stops a running process under a calm open loop: CPU waits and host freezes",
    "feeds": "oracle updates per second into the running matcher, and order throughput with and without them",
    "venues": "config A and B over 1,000 venues with mixed eligibility, as a ratio to one venue",
    "marketdata": "the market-data core on the matcher's events: events/s, messages/s, encode cost",
    "margin": "revaluation after a mark change, perpetual against spot matching, a liquidation cascade",
}


def _bench_command(name: str, summary: str):
    def command(ctx: typer.Context) -> None:
        import importlib

        importlib.import_module(f"bench.{name}").main(ctx.args)

    command.__doc__ = f"{summary[0].upper()}{summary[1:]}.\n\nOptions: `xos bench {name} --help`."
    bench_app.command(name, context_settings=PASSTHROUGH)(command)


for _name, _summary in BENCHMARKS.items():
    _bench_command(_name, _summary)


ConfigOption = typer.Option(None, "--config", "-c", help="TOML config (default: the built-in one)")
# ids and amounts as the command fields they fill take them: out of range, typer names the argument
U32_MAX, I64_MAX = (1 << 32) - 1, (1 << 63) - 1
AccountArg = typer.Argument(..., min=1, max=I64_MAX)
VenueArg = typer.Argument(..., min=0, max=U32_MAX)
MarketArg = typer.Argument(..., min=0, max=U32_MAX)


def _load(config: Optional[str]):
    from .config import ConfigError, load

    try:
        return load(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)


@app.command("run")
def run(
    config: Optional[str] = ConfigOption,
    duration: Optional[float] = typer.Option(None, "--for", help="stop after this many seconds"),
) -> None:
    """Start the matcher and the settlement, margin and risk workers; Ctrl-C stops them cleanly."""
    from .config import ConfigError
    from .process import checked_bootstrap
    from .supervisor import AlreadyRunning, Supervisor

    cfg = _load(config)
    try:
        checked_bootstrap(cfg)  # said here, before any process starts
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    try:
        code = Supervisor(cfg, config, log=lambda msg: typer.echo(msg, err=True)).run(duration)
    except (AlreadyRunning, RuntimeError) as exc:
        typer.echo(f"xos run: {exc}", err=True)
        raise typer.Exit(1)
    raise typer.Exit(code)


@app.command("status")
def status(config: Optional[str] = ConfigOption, as_json: bool = typer.Option(False, "--json")) -> None:
    """Processes and their heartbeats, ring cursors and lag, counters."""
    from .cmdring import command_ring_status
    from .process import read_heartbeats
    from .ring import RingError, ring_status

    cfg = _load(config)
    beats = read_heartbeats(cfg)
    try:
        ring = ring_status(cfg.ring_name)
    except (RingError, OSError) as exc:
        ring = {"error": str(exc)}
    try:
        commands = command_ring_status(cfg.command_ring_name)
    except (RingError, OSError) as exc:
        commands = {"error": str(exc)}
    if as_json:
        typer.echo(json.dumps({"processes": beats, "ring": ring, "command_ring": commands}, indent=2))
        return
    now = time.time()
    typer.echo(f"data dir {cfg.data_path}   input {cfg.input_address}")
    if not beats:
        typer.echo("no processes have reported (is `xos run` running?)")
    for role, beat in beats.items():
        extra = {k: v for k, v in beat.items()  # (a histogram's counts only in --json)
                 if k not in ("role", "pid", "time", "started", "state") and not isinstance(v, (dict, list))}
        typer.echo(f"  {role:<11} pid {beat['pid']:<7} {beat.get('state', '?'):<8} "
                   f"beat {now - beat['time']:5.1f} s ago  " + "  ".join(f"{k}={v}" for k, v in extra.items()))
    if "error" in ring:
        typer.echo(f"ring: {ring['error']}")
        return
    typer.echo(f"ring {ring['path']}: capacity {ring['capacity']}, published {ring['published']}, "
               f"producer waits {ring['producer']['waits']} ({ring['producer']['wait_ns'] / 1e6:.1f} ms)")
    for c in ring["consumers"]:
        typer.echo(f"  consumer {c['name']:<11} pid {c['pid']:<7} {'alive' if c['alive'] else 'DEAD':<5} "
                   f"cursor {c['cursor']}  lag {c['lag']}")
    if "error" in commands:
        typer.echo(f"command ring: {commands['error']}")
        return
    gateway = f"pid {commands['producer_pid']} {'alive' if commands['producer_alive'] else 'gone'}" \
        if commands["producer_pid"] else "none attached"
    typer.echo(f"command ring {commands['path']}: capacity {commands['capacity']}, published {commands['published']}, "
               f"taken {commands['taken']} (lag {commands['lag']}), gateway {gateway}, full {commands['full']} times, "
               f"doorbells {commands['doorbells']}")


@app.command("account")
def account(account_id: int = AccountArg, config: Optional[str] = ConfigOption) -> None:
    """An account's balances (settlement ledger), equity and margin use (margin worker's view)."""
    import numpy as np

    from .workers.settlement import LedgerReader

    cfg = _load(config)
    db = cfg.ledger_path
    if not db.exists():
        typer.echo(f"no settlement ledger at {db} (has `xos run` run with this config?)", err=True)
        raise typer.Exit(1)
    ledger = LedgerReader(db)  # read-only: the running settlement worker is the ledger's one writer
    try:
        cursor, balances, symbols, fills = ledger.account(account_id, 5)
    finally:
        ledger.close()
    typer.echo(f"account {account_id} (ledger at event {cursor})")
    if not balances and not fills:
        typer.echo("  no balances and no fills: an account the ledger has not seen (a deposit or a trade makes it)")
    for asset, amount in sorted(balances.items()):
        typer.echo(f"  {symbols.get(asset, asset):<8} {amount}")
    view_path = cfg.data_path / "run" / "margin-view.npy"
    if view_path.exists():
        view = np.load(view_path)
        row = view[view["account"] == account_id]
        if len(row) and "valued" in view.dtype.names and not row[0]["valued"]:
            typer.echo("  equity not valued: it does not fit in int64 (see the margin worker's stderr)")
        elif len(row):
            r = row[0]
            maintenance = f"  maintenance {int(r['maintenance'])}" if "maintenance" in view.dtype.names else ""
            typer.echo(f"  equity {int(r['equity'])}  margin used {int(r['margin_used'])}  available {int(r['available'])}"
                       f"{maintenance}  (valuation asset {cfg.margin.valuation_asset or 'first quote'})")
    positions_path = cfg.data_path / "run" / "margin-positions.npy"
    if positions_path.exists():
        positions = np.load(positions_path)
        for p in positions[positions["account"] == account_id]:
            typer.echo(f"  position market {int(p['market'])} size {int(p['size'])} entry {int(p['entry'])} "
                       f"margin {int(p['margin'])} mark {int(p['mark'])} upnl {int(p['upnl'])} "
                       f"maintenance {int(p['maintenance'])} liquidation price {int(p['liquidation_price'])}"
                       + (f" ADL rank {int(p['adl_rank'])}" if "adl_rank" in positions.dtype.names else "")
                       + (" isolated" if "isolated" in positions.dtype.names and p["isolated"] else " cross"))
    for f in fills:
        typer.echo(f"  fill seq {f['seq']} market {f['market']} {'buy' if f['side'] == 0 else 'sell'} "
                   f"{f['qty']} @ {f['price']} fee {f['fee']} ({f['role']})")


@app.command("replay")
def replay_journal(
    path: str = typer.Argument(..., help="journal directory (or a data directory holding journal/)"),
    snapshot: Optional[str] = typer.Option(None, "--snapshot", help="start from the newest valid snapshot in DIR"),
    config: Optional[str] = ConfigOption,
    max_orders: Optional[int] = typer.Option(None, help="engine capacity (default: config, else 2^20)"),
    max_accounts: Optional[int] = typer.Option(None, help="engine capacity (default: config, else 2^20)"),
    max_markets: Optional[int] = typer.Option(None, help="engine capacity (default: config, else 4096)"),
    max_assets: Optional[int] = typer.Option(None, help="engine capacity (default: config, else 1024)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Verify a journal offline (every CRC) and replay it: final counters, events by kind, state hash.

    Exits 1 when the journal (or a snapshot) is damaged, after printing what it could rebuild."""
    from pathlib import Path

    from .replay import format_result, replay

    caps = {}
    if config:
        caps = _load(config).engine.capacities()
    for name, value in (("max_orders", max_orders), ("max_accounts", max_accounts), ("max_markets", max_markets),
                        ("max_assets", max_assets)):
        if value is not None:
            caps[name] = value
    journal = Path(path)
    if not any(journal.glob("*.journal")) and (journal / "journal").is_dir():
        journal = journal / "journal"
    res, _ = replay(journal, snapshot, caps)
    typer.echo(json.dumps(res.to_dict(), indent=2) if as_json else format_result(res))
    if not res.ok or res.snapshot_problems:
        raise typer.Exit(1)


@app.command("codes")
def list_codes() -> None:
    """Every result code with its band, stable name and message."""
    for code in result_codes.ResultCode:
        typer.echo(f"{int(code):>4}  {result_codes.band(code):<10}  {code.name:<26}  {result_codes.MESSAGES[code]}")


keys_app = typer.Typer(help="CurveZMQ keys for the gateway and its clients.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    name: str = typer.Argument(..., help="file name stem: writes NAME.key (public) and NAME.key_secret"),
    directory: str = typer.Option(".", "--dir", help="where to write the pair"),
    account: Optional[int] = typer.Option(None, "--account", min=1, max=I64_MAX,
                                          help="print the [gateway] keys entry for this account"),
) -> None:
    """Make a key pair; register the public key under [gateway] keys (remove the entry to revoke)."""
    from gateway.keys import load_pair, new_pair

    try:
        public_file, secret_file = new_pair(directory, name)
    except (FileExistsError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    public, _ = load_pair(secret_file)
    typer.echo(f"public key  {public.decode()}  ({public_file})\nsecret key file {secret_file} (keep it private)")
    if account is not None:
        typer.echo(f'[gateway] keys entry: {{ account = {account}, public_key = "{public.decode()}" }}')


@keys_app.command("server")
def keys_server(config: Optional[str] = ConfigOption) -> None:
    """Print the gateway's public key (clients need it); made on first use at the default place."""
    from gateway.keys import server_key_path, server_pair

    cfg = _load(config)
    try:
        public, _ = server_pair(cfg)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    typer.echo(f"{public.decode()}  ({server_key_path(cfg)}, gateway at {cfg.gateway.address})")


feeds_app = typer.Typer(help="Oracle feeds: every source's state, push keys.", no_args_is_help=True)
app.add_typer(feeds_app, name="feeds")


@feeds_app.command("status")
def feeds_status(config: Optional[str] = ConfigOption, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every market's oracle and every source: last price, age, deviation, in the quorum, counters."""
    from feeds.process import DETAIL_FILE

    cfg = _load(config)
    run_dir = cfg.data_path / "run"
    try:
        doc = json.loads((run_dir / "feeds.json").read_text())
        detail = json.loads((run_dir / DETAIL_FILE).read_text())
    except (OSError, ValueError):
        typer.echo(f"no feeds status in {run_dir} (is `xos run` running with [feeds] enabled?)", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"heartbeat": doc, **detail}, indent=2))
        return

    def num(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    typer.echo(f"feeds pid {doc['pid']} {doc.get('state', '?')}, beat {time.time() - doc['time']:.1f} s ago, "
               f"detail {time.time() - detail['time']:.1f} s old: sent {doc['sent']}, "
               f"held back {doc['held_back']}, rejected {doc['rejected']}")
    for market, m in detail["markets"].items():
        typer.echo(f"market {market} (feed {m['feed_id']}, venue {m['venue']}): {m['state'].upper()} "
                   f"price {num(m['price'], '.6g')} ({m['price_units']} units), in quorum {m['in_quorum']}"
                   f"/{m['sources']} (needs {m['quorum']}), sent {m['sent']}, stale rounds {m['stale_rounds']}")
        for name, s in detail["sources"].items():
            slot = s["markets"].get(market)
            if slot is None:
                continue
            typer.echo(f"  {name:<12} {s['kind']:<9} last {num(slot['last_price'], '.6g'):>12}  "
                       f"age {num(slot['age_s'], '.1f'):>6} s  dev {num(slot['deviation_bps'], '.1f'):>7} bps  "
                       f"{'IN ' if slot['in_quorum'] else 'out'}{' STALE' if slot['stale'] else '      '}  "
                       f"obs {slot['observations']}  stale drops {slot['stale_drops']}  "
                       f"deviation drops {slot['deviation_drops']}")
    for name, s in detail["sources"].items():
        if s["rejected"]:
            counts = ", ".join(f"{reason} {n}" for reason, n in sorted(s["rejected"].items()))
            typer.echo(f"source {name} rejected: {counts}; last: {s['last_reject']}")


@feeds_app.command("new-key")
def feeds_new_key(source: str, name: str, config: Optional[str] = ConfigOption) -> None:
    """A key pair for a pusher, authorized on push source SOURCE (picked up within a heartbeat)."""
    from engine.config import PushSourceConfig
    from feeds.sources import authorize_new_client, push_keys_dir

    cfg = _load(config)
    src = next((s for s in cfg.feeds.sources if s.name == source and isinstance(s, PushSourceConfig)), None)
    if src is None:
        typer.echo(f"no push source named {source!r} in the config", err=True)
        raise typer.Exit(2)
    keys = push_keys_dir(src, cfg)
    try:
        secret = authorize_new_client(keys, name)
    except (FileExistsError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    typer.echo(f"{secret}  (the pusher's secret key; server public key in {keys / 'server.key'}, push to {src.bind})")


venue_app = typer.Typer(help="Venues: launch, inspect and change them.  Changes go through the gateway as the "
                        "account of your key (--key); --trusted-as pushes into the matcher's trusted input "
                        "(admin and bootstrap only).  list and show read the journal.", no_args_is_help=True)
app.add_typer(venue_app, name="venue")
KeyOption = typer.Option(None, "--key", help="your secret key file (`xos keys new`): the commands go through the "
                         "gateway (address and server key from the config) as the account that key is registered for")
TrustedAsOption = typer.Option(None, "--trusted-as", "--as", help="admin and bootstrap only: push the commands "
                               "straight into the matcher's trusted input as ACCOUNT (unauthenticated: needs the "
                               "engine's own ipc socket); the result is read back from the journal")
STATUS_NAMES = {"live": 1, "halted": 2, "winding-down": 3, "retired": 4}


def _send_venue_commands(cfg, commands, key: Optional[str], trusted_as: Optional[int]) -> None:
    """Send the venue commands (COMMAND_DTYPE, ``account`` set here) through the gateway with
    ``key``, or into the trusted input as ``trusted_as``; print each one's result; exit 1 on a reject."""
    if (key is None) == (trusted_as is None):
        typer.echo("give --key KEYFILE (through the gateway) or, admin only, --trusted-as ACCOUNT", err=True)
        raise typer.Exit(2)
    if key is not None:
        _send_through_gateway(cfg, commands, key)
    else:
        commands["account"] = trusted_as
        _send_trusted(cfg, commands)


def _key_account(cfg, key: str) -> int:
    from gateway.keys import account_of

    try:
        return account_of(cfg, key)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)


def _send_through_gateway(cfg, commands, key: str) -> None:
    """One request per command, in order, over a CurveZMQ session of ``key``'s account."""
    from gateway import messages as m
    from gateway.client import GatewayError, RequestTimeout, SyncClient
    from gateway.keys import server_pair

    from .records import Cmd

    _key_account(cfg, key)  # an unregistered key would only time out at the handshake
    try:
        server_key = server_pair(cfg, create=False)[0]
    except ValueError as exc:
        typer.echo(f"{exc} (is the gateway of this config running?)", err=True)
        raise typer.Exit(2)
    failed = False
    try:
        client = SyncClient(cfg.gateway.address, server_key=server_key, secret_key_file=key, timeout_s=10.0)
    except RequestTimeout:
        typer.echo(f"no answer from the gateway at {cfg.gateway.address} (is `xos run` running with this config?)",
                   err=True)
        raise typer.Exit(1)
    try:
        for cmd in commands:
            request = m.VENUE_COMMAND_OF_KIND[int(cmd["kind"])]
            what = f"{Cmd(int(cmd['kind'])).name} venue {int(cmd['venue'])}"
            try:
                ack = client.send_command(request, **request.values_of(cmd))
            except GatewayError as exc:
                failed = True
                typer.echo(f"{what}: rejected {exc.name} ({exc.code}): {exc.reason}")
                if isinstance(exc, RequestTimeout):
                    break
            else:
                typer.echo(f"#{ack.cmd_seq} {what}: ok")
    finally:
        client.close()
    if failed:
        raise typer.Exit(1)


def _send_trusted(cfg, commands) -> None:
    """Push into the matcher's input, wait until journaled, replay, and print what each command did."""
    from . import codes as rc
    from .process import InputClient
    from .records import Cmd, Ev
    from .venues import await_journaled, journal_end, rebuild

    after = journal_end(cfg)
    client = InputClient(cfg.input_address)
    try:
        client.send(commands)
    finally:
        client.close()
    try:
        seqs = await_journaled(cfg, commands, after)
    except TimeoutError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    _, events = rebuild(cfg, set(seqs))
    failed = False
    for seq, cmd in zip(seqs, commands):
        ev = events[seq]
        rejected = ev[ev["kind"] == Ev.REJECTED]
        what = f"#{seq} {Cmd(int(cmd['kind'])).name} venue {int(cmd['venue'])}"
        if len(rejected):
            failed = True
            typer.echo(f"{what}: rejected {rc.describe(int(rejected[0]['code']))}")
        else:
            moved = [f"{int(e['qty']):+d} of asset {int(e['market'])} to account {int(e['account'])}"
                     for e in ev[ev["kind"] == Ev.VENUE_TRANSFER]]
            typer.echo(f"{what}: ok" + (f" ({'; '.join(moved)})" if moved else ""))
    if failed:
        raise typer.Exit(1)


def _rebuilt(cfg):
    from .venues import rebuild

    try:
        return rebuild(cfg)[0]
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)


@venue_app.command("launch")
def venue_launch(path: str, key: Optional[str] = KeyOption, trusted_as: Optional[int] = TrustedAsOption,
                 config: Optional[str] = ConfigOption) -> None:
    """Launch the venue described in the TOML file PATH (the keys of one [[venues.launch]] entry);
    its operator account (the key's) sends it and stakes from its free balance."""
    import msgspec

    from .config import ConfigError, VenueLaunchConfig
    from .venues import launch_commands

    cfg = _load(config)
    try:
        venue = msgspec.toml.decode(open(path, "rb").read(), type=VenueLaunchConfig)

        def fail(field: str, why: str) -> None:
            raise ConfigError(f"venue config error in {path}: {field}: {why}")

        venue.check(cfg, "venue", fail)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, ConfigError) as exc:
        typer.echo(f"venue config error in {path}: {exc}" if not isinstance(exc, ConfigError) else str(exc), err=True)
        raise typer.Exit(2)
    if key is not None and _key_account(cfg, key) != venue.operator:
        typer.echo(f"the key in {key} is account {_key_account(cfg, key)}'s, not the venue's operator "
                   f"{venue.operator}: the operator launches its venue", err=True)
        raise typer.Exit(2)
    if trusted_as is not None and trusted_as != venue.operator:
        typer.echo(f"--trusted-as {trusted_as}: the venue's operator {venue.operator} launches it", err=True)
        raise typer.Exit(2)
    if key is None and trusted_as is None:
        # kept until tests/test_venue_cli.py passes --trusted-as or --key: then both are required
        typer.echo(f"no --key: launching through the matcher's trusted input as the operator {venue.operator}",
                   err=True)
        trusted_as = venue.operator
    _send_venue_commands(cfg, launch_commands(venue, cfg), key, trusted_as)


@venue_app.command("list")
def venue_list(config: Optional[str] = ConfigOption) -> None:
    """Every venue: status, access, pool, stake, open orders, markets."""
    from .records import VenueAccess, VenueStatus

    e = _rebuilt(_load(config))
    typer.echo(f"{'id':>5} {'operator':>10} {'status':<12} {'access':<14} {'pool':>4} {'stake':>14} "
               f"{'unbonding':>12} {'orders':>7}  markets")
    for v in e.venues():
        typer.echo(f"{v.venue_id:>5} {v.operator:>10} {VenueStatus(v.status).name.lower():<12} "
                   f"{VenueAccess(v.access).name.lower():<14} {v.pool:>4} {v.stake:>14} {v.unbonding:>12} "
                   f"{v.open_orders:>7}  {','.join(map(str, e.venue_markets(v.venue_id)))}")


@venue_app.command("show")
def venue_show(venue_id: int = VenueArg, config: Optional[str] = ConfigOption) -> None:
    """One venue: stake, status, markets, fees and fees collected, insurance fund, open interest."""
    from .records import MarketKind, VenueAccess, VenueStatus

    cfg = _load(config)
    e = _rebuilt(cfg)
    v = e.venue(venue_id)
    if v is None:
        typer.echo(f"no venue {venue_id}", err=True)
        raise typer.Exit(1)
    symbols = {a.asset_id: a.symbol for a in e.assets()}
    params = e.venue_params()
    fees = e.venue_fee_schedule(venue_id)
    typer.echo(f"venue {venue_id}: {VenueStatus(v.status).name.lower()}, {VenueAccess(v.access).name.lower()}, "
               f"operator {v.operator}, insurance fund account {v.insurance_account}")
    typer.echo(f"  stake {v.stake} {symbols.get(params.stake_asset, params.stake_asset)} bonded, {v.unbonding} "
               f"unbonding" + (f" until engine time {v.unbond_at}" if v.unbonding else ""))
    accepts = "all" if v.accepts == (1 << 64) - 1 else [p for p in range(64) if v.accepts >> p & 1]
    typer.echo(f"  pool {v.pool}, trades with pools {accepts}, blocked regions "
               f"{[r for r in range(64) if v.blocked_regions >> r & 1] or 'none'}, allow-list {e.allowed(venue_id)}")
    typer.echo(f"  fees maker {fees.maker_bps} bps, taker {fees.taker_bps} bps; split operator {fees.operator_bps} "
               f"bps, insurance {fees.insurance_bps} bps, protocol the rest; tiers {list(fees.tiers) or 'none'}")
    if venue_id == 0:  # the protocol venue's fees are the protocol pool
        collected = {a.asset_id: e.fees(a.asset_id) for a in e.assets() if e.fees(a.asset_id)}
    else:
        collected = e.venue_fees(venue_id)
    typer.echo(f"  fees collected, not swept: "
               f"{', '.join(f'{n} {symbols.get(a, a)}' for a, n in collected.items()) or 'none'}")
    fund = e.balances(v.insurance_account) if v.insurance_account else {}
    typer.echo(f"  insurance fund: {', '.join(f'{f + h} {symbols.get(a, a)}' for a, (f, h) in fund.items()) or 'empty'}")
    for m in e.venue_markets(venue_id):
        market = next(x for x in e.markets() if x.market_id == m)
        orders = [o for o in e.l3(m) if o.venue == venue_id]
        interest = sum(o.price * (o.remaining // market.lot_size) for o in orders)
        typer.echo(f"  market {m}: {len(orders)} open orders, open interest {interest} {symbols.get(market.quote)}")
        r = e.venue_market_risk(venue_id, m)
        if r is not None:
            typer.echo(f"    own risk: {'HALTED, ' if r.halted else ''}band {r.band_bps or 'the market'}"
                       f"{' bps' if r.band_bps else ''}, open-interest cap {r.oi_cap or 'none'}, breaker "
                       + (f"{r.breaker_move_bps} bps in {r.breaker_window_ms} ms, cool-down {r.breaker_cooldown_ms} ms"
                          if r.breaker_move_bps else "none")
                       + (f"; positions long {r.long_oi} short {r.short_oi}, open orders buy {r.open_buy} "
                          f"sell {r.open_sell}" if market.kind == MarketKind.PERPETUAL else ""))


@venue_app.command("set")
def venue_set(
    venue_id: int = VenueArg,
    key: Optional[str] = KeyOption,
    trusted_as: Optional[int] = TrustedAsOption,
    status: Optional[str] = typer.Option(None, help="live | halted | winding-down | retired"),
    maker_bps: Optional[int] = typer.Option(None, min=-32768, max=32767, help="with --taker-bps: the fees of new orders"),
    taker_bps: Optional[int] = typer.Option(None, min=-32768, max=32767),
    operator_bps: int = typer.Option(0, min=0, max=65535, help="with the fees: the operator's share of collected fees"),
    insurance_bps: int = typer.Option(0, min=0, max=65535, help="with the fees: the insurance fund's share"),
    access: Optional[str] = typer.Option(None, help="permissionless | allow-list"),
    blocked_regions: str = typer.Option("", help="with --access: comma-separated region tags to block"),
    pool: Optional[int] = typer.Option(None, help="matching pool 0..63"),
    trades_with: str = typer.Option("", help="with --pool: comma-separated pools (empty: all)"),
    offer: list[int] = typer.Option([], help="offer this market (repeatable)"),
    withdraw: list[int] = typer.Option([], help="stop offering this market (repeatable)"),
    risk_market: Optional[int] = typer.Option(None, help="set the venue's own risk parameters in this market (it "
                                              "offers): --band-bps, --oi-cap, --breaker-* (each 0 = off)"),
    band_bps: int = typer.Option(0, min=0, max=10000, help="with --risk-market: the venue's price band around the "
                                 "last trade (0: the market's own band)"),
    oi_cap: int = typer.Option(0, min=0, max=I64_MAX, help="with --risk-market: perpetual markets, the cap on each "
                               "side's open interest of the venue, base units (0: none)"),
    breaker_move_bps: int = typer.Option(0, min=0, max=10000, help="with --risk-market: the risk worker halts the "
                                         "venue's orders after a move this large within the window (0: none)"),
    breaker_window_ms: int = typer.Option(0, min=0, max=(1 << 32) - 1, help="with --breaker-move-bps"),
    breaker_cooldown_ms: int = typer.Option(0, min=0, max=(1 << 32) - 1, help="with --breaker-move-bps: the "
                                            "halt's length before the risk worker resumes"),
    halt_market: list[int] = typer.Option([], help="halt the venue's new orders in this market (repeatable; "
                                          "cancels and reduce-only orders go on)"),
    resume_market: list[int] = typer.Option([], help="resume the venue's orders in this market (repeatable)"),
    config: Optional[str] = ConfigOption,
) -> None:
    """Change a venue: status, fees, access, matching pool, offered markets, its own risk parameters and
    halts per market."""
    import numpy as np

    from .records import COMMAND_DTYPE, Cmd, fill_command, pack_breaker_windows, pack_venue_fees
    from .venues import ACCESS, pool_mask

    def ints(text: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            typer.echo(f"expected comma-separated integers, not {text!r}", err=True)
            raise typer.Exit(2)

    rows = []
    if status is not None:
        if status not in STATUS_NAMES:
            typer.echo(f"--status must be one of {', '.join(STATUS_NAMES)}", err=True)
            raise typer.Exit(2)
        rows.append(dict(kind=Cmd.VENUE_STATUS, side=STATUS_NAMES[status]))
    if (maker_bps is None) != (taker_bps is None):
        typer.echo("give --maker-bps and --taker-bps together", err=True)
        raise typer.Exit(2)
    if maker_bps is not None:
        rows.append(dict(kind=Cmd.VENUE_FEES, aux=pack_venue_fees(maker_bps, taker_bps, operator_bps, insurance_bps)))
    if access is not None:
        if access not in ACCESS:
            typer.echo("--access must be permissionless or allow-list", err=True)
            raise typer.Exit(2)
        regions = ints(blocked_regions)
        rows.append(dict(kind=Cmd.VENUE_ACCESS, side=int(ACCESS[access]), qty=pool_mask(regions) if regions else 0))
    if pool is not None:
        rows.append(dict(kind=Cmd.VENUE_POLICY, side=pool, aux=pool_mask(ints(trades_with))))
    rows += [dict(kind=Cmd.OFFER_MARKET, market=m) for m in offer]
    rows += [dict(kind=Cmd.WITHDRAW_MARKET, market=m) for m in withdraw]
    if risk_market is not None:
        rows.append(dict(kind=Cmd.VENUE_MARKET_RISK, market=risk_market, price=band_bps, qty=oi_cap,
                         id=breaker_move_bps, aux=pack_breaker_windows(breaker_window_ms, breaker_cooldown_ms)))
    elif band_bps or oi_cap or breaker_move_bps or breaker_window_ms or breaker_cooldown_ms:
        typer.echo("--band-bps, --oi-cap and --breaker-* need --risk-market MARKET", err=True)
        raise typer.Exit(2)
    rows += [dict(kind=Cmd.VENUE_MARKET_HALT, market=m) for m in halt_market]
    rows += [dict(kind=Cmd.VENUE_MARKET_RESUME, market=m) for m in resume_market]
    if not rows:
        typer.echo("nothing to set (see --help)", err=True)
        raise typer.Exit(2)
    commands = np.zeros(len(rows), dtype=COMMAND_DTYPE)
    try:  # --offer and the like take ids from text: one past its command field is named
        for i, row in enumerate(rows):
            fill_command(commands[i], venue=venue_id, **row)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    _send_venue_commands(_load(config), commands, key, trusted_as)


MARKET_KIND_NAMES = {"spot": 0, "perpetual": 1, "outcome": 2}


@venue_app.command("list-market")
def venue_list_market(
    venue_id: int = VenueArg,
    market_id: int = MarketArg,
    base: int = typer.Option(..., help="base asset id (1..65535; larger ids are listed by the admin's AddMarket)"),
    quote: int = typer.Option(..., help="quote asset id (1..65535)"),
    tick_size: int = typer.Option(..., min=1, max=I64_MAX, help="price tick, quote units per lot"),
    lot_size: int = typer.Option(..., min=1, max=I64_MAX, help="size lot, base units"),
    min_size: int = typer.Option(..., min=1, max=I64_MAX,
                                 help="the smallest order, base units: a positive multiple of the lot"),
    maker_bps: int = typer.Option(0, help="the market's own maker fee (venue 0's orders; negative: a rebate)"),
    taker_bps: int = typer.Option(0, help="the market's own taker fee"),
    band_bps: int = typer.Option(0, help="price band around the last trade, 0..10000 (0: none)"),
    kind: str = typer.Option("spot", help="spot | perpetual | outcome"),
    key: Optional[str] = KeyOption,
    trusted_as: Optional[int] = TrustedAsOption,
    config: Optional[str] = ConfigOption,
) -> None:
    """List a new market MARKET_ID for venue VENUE_ID, which then offers it (the venue's operator, or the admin:
    a live staked venue other than 0); any venue may offer it afterwards (`set --offer`)."""
    import numpy as np

    from .records import COMMAND_DTYPE, Cmd, fill_command, pack_listing

    if kind not in MARKET_KIND_NAMES:
        typer.echo(f"--kind must be one of {', '.join(MARKET_KIND_NAMES)}, not {kind!r}", err=True)
        raise typer.Exit(2)
    try:
        flags, aux = pack_listing(base, quote, maker_bps, taker_bps, band_bps)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    cmd = np.zeros(1, dtype=COMMAND_DTYPE)
    fill_command(cmd[0], kind=Cmd.LIST_MARKET, venue=venue_id, market=market_id, side=MARKET_KIND_NAMES[kind],
                 flags=flags, price=tick_size, qty=lot_size, id=min_size, aux=aux)
    _send_venue_commands(_load(config), cmd, key, trusted_as)


# The venue commands of one value: (subcommand, command kind, the value's name, the command field it
# fills, help)
ONE_VALUE_VENUE_COMMANDS = (
    ("allow", "ALLOW", "ACCOUNT_ID", "id", "Put ACCOUNT_ID on the venue's allow-list."),
    ("deny", "DENY", "ACCOUNT_ID", "id",
     "Take ACCOUNT_ID off the venue's allow-list (its resting orders stay until cancelled)."),
    ("stake", "ADD_STAKE", "AMOUNT", "qty", "Lock AMOUNT more of the operator's stake asset in the venue."),
    ("unbond", "UNBOND", "AMOUNT", "qty",
     "Request AMOUNT of the venue's stake back: released to the operator after the unbond period."),
    ("sweep", "SWEEP_FEES", "ASSET", "market",
     "Pay the venue's collected fees in ASSET out by its split (operator, insurance fund, protocol)."),
)


# the command fields' ranges (COMMAND_DTYPE's, written out: numpy is not imported for every `xos`; a test holds them
# equal)
FIELD_RANGES = {"id": (-(1 << 63), I64_MAX), "qty": (-(1 << 63), I64_MAX), "market": (0, U32_MAX)}


def _add_one_value_venue_command(name: str, kind: str, value_name: str, field: str, doc: str) -> None:
    low, high = FIELD_RANGES[field]

    def send(venue_id: int = VenueArg, value: int = typer.Argument(..., metavar=value_name, min=low, max=high),
             key: Optional[str] = KeyOption, trusted_as: Optional[int] = TrustedAsOption,
             config: Optional[str] = ConfigOption) -> None:
        from .records import Cmd, command

        cmd = command(Cmd[kind], venue=venue_id, **{field: value}).reshape(1)
        _send_venue_commands(_load(config), cmd, key, trusted_as)

    send.__doc__ = doc
    venue_app.command(name)(send)


for _spec in ONE_VALUE_VENUE_COMMANDS:
    _add_one_value_venue_command(*_spec)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

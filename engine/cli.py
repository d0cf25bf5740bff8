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
    "pipeline": "the whole engine as processes: matcher, journal, ring and the three workers",
    "ring": "the shared-memory event ring: events/s to 1 or 3 consumer processes, one-hop latency",
    "journal": "the journal: append+commit by fsync mode and batch size, fsync latency, replay speed",
    "replay": "recovery: journal replay speed, restart from snapshot + journal suffix",
    "crash": "kill -9 the matcher at random points: nothing acknowledged lost, no fill twice",
    "workers": "the settlement, margin and risk cores: events per second each",
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
    from .supervisor import AlreadyRunning, Supervisor

    cfg = _load(config)
    try:
        code = Supervisor(cfg, config, log=lambda msg: typer.echo(msg, err=True)).run(duration)
    except (AlreadyRunning, RuntimeError) as exc:
        typer.echo(f"xos run: {exc}", err=True)
        raise typer.Exit(1)
    raise typer.Exit(code)


@app.command("status")
def status(config: Optional[str] = ConfigOption, as_json: bool = typer.Option(False, "--json")) -> None:
    """Processes and their heartbeats, ring cursors and lag, counters."""
    from .process import read_heartbeats
    from .ring import RingError, ring_status

    cfg = _load(config)
    beats = read_heartbeats(cfg)
    try:
        ring = ring_status(cfg.ring_name)
    except (RingError, OSError) as exc:
        ring = {"error": str(exc)}
    if as_json:
        typer.echo(json.dumps({"processes": beats, "ring": ring}, indent=2))
        return
    now = time.time()
    typer.echo(f"data dir {cfg.data_path}   input {cfg.input_address}")
    if not beats:
        typer.echo("no processes have reported (is `xos run` running?)")
    for role, beat in beats.items():
        extra = {k: v for k, v in beat.items() if k not in ("role", "pid", "time", "started", "state")}
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


@app.command("account")
def account(account_id: int, config: Optional[str] = ConfigOption) -> None:
    """An account's balances (settlement ledger), equity and margin use (margin worker's view)."""
    import numpy as np

    from .workers.settlement import SettlementLedger

    cfg = _load(config)
    db = cfg.data_path / "settlement.sqlite"
    if not db.exists():
        typer.echo(f"no settlement ledger at {db} (has `xos run` run with this config?)", err=True)
        raise typer.Exit(1)
    ledger = SettlementLedger(db)
    try:
        symbols = {asset_id: a.symbol for asset_id, a in ledger.assets().items()}
        balances = ledger.balances(account_id)
        fills = ledger.fills(account_id, 5)
        cursor = ledger.cursor
    finally:
        ledger.close()
    typer.echo(f"account {account_id} (ledger at event {cursor})")
    for asset, amount in sorted(balances.items()):
        typer.echo(f"  {symbols.get(asset, asset):<8} {amount}")
    view_path = cfg.data_path / "run" / "margin-view.npy"
    if view_path.exists():
        view = np.load(view_path)
        row = view[view["account"] == account_id]
        if len(row):
            r = row[0]
            typer.echo(f"  equity {int(r['equity'])}  margin used {int(r['margin_used'])}  available {int(r['available'])}"
                       f"  (valuation asset {cfg.margin.valuation_asset or 'first quote'})")
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
        e = _load(config).engine
        caps = dict(max_orders=e.max_orders, max_accounts=e.max_accounts, max_markets=e.max_markets,
                    max_assets=e.max_assets)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()

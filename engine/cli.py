"""The ``xos`` command line (typer).

Issue 3 ships the matcher benchmark and the result-code table; the engine
processes (``xos run``, ``xos status``) come with the ring and workers.
"""
from __future__ import annotations

import typer

from . import codes as result_codes

app = typer.Typer(help="xos: an open exchange engine.", no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(help="Benchmarks (each prints its figures and can write JSON).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@bench_app.command("matcher", context_settings=PASSTHROUGH)
def bench_matcher(ctx: typer.Context) -> None:
    """The matcher on config A or B: throughput, latency percentiles, check against the reference.

    Options are those of ``python -m bench.matcher`` (``xos bench matcher --help`` lists them).
    """
    from bench.matcher import main as run_matcher_bench

    run_matcher_bench(ctx.args)


@app.command("codes")
def list_codes() -> None:
    """Every result code with its band, stable name and message."""
    for code in result_codes.ResultCode:
        typer.echo(f"{int(code):>4}  {result_codes.band(code):<10}  {code.name:<26}  {result_codes.MESSAGES[code]}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

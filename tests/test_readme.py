"""The README's client examples run as written against the built-in default config's markets, demo accounts and
venues: only the gateway's address, its public key and the key file are filled in.  (A perpetual order of the README
once priced BTC 1000 times its market: nothing checked the examples.)"""
from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import re
import textwrap
import time
from pathlib import Path

import pytest

from gateway_harness import GatewayEngine, default_like, run

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = GatewayEngine(tmp_path_factory.mktemp("readme"), {"mm1": 1001, "seller": 1002}, default_like())
    yield e
    e.stop()


def filled(code: str, engine: GatewayEngine) -> str:
    for placeholder, value in (('"tcp://127.0.0.1:7100"', engine.cfg.gateway.address),
                               ('"<xos keys server>"', engine.server_key),
                               ('"keys/mm1.key_secret"', str(engine.key("mm1")))):
        assert placeholder in code, f"the README's example no longer has {placeholder}"
        code = code.replace(placeholder, repr(value))
    return code


def test_the_readme_has_its_three_examples():
    blocks = python_blocks()
    assert len(blocks) == 3, "a README example was added or removed: run it here too"
    assert "asyncio.run(main())" in blocks[0]


def test_the_market_makers_example_runs(engine):
    """The ten-line example: a bid, three asks, a heartbeat, a mass cancel and the updates it gets."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(filled(python_blocks()[0], engine), "README.md", "exec"), {"__name__": "readme"})
    placed, updates = out.getvalue().splitlines()
    assert placed == "open ['open', 'open', 'open']"
    assert {status for _, status in ast.literal_eval(updates)} == {"canceled"}


def test_the_multi_leg_and_isolated_margin_examples_run(engine):
    """The fragments after it, in one session of the same account (``ex``): an exposure cap and a multi-leg order,
    then an isolated perpetual long, bought from a seller resting there, whose margin moves both ways."""
    multi_leg, isolated = python_blocks()[1:]
    source = "async def fragments(ex):\n" + textwrap.indent(multi_leg + isolated, "    ")
    scope: dict = {}
    exec(compile(source, "README.md", "exec"), scope)

    async def scenario():
        async with engine.client("seller") as seller, engine.client("mm1") as ex:
            await seller.create_order("BTC/USDT:USDT", "limit", "sell", 100_000, 65_000_000, {"clientOrderId": 1})
            await scope["fragments"](ex)
            deadline = time.monotonic() + 10
            while not (positions := await ex.fetch_positions(["BTC/USDT:USDT"])) or positions[0]["collateral"] != \
                    3_750_000:  # the margin worker's view: its next checkpoint
                assert time.monotonic() < deadline, positions
                await asyncio.sleep(0.05)
            return positions, await ex.fetch_open_orders("BTC/USDT:USDT")

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        positions, open_orders = run(scenario())
    # no one to trade with: all or none is none, and the error names a leg that could not fill
    assert out.getvalue().splitlines() == ["LEG_NOT_FILLABLE 1"]
    (long,) = positions
    # 65 USDT at 20x: 3.25 USDT of initial margin, then 1 USDT added and 0.5 taken back
    assert (long["marginMode"], long["contracts"], long["collateral"]) == ("isolated", 100_000, 3_750_000)
    assert open_orders == []

"""The config's perpetual and outcome market fields (`[[markets]]` max_leverage, maintenance_bps, payout, resolver,
dispute_window_s): the bootstrap sends the admin's MarketRisk and OutcomeConfig, and bad values are refused by name;
an int past int64 anywhere, and a bootstrap the matcher would refuse, are config errors too."""
from __future__ import annotations

import importlib.resources
import subprocess
import sys

import msgspec
import pytest

from engine.config import Config, ConfigError, _check, load, loads
from engine.matcher import Engine
from engine.process import bootstrap_commands, checked_bootstrap
from engine.records import Ev, Side


def test_the_built_in_default_trades_a_leveraged_perpetual_and_a_yes_no_market():
    cfg = load()
    e = Engine(max_orders=1000, max_accounts=1000)
    events = e.process(bootstrap_commands(cfg))
    assert not (events["kind"] == Ev.REJECTED).any()
    (risk,) = e.market_risks()
    assert (risk.market_id, risk.max_leverage, risk.maintenance_bps) == (4, 20, 5000)
    (outcome,) = e.outcomes()
    assert (outcome.market, outcome.payout, outcome.resolver, outcome.dispute_window) == (5, 10**6, 9002, 3600 * 10**9)
    # demo accounts trade the perpetual at 20x (a buy holds ceil(price / 20) + its fee per lot) and the yes/no market
    price, lot, ts = 65_000_000, 100_000, 10**18  # 65,000 USDT per BTC: 65 USDT (65,000,000 units) a lot of 0.001 BTC
    feed = {f.market: f.id for f in cfg.feeds.markets}[4]
    assert not (e.oracle_price(cfg.feeds.account, 0, 4, price, feed_id=feed, source_ts=ts, ts=ts)["kind"]
                == Ev.REJECTED).any()
    free_before = e.balance(1003, 1)[0]
    for account, side in ((1001, Side.SELL), (1003, Side.BUY)):
        events = e.place(account, 4, side, price, 2 * lot, 1, ts=ts)
        assert not (events["kind"] == Ev.REJECTED).any()
    assert e.position(1003, 4).size == 2 * lot and e.position(1003, 4).margin == 2 * price // 20
    assert free_before - e.balance(1003, 1)[0] == 2 * price // 20 + 2 * (price * 5 // 10_000)  # margin + taker fee
    for account, side, yes in ((1001, Side.SELL, 600_000), (1003, Side.BUY, 600_000)):  # YES at 0.6 USDT
        assert not (e.place(account, 5, side, yes, 10, 2, ts=ts)["kind"] == Ev.REJECTED).any()
    assert e.position(1003, 5).size == 10 and e.outcome(5).collateral == 10 * 10**6


BASE = dict(assets=[dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="BTC", decimals=0)],
            venues=dict(admin=9, protocol_account=8, stake_asset="USD", min_stake=1))


def checked(**market):
    cfg = msgspec.convert(dict(BASE, markets=[dict(id=1, base="BTC", quote="USD", tick_size=1, lot_size=1, min_size=1,
                                                   **market)]), Config)
    _check(cfg, "test.toml")


@pytest.mark.parametrize("market, field", [
    (dict(max_leverage=5), "markets[0].max_leverage"),  # a spot market
    (dict(kind="perpetual", max_leverage=101), "markets[0].max_leverage"),
    (dict(kind="perpetual", max_leverage=5, maintenance_bps=0), "markets[0].max_leverage"),
    (dict(payout=100, resolver=3), "markets[0].payout"),  # not an outcome market
    (dict(kind="outcome", payout=1, resolver=3), "markets[0].payout"),  # under 2 ticks
    (dict(kind="outcome", payout=100), "markets[0].resolver"),
    (dict(kind="outcome", payout=100, resolver=3, dispute_window_s=-1.0), "markets[0].resolver"),
])
def test_bad_market_fields_are_named(market, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        checked(**market)


def test_market_fields_need_the_admin():
    cfg = msgspec.convert(dict(assets=BASE["assets"], markets=[dict(id=1, base="BTC", quote="USD", tick_size=1,
                                                                    lot_size=1, min_size=1, kind="perpetual",
                                                                    max_leverage=5)]), Config)
    with pytest.raises(ConfigError, match=r"markets\[0\].kind.*\[venues\] admin"):
        _check(cfg, "test.toml")
    checked(kind="perpetual", max_leverage=5)
    checked(kind="outcome")  # configured later by the admin's OutcomeConfig


def test_the_built_in_default_is_a_unified_account():
    """[margin] unified: the bootstrap declares USDT the valuation asset and BTC, ETH, OKB collateral at their
    haircuts, priced by their USDT spot markets; an account holding only BTC opens a USDT-quoted perpetual."""
    cfg = load()
    e = Engine(max_orders=1000, max_accounts=1000)
    assert not (e.process(bootstrap_commands(cfg))["kind"] == Ev.REJECTED).any()
    assert [(c.asset, c.price_market, c.max_weight_bps) for c in e.collateral_assets()] == [
        (1, 0, 10_000), (2, 1, 9_000), (3, 2, 8_500), (4, 3, 7_000)]
    price, lot, ts = 65_000_000, 100_000, 10**18  # 65,000 USDT per BTC
    feeds = {f.market: f.id for f in cfg.feeds.markets}
    for market in (1, 4):  # the BTC index prices BTC (spot market 1) and marks the perpetual (market 4)
        assert not (e.oracle_price(cfg.feeds.account, 0, market, price, feed_id=feeds[market], source_ts=ts,
                                   ts=ts)["kind"] == Ev.REJECTED).any()
    BTC_ONLY = 4242
    e.deposit(BTC_ONLY, 2, 10**8, ts=ts)  # 1 BTC: 65,000 USDT, 58,500 at its 90 %
    assert not (e.place(1001, 4, Side.SELL, price, 5 * lot, 7, ts=ts)["kind"] == Ev.REJECTED).any()
    events = e.place(BTC_ONLY, 4, Side.BUY, price, 5 * lot, 1, tif=1, ts=ts)  # IOC, 20x: 5 x 65e6 / 20 borrowed
    assert not (events["kind"] == Ev.REJECTED).any()
    assert e.position(BTC_ONLY, 4).size == 5 * lot and e.balance(BTC_ONLY, 1)[0] < 0


@pytest.mark.parametrize("margin, venues, field", [
    (dict(valuation_asset="USD", unified=True), {}, "margin.unified"),  # nobody to declare it
    (dict(unified=True), BASE["venues"], "margin.unified"),  # no valuation asset
    (dict(valuation_asset="USD", haircuts_bps={"BTC": 100}, unified=True), BASE["venues"], r"margin.haircuts_bps.BTC"),
])
def test_bad_unified_margin_is_named(margin, venues, field):
    cfg = msgspec.convert(dict(assets=BASE["assets"], margin=margin, venues=venues), Config)
    with pytest.raises(ConfigError, match=field):
        _check(cfg, "test.toml")


@pytest.mark.parametrize("section", ["workers", "marketdata"])
def test_a_nap_out_of_range_is_refused_by_name(section):
    for nap_us in (-1, 100_001):
        cfg = msgspec.convert(dict(BASE, **{section: dict(nap_us=nap_us)}), Config)
        with pytest.raises(ConfigError, match=rf"{section}\.nap_us: must be in 0\.\.100000"):
            _check(cfg, "test.toml")


def test_a_cpu_latency_out_of_range_is_refused_by_name():
    for us in (-2, 2_000_000_001):
        cfg = msgspec.convert(dict(BASE, engine=dict(cpu_latency_us=us)), Config)
        with pytest.raises(ConfigError, match=r"engine\.cpu_latency_us: must be -1 \(the host's setting\) or 0\.\."):
            _check(cfg, "test.toml")


@pytest.mark.parametrize("old, new, field", [
    ("id = 1001", "id = 99999999999999999999", r"accounts\[0\]\.id"),
    ("deposits = { USDT = 1000000000000,", "deposits = { USDT = -99999999999999999999,",
     r"accounts\[2\]\.deposits\.USDT"),
    ("stake = 20000000000 ", "stake = 18446744073709551615 ", r"venues\.launch\[0\]\.stake"),
])
def test_an_int_past_int64_is_refused_by_name(old, new, field):
    """Every int of the config fills an int64 command field at most: a wider one is named (the matcher died on it with
    an OverflowError while bootstrapping, and the supervisor said only that a worker never became ready)."""
    text = importlib.resources.files("engine.data").joinpath("default.toml").read_text()
    assert old in text
    with pytest.raises(ConfigError, match=rf"config error in t\.toml: {field}: must fit in int64 \(-2\*\*63 \.\. "
                                          rf"2\*\*63 - 1\), not -?\d+$"):
        loads(text.replace(old, new, 1), "t.toml")


def test_a_bootstrap_the_matcher_refuses_is_a_config_error_before_anything_runs(tmp_path):
    """A config whose listings, deposits or venues the matcher would refuse (a deposit past its money bound, a venue
    staking more than its operator holds) is refused naming each command and its code, by ``xos run`` before any
    process starts and by the matcher before it journals anything; the built-in default passes."""
    text = importlib.resources.files("engine.data").joinpath("default.toml").read_text()
    text = text.replace('data_dir = "xos-data"', f'data_dir = "{tmp_path / "data"}"')
    assert len(checked_bootstrap(load())) == len(bootstrap_commands(load()))
    bad = text.replace("deposits = { USDT = 1000000000000,", f"deposits = {{ USDT = {(1 << 63) - 1},", 1)
    bad = bad.replace("stake = 20000000000 ", "stake = 900000000000 ", 1)
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as caught:
        checked_bootstrap(load(path))
    lines = str(caught.value).splitlines()
    assert lines[0] == (f"config error in {path}: the matcher refuses 6 of its bootstrap commands (the listings, "
                        "deposits and venues it sets up):")
    assert lines[1].startswith("  DEPOSIT account 1003 venue 0 market 1 qty 9223372036854775807: BALANCE_OVERFLOW")
    assert lines[2].startswith("  LAUNCH_VENUE account 1001 venue 1 market 0 qty 900000000000: "
                               "INSUFFICIENT_STAKE_BALANCE")
    assert all("UNKNOWN_VENUE" in line for line in lines[3:])  # venue 1's settings, then: it was never launched
    run = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--config", str(path), "--for", "1"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.splitlines()[:3] == lines[:3] and not (tmp_path / "data").exists()

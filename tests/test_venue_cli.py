"""Venues in the config and the `xos venue` tools.

The config part runs the bootstrap commands through both engines; the tool part starts a real
engine (supervisor, matcher, workers) on a private config and drives it with `xos venue ...`
subprocesses, which send through the matcher's input and read the journal back.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from engine.config import ConfigError, load, loads
from engine.process import bootstrap_commands, read_heartbeats
from engine.records import Cmd, Ev, VenueAccess, VenueStatus
from engine.reference import ReferenceEngine
from engine.supervisor import Supervisor
from engine.venues import rebuild

from test_engine_processes import write_config

BASE = """
[[assets]]
id = 1
symbol = "USD"
decimals = 2
[[assets]]
id = 2
symbol = "OKB"
decimals = 2
[[markets]]
id = 1
base = "OKB"
quote = "USD"
tick_size = 1
lot_size = 1
min_size = 1
[[accounts]]
id = 11
deposits = { USD = 1000000, OKB = 1000000 }
[[accounts]]
id = 12
deposits = { USD = 1000000, OKB = 1000000 }
[[accounts]]
id = 13
deposits = { USD = 1000000, OKB = 1000000 }
"""
VENUES = """
[venues]
admin = 99
protocol_account = 98
stake_asset = "OKB"
min_stake = 1000
unbond_period_s = 0.0
[[venues.launch]]
id = 1
operator = 11
insurance_account = 901
stake = 5000
markets = [1]
"""


def test_the_default_config_launches_two_venues_on_the_shared_markets(engine_cls):
    cfg = load()
    e = engine_cls()
    events = e.process(bootstrap_commands(cfg))
    assert not (events["kind"] == Ev.REJECTED).any()
    venues = {v.venue_id: v for v in e.venues()}
    assert sorted(venues) == [0, 1, 2]
    assert venues[1].access == VenueAccess.PERMISSIONLESS and venues[2].access == VenueAccess.ALLOW_LIST
    assert e.venue_markets(1) == [1, 2, 3] and e.venue_markets(2) == [1, 3]
    assert e.allowed(2) == [1002, 1003]
    assert venues[1].stake == 20_000_000_000 and e.venue_fee_schedule(2).tiers == ((100_000_000_000, 0, 2),)
    # the demo accounts trade across the two venues in one book
    assert len(e.place(1003, 1, 0, 5_000_000, 100_000, 1, venue=2)) > 0
    fill = e.place(1001, 1, 1, 5_000_000, 100_000, 1, venue=1)
    assert [(int(x["venue"]), int(x["client_id"])) for x in fill if x["kind"] == Ev.FILL] == [(1, 2)]


@pytest.mark.parametrize("old, new, field", [
    ("stake = 5000", "stake = 999", "venues.launch[0].stake"),
    ("markets = [1]", "markets = [7]", "venues.launch[0].markets"),
    ("insurance_account = 901", "insurance_account = 11", "venues.launch[0].insurance_account"),
    ("markets = [1]", "markets = [1]\nmaker_bps = -5", "venues.launch[0].maker_bps"),
    ("markets = [1]", "markets = [1]\npool = 3\ntrades_with = [0]", "venues.launch[0].trades_with"),
    ("markets = [1]", "markets = [1]\ntiers = [{ min_volume = 10 }]", "venues.launch[0].tier_asset"),
    ('stake_asset = "OKB"', 'stake_asset = "XYZ"', "venues.stake_asset"),
])
def test_venue_config_errors_name_the_field(old, new, field):
    assert loads(BASE + VENUES).venues.launch[0].stake == 5000
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        loads(BASE + VENUES.replace(old, new))


def test_launch_without_staking_parameters_is_a_config_error():
    with pytest.raises(ConfigError, match="venues.admin"):
        loads(BASE + VENUES.replace("admin = 99\n", ""))


def xos(cfg_path, *args, check=True):
    res = subprocess.run([sys.executable, "-m", "engine.cli", "venue", *map(str, args), "-c", str(cfg_path)],
                         capture_output=True, text=True, timeout=60)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_venue_tools_against_a_running_engine(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text() + BASE + VENUES)
    cfg = load(path)
    sup = Supervisor(cfg, str(path), log=lambda msg: None)
    sup.start()
    try:
        deadline = time.monotonic() + 30
        while read_heartbeats(cfg).get("matcher", {}).get("state") != "running":
            assert time.monotonic() < deadline, "matcher did not start"
            sup.check()
            time.sleep(0.1)
        listed = xos(path, "list").stdout
        assert "live" in listed and "permissionless" in listed

        venue_file = tmp_path / "venue2.toml"
        venue_file.write_text('id = 2\noperator = 12\ninsurance_account = 902\nstake = 2000\n'
                              'access = "allow-list"\nmarkets = [1]\nallow = [13]\nmaker_bps = -1\ntaker_bps = 3\n')
        out = xos(path, "launch", venue_file).stdout
        assert "LAUNCH_VENUE venue 2: ok (-2000 of asset 2 to account 12)" in out and "ALLOW venue 2: ok" in out

        assert "ALLOW venue 2: ok" in xos(path, "allow", 2, 11, "--as", 12).stdout
        refused = xos(path, "allow", 2, 11, "--as", 11, check=False)  # not venue 2's operator
        assert refused.returncode == 1 and "NOT_VENUE_OPERATOR" in refused.stdout
        # a value past its command field is refused naming it, before anything is sent (it was an OverflowError)
        for args, named in ((("unbond", 2, 1 << 63, "--as", 12), "'AMOUNT'"), (("show", 1 << 32), "'venue_id'"),
                            (("set", 2, "--as", 12, "--offer", 1 << 32),
                             "market must be an integer in 0 .. 4294967295, not 4294967296")):
            res = xos(path, *args, check=False)
            assert res.returncode == 2 and named in res.stdout + res.stderr, res
        assert "ok" in xos(path, "set", 2, "--as", 12, "--status", "halted", "--maker-bps", "0",
                           "--taker-bps", "2").stdout
        assert "UNBOND venue 2: ok" in xos(path, "unbond", 2, 1000, "--as", 12).stdout
        twice = xos(path, "unbond", 2, 1, "--as", 12, check=False)
        assert twice.returncode == 1 and "UNBOND_BELOW_MINIMUM" in twice.stdout

        shown = xos(path, "show", 2).stdout
        assert "halted, allow_list, operator 12" in shown and "1000 OKB bonded, 0 unbonding" in shown
        assert "maker 0 bps, taker 2 bps" in shown and "allow-list [11, 13]" in shown
    finally:
        sup.stop()
    engine, _ = rebuild(cfg)
    v2 = engine.venue(2)
    assert (v2.status, v2.stake, v2.unbonding) == (VenueStatus.HALTED, 1000, 0)  # released at once (period 0)
    reference = ReferenceEngine(max_orders=cfg.engine.max_orders, max_accounts=cfg.engine.max_accounts)
    from engine.journal import JournalReader

    for _, cmds in JournalReader(cfg.data_path / "journal").read_from(1):
        reference.process(cmds)
    assert reference.venues() == engine.venues()
    assert Cmd.UNBOND in {int(k) for _, c in JournalReader(cfg.data_path / "journal").read_from(1) for k in c["kind"]}

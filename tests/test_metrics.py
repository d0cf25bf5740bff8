"""Prometheus metrics (engine/metrics.py): the collector over heartbeats written by hand, the config's address
checked, and `xos run`'s endpoint scraped over HTTP while the engine runs."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.config import ConfigError, load, loads
from engine.metrics import EngineCollector
from engine.supervisor import Supervisor


def samples(text: str) -> dict:
    """{(name, labels as sorted tuples): value} of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_collector_turns_heartbeats_into_metrics(tmp_path):
    cfg = loads(f'[engine]\nname = "metrics-unit-{os.getpid()}"\ndata_dir = "{tmp_path}"\n'
                '[workers]\nstale_after_s = 5.0\n[feeds]\nenabled = false\n')
    run = tmp_path / "run"
    run.mkdir()
    now = time.time()
    beats = {"matcher": {"state": "running", "time": now - 0.5, "cmd_seq": 42, "restored_from": None},
             "gateway": {"state": "running", "time": now - 60, "ring_attached": True, "routed_seq": 7.5},
             "risk": {"state": "stopped", "time": now, "cursor": 3}}
    for role, beat in beats.items():
        (run / f"{role}.json").write_text(json.dumps({"role": role, "pid": 1, "started": now - 100, **beat}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(cfg, lambda: {"matcher": 2, "risk": 0}))
    got = samples(generate_latest(registry).decode())
    up = {labels[0][1]: value for (name, labels), value in got.items() if name == "xos_up"}
    assert up == {"matcher": 1, "gateway": 0, "risk": 0, "settlement": 0, "margin": 0, "marketdata": 0}  # no feeds
    assert 0.4 < got[("xos_heartbeat_age_seconds", (("role", "matcher"),))] < 5
    assert ("xos_heartbeat_age_seconds", (("role", "settlement"),)) not in got  # it never reported
    assert got[("xos_matcher_cmd_seq", ())] == 42 and got[("xos_gateway_routed_seq", ())] == 7.5
    assert got[("xos_gateway_ring_attached", ())] == 1 and got[("xos_risk_cursor", ())] == 3
    assert not any(name.startswith(("xos_matcher_restored", "xos_matcher_state", "xos_matcher_pid"))
                   for name, _ in got)  # None, a state, the pid: not figures
    assert got[("xos_restarts_total", (("role", "matcher"),))] == 2
    assert got[("xos_restarts_total", (("role", "margin"),))] == 0  # started, never restarted
    assert not any(name.startswith("xos_ring") or name.startswith("xos_command_ring") for name, _ in got)


@pytest.mark.parametrize("address", ["9464", "localhost:", ":9464", "localhost:http", "localhost:70000"])
def test_a_bad_metrics_address_is_refused_naming_the_field(address):
    with pytest.raises(ConfigError, match=f"metrics.address: '{address}' is not host:port"):
        loads(f'[metrics]\nenabled = true\naddress = "{address}"\n')
    assert loads(f'[metrics]\naddress = "{address}"\n').metrics.address == address  # off: not looked at


def test_xos_run_serves_the_engines_metrics_while_it_runs(tmp_path):
    path = tmp_path / "xos.toml"
    path.write_text("\n".join([
        "gateway.enabled = false", "marketdata.enabled = false",
        "[engine]", f'name = "metrics-{os.getpid()}"', f'data_dir = "{tmp_path / "data"}"', "ring_capacity = 4096",
        "batch_max = 1024",
        'fsync = "off"', "max_orders = 4096", "max_accounts = 1024",
        "[workers]", "heartbeat_s = 0.2",
        "[metrics]", "enabled = true", 'address = "127.0.0.1:0"']) + "\n")
    cfg = load(path)
    logged: list[str] = []
    sup = Supervisor(cfg, str(path), log=logged.append)
    sup.start()
    try:
        url = sup.metrics.url
        assert f"metrics on {url}" in logged
        deadline = time.monotonic() + 10
        while True:
            got = samples(urllib.request.urlopen(url, timeout=5).read().decode())
            if all(got.get(("xos_up", (("role", role),))) == 1 for role in ("matcher", "settlement", "margin", "risk")):
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        assert got[("xos_matcher_cmd_seq", ())] == 0 and got[("xos_ring_capacity", ())] == 4096
        assert got[("xos_ring_consumer_lag", (("consumer", "settlement"),))] == 0
        assert got[("xos_restarts_total", (("role", "matcher"),))] == 0
        assert got[("xos_command_ring_lag", ())] == 0
        for metric in ("xos_up", "xos_restarts_total"):  # gateway, marketdata: off
            assert {labels[0][1] for name, labels in got if name == metric} == {"matcher", "settlement", "margin",
                                                                                 "risk"}
    finally:
        sup.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)

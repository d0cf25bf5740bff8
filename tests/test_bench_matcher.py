"""Smoke tests of the matcher benchmark: small seeded runs, checked against the reference model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import matcher
from bench.orders import CONFIGS, TYPE_NAMES, generate
from engine.reference import ReferenceEngine

KEYS = ("commands_per_s", "p50_ns", "p99_ns", "p999_ns", "mix", "state_ok")

SMALL_B = ["--markets", "20", "--accounts", "2000", "--orders", "2000"]


@pytest.mark.parametrize("config, extra", [("A", []), ("B", SMALL_B)], ids=["A", "B-small"])
def test_bench_matcher_smoke(tmp_path, capsys, config, extra):
    path = tmp_path / "bench.json"
    result = matcher.main(["--config", config, "--commands", "20000", "--runs", "1", "--json", str(path), *extra])
    written = json.loads(path.read_text())
    for key in KEYS:
        assert key in result and key in written
    assert result["state_ok"] is True
    assert result["verify"]["events_equal"] is True
    assert result["commands"] == 20000
    assert result["commands_per_s"] > 0
    assert 0 < result["p50_ns"] <= result["p99_ns"] <= result["p999_ns"]
    mix = result["mix"]
    assert sum(mix[name]["count"] for name in TYPE_NAMES) == 20000
    # cancels and amends always name open orders, and funding covers every hold
    assert mix["total"]["rejects"] == 0
    assert result["generation"]["rejects"] == 0
    assert mix["cancel"]["cancelled"] == {"user": mix["cancel"]["count"]}
    assert mix["place_ioc"]["count"] > 0 and mix["amend_move"]["count"] > mix["place_ioc"]["count"]
    for name in TYPE_NAMES:
        assert result["latency"][name]["count"] == mix[name]["count"]
    assert "commands/s" in capsys.readouterr().out


def test_generator_is_seeded_and_independent_of_the_driver():
    cfg = CONFIGS["B"].replace(commands=3000, markets=8, accounts=300, orders=400)
    a = generate(cfg)
    b = generate(cfg, ReferenceEngine)
    for name in ("setup", "prefill", "stream", "types"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = generate(cfg.replace(seed=2), ReferenceEngine)
    assert not np.array_equal(a.stream, c.stream)


def test_setup_funds_every_market_user():
    cfg = CONFIGS["B"].replace(commands=10, markets=30, accounts=500, orders=300)
    wl = generate(cfg)
    deposits = wl.setup[wl.setup["kind"] == 16]
    funded = set(zip(deposits["account"].tolist(), deposits["market"].tolist()))
    for m in wl.markets:
        for account in m.users.tolist():
            assert (account, m.base) in funded and (account, m.quote) in funded
    assert len(wl.markets) == 30
    assert len({(m.base, m.quote) for m in wl.markets}) == 30

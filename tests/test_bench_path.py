"""``bench.path``: an order's steps from its send and ack and the calls around it (``split``, on made-up times),
and a short run of the whole benchmark (slow-marked: it starts the engine)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import path


def test_split_matches_each_order_to_its_own_calls_and_leaves_out_what_does_not_fit():
    """Two orders 1 ms apart, each through its own read, wait, batch, on_events and send; the second order's
    on_events begins before its batch returns (the batch publishes first); a third order whose ack came
    before the send of its reply is left out and counted."""
    us = 1000
    orders = np.array([[0, 1000 * us, 2000 * us], [900 * us, 1900 * us, 2500 * us]])  # (sends, acks)
    calls = {
        "on_readable": np.array([[100, 150], [1100, 1150], [2100, 2150]]) * us,
        "wait_input": np.array([[0, 170], [500, 1180], [1500, 2180]]) * us,
        "run_batch": np.array([[180, 500], [1190, 1500], [2190, 2400]]) * us,
        "on_events": np.array([[520, 600], [1490, 1600], [2410, 2520]]) * us,
        "look_for_requests": np.array([[590, 592], [1590, 1592], [2510, 2512]]) * us,  # begins as the sends end
    }
    steps, unmatched = path.split(orders, calls)
    assert unmatched == 1
    assert steps["zeromq_in"].tolist() == [100 * us, 100 * us]
    assert steps["to_matcher"].tolist() == [70 * us, 80 * us]
    assert steps["matcher_wake_to_batch"].tolist() == [10 * us, 10 * us]
    assert steps["batch_to_gateway"].tolist() == [340 * us, 300 * us]  # the second woke before its batch returned
    assert steps["on_events"].tolist() == [70 * us, 100 * us] and steps["zeromq_out"].tolist() == [310 * us, 310 * us]
    chain = [k for k, _ in path.STEPS[:6]]
    assert (sum(steps[k] for k in chain) == steps["total"]).all() and steps["total"].tolist() == [900 * us, 900 * us]
    assert steps["on_readable"].tolist() == [50 * us, 50 * us] and steps["batch"].tolist() == [320 * us, 310 * us]


@pytest.mark.slow
def test_path_benchmark_smoke(tmp_path):
    out = path.main(["--rate", "300", "--seconds", "2", "--warmup", "0.5", "--runs", "1",
                     "--json", str(tmp_path / "path.json")])
    saved = json.loads((tmp_path / "path.json").read_text())
    assert saved["p50_us_median"] == out["p50_us_median"]
    (run,) = saved["runs"]
    assert run["orders"] > 5 * run["unmatched"] and run["orders"] > 200
    assert set(run["steps_us"]) == {k for k, _ in path.STEPS}
    assert all(0 < s["p50"] <= s["p90"] <= s["p99"] for k, s in run["steps_us"].items() if k != "batch_to_gateway")

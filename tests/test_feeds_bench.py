"""Smoke test of the oracle feeds benchmark (tiny sizes, real engine and feeds processes) and of
how it times the order stream from heartbeats."""
from __future__ import annotations

import json

import pytest

from bench import feeds
from bench.feeds import BeatLog, stream_end


def beats(points) -> BeatLog:
    log = BeatLog(None, "test", "n")
    log.times, log.values = [t for t, _ in points], [v for _, v in points]
    return log


def test_the_stream_end_is_interpolated_between_the_beats_around_it():
    matcher = beats([(9.99, 100), (10.02, 400), (10.04, 700), (10.06, 1200)])
    # 1,000 orders after 100 commands: 300 by 10.02, 600 by 10.04, 1,100 by 10.06 -> 1,000 at 10.056
    assert stream_end(matcher, None, 10.0, 100, 1000, slack=0) == pytest.approx(10.056)
    assert stream_end(matcher, None, 10.0, 100, 2000, slack=0) is None  # not yet


def test_with_a_feed_its_updates_are_not_counted_as_orders():
    # the feed sends 10 updates per 0.01 s; 1,000 orders after 100 commands
    feed = beats([(10.0, 50), (10.03, 80), (10.06, 110)])
    matcher = beats([(9.99, 149), (10.02, 570), (10.04, 890), (10.06, 1210)])
    # orders: 10.02 -> 570 - 100 - 70 = 400, 10.04 -> 890 - 100 - 90 = 700, 10.06 -> 1210 - 100 - 110 = 1000
    assert stream_end(matcher, feed, 10.0, 100, 1000, slack=10) == pytest.approx(10.04 + 0.02 * 290 / 300)
    assert stream_end(matcher, beats([(10.0, 50), (10.03, 80)]), 10.0, 100, 1000, slack=10) is None  # feed beat missing


def test_bench_feeds_smoke(tmp_path, capsys):
    path = tmp_path / "feeds.json"
    result = feeds.main(["--markets", "20", "--commands", "3000", "--repeat", "1", "--warmup", "0.2",
                         "--measure", "0.3", "--json", str(path)])
    written = json.loads(path.read_text())
    for key in ("oracle_updates_per_s", "commands_per_s_with_oracles", "commands_per_s_without", "ratio"):
        assert key in written and result[key] > 0
    for key in ("engine_cpu_us_per_order_with_oracles", "engine_cpu_us_per_order_without", "cpu_ratio"):
        assert key in written
    with_, without = sorted(result["runs"], key=lambda r: not r["with_oracles"])
    # the run checked that the matcher took the stream plus exactly the updates the feed sent
    assert with_["oracle_updates_sent"] > 0 and with_["feed_markets_fresh"] == 20
    assert {"matcher", "settlement", "margin", "risk", "feeds", "bench", "other"} <= set(with_["cpu_cores_stream"])
    assert "feeds" not in without["cpu_cores_stream"]
    assert "oracle updates/s" in capsys.readouterr().out

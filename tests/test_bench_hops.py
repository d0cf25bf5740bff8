"""``bench.hops`` runs: a few round trips, plain and over CurveZMQ, with and without a pause, give
ordered percentiles and the JSON it writes."""
from __future__ import annotations

import json

from bench import hops


def test_hops_reports_the_round_trip_percentiles(tmp_path):
    for curve in (False, True):
        out = hops.main(["--count", "50", "--gaps-ms", "1", "0", "--json", str(tmp_path / "h.json")]
                        + (["--curve"] if curve else []))
        written = json.loads((tmp_path / "h.json").read_text())
        assert written == json.loads(json.dumps(out)) and written["curve"] is curve
        assert written["cpu_latency_us"] == -1  # no --cpu-latency-us: the host's setting, no request held
        for gap in ("1.0", "0.0"):
            p = written["round_trip_us"][gap]
            assert 0 < p["p50"] <= p["p99"] <= p["p999"]

"""Smoke test of the journal benchmark: a tiny seeded run writes the JSON with every figure."""
from __future__ import annotations

import json

import pytest

from bench import journal


def test_bench_journal_smoke(tmp_path, capsys):
    path = tmp_path / "bench.json"
    result = journal.main(["--commands", "4096", "--max-fsyncs", "8", "--read-commands", "5000",
                           "--runs", "2", "--dir", str(tmp_path), "--json", str(path),
                           "--calm-gaps-us", "100,200", "--calm-commits", "5",
                           "--in-flight", "2", "--in-flight-writes", "5"])
    written = json.loads(path.read_text())
    assert written["meta"]["seed"] == 1 and written["meta"]["statistic"] == "median"
    for fsync in ("always", "off"):
        for batch in ("1", "64", "1024", "4096"):
            r = result["append"][fsync][batch]
            assert r["commands_per_s"] > 0 and len(r["runs_commands_per_s"]) == 2
            assert written["append"][fsync][batch]["commands"] == r["commands"]
    lat = result["append"]["always"]["64"]["fsync_latency"]
    assert result["append"]["always"]["64"]["fsyncs"] == 2 * 8
    assert 0 < lat["p50_ns"] <= lat["p99_ns"] <= lat["max_ns"]
    assert result["append"]["off"]["1"]["commands"] == 4096
    for gap in ("100", "200"):
        calm = written["calm"][gap]
        assert calm["commits"] == 5 and 0 < calm["p50_ns"] <= calm["p99_ns"]
    for writers in (1, 2):
        r = written["in_flight"][str(writers)]
        assert r["writers"] == writers and r["writes"] == writers * 5 and len(r["runs_writes_per_s"]) == 2
        assert r["writes_per_s"] > 0 and 0 < r["p50_ns"] <= r["p99_ns"]
    assert result["read"]["read_all_commands_per_s"] > 0 and result["read"]["read_from_commands_per_s"] > 0
    assert result["crc32c"]["sw_gb_per_s"] > 0
    assert list(tmp_path.iterdir()) == [path]   # the journals are removed


@pytest.mark.parametrize("args, message", [(["--in-flight", "-1"], "--in-flight -1: the threads writing at once"),
                                           (["--in-flight-writes", "0"], "--in-flight-writes 0: each thread needs")])
def test_bad_in_flight_arguments_are_refused_before_anything_runs(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        journal.main(args + ["--dir", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

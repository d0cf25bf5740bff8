"""Smoke test of the venue benchmark (small sizes): it runs, writes its JSON keys, and the venue
setup really spreads the workload over the venues with mixed eligibility."""
from __future__ import annotations

import json

from bench import venues


def test_bench_venues_smoke(tmp_path, capsys):
    path = tmp_path / "venues.json"
    result = venues.main(["--configs", "A,B", "--venues", "60", "--commands", "20000", "--runs", "1",
                          "--markets", "8", "--accounts", "500", "--orders", "400", "--json", str(path)])
    written = json.loads(path.read_text())
    for key in ("venues", "commands_per_s", "ratio_to_single_venue"):
        assert key in result and key in written
    assert written["venues"] == 60
    for config in ("A", "B"):
        r = written["configs"][config]
        assert r["commands_per_s"] > 0 and r["single_venue_commands_per_s"] > 0
        assert r["ratio_to_single_venue"] == written["ratio_to_single_venue"][config]
        kinds = r["layout"]["venue_kinds"]
        assert sum(kinds.values()) == 60 and kinds["allow_list_restricted"] > 0
        many, single = r["outcome"]["many"], r["outcome"]["single"]
        assert many["cross_venue_fills"] > 0 and single["cross_venue_fills"] == 0
        assert single["rejects"] == 0
    assert "ratio" in capsys.readouterr().out

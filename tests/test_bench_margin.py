"""Smoke test of ``bench.margin`` at small sizes: every part runs, writes its JSON keys, and the
cascade ends fully resolved (every leveraged account liquidated, none left under maintenance)."""
from __future__ import annotations

import json

from bench import margin


def test_bench_margin_small(tmp_path):
    path = tmp_path / "margin.json"
    out = margin.main(["--accounts", "2000", "--markets", "20", "--changes", "5", "--commands", "20000", "--runs", "1",
                       "--cascade", "300", "--json", str(path)])
    assert json.loads(path.read_text()) == out
    assert out["holders_market_1"] == 2000 and out["positions"] > 2000
    assert 0.10 < out["revalue_cells"] / (2000 * 70) < 0.12
    for key in ("revalue_ms", "revalue_typical_ms", "revalue_cells_ms", "perp_ratio", "cascade_ms"):
        assert out[key] > 0, key
    assert out["cascade_liquidations"] == 300 and out["cascade_still_under"] == 0
    assert out["cascade_book_orders"] > 0 and out["cascade_insurance_takeovers"] + out["cascade_adl_closes"] > 0

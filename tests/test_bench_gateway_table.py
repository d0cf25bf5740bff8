"""``bench.gateway_table`` on small tables: every query timed at every size, ordered percentiles, the table's
make-up as asked, and the JSON it writes."""
from __future__ import annotations

import json

import pytest

from bench import gateway_table


def test_the_order_table_bench_times_every_query_at_every_size(tmp_path, capsys):
    out = gateway_table.main(["--rows", "200", "3000", "--open", "0.5", "--accounts", "12", "--runs", "3",
                              "--json", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads(json.dumps(out))
    assert [size["rows"] for size in out["sizes"]] == [200, 3000]
    for size in out["sizes"]:
        assert set(size["ms"]) == set(gateway_table.QUERIES)
        assert 0.3 * size["rows"] < size["open_rows"] < 0.7 * size["rows"]
        assert 0 < size["account_open_orders"] < size["open_rows"]
        assert size["closed_kept"] == size["rows"] - size["open_rows"]  # fewer than 1000 closed an account
        for ms in size["ms"].values():
            assert 0 < ms["p50"] <= ms["p99"] <= ms["max"]
    printed = capsys.readouterr().out
    assert all(name in printed for name in gateway_table.QUERIES)


def test_the_order_table_bench_refuses_a_share_that_is_not_one(capsys):
    with pytest.raises(SystemExit):
        gateway_table.main(["--open", "1.5"])
    assert "--open is a share" in capsys.readouterr().err

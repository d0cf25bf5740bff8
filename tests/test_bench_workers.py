"""``bench.workers``: a short run of each worker core and of the order-table lookups, its JSON, and its
refusal of counts below one."""
from __future__ import annotations

import json

import pytest

from bench import workers


def test_a_short_run_times_every_core_and_the_table(tmp_path, capsys):
    out = tmp_path / "workers.json"
    assert workers.main(["--commands", "3000", "--runs", "2", "--batch", "512", "--table-keys", "10", "5000",
                         "--lookups", "20000", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["roles"]) == set(workers.ROLES)
    assert all(r["events_per_s"] > 0 and len(r["all"]) == 2 for r in result["roles"].values())
    assert set(result["checkpoints"]) == {"margin", "risk"}  # settlement's store commits with each batch
    assert all(c["bytes"] > 0 and c["save_ms"] > 0 and c["load_ms"] > 0 for c in result["checkpoints"].values())
    assert set(result["table_lookups"]) == {"10", "5000"}
    assert all(t["best_ns"] <= t["ns_per_lookup"] for t in result["table_lookups"].values())
    printed = capsys.readouterr().out
    assert "margin:" in printed and "order table,      5000 keys:" in printed and "margin checkpoint: " in printed


def test_lookups_find_every_key_in_a_table_sized_for_them():
    assert len(workers.time_lookups(1000, 5000, 3, seed=4)) == 3


@pytest.mark.parametrize("args", [["--runs", "0"], ["--batch", "0"], ["--lookups", "0"], ["--table-keys", "5", "0"]])
def test_counts_below_one_are_refused(args, capsys):
    with pytest.raises(SystemExit):
        workers.parse_args(args)
    assert "must be at least 1" in capsys.readouterr().err

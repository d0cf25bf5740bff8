"""``bench.rowpack`` on a few rows: every layout and operation timed through both codecs, the rows it made are the
engine's (each packing reads them back), and the JSON it writes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import rowpack


def test_the_rowpack_bench_times_each_layout_through_both_codecs(tmp_path, capsys):
    out = rowpack.main(["--rows", "300", "--runs", "2", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(out))
    assert list(out["layouts"]) == list(rowpack.LAYOUTS)
    for name, figures in out["layouts"].items():
        assert figures["rows"] == 300 or name == "wire report" and 0 < figures["rows"] < 300  # reports: the cancels
        assert 2 <= figures["bytes_a_row"] < 20
        for kernels in ("compiled", "generic"):
            for op in rowpack.OPERATIONS:
                ns = figures["ns_a_row"][kernels][op]
                assert 0 < ns["p50"] <= ns["p99"]
        assert all(ratio > 0 for ratio in figures["generic_over_compiled"].values())
    printed = capsys.readouterr().out
    assert all(name in printed for name in rowpack.LAYOUTS)


def test_the_flows_are_the_wire_benchmarks_commands_and_what_the_engine_makes_of_them():
    flows = rowpack.flows(2000, seed=3)
    commands = flows["wire command"]
    cancels = commands["kind"] == 2
    assert cancels.any() and (commands["kind"][~cancels] == 1).all()
    assert len(flows["wire report"]) == cancels.sum()
    assert (flows["wire ack"]["rid"] == commands["rid"]).all()
    assert (flows["journal command"]["id"] == commands["id"]).all()
    assert len(np.unique(flows["journal command"]["ts"])) == 1  # one matcher batch of 8,192
    for name, rows in flows.items():
        packing = rowpack.packings()[name]
        assert packing.kernels == name
        assert packing.unpack(packing.pack(rows)).tobytes() == rows.tobytes()


def test_the_rowpack_bench_refuses_too_few_rows(capsys):
    with pytest.raises(SystemExit):
        rowpack.main(["--rows", "3"])
    assert "--rows must be at least 16" in capsys.readouterr().err

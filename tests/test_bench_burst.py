"""Smoke test of ``bench.burst``: a small run, its figures and the indexes it reports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import burst
from engine.records import Cmd


def test_bench_burst_smoke(tmp_path, capsys):
    path = tmp_path / "burst.json"
    result = burst.main(["--burst", "40000", "--resting", "100", "--commands", "20000", "--runs", "2",
                         "--json", str(path)])
    assert json.loads(path.read_text()) == result
    assert result["peak_index_slots"][0] >= 2 * 40_100
    assert result["before"]["index_slots"] == result["after"]["index_slots"] == [2048, 2048]
    for phase in ("before", "after"):
        assert len(result[phase]["runs_ns_per_command"]) == 2 and result[phase]["ns_per_command"] > 0
    assert result["after_over_before"] == result["after"]["ns_per_command"] / result["before"]["ns_per_command"]
    assert result["burst_cancel_ms"] > 0 and result["burst_place_ns_per_command"] > 0
    assert "index slots" in capsys.readouterr().out


def test_flow_pairs_each_place_with_the_cancel_of_the_oldest():
    c = burst.flow_commands(0, 10, 4)
    assert c["kind"].tolist() == [Cmd.PLACE] * 4 + [Cmd.CANCEL, Cmd.PLACE] * 3
    assert c["id"].tolist() == [1, 2, 3, 4, 1, 5, 2, 6, 3, 7]
    assert np.array_equal(c, np.concatenate([burst.flow_commands(0, 6, 4), burst.flow_commands(6, 4, 4)]))


@pytest.mark.parametrize("argv", [["--commands", "3"], ["--burst", "0"], ["--runs", "0"]])
def test_bench_burst_refuses_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit):
        burst.main(argv)
    assert "must be" in capsys.readouterr().err

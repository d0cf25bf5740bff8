"""``bench.stalls``: gaps sorted into freezes (the kernel saw the probe running) and waits (it saw it wait for a
CPU) on made-up gaps, the probe on this machine, and a short run of the whole benchmark (slow: it starts the
engine twice)."""
from __future__ import annotations

import json

import pytest

from bench import stalls

MS = 1_000_000


def test_classify_tells_freezes_from_waits():
    """Freezes 100 ms apart (a few us of run-queue wait inside each: less than half the gap), one wait that
    the kernel counted in full, and one at exactly half, which is a wait."""
    gaps = [(100 * MS, 5 * MS, 10_000), (150 * MS, 2 * MS, 2 * MS), (200 * MS, 4 * MS, 0),
            (300 * MS, 6 * MS, 1 * MS), (350 * MS, 4 * MS, 2 * MS)]
    s = stalls.classify(gaps, 1000 * MS)
    assert s["freezes"] == 3 and s["frozen_ms"] == 15.0 and s["max_freeze_ms"] == 6.0
    assert s["freeze_spacing_ms"] == 100.0 and s["frozen_share"] == pytest.approx(0.015)
    assert s["waits"] == 2 and s["waited_ms"] == 6.0 and s["max_wait_ms"] == 4.0
    assert s["spun_ms"] == 1000.0


def test_classify_with_no_gaps():
    s = stalls.classify([], 0)
    assert s["freezes"] == s["waits"] == 0 and s["freeze_spacing_ms"] is None and s["frozen_share"] == 0.0


def test_the_probe_reads_its_run_queue_wait_and_reports():
    """The probe alone, briefly, at normal priority: a summary of what it spun (the machine decides the gaps)."""
    summary, nothing = stalls.probed(0, 0.2, 1 * MS, idle=False)
    assert nothing is None and summary["spun_ms"] > 50
    assert summary["freezes"] >= 0 and summary["waits"] >= 0
    assert stalls.run_delay_ns() >= 0


@pytest.mark.parametrize("args, says", [(["--rate", "0"], "--rate 0: must be positive"),
                                        (["--seconds", "1.5"], "--seconds 1.5: at least 2"),
                                        (["--gap-us", "0"], "--gap-us 0: must be positive")])
def test_bad_arguments_are_refused_before_anything_starts(args, says, capsys):
    with pytest.raises(SystemExit):
        stalls.main(args)
    assert says in capsys.readouterr().err


@pytest.mark.slow
def test_stalls_benchmark_smoke(tmp_path):
    out = stalls.main(["--rate", "300", "--seconds", "3", "--json", str(tmp_path / "stalls.json")])
    saved = json.loads((tmp_path / "stalls.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert set(saved["phases"]) == {"alone", "fsync_always", "fsync_off"}
    for name in ("fsync_always", "fsync_off"):
        phase = saved["phases"][name]
        assert 0 < phase["p50_us"] <= phase["p99_us"] and phase["probe"]["spun_ms"] > 0

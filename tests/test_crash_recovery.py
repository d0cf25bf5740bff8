"""kill -9 of the matcher process mid-stream: nothing acknowledged is lost, no fill is applied twice,
the state is the one an uninterrupted replay of the journal gives, balances are conserved.

Uses the real processes through ``bench.crash`` (which documents every check)."""
from __future__ import annotations

import pytest

from bench.crash import run


@pytest.mark.parametrize("seed,fsync,commands", [(3, "off", 12_000), (4, "always", 36_000)])
def test_matcher_kill9_mid_stream(tmp_path, seed, fsync, commands):
    """fsync="always" also kills the matcher while it writes blocks into a spare segment (~0.4 MB of packed
    journal in the first spare, of 1 MiB) and reopens journals whose last segment ends in zeros.  (Kills across
    a move into the next spare: ``bench.crash`` at 300,000 commands, and test_journal's reopens of small
    segments.)"""
    out = run(kills=5, commands=commands, seed=seed, batch=100, work=tmp_path, fsync=fsync)
    assert out["kills"] == 5
    assert out["journal_damage"] == []
    assert out["commands_journaled"] > 0.5 * out["commands_sent"]
    assert out["max_durable_seq_seen"] <= out["commands_journaled"]
    assert out["acknowledged_lost"] == 0
    assert out["duplicated_fills"] == 0 and out["fills"] > 0 and out["ledger_fills_equal"]
    assert out["ledger_cursor_ok"] and out["ledger_accounts_mismatched"] == 0 and out["ledger_fees_ok"]
    assert out["hash_equal"] and out["matcher_heartbeat_agrees"]
    assert out["conserved"]
    assert out.get("snapshot_hash_equal", True)
    assert out["ok"]
    if fsync == "always":
        from engine.journal import direct_io_works

        segments = sorted((tmp_path / "data" / "journal").glob("*.journal"))
        assert segments[-1].stat().st_size >= 1 << 20   # it began in a spare: its data, then the zero fill
        if direct_io_works(str(tmp_path)):  # whole blocks
            assert out["journal_io"] == "o_direct" and all(p.stat().st_size % 4096 == 0 for p in segments)
    else:
        assert out["journal_io"] == "fsync_off"


@pytest.mark.slow
def test_matcher_kill9_many(tmp_path):
    out = run(kills=40, commands=40_000, seed=8, batch=50, work=tmp_path)
    assert out["ok"], out

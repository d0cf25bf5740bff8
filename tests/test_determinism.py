"""Determinism: a live run, a full replay of its journal and snapshot + suffix replays end in the same
state (``state_hash``) and, for full replays, the same events."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from engine import snapshot as snap
from engine.journal import JournalWriter
from engine.matcher import Engine
from engine.replay import replay
from engine.state import state_hash
from generators import ENGINE_KWARGS, StreamGenerator, VenueStreamGenerator


def live_run(tmp_path, seed: int, n_commands: int, snapshot_every: int, chunk: int = 500, generator=StreamGenerator):
    """The live path: each chunk is journaled (appended + committed) and then processed; a snapshot
    of the state is handed to the background writer every ``snapshot_every`` commands."""
    gen = generator(seed)
    e = Engine(**ENGINE_KWARGS)
    events_digest = hashlib.sha256()
    journal = JournalWriter(tmp_path / "journal", segment_bytes=1 << 17, fsync="off")  # packed: several segments
    writer = snap.SnapshotWriter(tmp_path / "snapshots", keep=1000, fsync=False)
    done = since = 0
    expected = {}  # cmd_seq -> state hash at that snapshot
    while done < n_commands:
        cmds = gen.next_chunk(min(chunk, n_commands - done))
        journal.append_array(cmds)
        journal.commit()
        events = e.process(cmds)
        events_digest.update(events.tobytes())
        gen.observe(cmds, events)
        done += len(cmds)
        since += len(cmds)
        if since >= snapshot_every:
            since = 0
            writer.submit(e.export_state())
            writer.wait()  # every snapshot, so each can be checked (the engine does not wait)
            expected[e.cmd_seq] = state_hash(e)
    journal.close()
    writer.close()
    assert writer.failures == 0, writer.last_error
    return e, events_digest.hexdigest(), expected


def full_replay_events(journal_dir) -> str:
    from engine.journal import JournalReader

    e = Engine(**ENGINE_KWARGS)
    digest = hashlib.sha256()
    reader = JournalReader(journal_dir)
    for _, cmds in reader.read_from(1):
        digest.update(e.process(cmds).tobytes())
    assert reader.report == []
    return digest.hexdigest()


def check_same_everywhere(tmp_path, seed: int, n_commands: int, snapshot_every: int, generator=StreamGenerator) -> None:
    live, live_events, at_snapshots = live_run(tmp_path, seed, n_commands, snapshot_every, generator=generator)
    live_hash = state_hash(live)
    journal_dir = tmp_path / "journal"

    full, engine = replay(journal_dir, capacities=ENGINE_KWARGS)
    assert full.ok and full.damage == [] and full.segments > 1
    assert full.records == full.replayed == live.cmd_seq
    assert (full.cmd_seq, full.event_seq) == (live.cmd_seq, live.event_seq)
    assert full.state_hash == live_hash
    assert sum(full.events_by_kind.values()) == live.event_seq
    assert full_replay_events(journal_dir) == live_events

    from_snap, _ = replay(journal_dir, tmp_path / "snapshots", capacities=ENGINE_KWARGS)
    assert from_snap.ok and from_snap.snapshot is not None and from_snap.snapshot_problems == []
    assert from_snap.snapshot_cmd_seq == max(at_snapshots)
    assert from_snap.replayed == live.cmd_seq - from_snap.snapshot_cmd_seq
    assert from_snap.state_hash == live_hash
    quick, _ = replay(journal_dir, tmp_path / "snapshots", capacities=ENGINE_KWARGS, verify=False)
    assert quick.state_hash == live_hash and quick.records == quick.replayed

    # every snapshot the run took, plus its suffix, arrives at the same state
    assert len(at_snapshots) >= 3
    for cmd_seq, digest in at_snapshots.items():
        _, state = snap.read_snapshot(tmp_path / "snapshots" / snap.snapshot_name(cmd_seq))
        restored = Engine.from_state(state, **ENGINE_KWARGS)
        assert state_hash(restored) == digest
        from engine.journal import JournalReader

        for _, cmds in JournalReader(journal_dir).read_from(cmd_seq + 1):
            restored.process_count(cmds)
        assert restored.cmd_seq == live.cmd_seq and state_hash(restored) == live_hash, cmd_seq


def test_live_replay_and_snapshot_suffix_agree_200k(tmp_path):
    check_same_everywhere(tmp_path, seed=11, n_commands=200_000, snapshot_every=40_000)


def test_venue_commands_replay_and_snapshot_suffix_agree(tmp_path):
    """Venue launches, stake, unbonds released on the engine clock, slashes, policies and orders
    over many venues, oracle configs and prices with stale periods: replays and snapshot + suffix
    give the same state (oracles included) and events (Oracle and OracleStatus included)."""
    check_same_everywhere(tmp_path, seed=14, n_commands=80_000, snapshot_every=16_000, generator=VenueStreamGenerator)
    _, engine = replay(tmp_path / "journal", capacities=ENGINE_KWARGS)
    oracles = engine.oracles()
    assert any(o.stale for o in oracles) and any(o.price and not o.stale for o in oracles)


@pytest.mark.slow
def test_live_replay_and_snapshot_suffix_agree_1m(tmp_path):
    check_same_everywhere(tmp_path, seed=12, n_commands=1_000_000, snapshot_every=150_000)


def test_replay_cli_same_hash_and_damage_exit_code(tmp_path):
    live, _, _ = live_run(tmp_path, seed=13, n_commands=20_000, snapshot_every=6_000)
    caps = [f"--{k.replace('_', '-')}={v}" for k, v in ENGINE_KWARGS.items()]
    cli = [sys.executable, "-m", "engine.cli", "replay"]
    full = subprocess.run(cli + [str(tmp_path / "journal")] + caps, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    from_snap = subprocess.run(cli + [str(tmp_path / "journal"), "--snapshot", str(tmp_path / "snapshots")] + caps,
                               capture_output=True, text=True)
    assert from_snap.returncode == 0, from_snap.stderr
    want = f"state hash {state_hash(live)}"
    assert want in full.stdout and want in from_snap.stdout
    assert f"cmd_seq {live.cmd_seq}  event_seq {live.event_seq}" in full.stdout
    assert "snapshot" in from_snap.stdout and "fill=" in full.stdout

    # a damaged snapshot is reported and the previous one used
    newest = snap.list_snapshots(tmp_path / "snapshots")[-1][1]
    newest.write_bytes(newest.read_bytes()[:-10])
    res, _ = replay(tmp_path / "journal", tmp_path / "snapshots", capacities=ENGINE_KWARGS, verify=False)
    assert res.snapshot_problems and "truncated" in res.snapshot_problems[0]
    assert res.snapshot is not None and res.snapshot != str(newest)
    assert res.state_hash == state_hash(live)

    # damage in an old segment: reported, exit 1, the valid prefix still replayed and hashed
    segments = sorted((tmp_path / "journal").glob("*.journal"))
    assert len(segments) >= 2
    data = bytearray(segments[0].read_bytes())
    data[len(data) // 2] ^= 0x40
    segments[0].write_bytes(bytes(data))
    bad = subprocess.run(cli + [str(tmp_path / "journal")] + caps, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "DAMAGE" in bad.stdout and "middle" in bad.stdout and "state hash" in bad.stdout

"""Offline journal verification and replay (``xos replay PATH``).

Reads a journal directory, checks every frame (magic, length, CRC32C, sequence continuity: the
reader's ``report``), replays its commands through a fresh engine, optionally starting from the
newest valid snapshot (then only the suffix after the snapshot's ``cmd_seq`` is processed), and
gives the final counters, the events by kind and ``engine.state.state_hash``.  The hash is the
same whichever way the state was rebuilt: that is the determinism check.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from .records import Ev

DEFAULT_CAPACITIES = dict(max_orders=1 << 20, max_accounts=1 << 20, max_markets=4096, max_assets=1024)


@dataclasses.dataclass
class ReplayResult:
    journal: str
    records: int = 0          # valid commands in the journal (all of it, verified)
    batches: int = 0          # frames
    segments: int = 0
    first_seq: int = 0
    last_seq: int = 0
    damage: list = dataclasses.field(default_factory=list)  # journal Damage tuples
    snapshot: str | None = None
    snapshot_cmd_seq: int = 0
    snapshot_problems: list = dataclasses.field(default_factory=list)
    replayed: int = 0         # commands processed (after the snapshot, if any)
    cmd_seq: int = 0
    event_seq: int = 0
    events_by_kind: dict = dataclasses.field(default_factory=dict)  # events of the replayed commands
    state_hash: str | None = None
    load_s: float = 0.0
    replay_s: float = 0.0
    hash_s: float = 0.0
    problems: list = dataclasses.field(default_factory=list)  # anything else wrong (e.g. sequence gaps)

    @property
    def ok(self) -> bool:
        return not self.damage and not self.problems

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["damage"] = [dict(segment=str(x.segment), offset=x.offset, bytes=x.bytes, reason=x.reason, where=x.where,
                            next_seq=x.next_seq) for x in self.damage]
        d["ok"] = self.ok
        return d


KIND_NAMES = {int(k): k.name.lower() for k in Ev}
N_KINDS = max(KIND_NAMES) + 1


class _Feeder:
    """Runs each frame through the engine as its own batch, as the matcher ran it: a batch's BookLevel
    events (one per level it changed) and so the events' seqs depend on where batches end."""

    def __init__(self, engine, count_events: bool):
        self.engine = engine
        self.count_events = count_events
        self.kinds = np.zeros(N_KINDS, dtype=np.int64)
        self.processed = 0

    def run(self, commands: np.ndarray) -> None:
        n_events = self.engine.process_count(commands)
        self.processed += len(commands)
        if self.count_events and n_events:
            k = self.engine.last_events()["kind"]
            self.kinds += np.bincount(k, minlength=N_KINDS)[:N_KINDS]


def replay(journal_dir, snapshot_dir=None, capacities: dict | None = None, count_events: bool = True,
           verify: bool = True, hash_state: bool = True, engine_cls=None) -> tuple[ReplayResult, object]:
    """Rebuild the engine from ``journal_dir`` (and the newest valid snapshot in ``snapshot_dir``).

    ``verify=True`` reads and checks the whole journal, also the part the snapshot covers; with
    ``verify=False`` (a restart) only the segments from the snapshot on are read.  Returns
    ``(ReplayResult, engine)``; never raises on damaged data (it is reported)."""
    from .journal import JournalReader, list_segments
    from .snapshot import list_snapshots, load_newest

    if engine_cls is None:
        from .matcher import Engine as engine_cls
    caps = dict(DEFAULT_CAPACITIES, **(capacities or {}))
    journal_dir = Path(journal_dir)
    res = ReplayResult(journal=str(journal_dir))
    segs = list_segments(journal_dir) if journal_dir.is_dir() else []
    res.segments = len(segs)
    if not journal_dir.is_dir():
        res.problems.append(f"{journal_dir}: no such directory")

    t0 = time.perf_counter()
    base = 0
    engine = None
    if snapshot_dir is not None:
        # A snapshot past the end of the journal is not usable (its commands are not in the journal):
        # find where the journal ends from its last segment alone.
        end = _journal_end(journal_dir, segs)
        state, path, problems = load_newest(snapshot_dir, max_cmd_seq=end)
        res.snapshot_problems = [f"{p}: cmd_seq {seq} is past the journal's end ({end}), not used"
                                 for seq, p in list_snapshots(snapshot_dir) if seq > end] + problems
        if state is not None:
            try:
                engine = engine_cls.from_state(state, **caps)
            except ValueError as exc:
                res.snapshot_problems.append(f"{path}: cannot be loaded: {exc}")
            else:
                res.snapshot = str(path)
                base = res.snapshot_cmd_seq = int(state["counters"][1])
    if engine is None:
        engine = engine_cls(**caps)
    res.load_s = time.perf_counter() - t0

    feeder = _Feeder(engine, count_events)
    t0 = time.perf_counter()
    reader = JournalReader(journal_dir)
    expected = None
    start = 1 if verify or not base else base + 1
    for first_seq, cmds in reader.read_from(start):
        n = len(cmds)
        if expected is None:
            res.first_seq = first_seq
        elif first_seq != expected:  # the reader checks this too; belt and braces
            res.problems.append(f"sequence jumps from {expected - 1} to {first_seq}")
            break
        expected = first_seq + n
        res.batches += 1
        res.records += n
        last = first_seq + n - 1
        if last <= base:
            continue
        if first_seq <= base:
            cmds = cmds[base + 1 - first_seq :]
        feeder.run(cmds)
    res.last_seq = (expected - 1) if expected is not None else 0
    res.damage = list(reader.report)
    if base and res.last_seq < base and res.damage:
        # The damage lies before the snapshot's commands end: the suffix may still be intact.
        suffix = JournalReader(journal_dir)
        for first_seq, cmds in suffix.read_from(base + 1):
            feeder.run(cmds)
            res.last_seq = first_seq + len(cmds) - 1
        res.damage += [d for d in suffix.report if d not in res.damage]
    if base and res.first_seq > base + 1:
        res.problems.append(f"journal starts at {res.first_seq}, after the snapshot's cmd_seq {base}: "
                            f"commands {base + 1}..{res.first_seq - 1} are missing")
    res.replay_s = time.perf_counter() - t0
    res.replayed = feeder.processed
    res.cmd_seq = engine.cmd_seq
    res.event_seq = engine.event_seq
    if count_events:
        res.events_by_kind = {KIND_NAMES.get(k, str(k)): int(c) for k, c in enumerate(feeder.kinds) if c}
    if engine.cmd_seq != max(res.last_seq, base):
        res.problems.append(f"engine cmd_seq {engine.cmd_seq} but the journal ends at {res.last_seq}")
    if hash_state:
        from .state import state_hash

        t0 = time.perf_counter()
        res.state_hash = state_hash(engine)
        res.hash_s = time.perf_counter() - t0
    return res, engine


def _journal_end(journal_dir: Path, segs) -> int:
    """The last valid sequence, reading only the last segment (0 for an empty journal)."""
    from .journal import JournalReader

    if not segs:
        return 0
    reader = JournalReader(journal_dir)
    for _ in reader.read_from(segs[-1][0]):
        pass
    end = reader.last_seq
    return end if end else segs[-1][0] - 1


def format_result(res: ReplayResult) -> str:
    lines = [f"journal {res.journal}: {res.segments} segment(s), {res.records} commands in {res.batches} batches"
             + (f" (seq {res.first_seq}..{res.last_seq})" if res.records else "")]
    if res.damage:
        lines.append(f"DAMAGE ({len(res.damage)}):")
        for d in res.damage:
            lines.append(f"  {d.where}: {d.segment} at offset {d.offset}, {d.bytes} bytes: {d.reason} "
                         f"(replay stops before seq {d.next_seq})")
    else:
        lines.append("every frame verified (magic, length, CRC32C, sequence)")
    for p in res.snapshot_problems:
        lines.append(f"snapshot skipped: {p}")
    if res.snapshot:
        lines.append(f"snapshot {res.snapshot} (cmd_seq {res.snapshot_cmd_seq}) loaded in {res.load_s * 1e3:.1f} ms")
    for p in res.problems:
        lines.append(f"PROBLEM: {p}")
    rate = res.replayed / res.replay_s if res.replay_s > 0 else 0.0
    lines.append(f"replayed {res.replayed} commands in {res.replay_s:.3f} s ({rate / 1e6:.2f} M/s)")
    lines.append(f"cmd_seq {res.cmd_seq}  event_seq {res.event_seq}")
    if res.events_by_kind:
        what = "events of the replayed commands" if res.snapshot else "events"
        lines.append(f"{what}: " + "  ".join(f"{k}={v}" for k, v in res.events_by_kind.items()))
    if res.state_hash:
        lines.append(f"state hash {res.state_hash}")
    return "\n".join(lines)

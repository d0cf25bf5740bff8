"""Crash recovery under kill -9 of the matcher process.

    python -m bench.crash [--kills 200] [--commands 60000] [--seed 1] [--json PATH]

Starts the engine's real processes (``python -m engine.process matcher|settlement|margin|risk``
on a private config), pushes a seeded config A stream (small: 200 accounts, 200 resting orders)
through the matcher's ZeroMQ input in batches, and SIGKILLs the matcher at seeded random points
(after a random batch, a random few ms later), restarting it each time.  Commands that were in the
dead matcher's socket are lost before journaling: they were never acknowledged, which is allowed.
At the end the engine is stopped cleanly and checked against the journal:

* acknowledged lost: the largest ``durable_seq`` the matcher ever reported and the largest event
  seq any worker ever applied must be covered by the final journal (``max(0, ack - journal)``),
  and the settlement ledger's fills must be exactly the rebuilt engine's fill events (by seq,
  price and qty);
* duplicated fills: ledger fill rows beyond the rebuilt engine's fill events;
* ledger = rebuilt engine: every account's balance (free + held), fees per asset, cursor;
* hash equal: one uninterrupted replay of the final journal (frame by frame: the matcher's batches, whose
  ends decide the BookLevel events and so every seq), and the journal replayed in pieces
  cut at every restart point (state exported and re-imported there, as a snapshot restart does),
  give the same ``state_hash``; the matcher's last heartbeat (cmd_seq, event_seq, open orders)
  agrees; the newest snapshot file the matcher wrote (if any) matches the replay at its cmd_seq;
* per-asset conservation: accounts' free + held + fees = the asset's outstanding deposits, in the
  engine, and every ledger entry balances.

A worker attached to the dead matcher's ring notices, makes its state durable and exits; the
harness starts it again, as ``xos run``'s supervisor does, and it attaches to the new ring
(``worker_restarts``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from engine.process import EXIT_PRODUCER_GONE, ROLES, WORKERS

_names = itertools.count()


def write_config(directory: Path, ring_capacity: int = 1 << 17, fsync: str = "off") -> Path:
    name = f"xos-crash-{os.getpid()}-{next(_names)}"
    lines = ["gateway.enabled = false", "marketdata.enabled = false",  # the matcher and the workers only
             "[engine]", f'name = "{name}"', f'data_dir = "{directory / "data"}"', f"ring_capacity = {ring_capacity}",
             "batch_max = 1024", f'fsync = "{fsync}"', "max_orders = 65536", "max_accounts = 8192",
             "[workers]", "heartbeat_s = 0.2", "stale_after_s = 30.0"]
    path = directory / "xos.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Cluster:
    """The engine's four processes, started and killed directly (no supervisor)."""

    def __init__(self, config_path: Path):
        from engine.config import load

        self.config_path = Path(config_path)
        self.cfg = load(str(config_path))
        self.procs: dict[str, subprocess.Popen] = {}
        self.worker_restarts = 0
        self.max_durable = 0          # the largest durable_seq any matcher reported
        self.max_worker_cursor = 0    # the largest event seq any worker reported applied
        self.log = self.cfg.data_path.parent / "processes.log"

    def beats(self) -> dict:
        from engine.process import read_heartbeats

        beats = read_heartbeats(self.cfg)
        m = beats.get("matcher", {})
        self.max_durable = max(self.max_durable, int(m.get("durable_seq", 0) or 0))
        for w in WORKERS:
            self.max_worker_cursor = max(self.max_worker_cursor, int(beats.get(w, {}).get("cursor", 0) or 0))
        return beats

    def spawn(self, role: str) -> subprocess.Popen:
        with open(self.log, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "engine.process", role, "--config", str(self.config_path)],
                                    stdout=log, stderr=log, start_new_session=True)
        self.procs[role] = proc
        return proc

    def wait_beat(self, role: str, states=("running",), timeout_s: float = 60.0, poll_s: float = 0.005) -> dict:
        proc = self.procs[role]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{role} exited with code {proc.returncode} (see {self.log})")
            beat = self.beats().get(role)
            if beat and beat.get("pid") == proc.pid and beat.get("state") in states:
                return beat
            time.sleep(poll_s)
        raise RuntimeError(f"{role} did not reach {states} within {timeout_s} s")

    def start(self) -> None:
        (self.cfg.data_path / "run").mkdir(parents=True, exist_ok=True)
        self.spawn("matcher")
        self.wait_beat("matcher")
        for w in WORKERS:
            self.spawn(w)
        for w in WORKERS:
            self.wait_beat(w)

    def _kill(self, role: str) -> None:
        proc = self.procs[role]
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def kill_matcher(self) -> float:
        """SIGKILL the matcher and start a new one; returns the seconds from its start to running.

        A worker attached to the dead matcher's ring notices, makes its state durable and exits
        (``EXIT_PRODUCER_GONE``); started again (as ``xos run``'s supervisor does) it attaches to
        the new ring.  A worker that was still looking for a live ring simply attaches to it.
        """
        from engine.ring import RingError, ring_status

        self._kill("matcher")
        t0 = time.perf_counter()
        self.spawn("matcher")
        deadline = time.monotonic() + 60
        while True:
            for w in WORKERS:
                code = self.procs[w].poll()
                if code is not None:
                    if code != EXIT_PRODUCER_GONE:
                        raise RuntimeError(f"{w} exited with code {code} after the matcher died (see {self.log})")
                    self.spawn(w)
                    self.worker_restarts += 1
            try:
                status = ring_status(self.cfg.ring_name)
            except (RingError, OSError):
                status = None
            if status and status["creator_pid"] == self.procs["matcher"].pid and {
                c["name"] for c in status["consumers"] if c["alive"] and c["pid"] == self.procs[c["name"]].pid
            } == set(WORKERS):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not attach to the restarted matcher's ring (see {self.log})")
            time.sleep(0.01)
        self.wait_beat("matcher")
        return time.perf_counter() - t0

    def wait_journaled(self, cmd_seq: int, timeout_s: float = 60.0) -> None:
        """Until the matcher reports commands up to ``cmd_seq`` journaled."""
        deadline = time.monotonic() + timeout_s
        while int(self.beats().get("matcher", {}).get("durable_seq", 0) or 0) < cmd_seq:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the matcher did not journal {cmd_seq} commands within {timeout_s:.0f} s")
            time.sleep(0.02)

    def wait_settled(self, timeout_s: float = 120.0, quiet_s: float = 0.6) -> dict:
        """Until the matcher's cmd_seq stops moving and every worker has applied every event."""
        deadline = time.monotonic() + timeout_s
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            for role, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{role} exited with code {proc.returncode} (see {self.log})")
            beats = self.beats()
            m = beats.get("matcher", {})
            key = (m.get("cmd_seq"), m.get("event_seq"))
            if key != last:
                last, since = key, time.monotonic()
            caught_up = all(beats.get(w, {}).get("cursor") == m.get("event_seq") for w in WORKERS)
            if caught_up and m.get("state") == "running" and time.monotonic() - since >= quiet_s:
                return beats
            time.sleep(0.05)
        raise AssertionError(f"not settled after {timeout_s} s: {self.beats()}")

    def stop(self) -> None:
        for role in ROLES:  # matcher first: it drains, closes the journal, waits for the workers
            proc = self.procs.get(role)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        Path(f"/dev/shm/{self.cfg.ring_name}").unlink(missing_ok=True)


def check(cluster: Cluster, last_beats: dict) -> dict:
    """Rebuild the engine from the final journal and compare everything (see the module doc)."""
    from engine import snapshot as snap
    from engine.journal import JournalReader
    from engine.matcher import Engine
    from engine.records import COMMAND_DTYPE, Ev
    from engine.state import state_hash
    from engine.workers.settlement import SettlementLedger

    cfg = cluster.cfg
    caps = cfg.engine.capacities()
    reader = JournalReader(cfg.data_path / "journal")
    # each frame as the batch the matcher ran (a batch's BookLevels, and so the events' seqs, follow its ends)
    frames = [commands for _, commands in reader.read_from()]
    damage = [str(d) for d in reader.report]
    engine = Engine(**caps)
    none = np.zeros(0, COMMAND_DTYPE)
    events = np.concatenate([engine.process(commands) for commands in frames] or [engine.process(none)])
    journaled = int(engine.cmd_seq)
    one_pass = state_hash(engine)

    # pieces cut where the matcher restarted (its replayed counts), as a snapshot restart would
    pieces_engine = Engine(**caps)
    cuts = {c for c in cluster.restart_points if 0 < c < journaled}
    for commands in frames:
        if pieces_engine.cmd_seq in cuts:
            pieces_engine = Engine.from_state(pieces_engine.export_state(), **caps)
        pieces_engine.process_count(commands)
    pieces_hash = state_hash(pieces_engine)

    fills = events[events["kind"] == Ev.FILL]
    m = last_beats.get("matcher", {})
    out = {
        "commands_journaled": journaled,
        "journal_damage": damage,
        "journal_io": m.get("journal_io"),  # as the last matcher reported it
        "max_durable_seq_seen": cluster.max_durable,
        "max_worker_cursor_seen": cluster.max_worker_cursor,
        "matcher_heartbeat_agrees": (m.get("cmd_seq"), m.get("event_seq"), m.get("open_orders"))
        == (engine.cmd_seq, engine.event_seq, engine.open_orders),
        "hash_one_pass": one_pass,
        "hash_equal": one_pass == pieces_hash,
        "fills": int(len(fills)),
    }
    lost = max(0, cluster.max_durable - journaled)
    if cluster.max_worker_cursor > engine.event_seq:
        lost = max(lost, 1)  # a worker applied an event the journal cannot produce

    ledger_path = cfg.ledger_path
    ledger = SettlementLedger(ledger_path)
    try:
        ledger.check()
        out["ledger_cursor_ok"] = ledger.cursor == engine.event_seq
        mismatched = []
        for account in engine.accounts():
            want = {a: f + h for a, (f, h) in engine.balances(account).items() if f + h}
            got = {a: v for a, v in ledger.balances(account).items() if v}
            if want != got:
                mismatched.append(account)
        fee_ok = all(ledger.fee_balance(a.asset_id) == engine.fees(a.asset_id) for a in engine.assets())
    finally:
        ledger.close()
    out["ledger_accounts_mismatched"] = len(mismatched)
    out["ledger_fees_ok"] = fee_ok
    db = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, price, qty FROM fills").fetchall()
    finally:
        db.close()
    per_seq = Counter(r[0] for r in rows)
    out["duplicated_fills"] = sum(c - 1 for c in per_seq.values() if c > 1)
    want = {(int(s), int(p), int(q)) for s, p, q in zip(fills["seq"], fills["price"], fills["qty"])}
    got = {tuple(int(x) for x in r) for r in rows}
    out["ledger_fills_equal"] = got == want and len(rows) == len(want)
    if got - want:  # the ledger holds fills the journal does not produce: acknowledged work lost
        lost = max(lost, len(got - want))
    out["acknowledged_lost"] = lost

    state = engine.export_state()
    totals = {}
    for row in state["balances"]:
        totals[int(row["asset"])] = totals.get(int(row["asset"]), 0) + int(row["free"]) + int(row["held"])
    out["conserved"] = all(totals.get(int(a["asset"]), 0) + int(a["fees"]) == int(a["outstanding"])
                           for a in state["assets"])

    snaps = sorted(cfg.data_path.rglob("snapshot-*.xsnap"))
    out["snapshots_found"] = len(snaps)
    if snaps:
        loaded, path, problems = snap.load_newest(snaps[-1].parent)
        out["snapshot_problems"] = problems
        if loaded is not None:
            at = int(loaded["counters"][1])
            ref = Engine(**caps)
            for commands in frames:  # the frames up to the snapshot's (it is taken between batches)
                if ref.cmd_seq >= at:
                    break
                ref.process_count(commands[:at - ref.cmd_seq])
            out["snapshot_hash_equal"] = state_hash(Engine.from_state(loaded, **caps)) == state_hash(ref)
    return out


def run(kills: int, commands: int = 60_000, seed: int = 1, batch: int = 100, work: Path | None = None,
        progress=None, fsync: str = "off") -> dict:
    from bench.orders import CONFIGS, generate
    from engine.process import InputClient

    work = Path(work or tempfile.mkdtemp(prefix="xos-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    w = generate(CONFIGS["A"].replace(commands=commands, accounts=200, orders=200, seed=seed))
    stream = np.concatenate([w.setup, w.prefill, w.stream])
    n_batches = (len(stream) + batch - 1) // batch
    rng = random.Random(seed)
    first = (len(w.setup) + len(w.prefill)) // batch + 1  # not while listing: keep the workload meaningful
    kill_at = sorted(rng.sample(range(first, n_batches), min(kills, n_batches - first)))
    cluster = Cluster(write_config(work, fsync=fsync))
    cluster.restart_points = []
    restart_s = []
    t_start = time.perf_counter()
    cluster.start()
    client = InputClient(cluster.cfg.input_address)
    try:
        k = 0
        for b in range(n_batches):
            client.send(stream[b * batch : (b + 1) * batch])
            if b == first - 1:
                # the listings and the prefill journaled before any kill: a kill drops what waits in the
                # matcher's input, and without its markets the whole stream would be rejected (a slower
                # matcher, fsync="always", has more waiting when the first kill comes)
                cluster.wait_journaled(len(w.setup) + len(w.prefill))
            while k < len(kill_at) and kill_at[k] == b:
                time.sleep(rng.random() * 0.01)  # land anywhere in the matcher's loop
                restart_s.append(cluster.kill_matcher())
                cluster.restart_points.append(int(cluster.beats()["matcher"].get("replayed", 0)))
                k += 1
                if progress and k % 10 == 0:
                    progress(f"{k} kills, restart median {statistics.median(restart_s) * 1e3:.0f} ms")
            if b % 20 == 0:
                cluster.beats()
        client.close()
        beats = cluster.wait_settled()
    finally:
        cluster.stop()
    wall = time.perf_counter() - t_start
    out = {"kills": len(restart_s), "commands_sent": int(len(stream)), "seed": seed, "batch": batch, "fsync": fsync,
           "worker_restarts": cluster.worker_restarts, "wall_s": wall}
    out.update(check(cluster, beats))
    if restart_s:
        qs = np.percentile(np.array(restart_s) * 1e3, [50, 90, 99, 100])
        out.update(restart_ms_p50=float(qs[0]), restart_ms_p90=float(qs[1]), restart_ms_p99=float(qs[2]),
                   restart_ms_max=float(qs[3]))
    out["ok"] = bool(out["acknowledged_lost"] == 0 and out["duplicated_fills"] == 0 and out["hash_equal"]
                     and out["conserved"] and out["ledger_fills_equal"] and out["ledger_cursor_ok"]
                     and out["ledger_accounts_mismatched"] == 0 and out["ledger_fees_ok"]
                     and out["matcher_heartbeat_agrees"] and not out["journal_damage"]
                     and out.get("snapshot_hash_equal", True))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--commands", type=int, default=60_000, help="config A stream commands (default 60,000)")
    p.add_argument("--batch", type=int, default=100, help="commands per input message")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", help="work directory (default: a temporary one)")
    p.add_argument("--fsync", choices=("off", "always"), default="off",
                   help="the journal's mode (always: whole blocks with O_DIRECT into zero-filled spares)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    out = run(args.kills, args.commands, args.seed, args.batch, Path(args.dir) if args.dir else None,
              progress=lambda msg: print(msg, flush=True), fsync=args.fsync)
    for key in ("kills", "commands_sent", "commands_journaled", "acknowledged_lost", "duplicated_fills", "fills",
                "hash_equal", "conserved", "ledger_fills_equal", "matcher_heartbeat_agrees", "worker_restarts",
                "restart_ms_p50", "restart_ms_p90", "restart_ms_p99", "restart_ms_max", "snapshots_found", "ok"):
        if key in out:
            print(f"{key:<26} {out[key]}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)

"""The engine's processes: the matcher stage and the ring-consuming workers.

    python -m engine.process matcher [--config PATH]
    python -m engine.process settlement|margin|risk [--config PATH]
    python -m engine.process gateway|marketdata|feeds [--config PATH]

``xos run`` (``engine.supervisor``) starts one of each (the services when their
config section is enabled), watches their heartbeats and restarts a crashed one.  The matcher stage is the only writer
of engine state: it takes command batches from its ZeroMQ PULL socket (the
one input every producer pushes to: gateway, feeds, the risk worker),
journals them, runs them through the matcher and publishes the events to the
shared-memory ring.  Workers read the ring and send commands back only
through that input.
"""
from __future__ import annotations

import os

# Before numpy loads: idle BLAS threads would spin against the engine's processes on 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import faulthandler
import json
import pickle
import signal
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from gateway.intake import drain_records  # the matcher's intake in C, through pyzmq's libzmq (light: no gateway stack)

from .api import whole_units
from .config import KINDS, Config, ConfigError, load
from .records import COMMAND_DTYPE, Cmd, Ev, fill_command, pack_market_assets, pack_market_params, pack_symbol

WORKERS = ("settlement", "margin", "risk")  # the state workers
SERVICES = ("gateway", "marketdata", "feeds")  # started when their config section is enabled
ROLES = ("matcher",) + WORKERS + SERVICES
# Off the path from an order to its answer (matcher -> gateway): these run as SCHED_BATCH, so on few cores
# the matcher's wake-up of them at a batch does not hand them the CPU ahead of the matcher and the gateway.
OFF_ANSWER_PATH = WORKERS + ("marketdata",)
RING_SERVICES = ("gateway", "marketdata")  # services that read the event ring (feeds only pushes commands)
EXIT_PRODUCER_GONE = 3  # a worker whose matcher died exits with this; the supervisor restarts it
POLL_MS = 100


class Stop:
    """Set by SIGTERM/SIGINT; loops finish their batch, drain and exit."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum, frame):
            cls.requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


SUPERVISOR_PID_ENV = "XOS_SUPERVISOR_PID"  # set by the supervisor in the environment of each process it starts


def stop_if_orphaned(role: str) -> None:
    """A process whose supervisor is gone (killed, so it could not stop its processes in order) stops
    as on SIGTERM: left running it would hold the ring, the ports and the data directory with no one to
    restart it, and the next ``xos run`` would refuse to start.  Checked at every heartbeat; a process
    started by hand (no ``XOS_SUPERVISOR_PID``) is left alone."""
    supervisor = int(os.environ.get(SUPERVISOR_PID_ENV) or 0)
    if supervisor and os.getppid() != supervisor and not Stop.requested:
        print(f"xos {role}: its supervisor (pid {supervisor}) is gone; stopping", file=sys.stderr, flush=True)
        Stop.requested = True


class Heartbeat:
    """A JSON status file per process (``DATA/run/ROLE.json``), rewritten atomically every beat.

    The supervisor restarts a process whose file goes stale; ``xos status`` prints them.
    """

    def __init__(self, cfg: Config, role: str):
        self.dir = cfg.data_path / "run"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{role}.json"
        self.role = role
        self.every = cfg.workers.heartbeat_s
        self.last = 0.0
        self.started = time.time()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every

    def beat(self, **counters) -> None:
        self.last = time.monotonic()
        stop_if_orphaned(self.role)
        doc = {"role": self.role, "pid": os.getpid(), "time": time.time(), "started": self.started, **counters}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)


def enabled_services(cfg: Config) -> tuple[str, ...]:
    feeds = getattr(cfg, "feeds", None)  # the feeds section arrives with the feeds issue
    enabled = {"gateway": cfg.gateway.enabled, "marketdata": cfg.marketdata.enabled,
               "feeds": bool(feeds is not None and feeds.enabled)}
    return tuple(role for role in SERVICES if enabled[role])


def ring_consumers(cfg: Config) -> tuple[str, ...]:
    """The consumer slots the matcher reserves in a new ring, so none of them misses an event."""
    return WORKERS + tuple(role for role in enabled_services(cfg) if role in RING_SERVICES)


def durable_cursor_roles(cfg: Config) -> tuple[str, ...]:
    """Consumers whose state is rebuilt from the ring after their checkpoint; the gateway needs no history."""
    return WORKERS + (("marketdata",) if cfg.marketdata.enabled else ())


def read_heartbeats(cfg: Config) -> dict[str, dict]:
    out = {}
    for role in ROLES:
        path = cfg.data_path / "run" / f"{role}.json"
        try:
            out[role] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def workers_durable_cursor(cfg: Config) -> int | None:
    """The oldest event a worker may still need, so a restart never starts after it.

    Taken from the ring a crashed engine left behind (its consumer cursors only move as far as
    each worker's state is durable) and from the workers' last heartbeats; None when no worker
    has ever reported.
    """
    from .ring import RingError, ring_status

    roles = durable_cursor_roles(cfg)
    cursors = []
    try:
        status = ring_status(cfg.ring_name)
        cursors += [c["cursor"] for c in status["consumers"] if c["name"] in roles]
    except (RingError, OSError):
        pass
    beats = read_heartbeats(cfg)
    cursors += [beats[w]["ring_cursor"] for w in roles if "ring_cursor" in beats.get(w, {})]
    return min(cursors) if cursors else None


def bootstrap_commands(cfg: Config) -> np.ndarray:
    """The listings, demo deposits and venues of the config, as commands for a fresh journal."""
    from .venues import venue_commands

    ids = cfg.asset_ids()
    rows = []
    for a in cfg.assets:
        lo, hi = pack_symbol(a.symbol)
        rows.append(dict(kind=Cmd.ADD_ASSET, market=a.id, price=a.decimals, id=lo, aux=hi))
    for m in cfg.markets:
        rows.append(
            dict(
                kind=Cmd.ADD_MARKET,
                market=m.id,
                venue=m.venue,
                side=int(KINDS[m.kind]),
                account=pack_market_assets(ids[m.base], ids[m.quote]),
                price=m.tick_size,
                qty=m.lot_size,
                id=m.min_size,
                aux=pack_market_params(m.maker_bps, m.taker_bps, m.band_bps),
            )
        )
    for acct in cfg.accounts:
        for sym, amount in acct.deposits.items():
            rows.append(dict(kind=Cmd.DEPOSIT, account=acct.id, market=ids[sym], qty=amount))
    out = np.zeros(len(rows), dtype=COMMAND_DTYPE)
    for i, row in enumerate(rows):
        fill_command(out[i], **row)
    return np.concatenate([out, venue_commands(cfg)])  # operators stake from their deposits


def checked_bootstrap(cfg: Config) -> np.ndarray:
    """``bootstrap_commands``, tried first on a scratch matcher of the config's sizes: a command it refuses (a
    deposit past the matcher's money bound, a venue staking more than its operator holds, ...) is a ConfigError
    naming each such command and why, raised before anything is journaled, where the matcher used to journal the
    refusal and run on with part of the config left out, saying nothing."""
    from .codes import describe
    from .matcher import Engine

    commands = bootstrap_commands(cfg)
    trial = commands.copy()
    trial["ts"] = time.time_ns()  # stamped as ``run_batch`` stamps them
    # (a bootstrap places no order: a small order table keeps the scratch matcher quick to make)
    events = Engine(**{**cfg.engine.capacities(), "max_orders": 16}).process(trial)
    refused = events[events["kind"] == Ev.REJECTED]
    if len(refused):
        lines = []
        for e in refused:
            c = commands[int(e["cmd_seq"]) - 1]
            lines.append(f"  {Cmd(int(c['kind'])).name} account {int(c['account'])} venue {int(c['venue'])} market "
                         f"{int(c['market'])} qty {int(c['qty'])}: {describe(int(e['code']))}")
        raise ConfigError(f"config error in {cfg.path}: the matcher refuses {len(refused)} of its bootstrap commands "
                          "(the listings, deposits and venues it sets up):\n" + "\n".join(lines))
    return commands


class InputClient:
    """Pushes command batches into the matcher's input (tools, tests, benchmarks, workers)."""

    def __init__(self, address: str, context: zmq.Context | None = None):
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, 100_000)
        self.socket.connect(address)

    def send(self, commands: np.ndarray) -> None:
        if commands.dtype != COMMAND_DTYPE:
            raise TypeError(f"commands must be COMMAND_DTYPE, not {commands.dtype}")
        if len(commands):
            # copied (a memcpy): a zero-copy send costs a round trip through pyzmq's garbage thread
            self.socket.send(np.ascontiguousarray(commands).data)

    def close(self) -> None:
        self.socket.close(linger=2000)


class MatcherStage:
    """Input -> journal (group commit) -> matcher -> ring, one batch at a time."""

    def __init__(self, cfg: Config):
        from .cmdring import CommandRing
        from .journal import JournalReader, JournalWriter
        from .matcher import Engine
        from .ring import EventRing
        from .snapshot import SnapshotWriter, load_newest

        self.cfg = cfg
        e = cfg.engine
        self.engine = Engine(**e.capacities())
        journal_dir = cfg.data_path / "journal"
        journal_dir.mkdir(parents=True, exist_ok=True)
        self.journaling = e.journal
        # Recovery: the newest snapshot that no worker is behind, then the journal after it.
        # The suffix's events are published again into the fresh ring, numbered on from the
        # snapshot, so each worker finds every event after its own durable cursor (and skips
        # what it already has).
        self.snapshots = SnapshotWriter(cfg.data_path / "snapshots", keep=e.snapshot_keep) if self.journaling else None
        self.restored_from = None
        if self.journaling:
            # Opening the journal validates its tail (a torn one is cut); no snapshot past it.
            self.journal = JournalWriter(journal_dir, fsync=e.fsync)
            state, path, problems = load_newest(cfg.data_path / "snapshots", max_event_seq=workers_durable_cursor(cfg),
                                                max_cmd_seq=self.journal.last_seq)
            for problem in problems:
                print(f"xos matcher: snapshot skipped: {problem}", file=sys.stderr, flush=True)
            if state is not None:
                self.engine = Engine.from_state(state, **e.capacities())
                self.restored_from = str(path)
        self.ring = EventRing.create(cfg.ring_name, e.ring_capacity, consumers=ring_consumers(cfg),
                                     start=self.engine.event_seq)
        # SIGTERM / SIGINT must reach this process even while it waits for room behind a consumer
        # that does not read (a stopped or hung worker): the signal's wake-up byte ends the wait,
        # and what was not published is in the journal for the next run.
        self.signal_fds = os.pipe2(os.O_NONBLOCK)
        signal.set_wakeup_fd(self.signal_fds[1], warn_on_full_buffer=False)
        self.ring.interrupt_waits_on(self.signal_fds[0])
        # the gateway's commands come through shared memory, the other producers' (feeds, workers, tools) over
        # ZeroMQ: one poll waits for both, the ring's doorbell a FIFO beside it.  Taken over before the replay, for
        # the heartbeat's marks: each command a dead predecessor took from the command ring (those before
        # ``command_ring_from``) has its events in the replay (a command seq up to ``journal_end``; all of them by
        # event ``replayed_to``, once replayed), or never ran.  The gateway answers the latter from them.
        self.command_ring = CommandRing.consumer(cfg.command_ring_name, cfg.command_ring_capacity)
        if self.command_ring.replaced:
            print(f"xos matcher: {self.command_ring.replaced}", file=sys.stderr, flush=True)
        self.marks = {"command_ring_from": self.command_ring.stats["tail"],
                      "journal_end": self.journal.last_seq if self.journaling else 0}
        self.heartbeat = Heartbeat(cfg, "matcher")
        self.heartbeat.beat(state="replaying", **self.marks)
        replayed = 0
        if self.journaling:
            for first_seq, commands in JournalReader(journal_dir).read_from(self.engine.cmd_seq + 1):
                self.engine.process_count(commands)
                self.engine.publish_to(self.ring, first_seq + len(commands) - 1)
                replayed += len(commands)
                if self.ring.interrupted:
                    break
                if self.heartbeat.due():  # a long replay is not a silent process
                    self.heartbeat.beat(state="replaying", replayed=replayed, cmd_seq=self.engine.cmd_seq,
                                        **self.marks)
        self.replayed = replayed
        self.replayed_to = self.engine.event_seq
        self.last_snapshot = time.monotonic()
        if not self.journaling:
            self.journal = None
        self.context = zmq.Context()
        self.input = self.context.socket(zmq.PULL)
        self.input.setsockopt(zmq.RCVHWM, 100_000)
        self.input.bind(cfg.input_address)
        self.gateway_first = False  # the two inputs take turns going first: neither starves the other
        self.zmq_quiet = False  # the last poll found the ZeroMQ input empty (``wait_input``)
        self.input_polled = [(self.input, zmq.POLLIN), (self.command_ring.fileno, zmq.POLLIN)]
        self.batch = np.zeros(e.batch_max, dtype=COMMAND_DTYPE)
        self.batch_bytes = self.batch.view(np.uint8)  # what drain_records copies whole messages into
        self.pending: list[np.ndarray] = []
        self.malformed = 0
        self.commands = 0
        if self.engine.cmd_seq == 0:
            self.run_batch(checked_bootstrap(cfg))

    def take_input(self, timeout_ms: int) -> int:
        """Move what the inputs hold (up to one batch) into ``self.batch``; returns the count."""
        n = 0
        self.zmq_quiet = False
        while self.pending:
            n, rest = self.admit(self.pending[0], n)
            if len(rest):
                self.pending[0] = rest
                return n  # full, as far as whole multi-leg orders go
            self.pending.pop(0)
        if n == 0 and not self.wait_input(timeout_ms):
            return 0
        self.gateway_first = not self.gateway_first
        if self.gateway_first:
            n = self.take_commands(n)
        if n < len(self.batch) and not self.zmq_quiet:
            n = self.drain_input(n)
        if not self.gateway_first:
            n = self.take_commands(n)
        return n

    def wait_input(self, timeout_ms: int) -> bool:
        """Whether either input may hold commands, waiting up to ``timeout_ms`` for them.  Before sleeping
        the ring is armed: then, and only then, does the gateway ring the doorbell (a syscall per forward)."""
        if self.command_ring.available() or not self.command_ring.arm():
            return True
        try:
            ready = zmq.zmq_poll(self.input_polled, timeout_ms)  # (Socket.poll makes a Poller per call)
        finally:
            self.command_ring.disarm()
        # Only the doorbell rang: the ZeroMQ input had nothing at the poll, and this batch does not look (a recv
        # on an empty socket cost a lone order 8 us: libzmq polls its mailbox).  What comes after the poll, the
        # next poll sees; while the ring keeps the matcher busy it never polls, and drains ZeroMQ every batch.
        self.zmq_quiet = bool(ready) and all(polled is not self.input for polled, _ in ready)
        return bool(ready)

    def take_commands(self, n: int) -> int:
        """The gateway's commands from the ring, after the batch's first ``n``: copied straight from the slots into
        the batch and taken in one call, never part of a multi-leg order (``CommandRing.take_into``; a peek, the cut
        and an advance from here took a lone order 19 us of CPU at 1,000/s, this 5 us)."""
        if not self.command_ring.available():
            return n
        return self.command_ring.take_into(self.batch_bytes, n, len(self.batch) - n)

    def drain_input(self, n: int) -> int:
        """The other producers' messages from ZeroMQ, after the batch's first ``n``: whole messages straight into
        the batch, in C; one that is not whole records is dropped and counted, never half-applied; the first that
        does not fit is cut here."""
        size = COMMAND_DTYPE.itemsize
        end, malformed, spill = drain_records(self.input.underlying, self.batch_bytes, n * size, size)
        self.malformed += malformed
        n = end // size
        if spill is not None:
            n, rest = self.admit(np.frombuffer(spill, dtype=COMMAND_DTYPE), n)
            self.pending.append(rest)  # it did not fit: something is left
        return n

    def admit(self, commands: np.ndarray, n: int) -> tuple[int, np.ndarray]:
        """Copy as many of ``commands`` as ``cut`` lets into the batch after its first ``n``; returns the new
        count and the commands left.  As bytes: numpy copies a structured dtype field by field (~100 us per
        1,000 commands), bytes in one memcpy (~4 us)."""
        size = COMMAND_DTYPE.itemsize
        k = self.cut(commands, len(self.batch) - n, n)
        self.batch_bytes[n * size:(n + k) * size] = commands[:k].view(np.uint8)
        return n + k, commands[k:]

    @staticmethod
    def cut(commands: np.ndarray, room: int, taken: int) -> int:
        """How many of ``commands`` go into a batch with ``room`` left: never part of a multi-leg order (its
        header and legs reach the matcher in one batch), unless the batch is empty and too small for it."""
        k = min(room, len(commands))
        if k == len(commands):
            return k
        whole = whole_units(commands, k)
        return whole if whole or taken else k

    def run_batch(self, commands: np.ndarray) -> None:
        # The engine clock: wall time stamped here, journaled with the command, so a
        # replay sees the same times (the matcher never lets its clock go back).
        commands["ts"] = time.time_ns()
        if self.journal is not None:
            self.journal.append_array(commands, self.engine.cmd_seq + 1)
            durable = self.journal.commit()
        else:
            durable = 0
        self.engine.process_count(commands)
        self.engine.publish_to(self.ring, durable)
        self.commands += len(commands)

    def take_snapshot(self) -> None:
        """Capture the state (the only part that stalls matching) and hand it to the writer thread."""
        if self.snapshots is not None:
            # an idle writer holds no earlier export, so its buffers can be filled again
            self.snapshots.submit(self.engine.export_state(reuse_buffers=not self.snapshots.busy))
        self.last_snapshot = time.monotonic()

    def journal_mode(self) -> dict:
        """How the journal writes: ``journal_io`` o_direct (fsync always, whole blocks), page_cache (fsync
        always on a file system without O_DIRECT) or fsync_off; ``journal_spare`` the zero-filled spare
        segment's state (ready, filling, or why none can be made)."""
        j = self.journal
        if j is None:
            return {}
        io = "fsync_off" if not j.fsync_always else "o_direct" if j.direct else "page_cache"
        # commits and their durable writes' time: the matcher's cycle under load is mostly these
        counts = {"journal_commits": j.commits, "journal_fsyncs": j.fsyncs, "journal_fsync_ns": j.fsync_ns,
                  "journal_max_fsync_ns": j.max_fsync_ns}
        spare = {"journal_spare": j.spare} if j.fsync_always else {}
        return {"journal_io": io, **spare, **counts}

    def counters(self) -> dict:
        return {
            "commands": self.commands,
            "replayed": self.replayed,
            "replayed_to": self.replayed_to,
            **self.marks,
            "restored_from": self.restored_from,
            "cmd_seq": self.engine.cmd_seq,
            "event_seq": self.engine.event_seq,
            "durable_seq": self.journal.durable_seq if self.journal is not None else 0,
            **self.journal_mode(),
            "open_orders": self.engine.open_orders,
            "malformed": self.malformed,
            "ring_wait_ns": self.ring.wait_ns,
        }

    def run(self) -> None:
        self.heartbeat.beat(state="running", **self.counters())
        while not Stop.requested and not self.ring.interrupted:
            n = self.take_input(POLL_MS)
            if n:
                self.run_batch(self.batch[:n])
            interval = self.cfg.engine.snapshot_interval_s
            if interval and time.monotonic() - self.last_snapshot >= interval:
                self.take_snapshot()
            if self.heartbeat.due():
                self.heartbeat.beat(state="running", **self.counters())
        while not self.ring.interrupted:  # drain what producers already sent
            n = self.take_input(0)
            if not n:
                break
            self.run_batch(self.batch[:n])
        self.close()

    def close(self) -> None:
        self.command_ring.close()
        self.input.close(linger=0)
        self.context.term()
        address = self.cfg.input_address
        if address.startswith("ipc://"):
            Path(address[len("ipc://"):]).unlink(missing_ok=True)
        if self.journal is not None:
            self.journal.close()
        if not self.ring.interrupted:  # else a consumer is not reading: nothing to wait for
            self.wait_for_consumers(timeout_s=10.0)
        if self.snapshots is not None:
            self.take_snapshot()
            self.snapshots.close()
        self.heartbeat.beat(state="stopped", **self.counters())
        self.ring.close(unlink=True)
        signal.set_wakeup_fd(-1)
        for fd in self.signal_fds:
            os.close(fd)

    def wait_for_consumers(self, timeout_s: float) -> None:
        """Give running workers the chance to read everything before the ring goes away."""
        from .ring import ring_status

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = ring_status(self.cfg.ring_name)
            if all(c["lag"] == 0 or not c["alive"] for c in status["consumers"]):
                return
            time.sleep(0.05)


def latency_histogram():
    """A worker's latency histogram: 1 ns to a minute, 3 significant digits."""
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, 60_000_000_000, 3)


def histogram_counts(hist) -> dict:
    """``hist``'s non-zero counts by index, for a heartbeat: a reader subtracts an earlier beat's
    (``percentiles_between``) for the latency of a window alone, e.g. a benchmark's timed part."""
    counts = np.ctypeslib.as_array(hist.counts)[: hist.counts_len]
    index = np.flatnonzero(counts)
    return {"index": index.tolist(), "count": counts[index].tolist()}


def percentiles_between(before: dict, after: dict, percentiles) -> dict:
    """The percentiles of what a latency histogram recorded between two of its ``histogram_counts``."""
    hist = latency_histogram()
    counts = dict(zip(after["index"], after["count"]))
    for i, n in zip(before["index"], before["count"]):
        counts[i] = counts.get(i, 0) - n
        if counts[i] < 0:
            raise ValueError(f"the later counts hold fewer at index {i} than the earlier: not one histogram's "
                             f"(a process restarted between them?)")
    for i, n in counts.items():
        if n:
            hist.record_value(hist.get_value_from_index(i), n)
    return histogram_percentiles(hist, percentiles)


def histogram_percentiles(hist, percentiles) -> dict:
    """``hist.get_percentile_to_value_dict(percentiles)`` with numpy: the same values, without a
    Python loop over the ~28,000 counts (it took a worker a fifth of its time at 20 heartbeats/s)."""
    total = hist.get_total_count()
    if total == 0:
        return {}
    cumulative = np.cumsum(np.ctypeslib.as_array(hist.counts)[: hist.counts_len])
    out = {}
    for p in percentiles:
        index = int(np.searchsorted(cumulative, hist.get_target_count_at_percentile(p)))
        out[p] = hist.get_highest_equivalent_value(hist.get_value_from_index(index))
    return out


DURABLE_ROLES = {"settlement"}  # their own store commits the cursor with each batch
# a worker's checkpoints take at most about this share of its time: a costly one (config B's margin book took 0.4 s)
# comes less often than every workers.checkpoint_s and every idle moment
CHECKPOINT_SHARE = 0.2
TAKE_MAX = 131072  # events a worker applies at once: fewer, larger transactions and numpy passes


class Checkpoint:
    """A worker core pickled atomically with its cursor (``DATA/run/ROLE.ckpt``)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self):
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return pickle.loads(data)

    def save(self, core) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(core, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def attach_live(cfg: Config, role: str):
    """Attach to the live event ring as consumer ``role``, its cursor where the ring keeps events
    for it from.  The matcher creates the ring, so a consumer may start first or find a dead
    engine's ring: it waits up to 60 s for one whose producer lives."""
    from .ring import RingConsumer, RingError

    deadline = time.monotonic() + 60.0
    while True:
        try:
            consumer = RingConsumer.attach(cfg.ring_name, role)
            if consumer.producer_alive():
                break
            consumer.detach()
        except RingError:
            pass
        if time.monotonic() > deadline or Stop.requested:
            raise RingError(f"no live event ring {cfg.ring_name} within 60 s (is the matcher running?)")
        time.sleep(0.05)
    return consumer


def resume_at(consumer, resume: int) -> None:
    """Position ``consumer`` to read seq ``resume`` next (its core has applied everything before).
    A ring that no longer holds ``resume`` is a gap and raises, except a fresh ring replaying from
    seq 1 (the matcher restarted), whose events up to ``resume`` the core skips."""
    from .ring import RingError

    if resume != consumer.cursor + 1:
        try:
            consumer.seek(resume)
        except RingError:
            if resume < consumer.cursor + 1:
                raise


def beat_or_leave(stage, role: str) -> bool:
    """The heartbeat of a ring-consuming stage, when due.  True once the matcher is gone: what the
    stage applied is made durable up to its cursor first, and it leaves to reattach (the restarted
    matcher republishes the rest into a new ring)."""
    if not stage.heartbeat.due():
        return False
    if not stage.consumer.producer_alive():
        stage.make_durable()
        stage.heartbeat.beat(state="producer gone", **stage.counters())
        print(f"xos {role}: the matcher is gone; leaving to reattach", file=sys.stderr, flush=True)
        return True
    stage.heartbeat.beat(state="running", **stage.counters())
    return False


# a core's views, published as DATA/run/ROLE-NAME.npy: (NAME, the core's method)
VIEWS = (("view", "snapshot"), ("positions", "positions_view"), ("balances", "balances_view"))


def has_views(core) -> bool:
    return any(hasattr(core, method) for _, method in VIEWS)


def publish_views(core, run: Path, role: str) -> list[str]:
    """A core with per-account views (margin: equity and margin use, its positions with their liquidation prices,
    its balances) publishes them for the gateway and the CLI as ``RUN/ROLE-NAME.npy``, each replaced atomically,
    then ``ROLE-views.json`` with its cursor: the views a reader finds after reading that are at least as new.
    A view that cannot be made (its values overflow) must not stop the worker: its file is removed, not left older
    than the cursor says, and the reason returned; one made without some accounts (the margin view: each account is
    valued alone, ``valued`` False where it could not be) is published, and the reason returned."""
    if not has_views(core):
        return []
    errors = []
    for name, method in VIEWS:
        make = getattr(core, method, None)
        if make is None:
            continue
        path = run / f"{role}-{name}.npy"
        try:
            view = make()
        except OverflowError as exc:
            view = getattr(exc, "partial", None)
            if view is None:
                errors.append(f"{name} not published: {exc}")
                path.unlink(missing_ok=True)
                continue
            errors.append(f"{name} published without them: {exc}")
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, view)
        os.replace(tmp, path)
    views = run / f"{role}-views.json"
    views.with_suffix(".tmp").write_text(json.dumps({"cursor": core.cursor}))
    os.replace(views.with_suffix(".tmp"), views)
    return errors


class WorkerStage:
    """Ring -> worker core; commands the core returns go back through the matcher's input.

    A worker consumes ring events only as far as its state is durable, so a restarted worker
    finds in the ring everything after its durable cursor: settlement after each batch (its
    SQLite transaction holds the cursor), margin and risk at each checkpoint.
    """

    def __init__(self, cfg: Config, role: str):
        from .workers import make_core

        self.cfg = cfg
        self.role = role
        self.durable = role in DURABLE_ROLES
        self.checkpoint = None if self.durable else Checkpoint(cfg.data_path / "run" / f"{role}.ckpt")
        restored = self.checkpoint.load() if self.checkpoint else None
        self.core = restored if restored is not None else make_core(role, cfg)
        self.consumer = attach_live(cfg, role)
        self.consumer.nap_ns = cfg.workers.nap_us * 1000  # off the order's answer path: looks, unwoken
        resume_at(self.consumer, self.core.cursor + 1)
        self.feedback = InputClient(cfg.input_address)
        self.heartbeat = Heartbeat(cfg, role)
        # every half ring at the latest: the other half is the producer's room while the checkpoint is written
        # (config B's margin book, ~0.25 s: ~225k events at its pace); a quarter ring made twice as many
        self.checkpoint_every = max(1, self.consumer.capacity // 2)
        self.last_checkpoint = self.last_views = time.monotonic()
        self.has_views = has_views(self.core)
        self.views_cursor = -1  # the core's cursor when its views were last published (at start: not yet)
        self.checkpoint_cost_s = 0.0  # what the last checkpoint took (views and the pickle's fsync)
        self.checkpoints, self.checkpoint_total_s = 0, 0.0
        self.views, self.views_total_s = 0, 0.0  # the views published, and their share of the checkpoints' time
        self.views_cost_s = 0.0  # what the last views took
        self.pending = 0  # events applied since the last checkpoint
        self.taken_seq = self.consumer.cursor
        self.applied = 0
        self.batches = 0  # takes from the ring: each costs a wake-up and a pass of the core
        self.sent = 0
        self.view_errors = 0
        self.latency = latency_histogram()  # intake (the matcher stamps each command's ts) to applied here, per batch

    def counters(self) -> dict:
        lat = self.latency
        p = histogram_percentiles(lat, (50, 99, 99.9))
        checkpoints = {} if self.checkpoint is None else {  # (a durable core commits with each batch instead)
            "checkpoints": self.checkpoints, "checkpoint_ms": round(self.checkpoint_cost_s * 1e3, 3),
            "checkpoint_ms_total": round(self.checkpoint_total_s * 1e3, 3),
            **({"views": self.views, "views_ms_total": round(self.views_total_s * 1e3, 3)} if self.has_views else {})}
        return {"applied": self.applied, "batches": self.batches, **self.consumer.stats,
                "sent": self.sent, "view_errors": self.view_errors, **checkpoints, "cursor": self.core.cursor,
                "ring_cursor": self.consumer.cursor, "lag": self.consumer.available(),
                "latency_p50_ns": p.get(50, 0), "latency_p99_ns": p.get(99, 0), "latency_p999_ns": p.get(99.9, 0),
                "latency_count": lat.get_total_count(), "latency_counts": histogram_counts(lat)}

    def make_durable(self, views: bool = True) -> None:
        """Checkpoint the core (with its views, when asked) and release the ring up to what is durable."""
        if self.checkpoint is not None:
            start = time.monotonic()
            if views:
                self.publish_view()
                self.last_views, self.views_cursor = start, self.core.cursor
                self.views += 1
                self.views_cost_s = time.monotonic() - start
                self.views_total_s += self.views_cost_s
            self.checkpoint.save(self.core)
            self.pending = 0
            self.last_checkpoint = time.monotonic()
            self.checkpoint_cost_s = self.last_checkpoint - start
            self.checkpoints += 1
            self.checkpoint_total_s += self.checkpoint_cost_s
        # The core may be ahead of what this ring has delivered (a fresh ring replaying from 1); a
        # durable core may hold a cursor not yet committed (``durable_cursor``), kept in the ring.
        done = min(getattr(self.core, "durable_cursor", self.core.cursor), self.taken_seq)
        if done > self.consumer.cursor:
            self.consumer.release_to(done)

    def publish_view(self) -> None:
        """The core's views (``publish_views``); one that cannot be made is counted and reported, not every time."""
        for error in publish_views(self.core, self.cfg.data_path / "run", self.role):
            self.view_errors += 1
            if self.view_errors & (self.view_errors - 1) == 0:  # the 1st, 2nd, 4th, 8th ...: not every checkpoint
                print(f"xos {self.role}: {error} ({self.view_errors} times)", file=sys.stderr, flush=True)

    def step(self, timeout_ns: int) -> int:
        if not self.consumer.wait(timeout_ns):
            idle = getattr(self.core, "idle", None)  # a core with timers (margin: funding) runs them on wall time
            if idle is not None and timeout_ns:
                self.send(idle(time.time_ns()))
            return 0
        # only the kinds the core follows are copied out of the ring
        events, first, last = self.consumer.take_kinds(TAKE_MAX, self.core.FOLLOWED)
        self.taken_seq = last
        self.send(self.core.apply_taken(events, first, last))
        if len(events):
            self.latency.record_value(max(1, time.time_ns() - int(events["ts"][0])))
        taken = last - first + 1
        self.applied += taken
        self.batches += 1
        self.pending += taken
        if self.checkpoint_due(idle=False):
            self.make_durable(views=self.views_due())
        return taken

    def views_due(self) -> bool:
        """A checkpoint for the ring's room (a half ring) publishes the views only every ``checkpoint_s``, and no
        sooner than they take ``CHECKPOINT_SHARE`` of the time: config B's cost the margin worker ~0.2 s of CPU
        each and 0.46 s of wall time on a busy machine, where half-ring checkpoints come every ~1 s."""
        since = time.monotonic() - self.last_views
        return since >= self.cfg.workers.checkpoint_s and since >= self.views_cost_s / CHECKPOINT_SHARE

    def checkpoint_due(self, idle: bool) -> bool:
        """Whether to make the state durable now: a durable core after each batch; else every half ring (the
        ring keeps the events since the last checkpoint), every ``checkpoint_s`` while events flow and when the
        ring is idle with events applied or views older than the core (a half ring's checkpoint may have left
        them), each no sooner than checkpoints take ``CHECKPOINT_SHARE`` of the time."""
        since = time.monotonic() - self.last_checkpoint
        spaced = since >= self.checkpoint_cost_s / CHECKPOINT_SHARE
        if idle:
            return (self.pending > 0 or (self.has_views and self.views_cursor < self.core.cursor)) and spaced
        return self.durable or self.pending >= self.checkpoint_every or \
            (spaced and since >= self.cfg.workers.checkpoint_s)

    def send(self, commands) -> None:
        """Commands a core returns go back through the matcher's input."""
        if isinstance(commands, np.ndarray) and len(commands):
            self.feedback.send(commands)
            self.sent += len(commands)

    def run(self) -> int:
        self.heartbeat.beat(state="running", **self.counters())
        flush = getattr(self.core, "flush", None)  # a durable core's cursor that waits for something to post
        while not Stop.requested and not self.consumer.producer_closed():
            if not self.step(POLL_MS * 1_000_000) and self.checkpoint_due(idle=True):
                if flush is not None:
                    flush()
                self.make_durable()
            if beat_or_leave(self, self.role):
                return EXIT_PRODUCER_GONE
        while self.step(0):  # drain what is already published
            pass
        if flush is not None:
            flush()
        self.make_durable()
        self.heartbeat.beat(state="stopped", **self.counters())
        self.feedback.close()
        close = getattr(self.core, "close", None)
        if close:
            close()
        self.consumer.detach()
        return 0


def make_stage(cfg: Config, role: str):
    """The stage object of a role; each has ``run() -> exit code``.  Services import lazily: a
    worker process never loads the gateway's asyncio stack."""
    if role == "matcher":
        return MatcherStage(cfg)
    if role in WORKERS:
        return WorkerStage(cfg, role)
    if role == "gateway":
        from gateway.server import GatewayStage

        return GatewayStage(cfg)
    if role == "marketdata":
        from gateway.marketdata import MarketDataStage

        return MarketDataStage(cfg)
    if role == "feeds":
        from feeds.process import FeedStage

        return FeedStage(cfg)
    raise ValueError(f"unknown role {role!r}")


# glibc's malloc: below this an allocation comes from the heap, not its own mmap; free memory at the heap's top is
# kept up to the trim threshold.  Every ring batch makes and drops arrays of hundreds of kilobytes; with glibc's
# defaults they were mapped (or the heap trimmed) and faulted in again, page by page (the gateway: ~9,000 page
# faults/s at 16 orders per message).
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep what the batches free for the next ones (``MALLOC_*``); False elsewhere."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # not glibc (musl, macOS): their own policies stand
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return (bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD))
            and bool(mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.process", description=__doc__.splitlines()[0])
    p.add_argument("role", choices=ROLES)
    p.add_argument("--config", help="TOML config (default: the built-in one)")
    args = p.parse_args(argv)
    cfg = load(args.config or None)
    Stop.install()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a process is
    keep_freed_memory()
    if args.role in OFF_ANSWER_PATH and hasattr(os, "SCHED_BATCH"):
        # before any thread starts (threads inherit it): a woken batch process does not preempt the one running
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError as exc:  # a sandbox may refuse it: a matter of speed, not of correctness
            print(f"xos {args.role}: runs as SCHED_OTHER ({exc})", file=sys.stderr, flush=True)
    stage = make_stage(cfg, args.role)
    # development: XOS_PROFILE_DIR=DIR writes a CPU profile of each process's loop (DIR/ROLE.prof),
    # or only of the roles XOS_PROFILE_ROLES lists (comma-separated): profiling costs every process
    profile_dir = os.environ.get("XOS_PROFILE_DIR")
    profiled = os.environ.get("XOS_PROFILE_ROLES", ",".join(ROLES)).split(",")
    if profile_dir and args.role in profiled:
        import cProfile

        # CPU time, not wall time: a worker's wall time is mostly waiting on the ring
        profiler = cProfile.Profile(time.process_time)
        try:
            return profiler.runcall(stage.run) or 0
        finally:
            profiler.dump_stats(f"{profile_dir}/{args.role}.prof")
    return stage.run() or 0


if __name__ == "__main__":
    # Run the package's copy of this module, not this __main__ one: the services import
    # engine.process, and must see the Stop flag that main() installs.
    from engine.process import main as package_main

    sys.exit(package_main())

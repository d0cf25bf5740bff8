"""``xos run``: start the matcher, the workers and the services, watch them, restart, shut down cleanly.

The supervisor owns no engine state.  It starts each role as its own process
(``python -m engine.process ROLE``; the gateway, market data and feeds when
their config section is enabled), restarts a process that exits or whose
heartbeat goes stale (a restarted worker resumes from its own cursor), and on
SIGINT/SIGTERM stops the producers of commands first (feeds, then the gateway,
which answers what is in flight before it leaves), then the matcher (it drains
its input, journals and publishes the last batch, waits for the ring's readers
and unlinks the shared memory), then the workers and market data.
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from .config import Config
from .process import ROLES, SUPERVISOR_PID_ENV, WORKERS, enabled_services, read_heartbeats


class AlreadyRunning(RuntimeError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PM_QOS_CPU_LATENCY = "/dev/cpu_dma_latency"


class CpuLatencyRequest:
    """A PM QoS CPU latency request (``engine.cpu_latency_us``): the kernel keeps idle CPUs in states
    that wake within it for as long as the file stays open, and drops it when the holder closes it or
    dies, so even a killed supervisor leaves the host as it found it."""

    def __init__(self, device: str = PM_QOS_CPU_LATENCY):
        self.device = device
        self.fd = -1
        self.value_us = -1

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def hold(self, us: int) -> str:
        """Hold ``us`` microseconds (-1: none); a line saying what was done, or why it could not be."""
        self.release()
        if us < 0:
            return ""
        try:
            fd = os.open(self.device, os.O_WRONLY)
        except OSError as exc:  # not root, or no such device: a matter of latency, not of correctness
            return (f"engine.cpu_latency_us = {us} not held ({self.device}: {exc.strerror}): "
                    f"idle CPUs wake as the host sets")
        try:
            os.write(fd, struct.pack("=i", us))  # the request's value, a native int32
        except OSError as exc:
            os.close(fd)
            return f"engine.cpu_latency_us = {us} not held ({self.device} refused it: {exc.strerror})"
        self.fd, self.value_us = fd, us
        return f"holding idle CPUs to a {us} us wake-up ({self.device})"

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.value_us = -1, -1


class Supervisor:
    def __init__(self, cfg: Config, config_path: str | None, log=print):
        self.cfg = cfg
        self.config_path = config_path
        self.log = log
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts = dict.fromkeys(ROLES, 0)
        self.run_dir = cfg.data_path / "run"
        self.pid_file = self.run_dir / "supervisor.pid"
        self.stopping = False
        self.services = enabled_services(cfg)
        self.cpu_latency = CpuLatencyRequest()
        self.metrics = None  # engine.metrics.MetricsServer, while [metrics] is enabled and the engine runs

    # ------------------------------------------------------------ lifecycle
    def claim(self) -> None:
        """Refuse to start a second engine on the same data directory or shared memory."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.pid_file.exists():
            try:
                pid = int(self.pid_file.read_text().strip())
            except ValueError:
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise AlreadyRunning(
                    f"xos is already running (supervisor pid {pid}) on {self.cfg.data_path}; "
                    f"stop it first or use another engine.name and data_dir"
                )
        if (Path("/dev/shm") / self.cfg.ring_name).exists():
            from .ring import RingError, ring_status

            try:
                status = ring_status(self.cfg.ring_name)
            except (RingError, OSError):
                status = None  # unreadable or half-made: the matcher's create decides
            if status and status["creator_alive"]:
                raise AlreadyRunning(
                    f"another engine (pid {status['creator_pid']}) is using shared memory {status['path']}"
                )
        self.pid_file.write_text(str(os.getpid()))

    def drop_unjournaled_state(self) -> None:
        """With ``engine.journal`` off the matcher starts empty each time, and so must everything built from
        its events: the workers' and market data's checkpoints, settlement's ledger, margin's views and the
        gateway's closed orders of the last run are deleted (they resumed past the new events' seqs and
        skipped them).  A data directory whose journal holds commands is refused: that state belongs to it."""
        from .journal import list_segments

        data = self.cfg.data_path
        if list_segments(os.fspath(data / "journal")):
            raise RuntimeError(f"engine.journal is off, but {data / 'journal'} holds the journal of an engine run "
                               f"with it on, whose state the workers keep: use another data_dir to run without one")
        run = data / "run"
        ledger = self.cfg.ledger_path
        stale = [ledger.with_name(ledger.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
        stale += [*run.glob("*.ckpt"), *run.glob("*.npy"), *run.glob("*-views.json")]  # checkpoints, views
        stale.append(self.cfg.history_path)
        dropped = [path.name for path in stale if path.exists()]
        for path in stale:
            path.unlink(missing_ok=True)
        if dropped:
            self.log(f"engine.journal is off: the last run's state is dropped ({', '.join(dropped)})")

    def spawn(self, role: str) -> None:
        # -P: import the installed engine, never a source tree that happens to be the cwd
        cmd = [sys.executable, "-P", "-m", "engine.process", role]
        if self.config_path:
            cmd += ["--config", self.config_path]
        # its own session (a terminal's Ctrl-C reaches the supervisor only, which stops the roles in order);
        # our pid lets it notice that we are gone (engine.process.stop_if_orphaned)
        env = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())}
        self.procs[role] = subprocess.Popen(cmd, start_new_session=True, env=env)

    def wait_ready(self, role: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        proc = self.procs[role]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{role} exited with code {proc.returncode} while starting")
            beat = read_heartbeats(self.cfg).get(role)
            if beat and beat.get("pid") == proc.pid:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{role} did not report ready within {timeout_s:.0f} s")

    def start(self) -> None:
        self.claim()
        note = self.cpu_latency.hold(self.cfg.engine.cpu_latency_us)
        if note:
            self.log(note)
        try:
            if not self.cfg.engine.journal:
                self.drop_unjournaled_state()
            self.spawn("matcher")
            self.wait_ready("matcher", 60.0)
            for role in WORKERS + self.services:
                self.spawn(role)
            for role in WORKERS + self.services:
                self.wait_ready(role, 30.0)
            if self.cfg.metrics.enabled:
                from .metrics import MetricsServer

                self.metrics = MetricsServer(self.cfg, lambda: dict(self.restarts))
                self.log(f"metrics on {self.metrics.url}")
        except BaseException:  # nothing is left running when the start fails
            self.stop()
            raise
        self.log(f"xos running: matcher pid {self.procs['matcher'].pid}, input {self.cfg.input_address}, "
                 f"ring /dev/shm/{self.cfg.ring_name}, data {self.cfg.data_path}")

    def check(self) -> None:
        """Restart what exited or went silent."""
        beats = read_heartbeats(self.cfg)
        now = time.time()
        for role, proc in list(self.procs.items()):
            reason = None
            if proc.poll() is not None:
                reason = f"exited with code {proc.returncode}"
            else:
                beat = beats.get(role)
                if beat and beat.get("pid") == proc.pid and now - beat["time"] > self.cfg.workers.stale_after_s:
                    reason = f"silent for {now - beat['time']:.1f} s"
                    proc.kill()
                    proc.wait()
            if reason is None:
                continue
            if role == "matcher" and not self.cfg.engine.journal:
                raise RuntimeError(f"matcher {reason}: engine.journal is off, so its state is gone and a new "
                                   f"matcher would start empty under workers that hold the old one's: stopping")
            if not self.cfg.workers.restart:
                raise RuntimeError(f"{role} {reason} and restart is off")
            self.restarts[role] += 1
            self.log(f"{role} {reason}: restarting (restart #{self.restarts[role]})")
            self.spawn(role)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Command producers first (feeds, gateway), then the matcher (it drains and waits for the
        ring's readers to catch up), then the workers and market data."""
        self.stopping = True
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        order = ["feeds", "gateway", "matcher", *WORKERS, "marketdata"]
        for role in order:
            proc = self.procs.get(role)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.log(f"{role} did not stop within {timeout_s:.0f} s: killing it")
                proc.kill()
                proc.wait()
        self.cpu_latency.release()
        self.pid_file.unlink(missing_ok=True)

    def run(self, duration_s: float | None = None) -> int:
        stop_requested = []

        def handler(signum, frame):
            stop_requested.append(signum)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not stop_requested and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.2)
                self.check()
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)
        self.log("xos stopped")
        return 0

"""The engine as processes: `xos run`'s supervisor, the matcher stage, the workers.

These start real processes on a private engine name and data directory, push
commands through the matcher's ZeroMQ input and check the outcome against an
engine rebuilt from the journal (the journal is the truth).
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.orders import CONFIGS, generate
from engine.api import CommandAPI
from engine.config import load
from engine.journal import JournalReader
from engine.matcher import Engine
from engine.process import WORKERS, InputClient, read_heartbeats
from engine.records import Ev
from engine.supervisor import PM_QOS_CPU_LATENCY, AlreadyRunning, CpuLatencyRequest, Supervisor
from engine.workers.settlement import SettlementLedger

_names = itertools.count()


def assert_shared_memory_gone(cfg) -> None:
    """A clean stop leaves nothing in /dev/shm: the event ring, the command ring, their doorbells."""
    left = sorted(p.name for p in Path("/dev/shm").glob(f"{cfg.engine.name}-*"))
    assert not left, left


def toml_value(v) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else repr(v)


def write_config(tmp_path: Path, ring_capacity: int = 4096, **engine) -> Path:
    name = f"xos-test-{os.getpid()}-{next(_names)}"
    lines = ["gateway.enabled = false", "marketdata.enabled = false",  # the matcher and the workers only
             "[engine]", f'name = "{name}"', f'data_dir = "{tmp_path / "data"}"', f"ring_capacity = {ring_capacity}",
             "batch_max = 1024", 'fsync = "off"', "max_orders = 65536", "max_accounts = 8192"]
    lines += [f"{k} = {toml_value(v)}" for k, v in engine.items()]
    lines += ["[workers]", "heartbeat_s = 0.2", "stale_after_s = 5.0"]
    path = tmp_path / "xos.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def workload():
    cfg = CONFIGS["A"].replace(commands=12_000, accounts=200, orders=200)
    return generate(cfg)


def send_in_batches(client: InputClient, commands: np.ndarray, batch: int = 500, pause_s: float = 0.0):
    for i in range(0, len(commands), batch):
        client.send(commands[i : i + batch])
        if pause_s:
            time.sleep(pause_s)


def wait_caught_up(sup: Supervisor, cfg, n_commands: int, timeout_s: float = 60.0) -> dict:
    """Until the matcher took every command and every worker's core is at its event seq."""
    deadline = time.monotonic() + timeout_s
    beats = {}
    while time.monotonic() < deadline:
        sup.check()
        beats = read_heartbeats(cfg)
        m = beats.get("matcher", {})
        if m.get("cmd_seq", 0) >= n_commands and all(
            beats.get(w, {}).get("cursor") == m.get("event_seq") for w in WORKERS
        ):
            return beats
        time.sleep(0.1)
    raise AssertionError(f"not caught up after {timeout_s} s: {beats}")


def replay_journal(cfg) -> tuple[Engine, np.ndarray]:
    e = Engine(max_orders=cfg.engine.max_orders, max_accounts=cfg.engine.max_accounts,
               max_markets=cfg.engine.max_markets, max_assets=cfg.engine.max_assets)
    events = [e.process(cmds) for _, cmds in JournalReader(cfg.data_path / "journal").read_from(1)]
    return e, np.concatenate(events)


def assert_ledger_matches(cfg, engine: Engine, events: np.ndarray) -> None:
    ledger = SettlementLedger(cfg.data_path / "settlement.sqlite")
    try:
        assert ledger.cursor == engine.event_seq
        ledger.check()
        for account in engine.accounts():
            expected = {a: f + h for a, (f, h) in engine.balances(account).items() if f + h}
            got = {a: v for a, v in ledger.balances(account).items() if v}
            assert got == expected, account
        for asset in engine.assets():
            assert ledger.fee_balance(asset.asset_id) == engine.fees(asset.asset_id)
        n_fills = int((events["kind"] == Ev.FILL).sum())
        assert n_fills > 0
        recorded = sum(len(ledger.fills(a, 10**9)) for a in engine.accounts())
        assert recorded == 2 * n_fills  # each fill once for its taker and once for its maker
    finally:
        ledger.close()


def start_with_books(tmp_path, workload, **engine):
    """A supervised engine on a private config, with the workload's listings, deposits and
    resting orders already sent; returns (supervisor, config, input client)."""
    path = write_config(tmp_path, **engine)
    cfg = load(path)
    sup = Supervisor(cfg, str(path), log=lambda msg: None)
    sup.start()
    client = InputClient(cfg.input_address)
    send_in_batches(client, workload.setup)
    send_in_batches(client, workload.prefill)
    return sup, cfg, client


def test_run_stream_kill_each_worker_and_restart(tmp_path, workload):
    sup, cfg, client = start_with_books(tmp_path, workload)
    try:
        stream = workload.stream
        thirds = np.array_split(np.arange(len(stream)), len(WORKERS) + 1)
        for victim, part in zip(WORKERS + (None,), thirds):
            send_in_batches(client, stream[part], batch=200, pause_s=0.002)
            if victim:
                pid = sup.procs[victim].pid
                os.kill(pid, signal.SIGKILL)  # mid-stream: events are still arriving
                deadline = time.monotonic() + 30
                while sup.procs[victim].pid == pid:
                    assert time.monotonic() < deadline, f"{victim} was not restarted"
                    sup.check()
                    time.sleep(0.05)
        client.close()
        n = len(workload.setup) + len(workload.prefill) + len(stream)
        beats = wait_caught_up(sup, cfg, n)
        assert all(sup.restarts[w] == 1 for w in WORKERS)
        assert beats["matcher"]["malformed"] == 0
        # off the answer path, restarted ones too: they never preempt the matcher when it wakes them
        policies = {role: os.sched_getscheduler(p.pid) for role, p in sup.procs.items()}
        assert {role for role, policy in policies.items() if policy == os.SCHED_BATCH} == set(WORKERS)
        assert policies["matcher"] == os.SCHED_OTHER
    finally:
        sup.stop()
    assert_shared_memory_gone(cfg)
    engine, events = replay_journal(cfg)
    assert engine.cmd_seq == n
    assert_ledger_matches(cfg, engine, events)


def test_matcher_restart_replays_journal_and_workers_resume(tmp_path, workload):
    path = write_config(tmp_path)
    cfg = load(path)
    half = len(workload.stream) // 2
    total = 0
    for part in (np.concatenate([workload.setup, workload.prefill, workload.stream[:half]]), workload.stream[half:]):
        sup = Supervisor(cfg, str(path), log=lambda msg: None)
        sup.start()
        try:
            client = InputClient(cfg.input_address)
            send_in_batches(client, part)
            client.close()
            total += len(part)
            beats = wait_caught_up(sup, cfg, total)
        finally:
            sup.stop()
    # the clean shutdown left a snapshot covering everything: the restart replayed nothing
    assert beats["matcher"]["restored_from"] and beats["matcher"]["replayed"] == 0
    engine, events = replay_journal(cfg)
    assert engine.cmd_seq == len(workload.setup) + len(workload.prefill) + len(workload.stream)
    assert_ledger_matches(cfg, engine, events)


def test_matcher_behind_a_stopped_worker_still_stops_on_sigterm(tmp_path, workload):
    """A worker that never reads fills the ring and holds the matcher in its wait for room; SIGTERM
    still stops the matcher promptly, and the next run publishes what it journaled but could not
    publish, so every worker ends equal to the journal."""
    from engine.ring import ring_status

    path = write_config(tmp_path, ring_capacity=2048)
    cfg = load(path)
    commands = np.concatenate([workload.setup, workload.prefill, workload.stream])
    sup = Supervisor(cfg, str(path), log=lambda msg: None)
    sup.start()
    risk = sup.procs["risk"]
    try:
        wait_caught_up(sup, cfg, 0)
        os.kill(risk.pid, signal.SIGSTOP)
        client = InputClient(cfg.input_address)
        send_in_batches(client, commands)
        client.close()
        published, still = -1, 0
        while still < 3:  # until the matcher has stopped publishing: the ring is full
            time.sleep(0.2)
            now = ring_status(cfg.ring_name)["published"]
            still, published = (still + 1 if now == published else 0), now
        assert published < 3 * len(commands)  # far from all the events
        matcher = sup.procs["matcher"]
        t0 = time.monotonic()
        matcher.send_signal(signal.SIGTERM)
        assert matcher.wait(timeout=15) == 0
        assert time.monotonic() - t0 < 5
    finally:
        os.kill(risk.pid, signal.SIGCONT)
        sup.stop()
    # what the matcher had not taken in (never journaled, so never acknowledged) is sent again
    journaled = sum(len(c) for _, c in JournalReader(cfg.data_path / "journal").read_from(1))
    assert 0 < journaled < len(commands)
    sup = Supervisor(cfg, str(path), log=lambda msg: None)
    sup.start()
    try:
        client = InputClient(cfg.input_address)
        send_in_batches(client, commands[journaled:])
        client.close()
        wait_caught_up(sup, cfg, len(commands))
    finally:
        sup.stop()
    engine, events = replay_journal(cfg)
    assert engine.cmd_seq == len(commands)
    assert_ledger_matches(cfg, engine, events)


def test_second_engine_on_same_name_refuses(tmp_path):
    path = write_config(tmp_path)
    cfg = load(path)
    sup = Supervisor(cfg, str(path), log=lambda msg: None)
    sup.start()
    try:
        other = tmp_path / "other"
        other.mkdir()
        text = path.read_text().replace(str(tmp_path / "data"), str(other / "data"))
        (other / "xos.toml").write_text(text)
        with pytest.raises(AlreadyRunning, match="another engine"):
            Supervisor(load(other / "xos.toml"), str(other / "xos.toml"), log=lambda m: None).start()
        second = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--config", str(path), "--for", "1"],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "already running" in second.stderr, second.stderr
    finally:
        sup.stop()
    assert_shared_memory_gone(cfg)


def test_xos_run_cli_stops_cleanly_on_sigterm(tmp_path):
    path = write_config(tmp_path)
    cfg = load(path)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while set(read_heartbeats(cfg)) != {"matcher", *WORKERS}:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "xos stopped" in out
    assert_shared_memory_gone(cfg)
    beats = read_heartbeats(cfg)
    assert all(b["state"] == "stopped" for b in beats.values())
    # the margin worker's last checkpoint, at its stop, published its views; risk has none to count
    assert beats["margin"]["views"] >= 1 and beats["margin"]["views_ms_total"] > 0 and "views" not in beats["risk"]
    status = subprocess.run([sys.executable, "-m", "engine.cli", "status", "--config", str(path)],
                            capture_output=True, text=True)
    assert status.returncode == 0 and "settlement" in status.stdout and "latency_p99_ns=" in status.stdout
    assert "latency_counts" not in status.stdout  # a histogram's counts are for --json and the benchmarks


def test_a_cpu_latency_request_is_written_held_and_released(tmp_path):
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    request = CpuLatencyRequest(str(device))
    assert request.hold(-1) == "" and not request.held  # -1: the host's setting, nothing opened
    assert "to a 50 us wake-up" in request.hold(50) and request.held and request.value_us == 50
    assert device.read_bytes() == (50).to_bytes(4, sys.byteorder)  # the kernel's format: one int32
    request.release()
    assert not request.held and request.value_us == -1
    missing = CpuLatencyRequest(str(tmp_path / "no-such-device"))
    note = missing.hold(0)
    assert not missing.held and "not held" in note and "no-such-device" in note and "No such file" in note


def _pm_qos_cpu_latency() -> int:
    fd = os.open(PM_QOS_CPU_LATENCY, os.O_RDONLY)  # reading gives the value in force, all requests together
    try:
        return int.from_bytes(os.read(fd, 4), sys.byteorder, signed=True)
    finally:
        os.close(fd)


@pytest.mark.skipif(not os.access(PM_QOS_CPU_LATENCY, os.W_OK), reason=f"needs write access to {PM_QOS_CPU_LATENCY}")
def test_the_supervisor_holds_the_cpu_latency_while_the_engine_runs(tmp_path):
    before = _pm_qos_cpu_latency()
    path = write_config(tmp_path, cpu_latency_us=0)
    cfg = load(path)
    notes = []
    sup = Supervisor(cfg, str(path), log=notes.append)
    sup.start()
    try:
        assert sup.cpu_latency.held and _pm_qos_cpu_latency() == 0
        assert any("holding idle CPUs to a 0 us wake-up" in n for n in notes), notes
    finally:
        sup.stop()
    assert not sup.cpu_latency.held and _pm_qos_cpu_latency() == before


FAULTS_PER_BATCH = """
import queue, resource, sys, threading
import numpy as np
if sys.argv[1] == "kept":
    from engine.process import keep_freed_memory
    assert keep_freed_memory()
batches = queue.Queue(maxsize=1)
def ring_thread(n):  # as the gateway's: batches of a few hundred kilobytes made in one thread, dropped in another
    for i in range(n):
        batches.put(np.ones(40_000 + i % 7 * 20_000, np.int64))
    batches.put(None)
def run(n):
    t = threading.Thread(target=ring_thread, args=(n,))
    t.start()
    while (batch := batches.get()) is not None:
        kept = batch[batch > 0].copy()  # the loop's own copy of what it routes
        del batch, kept
    t.join()
run(50)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run(300)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 300)
"""


def test_freed_batches_are_kept_for_the_next_ones_not_faulted_in_again():
    if not hasattr(__import__("ctypes").CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    faults = {how: float(subprocess.run([sys.executable, "-c", FAULTS_PER_BATCH, how], capture_output=True, text=True,
                                        check=True).stdout) for how in ("glibc's defaults", "kept")}
    if faults["glibc's defaults"] < 10:
        pytest.skip(f"this glibc keeps them by itself: {faults}")
    assert faults["kept"] < 5, faults  # pages per batch, against ~100 (each batch's size) with the defaults


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (its new parent may be slow to reap it, or never)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_roles_stop_by_themselves_when_their_supervisor_is_killed(tmp_path):
    """SIGKILL gives the supervisor no chance to stop its processes: each notices at its next heartbeat
    that its supervisor is gone and stops as on SIGTERM, so nothing is left holding the ring."""
    path = write_config(tmp_path)
    cfg = load(path)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while set(read_heartbeats(cfg)) != {"matcher", *WORKERS}:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        pids = {role: beat["pid"] for role, beat in read_heartbeats(cfg).items()}
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in pids.values()):
            assert time.monotonic() < deadline, f"still running after their supervisor was killed: {pids}"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_shared_memory_gone(cfg)
    assert all(b["state"] == "stopped" for b in read_heartbeats(cfg).values()), read_heartbeats(cfg)


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[engine]\nring_capacity = 1000\n')
    out = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--config", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert str(bad) in out.stderr and "engine.ring_capacity" in out.stderr
    bad.write_text('[[markets]]\nid = 1\nbase = "BTC"\nquote = "USDT"\ntick_size = "x"\n')
    out = subprocess.run([sys.executable, "-m", "engine.cli", "run", "--config", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "$.markets[0].tick_size" in out.stderr


def test_pipeline_benchmark_smoke(tmp_path):
    from bench.pipeline import main as pipeline

    out = pipeline(["--commands", "3000", "--runs", "1", "--journal", "--json", str(tmp_path / "p.json")])
    for key in ("commands_per_s", "p50_ns", "p99_ns", "p999_ns", "worker_lag_max", "mix", "journal_ratio"):
        assert key in out
    assert out["commands_per_s"] > 0 and out["p50_ns"] > 0
    for mode in ("journal_on", "journal_off"):
        run = out["modes"][mode]["runs"][0]
        assert run["commands"] == 3000 and run["matcher"]["malformed"] == 0
        assert all(w["cursor"] == run["matcher"]["event_seq"] for w in run["workers"].values())
        assert all(w["events_a_take"] > 0 for w in run["workers"].values())
    journaled = out["modes"]["journal_on"]["runs"][0]["matcher"]
    assert journaled["durable_seq"] == journaled["cmd_seq"]
    # the heartbeat counts the group commits and their durable writes (fsync always, the default)
    assert 0 < journaled["journal_commits"] <= 3000 and journaled["journal_fsyncs"] > 0
    assert journaled["journal_fsync_ns"] >= journaled["journal_max_fsync_ns"] > 0


def test_supervised_matcher_killed_mid_stream_recovers_with_its_workers(tmp_path, workload):
    """kill -9 the matcher: the supervisor restarts it from snapshot + journal, the workers notice
    their ring's producer died and reattach to the new ring, and the ledger ends equal to the
    journal's replay (nothing applied twice, nothing acknowledged lost)."""
    sup, cfg, client = start_with_books(tmp_path, workload, snapshot_interval_s=0.3)
    try:
        stream = workload.stream
        half = len(stream) // 2
        send_in_batches(client, stream[:half], batch=200, pause_s=0.002)
        old = sup.procs["matcher"].pid
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while sup.procs["matcher"].pid == old or "running" != read_heartbeats(cfg).get("matcher", {}).get("state"):
            assert time.monotonic() < deadline, "matcher not restarted"
            sup.check()
            time.sleep(0.05)
        client.close()
        # what reached the journal before the kill is what was acknowledged; send the rest after it
        journaled = replay_journal(cfg)[0].cmd_seq
        head = len(workload.setup) + len(workload.prefill)
        client = InputClient(cfg.input_address)
        send_in_batches(client, stream[journaled - head:] if journaled > head else
                        np.concatenate([np.concatenate([workload.setup, workload.prefill])[journaled:], stream]))
        client.close()
        beats = wait_caught_up(sup, cfg, head + len(stream))
        assert sup.restarts["matcher"] == 1
        assert beats["matcher"]["restored_from"] or beats["matcher"]["replayed"] > 0
    finally:
        sup.stop()
    engine, events = replay_journal(cfg)
    assert engine.cmd_seq == head + len(stream)
    assert_ledger_matches(cfg, engine, events)



def test_without_a_journal_each_run_starts_empty_and_a_dead_matcher_stops_the_engine(tmp_path, workload):
    """``engine.journal = false``: a later run in the same data directory starts its workers empty like its
    matcher (they resumed past the new events' seqs and skipped them: the ledger kept the first run's trades); a
    matcher killed stops the engine instead of coming back empty under them, and the next run starts; a
    directory with a journal is refused."""
    path = write_config(tmp_path, journal=False)
    cfg = load(path)
    head = np.concatenate([workload.setup, workload.prefill])
    third = workload.stream[:len(workload.stream) // 3]
    logged: list[str] = []
    for run, part in enumerate((workload.stream, third, third)):
        sup = Supervisor(cfg, str(path), log=logged.append)
        sup.start()
        try:
            client = InputClient(cfg.input_address)
            send_in_batches(client, np.concatenate([head, part]))
            client.close()
            # each worker at the matcher's event seq: without the drop they resumed at the first run's last one
            beats = wait_caught_up(sup, cfg, len(head) + len(part))
            if run == 1:
                os.kill(sup.procs["matcher"].pid, signal.SIGKILL)  # its rings stay, as after any crash
                deadline = time.monotonic() + 30
                with pytest.raises(RuntimeError, match="engine.journal is off, so its state is gone"):
                    while time.monotonic() < deadline:
                        sup.check()
                        time.sleep(0.05)
                assert sup.restarts["matcher"] == 0
            if run == 0:
                first_run_events = beats["matcher"]["event_seq"]
        finally:
            sup.stop()
    assert_shared_memory_gone(cfg)
    dropped = [line for line in logged if "the last run's state is dropped (settlement.sqlite" in line]
    assert len(dropped) == 2 and all(name in dropped[0] for name in ("margin.ckpt", "margin-balances.npy",
                                                                      "margin-views.json", "risk.ckpt"))
    ledger = SettlementLedger(cfg.data_path / "settlement.sqlite")  # the last run's alone
    try:
        assert ledger.cursor == beats["matcher"]["event_seq"] < 0.8 * first_run_events
        ledger.check()
    finally:
        ledger.close()
    unjournaled = path.read_text()
    path.write_text(unjournaled.replace("journal = false", "journal = true"))
    sup = Supervisor(load(path), str(path), log=lambda msg: None)
    sup.start()  # the same data directory, journal on: it writes a journal
    sup.stop()
    path.write_text(unjournaled)
    sup = Supervisor(cfg, str(path), log=lambda msg: None)
    with pytest.raises(RuntimeError, match="holds the journal of an engine run with it on"):
        sup.start()
    assert not sup.pid_file.exists() and not sup.procs and (cfg.data_path / "settlement.sqlite").exists()


class CommandRecorder(CommandAPI):
    """Commands built with the engine API, kept instead of run (to send to a supervised engine)."""

    def __init__(self):
        self.commands = []

    def process(self, cmd):
        self.commands.append(cmd)
        return cmd


def run_until_a_worker_answers(tmp_path, commands: np.ndarray):
    """Start a supervised engine, send ``commands`` and nothing else, wait until a worker has sent one more command
    back through the matcher's input and every worker has caught up with it; returns the config and the journal."""
    path = write_config(tmp_path)
    cfg = load(path)
    sup = Supervisor(cfg, str(path), log=lambda msg: None)
    sup.start()
    try:
        client = InputClient(cfg.input_address)
        client.send(commands)
        client.close()
        deadline = time.monotonic() + 30
        while read_heartbeats(cfg).get("matcher", {}).get("cmd_seq", 0) <= len(commands):
            sup.check()
            assert time.monotonic() < deadline, read_heartbeats(cfg)
            time.sleep(0.05)
        wait_caught_up(sup, cfg, len(commands) + 1)
    finally:
        sup.stop()
    return cfg, np.concatenate([cmds for _, cmds in JournalReader(cfg.data_path / "journal").read_from(1)])


def test_margin_worker_liquidates_through_the_matchers_input(tmp_path):
    """The whole loop as processes: a trade moves a perpetual market's mark below a 10x long's maintenance;
    the margin worker (its own process, on the ring) sends Liquidate back through the matcher's input; the
    matcher re-checks, finds no bids and hands the position to the insurance fund.  The journal holds the
    keeper's command, and its replay the liquidation; the ledger follows it."""
    from engine.records import Cmd, MarketKind, Side, Tif
    from engine.workers.margin import MARGIN_WORKER_ID

    ADMIN, FUND, LONG, SHORT, X, Y = 5090, 5091, 5001, 5002, 5003, 5004
    r = CommandRecorder()
    r.add_asset(41, "USDT", 2)
    r.add_asset(42, "BTC", 8)
    r.add_market(41, 42, 41, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL)
    r.set_venue_params(ADMIN, stake_asset=42, min_stake=1, unbond_period=1, protocol_account=FUND, admin=ADMIN)
    r.market_risk(ADMIN, 41, max_leverage=10, maintenance_bps=5000)
    for account, amount in ((LONG, 2_000), (SHORT, 50_000), (X, 50_000), (Y, 50_000), (FUND, 50_000)):
        r.deposit(account, 41, amount)
    r.place(SHORT, 41, Side.SELL, 1000, 10, 1)
    r.place(LONG, 41, Side.BUY, 1000, 10, 1, tif=Tif.IOC)
    r.place(X, 41, Side.BUY, 820, 1, 1)  # the mark to 820: equity 2000 - 1800 = 200 < maintenance 410
    r.place(Y, 41, Side.SELL, 820, 1, 1, tif=Tif.IOC)
    cfg, journaled = run_until_a_worker_answers(tmp_path, np.concatenate(r.commands))  # the keeper's Liquidate
    keeper = journaled[journaled["kind"] == Cmd.LIQUIDATE]
    assert keeper[["account", "id", "market", "venue"]].tolist() == [(MARGIN_WORKER_ID, LONG, 41, 0)]
    engine, events = replay_journal(cfg)
    assert (events["kind"] == Ev.LIQUIDATED).sum() == 1 and not (events["kind"] == Ev.REJECTED).any()
    assert engine.position(LONG, 41).size == 0 and engine.position(FUND, 41).size == 10
    ledger = SettlementLedger(cfg.data_path / "settlement.sqlite")
    try:
        for account in (LONG, FUND, SHORT):
            expected = {a: f + h for a, (f, h) in engine.balances(account).items() if f + h}
            assert {a: v for a, v in ledger.balances(account).items() if v} == expected
    finally:
        ledger.close()


def test_margin_worker_applies_funding_on_a_quiet_engine(tmp_path):
    """The funding clock is wall time: with no command after the funding time, the margin worker (its own process)
    still sends ApplyFunding when it falls due, and the matcher applies it (a Funding event in the replay)."""
    from engine.records import Cmd, MarketKind, Side, Tif
    from engine.workers.margin import MARGIN_WORKER_ID

    ADMIN, FUND, LONG, SHORT = 5090, 5091, 5001, 5002
    r = CommandRecorder()
    r.add_asset(41, "USDT", 2)
    r.add_asset(42, "BTC", 8)
    r.add_market(41, 42, 41, tick_size=1, lot_size=1, min_size=1, kind=MarketKind.PERPETUAL)
    r.set_venue_params(ADMIN, stake_asset=42, min_stake=1, unbond_period=1, protocol_account=FUND, admin=ADMIN)
    for account in (LONG, SHORT, FUND):
        r.deposit(account, 41, 50_000)
    r.place(SHORT, 41, Side.SELL, 1000, 10, 1)
    r.place(LONG, 41, Side.BUY, 1000, 10, 1, tif=Tif.IOC)
    r.funding_config(ADMIN, 41, interval_ns=300_000_000, sample_interval_ns=100_000_000, cap=1_000_000)
    commands = np.concatenate(r.commands)
    cfg, journaled = run_until_a_worker_answers(tmp_path, commands)  # nothing is sent after the funding time
    scheduler = journaled[len(commands):]
    assert scheduler[["kind", "account", "market"]].tolist()[0] == (Cmd.APPLY_FUNDING, MARGIN_WORKER_ID, 41)
    _, events = replay_journal(cfg)
    funding = events[events["kind"] == Ev.FUNDING]
    assert len(funding) >= 1 and not (events["kind"] == Ev.REJECTED).any()
    assert funding["order_id"][0] <= scheduler["ts"][0]  # applied for a funding time that had passed

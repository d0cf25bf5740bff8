"""Benchmarks of the xos matcher.

``bench.orders`` builds seeded workloads (modelled on exchange-core's test
orders generator); ``python -m bench.matcher`` times them through
``Engine.process`` and checks the outcome against the reference model.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path


def write_json(path: str | None, result: dict) -> None:
    """Write a benchmark's result to ``path`` (its ``--json`` option), if one was given."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def block_device(path: str | Path) -> str | None:
    """The name in ``/proc/diskstats`` of the block device that holds ``path``; None where there is none (tmpfs)."""
    st_dev = os.stat(path).st_dev
    try:
        uevent = Path(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}/uevent").read_text()
    except OSError:
        return None
    return next((line[len("DEVNAME="):] for line in uevent.splitlines() if line.startswith("DEVNAME=")), None)


def host_sample(device: str | None) -> tuple[list[int], tuple[int, int] | None]:
    """The host's CPU time so far (``/proc/stat``'s first line: user, nice, system, idle, iowait, irq, softirq,
    steal, in ticks) and ``device``'s writes completed and sectors written (``/proc/diskstats``), for
    ``host_usage``: two reads of small files, cheap enough for a timed loop to take once."""
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:9]]
    disk = None
    if device:
        with open("/proc/diskstats") as f:
            for line in f:
                fields = line.split()
                if fields[2] == device:
                    disk = (int(fields[7]), int(fields[9]))
                    break
    return cpu, disk


def host_usage(before: tuple, after: tuple, seconds: float) -> dict:
    """What the whole host did between two ``host_sample``s ``seconds`` apart: its CPUs' shares (percent of all
    CPU time: busy, idle, waiting for I/O, stolen by the hypervisor) and the device's writes.  On a box the load
    generator shares with the engine this says which wall a point met: the CPUs full, or idle while the journal's
    durable writes wait on the device."""
    delta = [b - a for a, b in zip(before[0], after[0])]
    total = sum(delta) or 1
    idle, iowait, steal = delta[3], delta[4], delta[7]
    out = {"cpu_busy_pct": 100 * (total - idle - iowait - steal) / total, "cpu_idle_pct": 100 * idle / total,
           "cpu_iowait_pct": 100 * iowait / total, "cpu_steal_pct": 100 * steal / total}
    if before[1] is not None and after[1] is not None and seconds > 0:
        writes, sectors = (b - a for a, b in zip(before[1], after[1]))
        out.update(disk_writes_per_s=writes / seconds, disk_write_mb_per_s=sectors * 512 / seconds / 1e6)
    return out


CPU_LATENCY_HELP = ("hold this PM QoS CPU latency (us) for the run, as engine.cpu_latency_us does (0: idle CPUs "
                    "poll; needs write access to /dev/cpu_dma_latency); -1, the default, leaves the host's setting")


@contextlib.contextmanager
def cpu_latency(us: int, result: dict):
    """Hold ``us`` (``--cpu-latency-us``) while the benchmark runs and record in ``result`` what was held."""
    from engine.supervisor import CpuLatencyRequest

    request = CpuLatencyRequest()
    note = request.hold(us)
    if note:
        print(note, file=sys.stderr, flush=True)
    result["cpu_latency_us"] = request.value_us  # -1: the host's setting
    try:
        yield
    finally:
        request.release()

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

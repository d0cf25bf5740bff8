"""The host figures the wire benchmark gives each point (``bench.host_sample`` / ``host_usage``): the CPUs'
shares and the journal device's writes between two samples."""
from __future__ import annotations

import os

import pytest

from bench import block_device, host_sample, host_usage


def test_usage_splits_the_cpu_time_and_rates_the_writes():
    # user nice system idle iowait irq softirq steal, in ticks; (writes completed, sectors written)
    before = ([100, 0, 50, 1000, 10, 0, 5, 0], (40, 8_000))
    after = ([160, 0, 70, 1010, 30, 0, 10, 10], (640, 8_000 + 2 * 200_000))
    usage = host_usage(before, after, 2.0)
    # 125 ticks: 85 busy (user, system, softirq), 10 idle, 20 waiting for I/O, 10 stolen
    assert usage["cpu_busy_pct"] == pytest.approx(100 * 85 / 125)
    assert usage["cpu_idle_pct"] == pytest.approx(100 * 10 / 125)
    assert usage["cpu_iowait_pct"] == pytest.approx(100 * 20 / 125)
    assert usage["cpu_steal_pct"] == pytest.approx(100 * 10 / 125)
    assert usage["disk_writes_per_s"] == 300 and usage["disk_write_mb_per_s"] == pytest.approx(200_000 * 512 / 1e6)


def test_usage_without_a_device_has_only_the_cpus():
    before, after = ([1, 0, 1, 1, 0, 0, 0, 0], None), ([2, 0, 2, 3, 0, 0, 0, 0], None)
    assert set(host_usage(before, after, 1.0)) == {"cpu_busy_pct", "cpu_idle_pct", "cpu_iowait_pct", "cpu_steal_pct"}


def test_a_sample_reads_this_host(tmp_path):
    cpu, disk = host_sample(None)
    assert len(cpu) == 8 and all(v >= 0 for v in cpu) and disk is None
    device = block_device(tmp_path)
    if device is None:
        pytest.skip(f"{tmp_path} is on no block device here")
    assert device in {line.split()[2] for line in open("/proc/diskstats")}
    cpu, disk = host_sample(device)
    with open(tmp_path / "f", "wb") as f:  # a synced write is counted by the device
        f.write(b"x" * 65536)
        os.fsync(f.fileno())
    later = host_sample(device)
    assert later[1][0] > disk[0] and later[1][1] > disk[1]
    usage = host_usage((cpu, disk), later, 1.0)
    assert sum(usage[k] for k in ("cpu_busy_pct", "cpu_idle_pct", "cpu_iowait_pct", "cpu_steal_pct")) \
        == pytest.approx(100)


def test_tmpfs_has_no_block_device():
    if not os.path.isdir("/dev/shm") or os.major(os.stat("/dev/shm").st_dev) != 0:
        pytest.skip("no tmpfs at /dev/shm here")
    assert block_device("/dev/shm") is None

"""Prometheus metrics of a running engine, served by ``xos run`` when ``[metrics] enabled`` (prometheus-client).

Nothing is counted twice or kept here: each scrape reads what ``xos status`` reads, the processes' heartbeats
(``DATA/run/ROLE.json``) and the two rings' headers, and the supervisor's restart counts.  So a scrape costs
the engine nothing between scrapes, and a process's figures are as fresh as its last heartbeat
(``workers.heartbeat_s``).

  * ``xos_up{role}``: for each process ``xos run`` starts, 1 while its heartbeat is fresher than
    ``workers.stale_after_s`` and it is not stopped; ``xos_heartbeat_age_seconds{role}``; ``xos_restarts_total{role}``;
  * ``xos_<role>_<field>``: each number in the role's heartbeat (its counters, cursors, lags, latency
    percentiles), untyped, as the heartbeat has it;
  * ``xos_ring_published``, ``xos_ring_capacity``, ``xos_ring_producer_waits_total``,
    ``xos_ring_consumer_cursor{consumer}`` and ``xos_ring_consumer_lag{consumer}`` (the event ring);
    ``xos_command_ring_published``, ``_taken``, ``_lag``, ``_full_total``, ``_doorbells_total`` (the
    gateway's command ring).
"""
from __future__ import annotations

import re
import time
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, UnknownMetricFamily

from .config import Config, parse_address
from .process import WORKERS, enabled_services, read_heartbeats

HEARTBEAT_KEYS = ("role", "pid", "time", "started", "state")  # what every heartbeat has: not a figure
NAME_PART = re.compile(r"[^a-zA-Z0-9_]")


class EngineCollector:
    """The engine's metrics at each scrape (a prometheus-client custom collector)."""

    def __init__(self, cfg: Config, restarts: Callable[[], dict[str, int]] | None = None):
        self.cfg = cfg
        self.roles = ("matcher", *WORKERS, *enabled_services(cfg))  # those `xos run` starts
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        beats = read_heartbeats(self.cfg)
        now = time.time()
        up = GaugeMetricFamily("xos_up", "1 while the process reports (a fresh heartbeat, not stopped)",
                               labels=["role"])
        age = GaugeMetricFamily("xos_heartbeat_age_seconds", "Seconds since the process's last heartbeat",
                                labels=["role"])
        for role in self.roles:
            beat = beats.get(role)
            fresh = beat is not None and now - beat["time"] < self.cfg.workers.stale_after_s
            up.add_metric([role], float(fresh and beat.get("state") != "stopped"))
            if beat is not None:
                age.add_metric([role], now - beat["time"])
        yield up
        yield age
        if self.restarts is not None:
            restarts = CounterMetricFamily("xos_restarts", "Times the supervisor restarted the process",
                                           labels=["role"])
            counts = self.restarts()
            for role in self.roles:  # as xos_up: the processes started, not every role there is
                restarts.add_metric([role], counts.get(role, 0))
            yield restarts
        for role, beat in beats.items():
            for field, value in beat.items():
                if field in HEARTBEAT_KEYS or not isinstance(value, (int, float)):
                    continue  # states, names and the absent (None) are not figures
                yield UnknownMetricFamily(f"xos_{role}_{NAME_PART.sub('_', field)}",
                                          f"{field} in the {role} heartbeat", value=float(value))
        yield from self.rings()

    def rings(self) -> Iterator[Metric]:
        from .cmdring import command_ring_status
        from .ring import RingError, ring_status

        try:
            ring = ring_status(self.cfg.ring_name)
        except (RingError, OSError):
            ring = None  # no engine running: no ring figures
        if ring is not None:
            yield GaugeMetricFamily("xos_ring_published", "Events published into the event ring",
                                    value=ring["published"])
            yield GaugeMetricFamily("xos_ring_capacity", "Event ring slots", value=ring["capacity"])
            yield CounterMetricFamily("xos_ring_producer_waits", "Times the matcher waited for room in the ring",
                                      value=ring["producer"]["waits"])
            cursor = GaugeMetricFamily("xos_ring_consumer_cursor", "Each ring reader's cursor (event seq)",
                                       labels=["consumer"])
            lag = GaugeMetricFamily("xos_ring_consumer_lag", "Events published and not yet read", labels=["consumer"])
            for c in ring["consumers"]:
                cursor.add_metric([c["name"]], c["cursor"])
                lag.add_metric([c["name"]], c["lag"])
            yield cursor
            yield lag
        try:
            commands = command_ring_status(self.cfg.command_ring_name)
        except (RingError, OSError):
            return
        for field, what in (("published", "Commands the gateway published"), ("taken", "Commands the matcher took"),
                            ("lag", "Commands published and not yet taken")):
            yield GaugeMetricFamily(f"xos_command_ring_{field}", what, value=commands[field])
        yield CounterMetricFamily("xos_command_ring_full", "Times a forward found the ring full",
                                  value=commands["full"])
        yield CounterMetricFamily("xos_command_ring_doorbells", "Times the gateway woke the matcher",
                                  value=commands["doorbells"])


class MetricsServer:
    """The HTTP endpoint (``/metrics``, any path) in a daemon thread of the supervisor."""

    def __init__(self, cfg: Config, restarts: Callable[[], dict[str, int]] | None = None):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(EngineCollector(cfg, restarts))
        host, port = parse_address(cfg.metrics.address)
        try:
            self.server, self.thread = start_http_server(port, host, registry=registry)
        except OSError as exc:
            raise RuntimeError(f"metrics.address {cfg.metrics.address} cannot be served: {exc}") from None
        self.url = f"http://{host}:{self.server.server_port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

"""The feeds process: sources -> checks and aggregation -> OraclePrice commands into the matcher.

``FeedStage(cfg).run()`` is the "feeds" role that ``xos run`` starts when ``[feeds] enabled``.
Each turn of its loop polls every source, feeds what came in to the aggregator, runs the rounds
that are due and pushes the resulting commands, in one message, into the matcher's input (where
they are journaled, so every replay sees the same oracle prices in the same order).  Between turns
it blocks on the push sources' sockets until the next source step, round or heartbeat is due.
The heartbeat (``DATA/run/feeds.json``) carries the counters; every market's and source's state is
in ``DATA/run/feeds-status.json``, rewritten each second.
"""
from __future__ import annotations

import math
import os
import time

import msgspec
import zmq

from engine.config import Config
from engine.process import POLL_MS, Heartbeat, InputClient, Stop

from .aggregate import Aggregator
from .sources import build_sources

DETAIL_FILE = "feeds-status.json"  # beside the heartbeat, in DATA/run/
DETAIL_EVERY_S = 1.0


class FeedStage:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.context = zmq.Context()
        self.aggregator = Aggregator(cfg)
        self.sources, self.auth = build_sources(cfg, self.context)
        self.poller = zmq.Poller()
        for source in self.sources:
            if source.socket() is not None:
                self.poller.register(source.socket(), zmq.POLLIN)
        self.input = InputClient(cfg.input_address, self.context)
        self.heartbeat = Heartbeat(cfg, "feeds")
        self.detail_path = self.heartbeat.dir / DETAIL_FILE
        self.sent = 0
        self.rounds = 0
        self.detail_at = -math.inf

    def step(self, now_ns: int) -> int:
        """One turn: poll, check and keep, aggregate what is due, send. Returns commands sent."""
        for source in self.sources:
            self.aggregator.ingest(source.name, source.rejects, source.poll(now_ns), now_ns)
        commands = self.aggregator.aggregate(now_ns)
        if len(commands):
            self.input.send(commands)
            self.sent += len(commands)
            self.rounds += 1
        return len(commands)

    def wait(self) -> None:
        """Block until a push arrives or the next timed thing (source step, round, beat) is due."""
        now = time.time_ns()
        due = [self.aggregator.next_due_ns(), *(s.next_due_ns() for s in self.sources)]
        until_ms = min([POLL_MS, *((d - now) / 1e6 for d in due if d is not None)])
        beat_ms = (self.heartbeat.every - (time.monotonic() - self.heartbeat.last)) * 1e3
        timeout = max(0, math.ceil(min(until_ms, beat_ms)))
        if timeout == 0:
            return
        if self.poller.sockets:
            self.poller.poll(timeout)
        else:
            time.sleep(timeout / 1e3)

    def counters(self) -> dict:
        a = self.aggregator
        return {
            "sent": self.sent, "rounds": self.rounds,
            "markets_fresh": int(a.fresh.sum()), "markets_stale": int((~a.fresh).sum()),
            "held_back": int(a.held_back.sum()),
            "rejected": sum(sum(s.rejects.counts.values()) for s in self.sources),
        }

    def write_detail(self) -> None:
        """Every market's oracle and every source's state, for ``xos feeds status``.

        A file of its own beside the heartbeat, rewritten at most every ``DETAIL_EVERY_S``: with a
        thousand markets it is large, and heartbeats may come many times a second.
        """
        markets, slots = self.aggregator.status(time.time_ns())
        doc = {"time": time.time(), "pid": os.getpid(), "markets": markets,
               "sources": {s.name: {**s.status(), "markets": slots.get(s.name, {})} for s in self.sources}}
        tmp = self.detail_path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(doc))
        os.replace(tmp, self.detail_path)
        self.detail_at = time.monotonic()

    def run(self) -> int:
        # Run as `python -m engine.process`, that module is also __main__, whose own Stop class got
        # the signal handlers; this one must be the class the loop below watches.
        Stop.install()
        self.heartbeat.beat(state="running", **self.counters())
        try:
            while not Stop.requested:
                self.step(time.time_ns())
                if self.heartbeat.due():
                    if self.auth is not None:
                        self.auth.refresh()
                    self.heartbeat.beat(state="running", **self.counters())
                if time.monotonic() - self.detail_at >= DETAIL_EVERY_S:
                    self.write_detail()
                self.wait()
        finally:
            self.write_detail()
            self.heartbeat.beat(state="stopped", **self.counters())
            self.close()
        return 0

    def close(self) -> None:
        for source in self.sources:
            source.close()
        if self.auth is not None:
            self.auth.stop()
        self.input.close()
        self.context.term()


"""Wire-to-wire benchmark: orders over ZeroMQ through the whole engine, acked once durable.

    python -m bench.wire --json wire.json --plot wire.png
    xos bench wire --seconds 2 --batches 1 16 256

The engine runs as ``xos run`` does (supervisor, matcher with the journal, ring, settlement,
margin and risk workers, market data, the gateway on tcp loopback) on a private name and a
temporary data directory.  Load-generator processes connect over CurveZMQ, each as its own
account, and send market-maker traffic: buy orders resting below the market, and once a client
has RESTING of them, each new order preceded by the cancel (by client id) of its oldest one.
Every command counts as an order; each is timed to its Ack.  A point's ``orders_per_s`` is the orders
answered inside its timed window (after ``--warmup``), over the window.

* closed loop: each client keeps a window of messages in flight and sends the next one when a
  message's commands are all answered: the most the engine takes (``orders_per_s``).
* open loop: each client sends at a fixed rate on a schedule made before the run; an order's
  latency runs from its message's *planned* send time to its Ack, so a stall delays the clock
  of every message behind it too (no coordinated omission).  Messages due 250 us apart or more go
  out on time (the last 50 us before each spun); closer ones in bursts about 4 messages apart (20-150
  us times the clients, so that together they wake about as often as one: all that is due by then);
  ``send_late`` counts how late.  A client waits on its socket's fd,
  so each reply is timed when it arrives.  HdrHistogram; the first ``--warmup`` seconds are not
  recorded.  Offered rates are fractions of the closed-loop figure of the same batch size
  (``--fractions``), plus ``--rates`` if given.  After the closed loops, between the open loops of
  two batch sizes and before the p99 search (below), the engine idles ``--settle`` seconds (default 5;
  ``settle_s`` in the JSON): the storage writes back what was journaled and the workers catch up.
  Right after the closed loops this box's virtual disk stalled 100-200 ms at a time, and the first
  open point's p99 read 195-220 ms against 47-58 ms with the pause; after the last, overloaded point
  of 1/msg, 16/msg at 61,000/s read p99 69 ms against 11 ms on a fresh engine.
* ceiling: the same clients and messages into a bare pyzmq ROUTER (CurveZMQ, tcp) that only
  receives and decodes them with the gateway's msgspec decoder; ``ceiling_ratio`` = the engine's
  closed-loop orders/s over that.
* one open-loop point with the journal's fsync off (``p50_us`` there).
* bare: the same open-loop clients, messages and rates, against a bare ROUTER (CurveZMQ, tcp) that
  answers each request at once as the gateway would (a burst of OrderRows read in C as the gateway reads it,
  each session's rows acked by one AckRows with the gateway's codecs, stamped on receipt) with no engine
  behind it: what this host's ZeroMQ hops, CurveZMQ, wake-ups and the load client cost an order alone, the
  latency the engine's figures sit on.  Measured after the engine stops, at each open-loop rate (the p99
  search's too); ``bare`` in the JSON (each point as an open one, its ``to_intake`` the way in and
  ``intake_to_ack`` the way out), ``bare_p50_us`` / ``bare_p99_us`` on the open point of the same batch size
  and rate, and ``bare_max_rate_p99_under_1ms``: the highest such rate whose p99 stayed under 1 ms (0: none,
  so no engine on this host could have met it there).

Messages carry 1, 16 or 256 orders (``--batches``), as one OrderRows message of packed rows
(``--wire rows``, the market makers' path, as the client library sends them), of fixed 54-byte rows
(``--wire fixed-rows``) or as PlaceOrder / CancelOrder structs (``--wire structs``, a Batch when several); ``--parts`` chooses what to measure.  Progress goes to stderr; the JSON has
``orders_per_s``, ``p50_us``, ``p99_us``, ``p999_us``, ``to_intake_p50_us`` / ``intake_to_ack_p50_us`` (and
``_p99_us``: an acked order's latency before and after the matcher's intake, which its Ack's ``ts``
stamps), ``send_late_p50_us`` / ``_p99_us`` (open loop: how long after its planned time each send
left, the load generator's own error, which the latencies include; the clients run with a 1 us
timer slack instead of Linux's 50), ``ceiling_ratio``, ``cpu_us_per_order`` (each
process's CPU time, threads included, over the orders answered, the load clients' too, and their
total: on two cores the total bounds the rate) and ``gateway_cpu_us_per_order`` (its gateway entry) per
mode and batch size, ``max_rate_p99_under_1ms`` (when no open-loop point keeps p99 under 1 ms, lower rates of the
first batch size are tried, each a quarter of the last, down to ``--p99-floor``, 250/s, until one does: those
points have ``p99_search``; ``lowest_rate_tried``), and the run's ``journal_io``, ``journal_commits`` and
``journal_write_mean_us``, and per point ``host``: the whole host's CPUs (``cpu_busy_pct``, ``cpu_idle_pct``,
``cpu_iowait_pct``, ``cpu_steal_pct``) and the journal's device (``disk_write_mb_per_s``, ``disk_writes_per_s``;
none on tmpfs) over the timed window, as one load client saw them: which wall the point met; ``--plot`` writes
latency percentiles against offered rate (needs matplotlib: ``pip install 'xos[bench]'``).  ``--cpu-latency-us N`` holds a PM QoS CPU
latency request for the whole run, ceiling included, as ``engine.cpu_latency_us`` does for ``xos run``
(``cpu_latency_us`` in the JSON: -1 when none was held).

The load clients make their messages before the clock starts, send them through libzmq directly
(``gateway.intake.send_slices``: pyzmq's ``send`` costs about 1 us a message) and put their latencies
in the histogram after the run: on a machine they share with the engine, their own cost per order
is taken from the engine's.  Their per-order arrays have room for 4 M orders/s before the clock; had
one to grow inside the timed loop (a stall), ``client_stalls`` counts it and a warning says so.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import collections
import json
import multiprocessing as mp
import select
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from bench import CPU_LATENCY_HELP, block_device, cpu_latency, host_sample, host_usage, process_cpu_s

PLACE, CANCEL, BY_CLIENT_ID = 1, 2, 2  # engine Cmd.PLACE, Cmd.CANCEL, CmdFlag.BY_CLIENT_ID
RESTING = 500  # resting orders per client before each place is paired with a cancel
# closed loop: orders/s (all clients) the messages made before the clock allow for (~8 bytes an order as packed
# rows, ~55-65 as fixed rows; past them, more are made in the loop, ~40 ns an order)
PREPARED_PER_S = 1_500_000
PREPARED_MAX_ORDERS = 8_000_000  # and at most this many (~0.5 GB): a long run makes the rest in the loop
# closed loop: orders/s (all clients) the per-order arrays have room for.  Growing them in the timed loop copied
# four arrays of millions of orders, a stall of 0.7-1.5 s in which the engine ran dry; room past the orders made
# before the clock costs no memory unless used (its pages are mapped as first written)
TIMED_ROOM_PER_S = 4_000_000
BASE_PRICE = 1_000_000
HIST_MAX_NS = 60_000_000_000
# open loop: a client sending more often than this never spins before a send (a spin per send would take a core
# from the engine).  Its waits end tens of us late: from 1 ms down to this, sends went 65-85 us late without the
# spin, 4-8 us with it (the spin's cost: at most SPIN_NS / SPIN_INTERVAL_NS of a core)
SPIN_INTERVAL_NS = 250_000
SPIN_NS = 50_000  # open loop, sends SPIN_INTERVAL_NS apart or more: the last this much before a send is spun
# open loop, sends closer: the least wait between sends, about OPEN_LOOP_BURST messages' worth within these bounds
# times the clients (so that together they wake about as often as one would: each wake-up costs a client 25-30 us
# of CPU, taken from the engine; 4 clients at 70 k/s with one client's bounds took 1.4 cores and fell behind);
# what is due by then goes at once.  The upper bound: at 50 us a client at 10,000/s woke twice a message, and the
# engine's order-to-ack p99 at 10,000 and 30,000/s was twice what it is at 150 (session 26)
OPEN_LOOP_BURST, OPEN_LOOP_TICK_NS = 4, (20_000, 150_000)
PARTS = ("closed", "open", "fsync_off", "ceiling", "bare")
ROW_WIRES = {"rows": 3, "fixed-rows": 2}  # --wire: OrderRows in gateway.messages' PACKED_ROWS, FIXED_ROWS
ACK_ROW = struct.Struct("<7q")  # an Ack as a row of gateway.messages.ACK_ROW_DTYPE (rid ... ts)
# the highest rate whose order-to-ack p99 stays under P99_TARGET_US: when no open-loop point keeps it there, rates
# below the lowest are tried, each P99_SEARCH_STEP times lower, down to --p99-floor (one order a message, each point
# long enough for P99_SEARCH_ORDERS timed orders: a p99 of a few hundred orders is a handful of them)
P99_TARGET_US, P99_SEARCH_STEP, P99_SEARCH_ORDERS = 1000, 4, 2000


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------- load


def flow_commands(first: int, n: int, resting: int) -> tuple[np.ndarray, np.ndarray]:
    """Commands ``first .. first + n - 1`` (0-based) of one client's flow: ``resting`` places, then
    cancel-oldest (by client id) + place pairs.  Returns which are cancels, and each one's client id (the
    order it places, or cancels)."""
    j = np.arange(first, first + n, dtype=np.int64) - resting  # < 0: one of the first places; even: a cancel
    cancel = (j >= 0) & ((j & 1) == 0)
    return cancel, np.where(j < 0, j + resting + 1, (j >> 1) + 1 + resting * ~cancel)


class Traffic:
    """One client's command stream: RESTING places below the market, then cancel-oldest (by client
    id) + place pairs.  Command ``i`` (0-based, rid ``i + 1``) is a function of ``i``, so commands
    are made with numpy, and messages of ``batch`` commands a chunk at a time, ahead of the send
    loop (``prepare`` makes them before the clock starts): the load generator shares the machine
    with the engine, and its cost per message is the engine's loss.  The messages are made into one
    buffer (``blob``, message k at ``offsets[k]:offsets[k + 1]``), sent by ``send_slices`` in C: no
    Python object per message (with one, making them in the loop cost ~450 ns an order at one order
    per message).  ``wire`` = "rows" sends a message's commands as one OrderRows message of packed rows
    (the market makers' path), "fixed-rows" of 54-byte rows, "structs" as PlaceOrder / CancelOrder
    structs (a Batch when several)."""

    CHUNK_ORDERS = 1 << 16  # orders made at a time when the prepared messages run out: a short pause in the loop

    def __init__(self, market: int, wire: str, batch: int):
        from gateway import messages as m

        self.m = m
        self.market = market
        self.wire = wire
        self.batch = batch
        self.blob = np.zeros(0, np.uint8)  # the messages made; those from ``at`` on are not taken yet
        self.offsets = np.zeros(1, np.int64)
        self.at = 0
        self.taken = 0  # messages taken: the next one starts at rid taken * batch + 1
        if wire in ROW_WIRES:  # an OrderRows message is a header, the rows as a bin and the format
            self.row_format = ROW_WIRES[wire]
            template = m.encode(m.OrderRows(rid=0, rows=b"", format=self.row_format))
            self.header = np.frombuffer(template[:-3], np.uint8)  # less the empty bin (c4 00) and the format
            self.trailer = np.frombuffer(template[-1:], np.uint8)

    @property
    def made(self) -> int:
        """Messages made and not taken yet."""
        return len(self.offsets) - 1 - self.at

    def make(self, first: int, n: int) -> np.ndarray:
        """Commands ``first .. first + n - 1`` as rows (bitwise where the pattern allows: numpy's
        int64 division is slow)."""
        rid = np.arange(first + 1, first + n + 1, dtype=np.int64)
        cancel, cid = flow_commands(first, n, RESTING)
        place = ~cancel
        rows = np.zeros(n, self.m.COMMAND_ROW_DTYPE)
        rows["kind"] = PLACE + (CANCEL - PLACE) * cancel
        rows["flags"] = BY_CLIENT_ID * cancel
        rows["market"] = self.market * place
        rows["rid"] = rid
        rows["price"] = (BASE_PRICE - (cid & 63)) * place
        rows["qty"] = place
        rows["id"] = cid
        return rows

    def encode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The messages of ``rows`` (whole messages of ``batch``): their bytes, one after another, and
        each one's length."""
        m, batch, n = self.m, self.batch, len(rows) // self.batch
        if self.wire in ROW_WIRES:
            if self.row_format == m.PACKED_ROWS:
                data, lengths = m.COMMAND_PACKING.pack_groups(rows, batch)
            else:
                data, lengths = rows.view(np.uint8), np.full(n, batch * rows.itemsize, np.int64)
            return framed(self.header, data, lengths, self.trailer)
        made = []
        for k in range(n):
            reqs = [m.CancelOrder(rid=rid, client_id=cid) if kind == CANCEL else
                    m.PlaceOrder(rid=rid, market=self.market, side=m.Side.BUY, price=price, qty=1, client_id=cid)
                    for kind, rid, price, cid in rows[k * batch:(k + 1) * batch][["kind", "rid", "price", "id"]].tolist()]
            made.append(m.encode(reqs[0] if batch == 1 else m.Batch(rid=0, requests=reqs)))
        return np.frombuffer(b"".join(made), np.uint8), np.array([len(x) for x in made], np.int64)

    def prepare(self, n: int) -> None:
        """Make ``n`` more messages, after those already made (the taken ones are dropped)."""
        blob, lengths = self.encode(self.make((self.taken + self.made) * self.batch, n * self.batch))
        left = self.blob[self.offsets[self.at]:]
        self.offsets = np.concatenate([self.offsets[self.at:] - self.offsets[self.at], len(left) + np.cumsum(lengths)])
        self.blob = np.concatenate([left, blob])
        self.at = 0

    def take(self, n: int) -> int:
        """Take the next ``n`` messages: they are ``blob``'s messages from the one returned on."""
        if n > self.made:
            self.prepare(max(n - self.made, self.CHUNK_ORDERS // self.batch, 1))
        first = self.at
        self.at += n
        self.taken += n
        return first

    def message_bytes(self, first: int, n: int) -> list[bytes]:
        """Messages ``first .. first + n - 1`` of ``blob``, each as bytes (for pyzmq's ``send``)."""
        return [self.blob[self.offsets[k]:self.offsets[k + 1]].tobytes() for k in range(first, first + n)]


def framed(header: np.ndarray, data: np.ndarray, lengths: np.ndarray, trailer: np.ndarray) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """Messages of ``header``, a MessagePack bin of the next ``lengths[k]`` bytes of ``data`` and ``trailer``, one
    after another, made with numpy (no Python call a message): their bytes and each one's length."""
    if len(lengths) and lengths.max() >= 0x10000:
        raise ValueError(f"framed: a message of {lengths.max()} bytes of rows; bin 8 and 16 are made here")
    heads = np.where(lengths < 0x100, 2, 3)
    sizes = len(header) + heads + lengths + len(trailer)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    out = np.empty(int(ends[-1]) if len(ends) else 0, np.uint8)
    out[(starts[:, None] + np.arange(len(header))).ravel()] = np.tile(header, len(lengths))
    at = starts + len(header)  # each bin's head
    out[at] = np.where(heads == 2, 0xC4, 0xC5)
    out[at + 1] = np.where(heads == 2, lengths, lengths >> 8)
    wide = heads == 3
    out[at[wide] + 2] = lengths[wide] & 0xFF
    data_starts = np.cumsum(lengths) - lengths
    out[np.repeat(at + heads - data_starts, lengths) + np.arange(len(data))] = data
    out[((ends - len(trailer))[:, None] + np.arange(len(trailer))).ravel()] = np.tile(trailer, len(lengths))
    return out, sizes


def dealer(ctx: zmq.Context, spec: dict) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.curve_serverkey = spec["server_public"]
    s.curve_publickey = spec["public"]
    s.curve_secretkey = spec["secret"]
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 10_000)
    s.setsockopt(zmq.RCVHWM, 100_000)
    s.connect(spec["address"])
    return s


def load_client(spec: dict, out) -> None:
    """A load-generator process: runs one closed- or open-loop point and reports its figures.
    Its messages are made before the clock starts and its latencies go into the histogram after
    the run: in the loop it only sends, receives and notes times."""
    from gateway import messages as m
    from gateway.intake import readable, send_slices

    fine_timer_slack()
    ctx = zmq.Context()
    sock = dealer(ctx, spec)
    batch, mode = spec["batch"], spec["mode"]
    traffic = Traffic(spec["market"], spec["wire"], batch)
    rate = spec["rate_per_client"] if mode == "open" else PREPARED_PER_S / spec["clients"]
    expected = int(rate * (spec["seconds"] + 1)) // batch + spec["window"] // batch + 1
    traffic.prepare(min(expected, PREPARED_MAX_ORDERS // batch + 1))
    # by rid, ns after the clock's start (t0): when the order is due (open loop: the schedule, made here, before
    # the clock: message j, rids j * batch + 1 .., is due at j * interval) or was sent (closed loop)
    room = expected * batch + 2 if mode == "open" else \
        int(TIMED_ROOM_PER_S / spec["clients"] * (spec["seconds"] + 1)) + spec["window"] + 2
    planned = np.zeros(room, np.int64)
    # the answers as they come, timed after the run: each ack's row (an AckRows' rows as sent, a lone Ack packed
    # alike) into room made before the clock, each reject's rid, and at the end of each read the log's lengths
    # and the time
    ack_log = np.zeros(len(planned) * ACK_ROW.size, np.uint8)
    # the room the orders made before the clock will take, mapped now: a page's first write faults, and here
    # the host backs the page then, ~2 ms a MB; in the loop that took 3.5 % of both cores at 16/msg (session 30).
    # Room past them (a faster or longer run) is mapped as it is written
    timed = min(room, traffic.made * batch + 2)
    planned[:timed].fill(0)
    ack_log[:timed * ACK_ROW.size].fill(0)
    interval = int(1e9 * batch / spec["rate_per_client"]) if mode == "open" else 0
    tick = min(max(OPEN_LOOP_BURST * interval, OPEN_LOOP_TICK_NS[0] * spec["clients"]),
               OPEN_LOOP_TICK_NS[1] * spec["clients"])
    if mode == "open":  # the loop sends fewer than ``expected`` messages: it stops ``seconds`` after t0
        planned[1:] = np.arange(len(planned) - 1) // batch * interval
    log_view, logged = memoryview(ack_log), 0
    # packed AckRows as they came, each with where its rows go in the log: the loop only counts their rows (room
    # is kept for them) and they are decoded after the run, out of the engine's way on the cores they share
    packed_acks: list[tuple[int, bytes]] = []
    reject_rids, reads = [], []
    # open loop: how late each send went out after its planned time (the load generator's own error,
    # which the latencies include: they start at the planned time)
    late = np.zeros(expected + 2, np.int64)
    sends = 0
    acked = rejected = 0
    reject_names: collections.Counter = collections.Counter()
    rid = 1
    # the handshake and the first round trip happen before the clock starts
    sock.send(m.encode(m.Heartbeat(rid=0)))
    if not sock.poll(10_000):
        out.put({"error": "no reply from the gateway within 10 s"})
        return
    sock.recv()
    cpu0 = time.process_time()  # all threads, ZeroMQ's I/O thread included
    now_ns = time.perf_counter_ns
    wall_offset = time.time_ns() - now_ns()  # this clock to the wall clock the matcher stamps
    t0 = now_ns()
    end = t0 + int(spec["seconds"] * 1e9)
    record_from = int(spec["warmup"] * 1e9)  # after t0, as ``planned``
    messages = 0  # sent
    last_send = t0  # open loop: when the last send went (the next waits a tick after it)
    in_flight = 0
    window = max(4 * batch, spec["window"])
    answered = 0  # orders answered inside the timed window [t0 + record_from, end): the rate's numerator

    grows = 0  # the per-order arrays grown in the timed loop: each a stall, reported
    # one client notes the whole host's CPU and disk at the end of the warm-up and at the end (``host``)
    host_from = None if spec.get("sample_host") else ()

    def plan(first: int, n: int, at) -> None:
        nonlocal planned, grows
        if first + n > len(planned):  # more than there is room for: grow (a stall in the timed loop; rare)
            grows += 1
            planned = np.concatenate([planned, np.zeros(max(len(planned), n), np.int64)])
        planned[first:first + n] = at

    def log_room(n: int) -> None:
        """Room in the ack log for ``n`` more bytes (a growth is a stall too, counted with the others)."""
        nonlocal ack_log, log_view, grows
        if logged + n > len(ack_log):
            grows += 1
            log_view.release()
            ack_log = np.concatenate([ack_log, np.zeros(max(len(ack_log), n), np.uint8)])
            log_view = memoryview(ack_log)

    fd = sock.getsockopt(zmq.FD)
    handle = sock.underlying

    def replies_within(timeout_ns: int) -> bool:
        """Whether a reply is waiting, or comes within ``timeout_ns``: a reply is timed when it arrives, not
        when a sleep ends, and a send's wait ends to the microsecond (zmq_poll counts milliseconds)."""
        if readable(handle):
            return True
        if timeout_ns <= 0:
            return False
        select.select((fd,), (), (), timeout_ns / 1e9)  # the socket's fd wakes us when its state may have changed
        return readable(handle)

    def take_replies() -> None:
        """The replies waiting, read at once and timed together (their arrival: when the last was read), libzmq
        asked from C whether one waits (no pyzmq ``EVENTS``, no ``Again`` raised).  Only their rows are kept
        here (one copy a reply; packed acks are only counted, and decoded after the run); the latencies are
        worked out after the run (``answer_times``), out of the engine's way on the cores they share: this took
        522 -> 487 ms of the client's CPU in 6 s at 16/msg, 269 -> 196 ms at 1/msg, against numpy on every read
        (session 29)."""
        nonlocal acked, rejected, in_flight, answered, logged
        before, refused = logged, len(reject_rids)
        while readable(handle):
            msg = m.reply_decoder.decode(sock.recv(zmq.NOBLOCK))
            for item in (msg.items if type(msg) is m.Replies else (msg,)):
                kind = type(item)
                if kind is m.AckRows:
                    if item.format == m.FIXED_ROWS:
                        size = len(item.rows)
                        log_room(size)
                        log_view[logged:logged + size] = item.rows
                    else:
                        size = m.ACK_PACKING.count(item.rows) * ACK_ROW.size
                        log_room(size)
                        packed_acks.append((logged, item.rows))
                    logged += size
                elif kind is m.Ack:
                    log_room(ACK_ROW.size)
                    ACK_ROW.pack_into(log_view, logged, item.rid, item.order_id, item.client_id, item.cmd_seq,
                                      item.durable_seq, item.count, item.ts)
                    logged += ACK_ROW.size
                elif kind is m.Reject:
                    reject_rids.append(item.rid)
                    reject_names[item.name] += 1
        n_acks = (logged - before) // ACK_ROW.size
        n = n_acks + len(reject_rids) - refused
        if not n:
            return
        t = now_ns()
        reads.append((logged, len(reject_rids), t - t0))
        acked += n_acks
        rejected += n - n_acks
        in_flight -= n
        if t0 + record_from <= t < end:
            answered += n

    while True:
        t = now_ns()
        if t >= end:
            break
        if host_from is None and t - t0 >= record_from:
            host_from = (host_sample(spec["disk"]), t)
        if mode == "open":
            behind = t - t0 - messages * interval  # how late the next message is (< 0: not due yet)
            if behind >= 0:
                due = behind // interval + 1  # every message due by now, in one send
                if sends < len(late):
                    late[sends] = behind
                    sends += 1
                first = traffic.take(due)  # before reading blob: taking may make more
                send_slices(sock.underlying, traffic.blob, traffic.offsets, first, due)
                last_send = t
                messages += due
                rid += due * batch
                in_flight += due * batch
            # wait for the next send or a reply; sends far apart: by halves (a wake-up can be late by tens of us) and
            # the last SPIN_NS spun, for a precise send; closer: until a tick after the last send (a spin, or a
            # wake-up per message, would take a core from the engine), however many replies wake the wait meanwhile
            t = now_ns()
            gap_ns = t0 + messages * interval - t
            if interval >= SPIN_INTERVAL_NS:
                wait_ns = gap_ns // 2 if gap_ns > SPIN_NS else 0
            else:
                wait_ns = max(gap_ns, last_send + tick - t)
            if replies_within(wait_ns):
                take_replies()
        else:
            room = (window - in_flight) // batch
            if room > 0:
                plan(rid, room * batch, now_ns() - t0)
                first = traffic.take(room)  # before reading blob: taking may make more
                send_slices(sock.underlying, traffic.blob, traffic.offsets, first, room)
                rid += room * batch
                in_flight += room * batch
            if replies_within(100_000_000):
                take_replies()
    host = host_usage(host_from[0], host_sample(spec["disk"]), (now_ns() - host_from[1]) / 1e9) if host_from else None
    drain_until = now_ns() + 5_000_000_000
    while in_flight > 0 and now_ns() < drain_until:
        if replies_within(100_000_000):
            take_replies()
    cpu_s = time.process_time() - cpu0
    # leave an empty book for the next point (untimed): its client ids start at 1 again
    plan(rid, 1, -1)  # never timed
    in_flight += 1
    sock.send(m.encode(m.MassCancel(rid=rid)))
    while in_flight > 0 and now_ns() < drain_until + 5_000_000_000:
        if replies_within(100_000_000):
            take_replies()
    for at, packed in packed_acks:
        rows = m.ACK_PACKING.unpack(packed).view(np.uint8)
        log_view[at:at + len(rows)] = rows
    sent, answered_at, intake = answer_times(planned, ack_log[:logged], reject_rids, reads, record_from)
    n_acked = len(intake)
    intake -= t0 + wall_offset  # the matcher's intake stamps (wall clock) on this clock, after t0
    latencies = answered_at - sent
    if spec.get("orders_to"):  # each timed order's planned send and its ack, on this clock (bench.path)
        np.save(spec["orders_to"], np.stack([t0 + sent, t0 + answered_at]))
    hist = histogram(latencies)
    p = hist.get_percentile_to_value_dict([50, 99, 99.9])
    out.put({"acked": acked, "rejected": rejected, "reject_names": dict(reject_names), "lost": in_flight,
             "grows": grows, "host": host,
             # the rate: answers that came inside the timed window, over it (a span from the first ack to the
             # last read an open loop's late acks, then all at once, above the rate offered)
             "counted": len(latencies), "answered": answered, "span_s": (end - t0 - record_from) / 1e9,
             "cpu_s": cpu_s, "hist": hist.encode(), "p50": p[50], "p99": p[99], "p999": p[99.9],
             "hist_to_intake": histogram(intake[:n_acked] - sent[:n_acked]).encode(),
             "hist_intake_to_ack": histogram(answered_at[:n_acked] - intake[:n_acked]).encode(),
             "hist_send_late": histogram(late[:sends]).encode()})
    sock.close(linger=0)
    ctx.term()


def answer_times(planned: np.ndarray, ack_log, reject_rids: list[int], reads: list[tuple[int, int, int]],
                 record_from: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A load client's answers, timed: for each order planned at or after ``record_from`` (``planned`` by rid, ns
    after the clock's start; the untimed are below it), its planned send and its answer's arrival, acks first then
    rejects, and each of those acks' ``ts`` (the matcher's intake, wall clock).  ``ack_log``: the ack rows as
    they came (ACK_ROW_DTYPE records: bytes or a uint8 array); ``reject_rids``: the rejects' rids; ``reads``: at
    the end of each read, the log's length in bytes, the rejects' count and the time (ns after the start) its
    answers arrived."""
    from gateway.messages import ACK_ROW_DTYPE

    rows = np.frombuffer(memoryview(ack_log), ACK_ROW_DTYPE)
    ends = np.array(reads, np.int64).reshape(-1, 3)
    times = ends[:, 2]
    ack_at = np.repeat(times, np.diff(ends[:, 0] // ACK_ROW_DTYPE.itemsize, prepend=0))
    reject_at = np.repeat(times, np.diff(ends[:, 1], prepend=0))
    sent = planned[np.concatenate([rows["rid"], np.array(reject_rids, np.int64)])]
    timed = sent >= record_from
    return sent[timed], np.concatenate([ack_at, reject_at])[timed], rows["ts"][timed[:len(rows)]]


def fine_timer_slack() -> None:
    """Linux lets a sleep run up to the thread's timer slack (50 us by default) past its deadline; the open
    loop's sends wait for their planned time in short sleeps, so 1 us.  Elsewhere, as it is."""
    try:
        with open("/proc/self/timerslack_ns", "w") as f:
            f.write("1000")
    except OSError:
        pass


def histogram(values_ns: np.ndarray):
    """An HdrHistogram of nanosecond values (1 ns at least: two clocks may disagree by a little)."""
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, HIST_MAX_NS, 3)
    values, counts = np.unique(np.clip(values_ns, 1, HIST_MAX_NS), return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist()):
        hist.record_value(value, count)
    return hist


def flood_client(spec: dict, out) -> None:
    """Ceiling load: the same messages as fast as the socket takes them, no replies awaited."""
    ctx = zmq.Context()
    sock = dealer(ctx, spec)
    batch = spec["batch"]
    traffic, n = Traffic(spec["market"], spec["wire"], batch), max(1, 8192 // batch)
    messages = traffic.message_bytes(traffic.take(n), n)
    end = time.perf_counter() + spec["seconds"]
    sent = 0
    while time.perf_counter() < end:
        for msg in messages:
            sock.send(msg)
        sent += len(messages) * batch
    out.put({"sent": sent})
    sock.close(linger=1000)
    ctx.term()


def curve_router(ctx: zmq.Context, address: str, secret: bytes, public: bytes) -> zmq.Socket:
    """A CurveZMQ server's ROUTER bound at ``address``, with room for the load clients' bursts either way."""
    router = ctx.socket(zmq.ROUTER)
    router.curve_server = True
    router.curve_publickey = public
    router.curve_secretkey = secret
    router.setsockopt(zmq.RCVHWM, 100_000)
    router.setsockopt(zmq.SNDHWM, 100_000)
    router.bind(address)
    return router


def ceiling_server(address: str, secret: bytes, public: bytes, batch: int, ready, out) -> None:
    """Receive and decode every message (the gateway's decoder), each ``batch`` orders (an OrderRows' rows stay
    bytes, as msgspec leaves them: the gateway reads them in C, and a Python call a message to count them here
    halved the 16/msg ceiling); orders/s from first to last."""
    from gateway import messages as m

    ctx = zmq.Context()
    router = curve_router(ctx, address, secret, public)
    ready.set()
    decode = m.request_decoder.decode
    orders = 0
    first = last = 0.0
    idle_since = None
    while True:
        if not router.poll(100):
            if orders and (idle_since is None):
                idle_since = time.perf_counter()
            if idle_since is not None and time.perf_counter() - idle_since > 0.5:
                break
            continue
        idle_since = None
        while True:
            try:
                _, body = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            decode(body.buffer)
            orders += batch
            last = time.perf_counter()
            first = first or last
    out.put({"orders": orders, "seconds": last - first})
    router.close(linger=0)
    ctx.term()


def bare_server(address: str, secret: bytes, public: bytes, ready, stop) -> None:
    """Answer every request at once, as the gateway would with no engine behind it.  A burst of OrderRows is read
    as the gateway reads it (``gateway.intake.drain_burst``: in C, no Python object a message) and each session's
    rows are acked by one AckRows in their format; a message of a session not yet known, or not an OrderRows, is
    decoded in Python: a Batch answered by its commands' Acks, a lone command by an Ack, a Heartbeat by a
    HeartbeatAck, bytes that are no request by a MALFORMED_MESSAGE Error.  Each ack's ``ts`` is the wall clock
    when its burst was read, as the matcher's intake stamps it, so the bare path splits into the way in and the
    way out."""
    from engine.codes import ResultCode
    from engine.config import GatewaySection
    from gateway import messages as m
    from gateway.intake import drain_burst, readable

    limits = GatewaySection()
    ctx = zmq.Context()
    router = curve_router(ctx, address, secret, public)
    ready.set()
    handle = router.underlying
    sessions: dict = {}  # routing ids that have sent a message: their OrderRows are read in C
    decode, encode = m.request_decoder.decode, m.encode

    def acked(commands: np.ndarray, row_format: int, ts: int) -> bytes:
        acks = np.zeros(len(commands), m.ACK_ROW_DTYPE)
        acks["rid"], acks["client_id"], acks["ts"] = commands["rid"], commands["id"], ts
        return encode(m.AckRows(rows=m.pack_rows(acks, row_format), format=row_format))

    while not stop.is_set():
        if not readable(handle) and not router.poll(100):
            continue
        rows, others, _ = drain_burst(handle, sessions, 4096, limits.max_message_bytes, limits.max_batch,
                                      m.COMMAND_PACKING)
        ts = time.time_ns()
        for routing_id, (_, data, row_format) in rows.items():
            router.send_multipart([routing_id, acked(np.frombuffer(data, m.COMMAND_ROW_DTYPE), row_format, ts)])
        for routing_id, body, _, _ in others:
            sessions[routing_id] = None
            try:
                msg = decode(body)
            except m.UNDECODABLE as exc:  # as the gateway answers it (none of the load clients' messages is)
                code = ResultCode.MALFORMED_MESSAGE
                router.send_multipart([routing_id, encode(m.Error(rid=0, code=int(code), name=code.name,
                                                                  reason=str(exc)[:200]))])
                continue
            kind = type(msg)
            if kind is m.OrderRows:
                reply = acked(m.unpack_rows(msg.rows, m.COMMAND_ROW_DTYPE, msg.format), msg.format, ts)
            elif kind is m.Heartbeat:
                reply = encode(m.HeartbeatAck(rid=msg.rid, server_ns=ts))
            else:
                acks = [m.Ack(rid=c.rid, order_id=0, client_id=getattr(c, "client_id", 0), cmd_seq=0, durable_seq=0,
                              ts=ts) for c in (msg.requests if kind is m.Batch else (msg,))]
                reply = encode(acks[0] if len(acks) == 1 else m.Replies(items=acks))
            router.send_multipart([routing_id, reply])
    router.close(linger=0)
    ctx.term()


# ---------------------------------------------------------------------------------------- engine


def write_config(directory: Path, address: str, clients: list[dict], fsync: str, marketdata: bool) -> Path:
    name = f"xos-wire-{os.getpid()}-{fsync}"
    keys = ", ".join(f'{{ account = {c["account"]}, public_key = "{c["public"].decode()}" }}' for c in clients)
    deposits = "\n".join(f"[[accounts]]\nid = {c['account']}\ndeposits = {{ USD = {10**15}, BTC = {10**15} }}"
                         for c in clients)
    md_port = free_port(), free_port()
    path = directory / f"xos-{fsync}.toml"
    path.write_text(f"""
[engine]
name = "{name}"
data_dir = "{directory / ('data-' + fsync)}"
ring_capacity = {1 << 20}
batch_max = 8192
fsync = "{fsync}"
snapshot_interval_s = 0
[[assets]]
id = 1
symbol = "USD"
decimals = 2
[[assets]]
id = 2
symbol = "BTC"
decimals = 8
[[markets]]
id = 1
base = "BTC"
quote = "USD"
tick_size = 1
lot_size = 1
min_size = 1
{deposits}
[risk]
move_bps = 10000
[workers]
heartbeat_s = 0.5
checkpoint_s = 1.0
stale_after_s = 30.0
[marketdata]
enabled = {'true' if marketdata else 'false'}
address = "tcp://127.0.0.1:{md_port[0]}"
snapshot_address = "tcp://127.0.0.1:{md_port[1]}"
[gateway]
address = "{address}"
rate_per_s = 1000000000
burst = 1000000000
keys = [{keys}]
""")
    return path


class Engine:
    def __init__(self, directory: Path, clients: list[dict], fsync: str, marketdata: bool):
        from engine.config import load
        from engine.supervisor import Supervisor
        from gateway.keys import server_pair

        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.path = write_config(directory, self.address, clients, fsync, marketdata)
        self.cfg = load(self.path)
        self.sup = Supervisor(self.cfg, str(self.path), log=lambda msg: None)
        self.sup.start()
        self.server_public = server_pair(self.cfg)[0]
        self.disk = block_device(self.cfg.data_path)  # the journal's device, for a point's ``host`` figures

    def cpu_s(self, role: str) -> float:
        """CPU seconds (user + system, all threads) the role's process has used so far."""
        return process_cpu_s(self.sup.procs[role].pid)

    def stop(self) -> dict:
        """Stop the engine; returns each role's last heartbeat."""
        from engine.process import read_heartbeats

        beats = read_heartbeats(self.cfg)
        self.sup.stop()
        return beats


def run_clients(target, specs: list[dict]) -> list[dict]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(spec, out)) for spec in specs]
    for p in procs:
        p.start()
    results = [out.get(timeout=120 + spec["seconds"]) for spec in specs]
    for p in procs:
        p.join(30)
    for r in results:
        if "error" in r:
            raise RuntimeError(r["error"])
    return results


def merge(results: list[dict]) -> dict:
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, HIST_MAX_NS, 3)
    for r in results:
        hist.add(HdrHistogram.decode(r["hist"]))
    p = hist.get_percentile_to_value_dict([50, 99, 99.9])
    split = {}
    # an acked order's latency before and after the matcher's intake; how late the open loop's sends went out
    for part in ("to_intake", "intake_to_ack", "send_late"):
        h = HdrHistogram(1, HIST_MAX_NS, 3)
        for r in results:
            h.add(HdrHistogram.decode(r[f"hist_{part}"]))
        q = h.get_percentile_to_value_dict([50, 99]) if h.get_total_count() else {50: 0, 99: 0}  # closed: no send late
        split[f"{part}_p50_us"], split[f"{part}_p99_us"] = q[50] / 1e3, q[99] / 1e3
    span = max(r["span_s"] for r in results)
    answered = sum(r["answered"] for r in results)
    rejects: collections.Counter = collections.Counter()
    for r in results:
        rejects.update(r["reject_names"])
    host = next((r["host"] for r in results if r["host"]), None)
    return {"orders_per_s": answered / span if span else 0.0, "p50_us": p[50] / 1e3, "p99_us": p[99] / 1e3,
            "p999_us": p[99.9] / 1e3, "acked": sum(r["acked"] for r in results),
            "rejected": sum(r["rejected"] for r in results), "reject_names": dict(rejects),
            "unanswered": sum(r["lost"] for r in results), "clients_cpu_s": sum(r["cpu_s"] for r in results),
            "client_stalls": sum(r["grows"] for r in results), **split, **({"host": host} if host else {})}


def client_specs(clients: list[dict], address: str, server_public: bytes, disk, mode: str, batch: int, rate: float,
                 seconds: float, warmup: float) -> list[dict]:
    """The load clients' specs for a point against the server at ``address`` (the first samples the host)."""
    return [dict(c, address=address, server_public=server_public, mode=mode, batch=batch, clients=len(clients),
                 rate_per_client=rate / len(clients) if rate else 0, seconds=seconds, warmup=warmup, market=1,
                 sample_host=i == 0, disk=disk)
            for i, c in enumerate(clients)]


def point(engine: Engine, clients: list[dict], mode: str, batch: int, rate: float, seconds: float,
          warmup: float) -> dict:
    specs = client_specs(clients, engine.address, engine.server_public, engine.disk, mode, batch, rate, seconds, warmup)
    cpu = {role: engine.cpu_s(role) for role in engine.sup.procs}
    res = merge(run_clients(load_client, specs))
    # each process's own cost, steadier than throughput on a shared box (threads included: ZeroMQ's
    # I/O thread too); on two cores their sum over the orders bounds the rate the machine can reach
    per_order = {role: (engine.cpu_s(role) - cpu[role]) / max(1, res["acked"]) * 1e6 for role in cpu}
    per_order["clients"] = res.pop("clients_cpu_s") / max(1, res["acked"]) * 1e6
    per_order["total"] = sum(per_order.values())
    res["cpu_us_per_order"] = per_order
    res["gateway_cpu_us_per_order"] = per_order["gateway"]
    if rate:
        res["offered_per_s"] = rate
    if res["client_stalls"]:
        _log(f"    warning: the load clients grew their arrays {res['client_stalls']} times in the timed loop (stalls: "
             f"the figures are low)")
    return res


def ceiling(directory: Path, clients: list[dict], batch: int, seconds: float) -> dict:
    from gateway.keys import load_pair

    ctx = mp.get_context("spawn")
    public, secret = load_pair(directory / "keys" / "ceiling.key_secret")
    address = f"tcp://127.0.0.1:{free_port()}"
    ready, out = ctx.Event(), ctx.Queue()
    server = ctx.Process(target=ceiling_server, args=(address, secret, public, batch, ready, out))
    server.start()
    ready.wait(30)
    specs = [dict(c, address=address, server_public=public, batch=batch, seconds=seconds, market=1) for c in clients]
    run_clients(flood_client, specs)
    res = out.get(timeout=60)
    server.join(10)
    return {"orders_per_s": res["orders"] / res["seconds"] if res["seconds"] else 0.0}


def bare(directory: Path, clients: list[dict], points: list[tuple[int, float, float]], warmup: float) -> list[dict]:
    """The bare path at each ``(batch, rate, seconds)``: the open-loop clients against ``bare_server``."""
    from gateway.keys import load_pair

    ctx = mp.get_context("spawn")
    public, secret = load_pair(directory / "keys" / "ceiling.key_secret")
    address = f"tcp://127.0.0.1:{free_port()}"
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=bare_server, args=(address, secret, public, ready, stop))
    server.start()
    found = []
    try:
        if not ready.wait(30):
            raise RuntimeError("the bare server did not start within 30 s")
        for batch, rate, seconds in points:  # no journal: the host's CPUs only
            specs = client_specs(clients, address, public, None, "open", batch, rate, seconds, warmup)
            r = merge(run_clients(load_client, specs))
            r.pop("clients_cpu_s")
            r.update(batch=batch, offered_per_s=rate)
            found.append(r)
            _log(f"  bare path (no engine), {batch:>3}/msg at {rate:>10,.0f}/s: achieved {r['orders_per_s']:>10,.0f}  "
                 f"p50 {r['p50_us']:,.0f} us  "
                 f"p99 {r['p99_us']:,.0f} us  p99.9 {r['p999_us']:,.0f} us  (way in p50 "
                 f"{r['to_intake_p50_us']:,.0f} us, way out {r['intake_to_ack_p50_us']:,.0f} us)")
            _log_host(r)
    finally:
        stop.set()
        server.join(10)
    return found


def bare_points(args, out: dict) -> list[tuple[int, float, float]]:
    """Where the bare path is measured, by batch size and rate: each open-loop point's batch size, rate and length
    (each batch size's open-loop rates when the open loop was not run)."""
    if out["open"]:
        points = [(r["batch"], r["offered_per_s"], r["seconds"]) for r in out["open"]]
    else:
        points = [(batch, rate, args.seconds) for batch in args.batches for rate in open_rates(args, out, batch)]
    return sorted(points)


def plot(points: list[dict], path: str, bare_path: list[dict] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    # the engine's percentiles, and thin beneath them in the same colour the bare path's (no engine), per batch size
    lines = (("", points, (("p50_us", "-o"), ("p99_us", "--s"), ("p999_us", ":^")), 1.5),
             (" bare", bare_path, (("p50_us", ":"), ("p99_us", "-.")), 0.8))
    for i, batch in enumerate(sorted({p["batch"] for p in [*points, *bare_path]})):
        for name, source, styles, width in lines:
            pts = sorted((p for p in source if p["batch"] == batch), key=lambda p: p["offered_per_s"])
            for key, style in styles if pts else ():
                ax.plot([p["offered_per_s"] for p in pts], [p[key] for p in pts], style, color=f"C{i}", lw=width,
                        label=f"{batch}/msg{name} {key[:-3]}")
    ax.axhline(1000, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered orders/s")
    ax.set_ylabel("order to ack (us)")
    ax.set_title("xos wire-to-wire, open loop (acks after the journal is durable)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def open_point(engine: Engine, clients: list[dict], out: dict, batch: int, rate: float, seconds: float,
               warmup: float, search: bool = False) -> dict:
    """An open-loop point, added to ``out["open"]`` and shown."""
    r = point(engine, clients, "open", batch, rate, seconds, warmup)
    r["batch"], r["seconds"] = batch, seconds
    if search:
        r["p99_search"] = True
    out["open"].append(r)
    _log(f"  open loop, {batch:>3}/msg at {rate:>10,.0f}/s: achieved {r['orders_per_s']:>10,.0f}  "
         f"p50 {r['p50_us']:,.0f} us  p99 {r['p99_us']:,.0f} us  p99.9 {r['p999_us']:,.0f} us  "
         f"(p50 to the matcher's intake {r['to_intake_p50_us']:,.0f} us, "
         f"intake to ack {r['intake_to_ack_p50_us']:,.0f} us; sends late by p50 "
         f"{r['send_late_p50_us']:,.0f} us)")
    _log_host(r)
    return r


def _log_host(r: dict) -> None:
    host = r.get("host")
    if host:
        disk = f"; disk {host['disk_write_mb_per_s']:,.1f} MB/s written ({host['disk_writes_per_s']:,.0f} writes/s)" \
            if "disk_write_mb_per_s" in host else ""
        _log(f"    host: CPUs busy {host['cpu_busy_pct']:.0f} %, idle {host['cpu_idle_pct']:.0f} %, waiting for I/O "
             f"{host['cpu_iowait_pct']:.0f} %, stolen {host['cpu_steal_pct']:.0f} %{disk}")


def p99_met(r: dict) -> bool:
    """An open-loop point kept p99 under the target and answered what it was offered."""
    return r["p99_us"] < P99_TARGET_US and r["orders_per_s"] >= 0.95 * r["offered_per_s"]


def search_p99(args, engine: Engine, clients: list[dict], out: dict) -> None:
    """When no open-loop point kept p99 under the target: lower rates of the first batch size, each
    P99_SEARCH_STEP times the last lower and the last one ``--p99-floor``, until one does (``p99_search`` in
    their JSON entries)."""
    batch = args.batches[0]
    tried = [r["offered_per_s"] for r in out["open"] if r["batch"] == batch]
    if not tried or any(p99_met(r) for r in out["open"]):
        return
    rate = min(tried)
    if rate <= args.p99_floor:
        return
    _log(f"  no rate kept p99 under {P99_TARGET_US / 1e3:g} ms: lower ones, down to {args.p99_floor:,.0f}/s ...")
    if args.settle:  # after the last batch size's highest rate, mostly past what the engine takes (as between them)
        _log(f"  settling {args.settle:g} s before the search ...")
        time.sleep(args.settle)
    while rate > args.p99_floor:
        rate = max(rate / P99_SEARCH_STEP, args.p99_floor)
        seconds = max(args.seconds, args.warmup + P99_SEARCH_ORDERS / rate)
        if p99_met(open_point(engine, clients, out, batch, round(rate), seconds, args.warmup, search=True)):
            return


def open_rates(args, out: dict, batch: int) -> list[int]:
    """The open-loop rates for a batch size: fractions of its closed-loop figure, and --rates."""
    closed = out["closed"].get(str(batch), {}).get("orders_per_s", 0)
    return sorted(r for r in {round(f * closed) for f in args.fractions} | {round(r) for r in args.rates} if r > 0)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.wire", description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    p.add_argument("--clients", type=int, default=1, help="load-generator processes (one account each)")
    p.add_argument("--seconds", type=float, default=2.0, help="per measured point")
    p.add_argument("--warmup", type=float, default=0.3, help="seconds of each point not recorded")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds the engine idles after the closed loops, between two batch sizes' open loops and "
                        "before the p99 search (the storage writes back what was journaled, the workers catch up)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 0.6, 0.9],
                   help="open-loop rates as fractions of the closed-loop throughput of the same batch size")
    p.add_argument("--rates", type=float, nargs="*", default=[], help="more open-loop rates (orders/s)")
    p.add_argument("--p99-floor", type=float, default=250.0,
                   help="when no open-loop point keeps p99 under 1 ms, lower rates (each a quarter of the last) "
                        "are tried down to this one (orders/s, the first batch size); 0: no search")
    p.add_argument("--window", type=int, default=32768,
                   help="closed loop: commands in flight per client (at least 4 messages); a smaller one leaves "
                        "the engine waiting for the client (Little's law) and measures less than it takes")
    p.add_argument("--wire", choices=(*ROW_WIRES, "structs"), default="rows",
                   help="orders as OrderRows of packed rows (the client library's), of fixed 54-byte rows, or as "
                        "PlaceOrder/CancelOrder structs")
    p.add_argument("--no-marketdata", action="store_true", help="leave the market-data service out")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="what to measure (closed loop, open loop, the fsync-off point, the ceiling, the bare path)")
    p.add_argument("--cpu-latency-us", type=int, default=-1, help=CPU_LATENCY_HELP)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--plot", metavar="PNG")
    args = p.parse_args(argv)
    if args.settle < 0:
        p.error(f"--settle {args.settle:g}: the pause cannot be negative")
    if args.p99_floor < 0:
        p.error(f"--p99-floor {args.p99_floor:g}: a rate cannot be negative")
    out: dict = {"benchmark": "wire"}
    with tempfile.TemporaryDirectory(prefix="xos-wire-") as tmp, cpu_latency(args.cpu_latency_us, out):
        return run(args, Path(tmp), out)


def run(args, directory: Path, out: dict) -> dict:
    from gateway.keys import load_pair, new_pair

    new_pair(directory / "keys", "ceiling")
    clients = []
    for i in range(args.clients):
        new_pair(directory / "keys", f"client{i}")
        public, secret = load_pair(directory / "keys" / f"client{i}.key_secret")
        clients.append({"account": 5001 + i, "public": public, "secret": secret, "wire": args.wire,
                        "window": args.window})
    marketdata = not args.no_marketdata
    out.update({"clients": args.clients, "seconds": args.seconds, "settle_s": args.settle, "marketdata": marketdata,
                "wire": args.wire,
                "workload": f"buy orders resting below the market, {RESTING} per client, then cancel-oldest + place",
                "closed": {}, "open": [], "ceiling": {}, "bare": []})
    parts = set(args.parts)
    if parts & {"open", "fsync_off", "bare"} and "closed" not in parts and not args.rates:
        raise SystemExit("open-loop rates are fractions of the closed-loop figures: measure 'closed' too or give --rates")
    if parts & {"closed", "open"}:
        _log(f"starting the engine (fsync always, market data {'on' if marketdata else 'off'}) ...")
        engine = Engine(directory, clients, "always", marketdata)
        try:
            if "closed" in parts:
                for batch in args.batches:
                    r = point(engine, clients, "closed", batch, 0, args.seconds, args.warmup)
                    out["closed"][str(batch)] = r
                    _log(f"  closed loop, {batch:>3}/msg: {r['orders_per_s']:>10,.0f} orders/s  "
                         f"p50 {r['p50_us']:,.0f} us  p99 {r['p99_us']:,.0f} us  rejected {r['rejected']}  "
                         f"gateway CPU {r['gateway_cpu_us_per_order']:.2f} us/order")
                    _log("    CPU us/order: " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_us_per_order"].items()))
                    _log_host(r)
            if "closed" in parts and "open" in parts and args.settle:
                # the closed loops wrote hundreds of MB of journal: let the storage write it back before latency is
                # measured (right after them, this box's virtual disk stalled 100-200 ms at a time for seconds)
                _log(f"  settling {args.settle:g} s after the closed loops ...")
                time.sleep(args.settle)
            for i, batch in enumerate(args.batches if "open" in parts else ()):
                if i and args.settle:
                    # the batch size before ended at its highest rate, mostly past what the engine takes: the workers'
                    # lag and the storage's write-back fell on this one's first point (16/msg at 61,000/s: p99 69 ms
                    # after it, 11 ms on a fresh engine)
                    _log(f"  settling {args.settle:g} s before the {batch}/msg open loop ...")
                    time.sleep(args.settle)
                for rate in open_rates(args, out, batch):
                    open_point(engine, clients, out, batch, rate, args.seconds, args.warmup)
            if "open" in parts and args.p99_floor:
                search_p99(args, engine, clients, out)
            beats = engine.stop()
            out["gateway"] = beats.get("gateway", {})
            matcher = beats.get("matcher", {})
            out["journal_io"] = matcher.get("journal_io", "?")  # how the durable writes were made
            # the run's group commits and their durable writes' mean time: under load, most of the matcher's cycle
            out["journal_commits"] = matcher.get("journal_commits", 0)
            writes = max(1, matcher.get("journal_fsyncs", 0))
            out["journal_write_mean_us"] = matcher.get("journal_fsync_ns", 0) / writes / 1e3
            _log(f"  (journal: {out['journal_io']}, {out['journal_commits']:,} group commits, durable write mean "
                 f"{out['journal_write_mean_us']:,.0f} us)")
        except BaseException:
            engine.stop()
            raise
    if "fsync_off" in parts:
        _log("restarting with fsync off ...")
        engine = Engine(directory, clients, "off", marketdata)
        try:
            batch = args.batches[0]
            rate = open_rates(args, out, batch)[0]
            r = point(engine, clients, "open", batch, rate, args.seconds, args.warmup)
            r["batch"] = batch
            out["fsync_off"] = r
            _log(f"  fsync off, open loop {batch}/msg at {rate:,.0f}/s: p50 {r['p50_us']:,.0f} us  "
                 f"p99 {r['p99_us']:,.0f} us  (p50 to the matcher's intake {r['to_intake_p50_us']:,.0f} us, "
                 f"intake to ack {r['intake_to_ack_p50_us']:,.0f} us)")
        finally:
            engine.stop()
    for batch in args.batches if "ceiling" in parts else ():
        c = ceiling(directory, clients, batch, args.seconds)
        out["ceiling"][str(batch)] = c
        closed = out["closed"].get(str(batch))
        if closed is not None:
            c["ceiling_ratio"] = closed["orders_per_s"] / c["orders_per_s"] if c["orders_per_s"] else 0
            closed["ceiling_ratio"] = c["ceiling_ratio"]
        _log(f"  ceiling (pyzmq + msgspec receive and decode), {batch:>3}/msg: {c['orders_per_s']:>10,.0f} orders/s"
             + (f"; engine/ceiling {c['ceiling_ratio']:.3f}" if closed is not None else ""))
    if "bare" in parts:
        wanted = bare_points(args, out)
        if wanted:
            _log("the bare path: the same clients against a bare server, no engine ...")
        out["bare"] = bare(directory, clients, wanted, args.warmup)
        for b in out["bare"]:
            for r in out["open"]:
                if (r["batch"], r["offered_per_s"]) == (b["batch"], b["offered_per_s"]):
                    r["bare_p50_us"], r["bare_p99_us"] = b["p50_us"], b["p99_us"]
        good = [b["offered_per_s"] for b in out["bare"] if p99_met(b)]
        out["bare_max_rate_p99_under_1ms"] = max(good) if good else 0
    if out["closed"]:
        print("wire: closed loop " + ", ".join(
            f"{b}/msg {r['orders_per_s']:,.0f} orders/s, gateway {r['gateway_cpu_us_per_order']:.2f} us/order"
            + (f" (ceiling ratio {r['ceiling_ratio']:.3f})"
                                                            if "ceiling_ratio" in r else "")
            for b, r in out["closed"].items()))
    if "open" in parts:
        good = [r["offered_per_s"] for r in out["open"] if p99_met(r)]
        out["max_rate_p99_under_1ms"] = max(good) if good else 0
        out["lowest_rate_tried"] = min(r["offered_per_s"] for r in out["open"])
        print("wire: highest offered rate with p99 < 1 ms: " + (f"{out['max_rate_p99_under_1ms']:,.0f} orders/s" if good
              else f"none (down to {out['lowest_rate_tried']:,.0f} orders/s)"))
    if "fsync_off" in parts:
        print(f"wire: fsync off p50 {out['fsync_off']['p50_us']:,.0f} us")
    if out["bare"]:
        print("wire: bare path (no engine) " + ", ".join(
            f"{b['batch']}/msg at {b['offered_per_s']:,.0f}/s p50 {b['p50_us']:,.0f} us p99 {b['p99_us']:,.0f} us"
            for b in out["bare"]) + "; highest rate with p99 < 1 ms: "
            + (f"{out['bare_max_rate_p99_under_1ms']:,.0f} orders/s" if out["bare_max_rate_p99_under_1ms"] else "none"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if args.plot and (out["open"] or out["bare"]):
        plot(out["open"], args.plot, out["bare"])
    return out


if __name__ == "__main__":
    main()

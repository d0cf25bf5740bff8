"""Price sources behind one small interface.

A source turns something outside the engine (a recorded file, a simulation, prices pushed by an
operator) into batches of observations: ``OBSERVATION_DTYPE`` rows of (engine market id, price as
a float in quote per base unit, source timestamp in ns).  Sources never block and never judge a
price: checking and converting to ticks happens in one place, ``feeds.aggregate``.  A source only
refuses what it cannot read at all (a malformed row or message, an unauthenticated pusher) and
counts it in its own ``rejects``.

Adding an exchange adapter means writing one more ``Source`` subclass; nothing else changes.
"""
from __future__ import annotations

import abc
import csv
import importlib.resources
import os
import shutil
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from engine.config import Config, FileSourceConfig, PushSourceConfig, SimulatedSourceConfig
from gateway.keys import load_pair, new_pair

OBSERVATION_DTYPE = np.dtype([("market", "<i8"), ("price", "<f8"), ("ts", "<i8")])
BUILTIN_PREFIX = "builtin:"
PUSH_DRAIN_MAX = 1024  # messages taken per poll, so one busy pusher cannot starve the loop


class Rejects:
    """What a source sent that was refused: a count per reason and the latest one in words."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.last = ""

    def add(self, reason: str, count: int, detail: str) -> None:
        self.counts[reason] += count
        self.last = f"{reason}: {detail}"

    def status(self) -> dict:
        return {"rejected": dict(self.counts), "last_reject": self.last}


def observations(rows: list[tuple[int, float, int]]) -> np.ndarray:
    return np.array(rows, dtype=OBSERVATION_DTYPE) if rows else np.zeros(0, OBSERVATION_DTYPE)


class Source(abc.ABC):
    """One origin of prices. ``poll`` returns what arrived since the last call and never blocks."""

    kind = ""

    def __init__(self, name: str):
        self.name = name
        self.rejects = Rejects()

    @abc.abstractmethod
    def poll(self, now_ns: int) -> np.ndarray:
        """Observations (``OBSERVATION_DTYPE``) that became available up to ``now_ns``."""

    def next_due_ns(self) -> int | None:
        """When ``poll`` will next have something, for sources that know (timed ones)."""
        return None

    def socket(self) -> zmq.Socket | None:
        """A socket the feed loop waits on, for sources that receive."""
        return None

    def status(self) -> dict:
        return {"kind": self.kind, **self.rejects.status()}

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ recorded files


class _JsonRow(msgspec.Struct, forbid_unknown_fields=True):
    ts_ns: int
    market: int
    price: float
    source: str = ""


def resolve_path(path: str, cfg: Config) -> Path:
    """A file source's path: ``builtin:NAME`` is shipped in feeds/data, else relative to the config."""
    if path.startswith(BUILTIN_PREFIX):
        return Path(str(importlib.resources.files("feeds.data").joinpath(path[len(BUILTIN_PREFIX):])))
    return config_relative(path, cfg)


def config_relative(path: str, cfg: Config) -> Path:
    p = Path(path)
    base = Path(cfg.path).parent if cfg.path else Path.cwd()
    return p if p.is_absolute() else base / p


def read_price_file(path: Path, rows_from: str, rejects: Rejects) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a CSV (header ts_ns,market,price[,source]) or JSONL file, sorted by time.

    Returns (recorded timestamps, observations with ts still unset).  A row that cannot be read is
    counted in ``rejects`` with its line number and skipped; its values are not judged here (a NaN
    or negative price is read and later refused by the aggregator like any other source's).
    """
    rows: list[tuple[int, int, float]] = []

    def bad(line: int, why: str) -> None:
        rejects.add("malformed", 1, f"{path.name}:{line}: {why}")

    if path.suffix == ".csv":
        # bytes that are not UTF-8 read as U+FFFD: their row fails to parse and is counted, as in JSONL
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            missing = {"ts_ns", "market", "price"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: the CSV header lacks {sorted(missing)}")
            for row in reader:
                try:
                    if rows_from and row.get("source", "") != rows_from:
                        continue
                    rows.append((int(row["ts_ns"]), int(row["market"]), float(row["price"])))
                except (TypeError, ValueError) as exc:
                    bad(reader.line_num, str(exc))
    elif path.suffix in (".jsonl", ".ndjson"):
        decoder = msgspec.json.Decoder(_JsonRow)
        with path.open("rb") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    r = decoder.decode(line)
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec < 0.23: bad UTF-8 as it is
                    bad(line_no, str(exc))
                    continue
                if not rows_from or r.source == rows_from:
                    rows.append((r.ts_ns, r.market, r.price))
    else:
        raise ValueError(f"{path}: price files are .csv or .jsonl, not {path.suffix!r}")
    if not rows:
        raise ValueError(f"{path}: no price rows" + (f" from source {rows_from!r}" if rows_from else ""))
    rows.sort(key=lambda r: r[0])  # stable: rows with one timestamp keep their file order
    recorded = np.array([r[0] for r in rows], dtype=np.int64)
    obs = np.zeros(len(rows), OBSERVATION_DTYPE)
    obs["market"] = [r[1] for r in rows]
    obs["price"] = [r[2] for r in rows]
    return recorded, obs


class FileReplaySource(Source):
    """Replays a recorded price file, re-timed: the first row comes out at the first poll, later
    rows as their recorded spacing (divided by ``speed``) elapses, each stamped with the time it
    comes out, so recorded history drives the engine as if it were live.  With ``loop`` the file
    starts again one average row gap after its last row."""

    kind = "file"

    def __init__(self, name: str, path: Path, rows_from: str = "", speed: float = 1.0, loop: bool = True):
        super().__init__(name)
        recorded, self.rows = read_price_file(path, rows_from, self.rejects)
        span = int(recorded[-1] - recorded[0])
        self.offsets = ((recorded - recorded[0]) / speed).astype(np.int64)
        gap = span / (len(recorded) - 1) if len(recorded) > 1 else 1e9
        self.period_ns = int(span / speed + max(gap / speed, 1))
        self.loop = loop
        self.start_ns: int | None = None
        self.cycle = 0  # how many times the file has been played through
        self.cursor = 0  # next row in the current cycle

    def _cycle_start(self) -> int:
        return self.start_ns + self.cycle * self.period_ns

    def poll(self, now_ns: int) -> np.ndarray:
        if self.start_ns is None:
            self.start_ns = now_ns
        out = []
        while True:
            if self.cursor == len(self.rows):
                if not self.loop:
                    break
                self.cycle += 1
                self.cursor = 0
            start = self._cycle_start()
            if self.loop and now_ns - start >= self.period_ns:  # asleep for whole cycles: skip them
                self.cycle += (now_ns - start) // self.period_ns
                self.cursor = 0
                start = self._cycle_start()
            end = int(np.searchsorted(self.offsets, now_ns - start, side="right"))
            if end <= self.cursor:
                break
            part = self.rows[self.cursor:end].copy()
            part["ts"] = start + self.offsets[self.cursor:end]
            out.append(part)
            self.cursor = end
        return np.concatenate(out) if out else np.zeros(0, OBSERVATION_DTYPE)

    def next_due_ns(self) -> int | None:
        if self.start_ns is None:
            return 0
        if self.cursor == len(self.rows):
            return self._cycle_start() + self.period_ns if self.loop else None
        return self._cycle_start() + int(self.offsets[self.cursor])


# ------------------------------------------------------------------ simulation


class SimulatedSource(Source):
    """A seeded random walk with jumps per market, one step every ``step_s`` from the first poll.

    Step k's log return is ``vol × N(0, 1)`` plus, with ``jump_probability``, ``±jump``; the draws
    come from one generator seeded with ``seed``, so the price path (by step number) is the same
    on every run.  A poll emits each market's price at the latest step due, stamped with that
    step's time.
    """

    kind = "simulated"

    def __init__(self, name: str, start_prices: dict[int, float], seed: int = 0, step_s: float = 1.0,
                 vol_bps: float = 10.0, jump_probability: float = 0.0, jump_bps: float = 500.0):
        super().__init__(name)
        self.markets = np.array(sorted(start_prices), dtype=np.int64)
        self.start_prices = np.array([start_prices[m] for m in self.markets], dtype=np.float64)
        self.log_return = np.zeros(len(self.markets))  # since the start
        self.rng = np.random.default_rng(seed)
        self.step_ns = int(step_s * 1e9)
        self.vol = vol_bps / 1e4
        self.jump_probability = jump_probability
        self.jump = jump_bps / 1e4
        self.start_ns: int | None = None
        self.steps = 0  # steps taken; step 0 is the start price

    def poll(self, now_ns: int) -> np.ndarray:
        if self.start_ns is None:
            self.start_ns = now_ns
            return self._emit(now_ns)
        due = (now_ns - self.start_ns) // self.step_ns
        if due <= self.steps:
            return np.zeros(0, OBSERVATION_DTYPE)
        k = int(due - self.steps)
        shape = (k, len(self.markets))
        returns = self.vol * self.rng.standard_normal(shape)
        if self.jump_probability:
            jumps = self.rng.random(shape) < self.jump_probability
            signs = np.where(self.rng.random(shape) < 0.5, -1.0, 1.0)
            returns += jumps * signs * self.jump
        self.log_return += returns.sum(axis=0)
        self.steps = int(due)
        return self._emit(self.start_ns + self.steps * self.step_ns)

    def _emit(self, ts_ns: int) -> np.ndarray:
        obs = np.zeros(len(self.markets), OBSERVATION_DTYPE)
        obs["market"] = self.markets
        obs["price"] = self.start_prices * np.exp(self.log_return)
        obs["ts"] = ts_ns
        return obs

    def next_due_ns(self) -> int | None:
        return 0 if self.start_ns is None else self.start_ns + (self.steps + 1) * self.step_ns


# ------------------------------------------------------------------ pushed by operators


class PushPrice(msgspec.Struct, forbid_unknown_fields=True):
    """One pushed price. A push message is a msgpack array of these (maps with these keys)."""

    market: int
    price: float  # quote per base unit; NaN and infinities are carried (and refused by the feed)
    ts_ns: int


SERVER_KEY = "server.key_secret"
AUTHORIZED = "authorized"


def push_keys_dir(src: PushSourceConfig, cfg: Config) -> Path:
    return config_relative(src.keys_dir, cfg) if src.keys_dir else cfg.data_path / "feeds" / src.name


def ensure_server_keys(keys_dir: Path) -> tuple[bytes, bytes]:
    """The push server's CurveZMQ key pair (made on first use, its secret private: ``new_pair``) and an
    ``authorized/`` directory."""
    (keys_dir / AUTHORIZED).mkdir(parents=True, exist_ok=True)
    if not (keys_dir / SERVER_KEY).exists():
        new_pair(keys_dir, "server")
    return load_pair(keys_dir / SERVER_KEY)


def authorize_new_client(keys_dir: Path, name: str) -> Path:
    """A new client key pair in ``keys_dir/clients/NAME.key[_secret]`` (``new_pair``: a plain name, never
    overwritten, the secret private); its public half is copied to ``authorized/`` so the push source lets it in
    (from its next key reload).  Returns the secret file, which the pusher keeps."""
    ensure_server_keys(keys_dir)
    public_file, secret_file = new_pair(keys_dir / "clients", name)
    shutil.copy(public_file, keys_dir / AUTHORIZED / f"{name}.key")
    return secret_file


class PushAuthenticator:
    """The feed process's one ZAP handler (one per ZeroMQ context); each push source is a domain
    whose allowed keys are the certificates in its ``authorized/`` directory."""

    def __init__(self, context: zmq.Context):
        self.auth = ThreadAuthenticator(context)
        self.auth.start()
        self.dirs: dict[str, Path] = {}
        self.mtimes: dict[str, float] = {}

    def allow(self, domain: str, authorized: Path) -> None:
        self.dirs[domain] = authorized
        self.reload(domain)

    def reload(self, domain: str) -> None:
        self.mtimes[domain] = os.stat(self.dirs[domain]).st_mtime
        self.auth.configure_curve(domain=domain, location=str(self.dirs[domain]))

    def refresh(self) -> None:
        """Pick up keys added to or removed from an ``authorized/`` directory."""
        for domain, path in self.dirs.items():
            if os.stat(path).st_mtime != self.mtimes[domain]:
                self.reload(domain)

    def stop(self) -> None:
        self.auth.stop()


class PushSource(Source):
    """Prices pushed over ZeroMQ (PULL, CurveZMQ server).  Only clients whose public key is in the
    source's ``authorized/`` directory complete the handshake; every refused handshake is counted
    as ``unauthenticated`` (from the socket monitor), and a message that is not a msgpack array of
    ``PushPrice`` is counted ``malformed`` and dropped whole."""

    kind = "push"

    def __init__(self, name: str, bind: str, keys_dir: Path, context: zmq.Context, auth: PushAuthenticator):
        super().__init__(name)
        public, secret = ensure_server_keys(keys_dir)
        auth.allow(name, keys_dir / AUTHORIZED)
        self.sock = context.socket(zmq.PULL)
        self.sock.curve_server = True
        self.sock.curve_publickey = public
        self.sock.curve_secretkey = secret
        self.sock.zap_domain = name.encode()
        self.sock.setsockopt(zmq.RCVHWM, 10_000)
        self.monitor = self.sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.bind(bind)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.decoder = msgspec.msgpack.Decoder(list[PushPrice])
        self.accepted_handshakes = 0
        self.messages = 0

    def _handshakes(self) -> None:
        while self.monitor.poll(0):
            ev = recv_monitor_message(self.monitor)
            if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.accepted_handshakes += 1
            elif ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.rejects.add("unauthenticated", 1, f"handshake refused on {ev['endpoint'].decode()}: "
                                 f"the client's key is not authorized (ZAP status {ev['value']})")
            else:
                self.rejects.add("unauthenticated", 1, f"handshake failed on {ev['endpoint'].decode()}: "
                                 "not a CurveZMQ client of this server key")

    def poll(self, now_ns: int) -> np.ndarray:
        self._handshakes()
        rows = []
        for _ in range(PUSH_DRAIN_MAX):
            try:
                raw = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.messages += 1
            try:
                prices = self.decoder.decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec < 0.23: bad UTF-8 as it is
                self.rejects.add("malformed", 1, f"message of {len(raw)} bytes is not a msgpack array of "
                                 f"{{market, price, ts_ns}}: {exc}")
                continue
            rows.extend((p.market, p.price, p.ts_ns) for p in prices)
        return observations(rows)

    def socket(self) -> zmq.Socket:
        return self.sock

    def status(self) -> dict:
        return {**super().status(), "address": self.address, "messages": self.messages,
                "handshakes": self.accepted_handshakes}

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)


class PushClient:
    """Pushes prices to a push source (operators' tools, tests)."""

    def __init__(self, address: str, server_public: bytes, client_secret_file: Path | None,
                 context: zmq.Context | None = None, send_timeout_s: float = 2.0):
        self.address = address
        self.sock = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self.sock.sndtimeo = int(send_timeout_s * 1000)  # a refused key leaves no peer to take it
        self.sock.curve_serverkey = server_public
        if client_secret_file is None:  # a throwaway key pair: never authorized, for checks
            public, secret = zmq.curve_keypair()
        else:
            public, secret = load_pair(client_secret_file)
        self.sock.curve_publickey = public
        self.sock.curve_secretkey = secret
        self.sock.connect(address)
        self.encoder = msgspec.msgpack.Encoder()

    def send(self, prices: list[tuple[int, float, int]]) -> None:
        """(market, price, ts_ns) triples, in one message."""
        try:
            self.sock.send(self.encoder.encode([PushPrice(m, float(p), int(t)) for m, p, t in prices]))
        except zmq.Again:
            raise TimeoutError(f"push to {self.address} not taken: no authenticated connection "
                               "(is this key authorized on the push source?)") from None

    def close(self) -> None:
        self.sock.close(linger=1000)


def server_public_key(keys_dir: Path) -> bytes:
    return zmq.auth.load_certificate(str(keys_dir / "server.key"))[0]


def build_sources(cfg: Config, context: zmq.Context) -> tuple[list[Source], PushAuthenticator | None]:
    """The configured sources, in config order; the authenticator when any source is a push one."""
    auth = None
    out: list[Source] = []
    for s in cfg.feeds.sources:
        if isinstance(s, FileSourceConfig):
            out.append(FileReplaySource(s.name, resolve_path(s.path, cfg), s.rows_from, s.speed, s.loop))
        elif isinstance(s, SimulatedSourceConfig):
            out.append(SimulatedSource(s.name, s.start_prices, s.seed, s.step_s, s.vol_bps,
                                       s.jump_probability, s.jump_bps))
        else:
            auth = auth or PushAuthenticator(context)
            out.append(PushSource(s.name, s.bind, push_keys_dir(s, cfg), context, auth))
    return out, auth


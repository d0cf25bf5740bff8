"""Snapshot files: the matcher's exported state, compressed, checksummed, written atomically.

A snapshot is one file ``snapshot-{cmd_seq:020d}.xsnap`` holding the state after command
``cmd_seq`` (``Engine.export_state()``)::

    header (64 bytes, little endian)
      0  magic        8s   b"XOSSNAP\\0"
      8  format       u32  FORMAT_VERSION (this file layout)
     12  state        u32  the engine's STATE_VERSION (counters[0])
     16  cmd_seq      i64  counters[1]
     24  event_seq    i64  counters[2]
     32  raw_len      u64  payload length before compression
     40  comp_len     u64  payload length as stored
     48  created_ns   i64  wall clock when written
     56  payload_crc  u32  CRC32C of the stored (compressed) payload
     60  header_crc   u32  CRC32C of bytes 0..59
    payload: zstd frame of the container below

    container: b"XOSA" u32 count, then per array:
      u16 name length, name (ascii), u64 npy length, the array in .npy format (dtype, shape, data)

The payload is self-describing (``.npy`` headers, no pickle), so a reader needs no schema to
decompress it; ``Engine.from_state`` checks the state version again.  Recovery = the newest
snapshot that verifies + the journal's commands after its ``cmd_seq``.
"""
from __future__ import annotations

import io
import os
import re
import struct
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import zstandard

from .journal import crc32c

MAGIC = b"XOSSNAP\0"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIqqQQqII")
HEADER_SIZE = HEADER.size  # 64
CONTAINER_MAGIC = b"XOSA"
SUFFIX = ".xsnap"
NAME_RE = re.compile(r"^snapshot-(\d{20})\.xsnap$")
LEVEL = 3
STATE_KEYS = ("counters", "assets", "markets", "accounts", "balances", "orders", "venue_params", "venues",
              "venue_offers", "venue_allowed", "account_regions", "venue_tiers", "venue_fees", "venue_volumes",
              "oracles", "positions", "market_risk", "outcomes", "outcome_events", "venue_market_risk",
              "exposure_caps", "funding", "margin_tiers", "margin_modes", "collateral_assets", "venue_collateral")
# older state versions still read: 3 before oracles, 4 before perpetual positions, 5 before market risk,
# 6-7 before outcome markets, 8 before venue risk, 9 before exposure caps, 10 before funding and margin tiers,
# 11 before margin modes, 12 before collateral
STATE_KEYS_OF_VERSION = {3: STATE_KEYS[:-12], 4: STATE_KEYS[:-11], 5: STATE_KEYS[:-10], 6: STATE_KEYS[:-9],
                         7: STATE_KEYS[:-9], 8: STATE_KEYS[:-7], 9: STATE_KEYS[:-6], 10: STATE_KEYS[:-5],
                         11: STATE_KEYS[:-3], 12: STATE_KEYS[:-2]}

assert HEADER_SIZE == 64


class SnapshotError(ValueError):
    """A snapshot file that does not verify (the message says why)."""


class SnapshotHeader(NamedTuple):
    format: int
    state_version: int
    cmd_seq: int
    event_seq: int
    raw_len: int
    comp_len: int
    created_ns: int
    payload_crc: int


def snapshot_name(cmd_seq: int) -> str:
    return f"snapshot-{cmd_seq:020d}{SUFFIX}"


def list_snapshots(directory) -> list[tuple[int, Path]]:
    """(cmd_seq from the name, path) of every snapshot file, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = NAME_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    out.sort()
    return out


# ---------------------------------------------------------------- encoding


def pack_arrays(state: dict) -> bytes:
    """The container: every array of ``state`` in ``.npy`` format, named."""
    buf = io.BytesIO()
    buf.write(CONTAINER_MAGIC)
    buf.write(struct.pack("<I", len(state)))
    for name, arr in state.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.hasobject:
            raise TypeError(f"state array {name!r} holds Python objects")
        one = io.BytesIO()
        np.lib.format.write_array(one, arr, allow_pickle=False)
        raw = one.getbuffer()
        key = name.encode("ascii")
        buf.write(struct.pack("<H", len(key)))
        buf.write(key)
        buf.write(struct.pack("<Q", len(raw)))
        buf.write(raw)
    return buf.getvalue()


def unpack_arrays(data) -> dict:
    view = memoryview(data)
    if bytes(view[:4]) != CONTAINER_MAGIC:
        raise SnapshotError("payload is not an array container")
    (count,) = struct.unpack_from("<I", view, 4)
    off = 8
    out = {}
    for _ in range(count):
        (klen,) = struct.unpack_from("<H", view, off)
        off += 2
        name = bytes(view[off : off + klen]).decode("ascii")
        off += klen
        (alen,) = struct.unpack_from("<Q", view, off)
        off += 8
        if off + alen > len(view):
            raise SnapshotError(f"array {name!r} runs past the payload")
        out[name] = np.lib.format.read_array(io.BytesIO(view[off : off + alen]), allow_pickle=False)
        off += alen
    if off != len(view):
        raise SnapshotError(f"{len(view) - off} bytes after the last array")
    return out


def encode(state: dict, created_ns: int | None = None, level: int = LEVEL) -> tuple[bytes, bytes]:
    """(header, compressed payload) for ``state``."""
    counters = np.asarray(state["counters"])
    raw = pack_arrays(state)
    comp = zstandard.ZstdCompressor(level=level, threads=0).compress(raw)
    fields = (MAGIC, FORMAT_VERSION, int(counters[0]), int(counters[1]), int(counters[2]), len(raw), len(comp),
              time.time_ns() if created_ns is None else created_ns, crc32c(comp))
    head = HEADER.pack(*fields, 0)
    head = head[:-4] + struct.pack("<I", crc32c(head[:-4]))
    return head, comp


def parse_header(head: bytes) -> SnapshotHeader:
    if len(head) < HEADER_SIZE:
        raise SnapshotError(f"file is {len(head)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, fmt, sv, cmd_seq, event_seq, raw_len, comp_len, created, pcrc, hcrc = HEADER.unpack_from(head)
    if magic != MAGIC:
        raise SnapshotError(f"bad magic {magic!r}")
    if crc32c(head[: HEADER_SIZE - 4]) != hcrc:
        raise SnapshotError("header CRC mismatch")
    if fmt != FORMAT_VERSION:
        raise SnapshotError(f"snapshot format {fmt}, this build reads {FORMAT_VERSION}")
    return SnapshotHeader(fmt, sv, cmd_seq, event_seq, raw_len, comp_len, created, pcrc)


def _engine_state_versions() -> tuple[int, ...]:
    from .matcher import READABLE_STATE_VERSIONS

    return READABLE_STATE_VERSIONS


def read_snapshot(path, state_version: int | None = None) -> tuple[SnapshotHeader, dict]:
    """Verify and decode one snapshot file; ``SnapshotError`` says what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"unreadable: {exc}") from exc
    h = parse_header(data[:HEADER_SIZE])
    want = _engine_state_versions() if state_version is None else (state_version,)
    if h.state_version not in want:
        raise SnapshotError(f"state version {h.state_version}, this engine reads {', '.join(map(str, want))}")
    m = NAME_RE.match(path.name)
    if m and int(m.group(1)) != h.cmd_seq:
        raise SnapshotError(f"named for cmd_seq {int(m.group(1))} but holds {h.cmd_seq}")
    comp = memoryview(data)[HEADER_SIZE:]
    if len(comp) != h.comp_len:
        raise SnapshotError(f"payload is {len(comp)} bytes, header says {h.comp_len}"
                            + (" (truncated)" if len(comp) < h.comp_len else ""))
    if crc32c(comp) != h.payload_crc:
        raise SnapshotError("payload CRC mismatch")
    try:
        raw = zstandard.ZstdDecompressor().decompress(comp, max_output_size=h.raw_len)
    except zstandard.ZstdError as exc:
        raise SnapshotError(f"does not decompress: {exc}") from exc
    if len(raw) != h.raw_len:
        raise SnapshotError(f"decompressed to {len(raw)} bytes, header says {h.raw_len}")
    try:
        state = unpack_arrays(raw)
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise SnapshotError(f"bad payload: {exc}") from exc
    missing = [k for k in STATE_KEYS_OF_VERSION.get(h.state_version, STATE_KEYS) if k not in state]
    if missing:
        raise SnapshotError(f"payload lacks {', '.join(missing)}")
    c = state["counters"]
    if len(c) < 3 or (int(c[0]), int(c[1]), int(c[2])) != (h.state_version, h.cmd_seq, h.event_seq):
        raise SnapshotError("payload counters disagree with the header")
    return h, state


# ---------------------------------------------------------------- files


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_encoded(directory, head: bytes, comp: bytes, cmd_seq: int, fsync: bool = True) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / snapshot_name(cmd_seq)
    tmp = directory / f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            f.write(comp)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(directory)
    return final


def write_snapshot(directory, state: dict, fsync: bool = True, level: int = LEVEL) -> Path:
    """Write ``state`` as ``directory/snapshot-{cmd_seq:020d}.xsnap`` (tmp file, fsync, rename,
    fsync of the directory) and return its path."""
    head, comp = encode(state, level=level)
    return write_encoded(directory, head, comp, int(np.asarray(state["counters"])[1]), fsync)


def load_newest(directory, max_event_seq: int | None = None, max_cmd_seq: int | None = None,
                state_version: int | None = None):
    """The newest snapshot that verifies: ``(state, path, problems)``.

    ``state`` is None (and ``path`` None) when none does.  Newer snapshots that fail to verify are
    skipped, each with a line in ``problems``.  ``max_event_seq`` / ``max_cmd_seq`` keep only
    snapshots at or below those sequences (e.g. not past what the journal holds)."""
    problems: list[str] = []
    for name_seq, path in reversed(list_snapshots(directory)):
        if max_cmd_seq is not None and name_seq > max_cmd_seq:
            continue
        try:
            h, state = read_snapshot(path, state_version)
        except SnapshotError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if max_event_seq is not None and h.event_seq > max_event_seq:
            continue
        return state, path, problems
    return None, None, problems


def prune(directory, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots (and stale tmp files); returns what was removed."""
    removed = []
    snaps = list_snapshots(directory)
    for _, path in snaps[: max(0, len(snaps) - keep)]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class SnapshotWriter:
    """Writes snapshots on a background thread so the caller (the matcher) never waits for them.

        w = SnapshotWriter(directory, keep=3)
        w.submit(engine.export_state())   # returns at once
        w.wait(); w.close()

    zstd releases the GIL while it compresses, so the matcher's thread keeps running.  The newest
    ``keep`` files stay; a failed write is counted (``failures``, ``last_error``) and never raised
    into the caller.  If states are submitted faster than they are written, the ones not yet
    started are replaced by the newest (``skipped``): only the latest state matters."""

    def __init__(self, directory, keep: int = 3, fsync: bool = True, level: int = LEVEL):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".snapshot-*.tmp"):
            stale.unlink(missing_ok=True)
        self.keep = keep
        self.fsync = fsync
        self.level = level
        self._cond = threading.Condition()
        self._pending: dict | None = None
        self._busy = False
        self._closed = False
        self.submitted = 0
        self.written = 0
        self.skipped = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_path: Path | None = None
        self.last_cmd_seq = 0
        self.last_bytes = 0
        self.last_raw_bytes = 0
        self.last_ns = 0
        self.max_ns = 0
        self.total_ns = 0
        self._thread = threading.Thread(target=self._run, name="xos-snapshot", daemon=True)
        self._thread.start()

    def submit(self, state: dict) -> None:
        """Queue ``state`` (which must not be modified afterwards) and return at once."""
        with self._cond:
            if self._closed:
                raise RuntimeError("snapshot writer is closed")
            if self._pending is not None:
                self.skipped += 1
            self._pending = state
            self.submitted += 1
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._pending is not None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                state, self._pending = self._pending, None
                self._busy = True
            t0 = time.perf_counter_ns()
            try:
                head, comp = encode(state, level=self.level)
                cmd_seq = int(np.asarray(state["counters"])[1])
                path = write_encoded(self.directory, head, comp, cmd_seq, self.fsync)
                prune(self.directory, self.keep)
                ns = time.perf_counter_ns() - t0
                with self._cond:
                    self.written += 1
                    self.last_path = path
                    self.last_cmd_seq = cmd_seq
                    self.last_bytes = len(head) + len(comp)
                    self.last_raw_bytes = struct.unpack_from("<Q", head, 32)[0]
                    self.last_ns = ns
                    self.max_ns = max(self.max_ns, ns)
                    self.total_ns += ns
            except Exception as exc:  # never into the matcher: counted and reported
                with self._cond:
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Until every submitted state is written (or failed); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._busy or self._pending is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Write what is pending, then stop the thread."""
        self.wait()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def stats(self) -> dict:
        with self._cond:
            return {"submitted": self.submitted, "written": self.written, "skipped": self.skipped,
                    "failures": self.failures, "last_error": self.last_error,
                    "last_path": str(self.last_path) if self.last_path else None, "last_cmd_seq": self.last_cmd_seq,
                    "last_bytes": self.last_bytes, "last_raw_bytes": self.last_raw_bytes, "last_ns": self.last_ns,
                    "max_ns": self.max_ns, "total_ns": self.total_ns}

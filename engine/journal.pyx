# cython: language_level=3
"""The command journal: an append-only, CRC-framed log of 64-byte commands.

Format (``includes/journal_format.h``): a directory of segment files named
by their first sequence (``00000000000000000001.journal``), each a 32-byte
file header then frames; a frame is one appended batch, a 24-byte header
(magic, count, first_seq, payload_len, CRC32C) and ``count`` commands, packed
(``COMMAND_PACKING``: ~10-14 bytes a command in the matcher's batches) or, for a
batch that does not pack smaller, as they are.

``JournalWriter.append`` frames a batch into a memory buffer and
``group_commit`` (Python: ``commit``) writes the buffer, with ``fsync="always"``
durably (once for everything appended since the previous commit: group
commit); both are ``noexcept nogil`` and return result codes, the Python
wrappers raise.  ``JournalReader`` replays a directory, validating every
frame, and stops at the last valid record, describing anything it dropped in
``report`` instead of raising.

With ``fsync="always"`` the writer writes whole 4 KiB blocks with O_DIRECT and
O_DSYNC (the last, partial block again with the next commit) into segments a
thread has zero-filled ahead of use (the spare).  Appending to a growing file
through the page cache cost the matcher a kernel copy per byte, and every
fdatasync a commit of the file's new size and blocks.  A file system without
O_DIRECT is written through the page cache, synchronously all the same.
"""
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memmove, memset, strerror
from libc.stdio cimport snprintf, rename
from libc.errno cimport errno, EINTR
from posix.stdlib cimport posix_memalign
from posix.unistd cimport pwrite, close, fsync, fdatasync, unlink
from posix.fcntl cimport open as c_open, O_WRONLY, O_CREAT, O_EXCL, O_TRUNC, O_CLOEXEC, O_DIRECT, O_DSYNC
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME

import fcntl
import mmap
import os
import re
import struct
import threading
import time
import warnings
from typing import NamedTuple

import numpy as np
cimport numpy as cnp

from records cimport xos_command, XOS_LAYOUT_VERSION
from atomics cimport (xos_load_acquire_32, xos_store_release_32, xos_futex_wait_timeout, xos_futex_wake)
from crc32c cimport xos_crc32c, xos_crc32c_sw, xos_crc32c_hw, xos_crc32c_hw_available
from journal_format cimport *
from packedrows cimport XOS_PACK_MAX_FIELDS, xos_pack_layout, xos_pack_row_max, xos_pack_rows, xos_unpack_rows

from engine.rowpack cimport RowPacking

from .records import COMMAND_DTYPE

cnp.import_array()

SEGMENT_SUFFIX = ".journal"
FILE_HEADER_SIZE = XOS_JOURNAL_FILE_HEADER_SIZE
FRAME_HEADER_SIZE = XOS_JOURNAL_FRAME_HEADER_SIZE
RECORD_SIZE = XOS_JOURNAL_RECORD_SIZE
MAX_FRAME_RECORDS = XOS_JOURNAL_MAX_FRAME_RECORDS
JOURNAL_VERSION = XOS_JOURNAL_VERSION
FILE_MAGIC = XOS_JOURNAL_FILE_MAGIC
FRAME_MAGIC = XOS_JOURNAL_FRAME_MAGIC
PACKED_MAGIC = XOS_JOURNAL_PACKED_MAGIC
# How the journal packs commands (``engine/includes/packedrows.h``): the matcher stamps one ts per batch, and a
# batch's commands mostly come from few accounts at near prices with rising ids, so those four go as deltas.  On
# the wire benchmark's traffic a command takes ~10 bytes of 64, and so do the spare segments' zeros, which follow
# the journal's size (docs/ARCHITECTURE.md, Journal).
COMMAND_PACKING = RowPacking(COMMAND_DTYPE, deltas=("ts", "account", "price", "id"))
cdef xos_pack_layout COMMAND_LAYOUT = (<RowPacking>COMMAND_PACKING).layout
cdef int64_t PACKED_ROW_MAX = <int64_t>xos_pack_row_max(&COMMAND_LAYOUT)
CRC32C_HW = bool(xos_crc32c_hw_available())

SPARE_NAME = "spare.journal.tmp"   # not a segment's name: readers never look at it

cdef enum:
    READ_GUESS_RECORD_BYTES = 16   # read_all's first guess of a segment's bytes a command
cdef enum:
    PACK_CHUNK = 256           # commands packed at a time: a chunk that may not fit goes through pack_scratch
cdef enum:
    DIRECT_BLOCK = 4096        # O_DIRECT's alignment of offsets, lengths and memory (every common device's)
    ZERO_CHUNK = 256 << 10     # a spare is filled in writes this long: an fdatasync waits behind at most one
    FIRST_SPARE = 1 << 20      # then doubling up to a whole segment: a short-lived journal fills little
    SPARE_WANTED = 0
    SPARE_READY = 1
    SPARE_FAILED = 2
    SPARE_STOPPED = 3

_SEGMENT_RE = re.compile(r"^(\d{20})\.journal$")
_FILE_HEADER = struct.Struct("<IHHIIqq")
assert _FILE_HEADER.size == XOS_JOURNAL_FILE_HEADER_SIZE == 32
assert XOS_JOURNAL_FRAME_HEADER_SIZE == 24

SCAN_REASONS = {
    XOS_JSCAN_TORN_HEADER: "torn frame header",
    XOS_JSCAN_BAD_MAGIC: "bad frame magic",
    XOS_JSCAN_BAD_LENGTH: "bad frame length",
    XOS_JSCAN_TORN_PAYLOAD: "torn frame payload",
    XOS_JSCAN_BAD_CRC: "frame CRC mismatch",
    XOS_JSCAN_SEQUENCE: "frame sequence gap",
    XOS_JSCAN_AFTER_ZEROS: "data after the zero-filled end",
}


class Damage(NamedTuple):
    """Bytes of a journal that were not replayed (or, on open, truncated away)."""

    segment: str      # path of the segment file
    offset: int       # where the dropped bytes start in it
    bytes: int        # how many were dropped from this segment
    reason: str       # e.g. "frame CRC mismatch", "torn frame payload", "bad file header"
    where: str        # "tail": in the last segment (a torn write); "middle": an older segment
    next_seq: int     # the first sequence that was not recovered


class JournalError(OSError):
    """A journal I/O failure; the writer refuses further appends after one."""


# ---------------------------------------------------------------- CRC32C


cdef const uint8_t *_bytes_ptr(const uint8_t[::1] view) noexcept:
    return &view[0] if view.shape[0] else NULL


def crc32c(data, uint32_t crc=0):
    """CRC32C of a bytes-like object (the fastest implementation); ``crc`` continues a previous one."""
    cdef const uint8_t[::1] v = memoryview(data).cast("B")
    return xos_crc32c(crc, _bytes_ptr(v), v.shape[0])


def crc32c_sw(data, uint32_t crc=0):
    """CRC32C by the table-driven software implementation."""
    cdef const uint8_t[::1] v = memoryview(data).cast("B")
    return xos_crc32c_sw(crc, _bytes_ptr(v), v.shape[0])


def crc32c_hw(data, uint32_t crc=0):
    """CRC32C by the SSE4.2 instruction; RuntimeError when the CPU lacks it."""
    if not CRC32C_HW:
        raise RuntimeError("this CPU has no SSE4.2 crc32 instruction")
    cdef const uint8_t[::1] v = memoryview(data).cast("B")
    return xos_crc32c_hw(crc, _bytes_ptr(v), v.shape[0])


# ---------------------------------------------------------------- helpers


cdef inline int64_t _now_ns(int clock) noexcept nogil:
    cdef timespec ts
    clock_gettime(clock, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef int _pwrite_all(int fd, const uint8_t *p, size_t n, int64_t off) noexcept nogil:
    cdef ssize_t w
    while n:
        w = pwrite(fd, p, n, off)
        if w < 0:
            if errno == EINTR:
                continue
            return -1
        p += w
        off += w
        n -= <size_t>w
    return 0


cdef inline int64_t _round_up(int64_t n, int64_t block) noexcept nogil:
    return (n + block - 1) // block * block


cdef uint8_t *_aligned(size_t size) noexcept nogil:
    cdef void *p = NULL
    if posix_memalign(&p, DIRECT_BLOCK, size):
        return NULL
    return <uint8_t *>p


def direct_io_works(directory):
    """Whether the directory's file system takes O_DIRECT writes of whole blocks (tmpfs does not)."""
    probe = os.path.join(directory, "direct-io.probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_DIRECT, 0o644)
    except OSError:
        return False
    try:
        with mmap.mmap(-1, DIRECT_BLOCK) as block:   # page-aligned memory
            return os.write(fd, block) == DIRECT_BLOCK
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(probe)


cdef void _file_header(xos_journal_file_header *h, int64_t first_seq) noexcept nogil:
    h.magic = XOS_JOURNAL_FILE_MAGIC
    h.journal_version = XOS_JOURNAL_VERSION
    h.layout_version = XOS_LAYOUT_VERSION
    h.record_size = XOS_JOURNAL_RECORD_SIZE
    h.crc = 0
    h.first_seq = first_seq
    h.created_ns = _now_ns(CLOCK_REALTIME)
    h.crc = xos_journal_file_header_crc(h)


def segment_name(int64_t first_seq):
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(directory):
    """[(first_seq, path)] of the directory's segment files, in sequence order."""
    out = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        m = _SEGMENT_RE.match(name)
        if m:
            out.append((int(m.group(1)), os.path.join(directory, name)))
    out.sort()
    return out


def _header_problem(const uint8_t[::1] data, int64_t name_seq):
    """None when the segment's file header is valid and matches its name, else (reason, fatal).

    fatal: the header is intact but describes something this build cannot
    append to (another layout, record size or name), so it must not be
    discarded as a torn write.
    """
    cdef xos_journal_file_header h
    if data.shape[0] < XOS_JOURNAL_FILE_HEADER_SIZE:
        return ("torn file header", False)
    memcpy(&h, &data[0], sizeof(h))
    if h.magic != XOS_JOURNAL_FILE_MAGIC:
        return ("bad file header magic", False)
    if xos_journal_file_header_crc(&h) != h.crc:
        return ("file header CRC mismatch", False)
    if h.journal_version != XOS_JOURNAL_VERSION or h.layout_version != XOS_LAYOUT_VERSION:
        return (f"journal version {h.journal_version} / layout {h.layout_version}, this build writes "
                f"{XOS_JOURNAL_VERSION} / {XOS_LAYOUT_VERSION}", True)
    if h.record_size != XOS_JOURNAL_RECORD_SIZE:
        return (f"record size {h.record_size}, expected {XOS_JOURNAL_RECORD_SIZE}", True)
    if h.first_seq != name_seq:
        return (f"file header says first sequence {h.first_seq}, the name says {name_seq}", True)
    return None


cdef xos_journal_scan _scan(const uint8_t[::1] data, int64_t off, int64_t next_seq) noexcept:
    cdef xos_journal_scan r
    cdef const uint8_t *p = _bytes_ptr(data)
    cdef int64_t n = data.shape[0]
    with nogil:
        xos_journal_scan_frames(p, n, off, next_seq, &r)
    return r


cdef int64_t _copy_payloads(const uint8_t *buf, int64_t off, int64_t end, int64_t skip,
                            uint8_t *dst) noexcept nogil:
    """Copy the commands of the (validated) frames in buf[off:end] to dst, leaving out the first ``skip``; 0, or
    the first sequence of a packed frame whose rows do not read back as its count of commands (its CRC held: a
    writer of another packing), or -1 out of memory."""
    cdef xos_journal_frame_header h
    cdef int64_t k, bad_row
    cdef int bad_field
    cdef uint8_t *whole
    while off < end:
        memcpy(&h, buf + off, sizeof(h))
        off += XOS_JOURNAL_FRAME_HEADER_SIZE
        k = h.count
        if skip >= k:
            skip -= k
        elif h.magic == XOS_JOURNAL_FRAME_MAGIC:
            memcpy(dst, buf + off + skip * XOS_JOURNAL_RECORD_SIZE, (k - skip) * XOS_JOURNAL_RECORD_SIZE)
            dst += (k - skip) * XOS_JOURNAL_RECORD_SIZE
            skip = 0
        else:  # packed: read whole (the deltas run from the first), into dst unless the first are left out
            whole = dst if skip == 0 else <uint8_t *>malloc(k * XOS_JOURNAL_RECORD_SIZE)
            if whole == NULL:
                return -1
            if xos_unpack_rows(&COMMAND_LAYOUT, buf + off, h.payload_len, whole, k, &bad_row, &bad_field) != k:
                if whole != dst:
                    free(whole)
                return h.first_seq
            if whole != dst:
                memcpy(dst, whole + skip * XOS_JOURNAL_RECORD_SIZE, (k - skip) * XOS_JOURNAL_RECORD_SIZE)
                free(whole)
            dst += (k - skip) * XOS_JOURNAL_RECORD_SIZE
            skip = 0
        off += h.payload_len
    return 0


cdef int _copied(int64_t rc, directory) except -1:
    """Raise for a ``_copy_payloads`` that did not copy everything."""
    if rc < 0:
        raise MemoryError("journal: no memory to read a packed frame")
    if rc > 0:
        raise ValueError(f"journal {directory}: the packed frame at sequence {rc} does not read back as its count "
                         f"of commands, though its CRC holds (written with another packing?)")
    return 0


def _read_file(path):
    return np.fromfile(path, dtype=np.uint8)


# ---------------------------------------------------------------- spare segments


@cython.final
cdef class SpareSegments:
    """Keeps one segment file zero-filled and synced ahead of the writer's use (``SPARE_NAME`` in its
    directory): the first 1 MiB, each next one twice the last up to a whole segment, so a short-lived
    journal fills little.  The writer takes a ready one (``ready``, then renames it and calls
    ``taken``); a thread fills the next.  A failure (a full disk) stops the thread for good."""

    def __cinit__(self, directory, int64_t segment_bytes, bint direct):
        cdef bytes path = os.fsencode(os.path.join(directory, SPARE_NAME))
        self.path = <char *>malloc(len(path) + 1)
        self.zeros = _aligned(ZERO_CHUNK)
        if self.path == NULL or self.zeros == NULL:
            raise MemoryError()
        memcpy(self.path, <const char *>path, len(path) + 1)
        memset(self.zeros, 0, ZERO_CHUNK)
        self.direct = direct
        self.limit = _round_up(segment_bytes, DIRECT_BLOCK if direct else 1)
        self.next_bytes = min(<int64_t>FIRST_SPARE, self.limit)
        try:
            os.unlink(os.fsdecode(path))   # a previous writer's, filled or not
        except FileNotFoundError:
            pass
        # the thread holds this object, not the writer: an unclosed writer is freed, and stops it
        self.thread = threading.Thread(target=self._run, name="journal-spare", daemon=True)
        self.thread.start()

    def __dealloc__(self):
        free(self.path)
        free(self.zeros)

    def _run(self):
        with nogil:
            self.fill()

    def stop(self, bint wait=True):
        """Ask the thread to stop; with ``wait``, wait for it and remove the spare file (without, as when
        an unclosed writer is freed, the next writer of the directory removes it)."""
        xos_store_release_32(&self.stop_asked, 1)
        xos_futex_wake(&self.state, 1)
        if not wait:
            return
        self.thread.join()
        if xos_load_acquire_32(&self.state) != SPARE_FAILED:
            xos_store_release_32(&self.state, SPARE_STOPPED)
        try:
            os.unlink(os.fsdecode(self.path))
        except FileNotFoundError:
            pass

    @property
    def status(self):
        state = xos_load_acquire_32(&self.state)
        if state == SPARE_FAILED:
            return f"failed: {os.strerror(self.err_no)}"
        return {SPARE_READY: "ready", SPARE_WANTED: "filling", SPARE_STOPPED: "stopped"}[state]

    cdef int64_t ready(self) noexcept nogil:
        """The ready spare's size, 0 when none is ready."""
        return self.ready_bytes if xos_load_acquire_32(&self.state) == SPARE_READY else 0

    cdef void taken(self) noexcept nogil:
        """The writer renamed the ready spare: fill the next."""
        xos_store_release_32(&self.state, SPARE_WANTED)
        xos_futex_wake(&self.state, 1)

    cdef int fill(self) noexcept nogil:
        cdef int fd
        cdef int64_t off, n, size
        cdef int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (O_DIRECT if self.direct else 0)
        while not xos_load_acquire_32(&self.stop_asked):
            if xos_load_acquire_32(&self.state) == SPARE_READY:
                xos_futex_wait_timeout(&self.state, SPARE_READY, 1000000000)
                continue
            size = self.next_bytes
            fd = c_open(self.path, flags, 0o644)
            if fd < 0:
                self.err_no = errno
                xos_store_release_32(&self.state, SPARE_FAILED)
                return -1
            off = 0
            while off < size and not xos_load_acquire_32(&self.stop_asked):
                n = ZERO_CHUNK if size - off > ZERO_CHUNK else size - off
                if _pwrite_all(fd, self.zeros, n, off):
                    break
                off += n
            if off == size and fdatasync(fd) == 0:
                close(fd)
                self.ready_bytes = size
                self.next_bytes = size * 2 if size * 2 < self.limit else self.limit
                xos_store_release_32(&self.state, SPARE_READY)   # publishes ready_bytes
            elif xos_load_acquire_32(&self.stop_asked):
                close(fd)
            else:  # its space is given back at once: the disk is short of it
                self.err_no = errno
                close(fd)
                unlink(self.path)
                xos_store_release_32(&self.state, SPARE_FAILED)
                return -1
        return 0


# ---------------------------------------------------------------- writer


@cython.final
cdef class JournalWriter:
    """Appends command batches to the journal in ``directory``.

        w = JournalWriter("journal/", segment_bytes=64 << 20, fsync="always")
        w.append_array(cmds, first_seq)   # frames the batch in memory
        w.commit()                        # one durable write; returns the durable sequence

    A directory that already holds a journal is continued after its last
    valid record; a torn tail is reported (``recovery``, a warning) and
    truncated away (its bytes are kept beside the segment as
    ``<segment>.dropped-<offset>-<ns>``).  ``first_seq`` is the sequence of
    the first command of a new, empty journal.  One writer per directory
    (an exclusive ``flock``).  With ``fsync="off"`` commit only writes (the
    data survives a process crash, not a power loss); ``close`` syncs in
    both modes.
    """

    def __cinit__(self):
        self.fd = -1
        self.dir_fd = -1
        self.closed = True

    def __init__(self, directory, int64_t segment_bytes=64 << 20, fsync="always", int64_t first_seq=1):
        if fsync not in ("always", "off"):
            raise ValueError(f"fsync must be 'always' or 'off', not {fsync!r}")
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        if first_seq < 1:
            raise ValueError("first_seq must be positive")
        self.directory = os.path.abspath(os.fspath(directory))
        self.segment_bytes = segment_bytes
        self.fsync_always = fsync == "always"
        self.recovery = []
        os.makedirs(self.directory, exist_ok=True)
        cdef bytes bdir = os.fsencode(self.directory)
        self.c_dir = <char *>malloc(len(bdir) + 1)
        self.path_cap = len(bdir) + 64
        self.path_buf = <char *>malloc(self.path_cap)
        self.buf_cap = 1 << 20
        self.buf = _aligned(self.buf_cap)
        self.pack_scratch = <uint8_t *>malloc(PACK_CHUNK * PACKED_ROW_MAX)
        if self.c_dir == NULL or self.path_buf == NULL or self.buf == NULL or self.pack_scratch == NULL:
            raise MemoryError()
        memcpy(self.c_dir, <const char *>bdir, len(bdir) + 1)
        self.dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(self.dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.dir_fd)
            self.dir_fd = -1
            raise RuntimeError(f"journal {self.directory} is open by another writer") from None
        self.closed = False
        self.direct = self.fsync_always and direct_io_works(self.directory)
        self.block = DIRECT_BLOCK if self.direct else 1
        # fsync="always": each write is durable when it returns (O_DSYNC): one device request (a FUA write)
        # where a write and then an fdatasync take two
        self.seg_flags = O_WRONLY | O_CLOEXEC | (O_DIRECT if self.direct else 0) | (O_DSYNC if self.fsync_always else 0)
        segments = list_segments(self.directory)
        if segments:
            self._continue(*segments[len(segments) - 1])
        else:
            self._create(first_seq)
        if self.fsync_always:
            self.spares = SpareSegments(self.directory, segment_bytes, self.direct)

    def _create(self, int64_t first_seq):
        cdef int rc
        with nogil:
            rc = self.new_segment(first_seq, 0)
        if rc:
            self._raise(rc)
        self._last_seq = self._durable_seq = first_seq - 1

    def _continue(self, int64_t name_seq, path):
        """Open the last segment for appending after its last valid frame (its zero-filled rest kept)."""
        arr = _read_file(path)
        cdef const uint8_t[::1] data = arr
        cdef int64_t size = data.shape[0]
        cdef xos_journal_scan r
        problem = _header_problem(data, name_seq)
        if problem is not None:
            reason, fatal = problem
            if fatal:
                raise ValueError(f"cannot continue journal segment {path}: {reason}")
            self._drop(Damage(path, 0, size, reason, "tail", name_seq), arr)
            os.unlink(path)
            self._create(name_seq)
            return
        r = _scan(data, XOS_JOURNAL_FILE_HEADER_SIZE, name_seq)
        if r.status != XOS_JSCAN_END and r.status != XOS_JSCAN_ZEROS:
            self._drop(Damage(path, r.end, size - r.end, SCAN_REASONS[r.status], "tail", r.next_seq), arr)
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, r.end)
                os.fsync(fd)
            finally:
                os.close(fd)
            size = r.end
        self.fd = os.open(path, self.seg_flags)
        self.seg_first_seq = name_seq
        self.seg_size = r.end
        self.seg_room = size
        # the written part of the last block, rewritten with the next commit
        self.blk_off = r.end // self.block * self.block
        self.committed = self.buf_len = r.end - self.blk_off
        memcpy(self.buf, &data[self.blk_off], self.buf_len)
        self._last_seq = self._durable_seq = r.next_seq - 1

    def _drop(self, damage, data):
        """Report a torn tail and keep its bytes (up to the last that is not zero) beside the segment
        before they are truncated away."""
        self.recovery.append(damage)
        warnings.warn(f"journal: dropping {damage.bytes} bytes at offset {damage.offset} of "
                      f"{damage.segment} ({damage.reason}); continuing at sequence {damage.next_seq}",
                      RuntimeWarning, stacklevel=3)
        dropped = data[damage.offset:damage.offset + damage.bytes]
        nonzero = np.flatnonzero(dropped)
        if len(nonzero):
            keep = f"{damage.segment}.dropped-{damage.offset}-{time.time_ns()}"
            with open(keep, "wb") as f:
                f.write(bytes(dropped[:nonzero[len(nonzero) - 1] + 1]))

    def __dealloc__(self):
        # Without close() the uncommitted buffer is lost; committed data is already written.
        if self.spares is not None:
            self.spares.stop(wait=False)
        if self.fd >= 0:
            close(self.fd)
        if self.dir_fd >= 0:
            close(self.dir_fd)
        free(self.buf)
        free(self.pack_scratch)
        free(self.c_dir)
        free(self.path_buf)

    # ---- C core

    cdef int fail(self, const char *op) noexcept nogil:
        self.err_no = errno
        self.err_op = op
        self.failed = True
        return XOS_J_IO

    cdef int reserve(self, size_t extra) noexcept nogil:
        """Room for ``extra`` more bytes and the zeros that pad the buffer to a whole block."""
        cdef size_t cap = self.buf_cap, need = self.buf_len + extra + <size_t>self.block
        cdef uint8_t *p
        if need <= cap:
            return XOS_J_OK
        while cap < need:
            cap *= 2
        p = _aligned(cap)
        if p == NULL:
            return XOS_J_NOMEM
        memcpy(p, self.buf, self.buf_len)
        free(self.buf)
        self.buf = p
        self.buf_cap = cap
        return XOS_J_OK

    cdef int new_segment(self, int64_t first_seq, int64_t spare_bytes) noexcept nogil:
        """Begin the segment starting at ``first_seq`` with the frames appended since the last commit:
        in the ready spare of ``spare_bytes`` (written, then renamed: a header-only segment of the same
        name is replaced) or, with 0, in a new file; sync it and the directory and switch to it."""
        cdef xos_journal_file_header h
        cdef size_t pending = self.buf_len - self.committed
        cdef int rc, old = self.fd
        if self.reserve(XOS_JOURNAL_FILE_HEADER_SIZE):
            return XOS_J_NOMEM
        memmove(self.buf + XOS_JOURNAL_FILE_HEADER_SIZE, self.buf + self.committed, pending)
        _file_header(&h, first_seq)
        memcpy(self.buf, &h, sizeof(h))
        self.buf_len = XOS_JOURNAL_FILE_HEADER_SIZE + pending
        self.committed = 0
        self.blk_off = 0
        snprintf(self.path_buf, self.path_cap, "%s/%020lld.journal", self.c_dir, <long long>first_seq)
        if spare_bytes:
            self.fd = c_open(self.spares.path, self.seg_flags)
        else:
            self.fd = c_open(self.path_buf, self.seg_flags | O_CREAT | O_EXCL, 0o644)
        self.seg_room = spare_bytes
        rc = self.begin_segment(spare_bytes != 0)
        if old >= 0:
            # fsync="always" synced the old segment at its last commit; "off" syncs it now, once.
            if rc == XOS_J_OK and not self.fsync_always and fdatasync(old):
                rc = self.fail("fdatasync")
            close(old)
        if rc == XOS_J_OK:
            self.seg_first_seq = first_seq
            self._segments_created += 1
        return rc

    cdef int begin_segment(self, bint from_spare) noexcept nogil:
        """``new_segment``'s I/O on the opened file: the buffer, its sync ("always": the write was
        synchronous), the spare's rename and the directory's sync."""
        if self.fd < 0:
            return self.fail("open")
        if self.write_buffer():
            return XOS_J_IO
        if not self.fsync_always and fdatasync(self.fd):
            return self.fail("fdatasync")
        if from_spare:
            if rename(self.spares.path, self.path_buf):
                return self.fail("rename spare")
            self._preallocated += 1
            self.spares.taken()
        if fsync(self.dir_fd):
            return self.fail("fsync directory")
        self._dir_fsyncs += 1
        return XOS_J_OK

    cdef int write_buffer(self) noexcept nogil:
        """Write the buffer at ``blk_off``, zero-padded to a whole block, and keep its last, partial
        block for the next commit."""
        cdef int64_t end = _round_up(self.buf_len, self.block), keep
        memset(self.buf + self.buf_len, 0, end - self.buf_len)
        if _pwrite_all(self.fd, self.buf, end, self.blk_off):
            return self.fail("write")
        if self.blk_off + end > self.seg_room:
            self.seg_room = self.blk_off + end
        self.seg_size = self.blk_off + self.buf_len
        keep = self.buf_len % self.block
        memmove(self.buf, self.buf + self.buf_len - keep, keep)
        self.blk_off += self.buf_len - keep
        self.buf_len = self.committed = keep
        return XOS_J_OK

    cdef int append(self, const xos_command *cmds, int64_t n, int64_t first_seq) noexcept nogil:
        """Frame n commands (sequences first_seq..) into the buffer; first_seq must be last_seq + 1."""
        cdef xos_journal_frame_header h
        cdef int64_t k, fixed, payload
        cdef uint8_t *dst
        if self.closed or self.failed:
            return XOS_J_CLOSED
        if n < 0:
            return XOS_J_ARG
        if first_seq != self._last_seq + 1:
            return XOS_J_SEQUENCE
        while n > 0:
            k = n if n < XOS_JOURNAL_MAX_FRAME_RECORDS else XOS_JOURNAL_MAX_FRAME_RECORDS
            fixed = k * XOS_JOURNAL_RECORD_SIZE
            if self.reserve(XOS_JOURNAL_FRAME_HEADER_SIZE + fixed):
                return XOS_J_NOMEM
            dst = self.buf + self.buf_len
            payload = self.pack_frame(cmds, k, dst + XOS_JOURNAL_FRAME_HEADER_SIZE, fixed)
            if payload >= 0:
                h.magic = XOS_JOURNAL_PACKED_MAGIC
                self._packed_frames += 1
            else:  # it packs to 64 bytes a command or more: as it is
                memcpy(dst + XOS_JOURNAL_FRAME_HEADER_SIZE, cmds, fixed)
                h.magic, payload = XOS_JOURNAL_FRAME_MAGIC, fixed
            h.count = <uint32_t>k
            h.first_seq = first_seq
            h.payload_len = <uint32_t>payload
            h.crc = xos_journal_frame_crc(&h, dst + XOS_JOURNAL_FRAME_HEADER_SIZE)
            memcpy(dst, &h, sizeof(h))
            self.buf_len += XOS_JOURNAL_FRAME_HEADER_SIZE + payload
            self._frames += 1
            self._last_seq = first_seq + k - 1
            first_seq += k
            cmds += k
            n -= k
        return XOS_J_OK

    cdef int64_t pack_frame(self, const xos_command *cmds, int64_t k, uint8_t *out, int64_t room) noexcept nogil:
        """``cmds[:k]`` packed into ``out`` (``COMMAND_PACKING``, the deltas from the frame's first command): their
        length, or -1 when it would reach ``room`` (their fixed size).  A chunk goes straight into ``out`` while the
        room left holds its largest packing, else through ``pack_scratch``."""
        cdef uint64_t last[XOS_PACK_MAX_FIELDS]
        cdef int64_t at = 0, i = 0, c, m
        cdef uint8_t *to
        memset(last, 0, sizeof(last))
        while i < k:
            c = k - i if k - i < PACK_CHUNK else PACK_CHUNK
            to = out + at if room - at > c * PACKED_ROW_MAX else self.pack_scratch
            m = <int64_t>xos_pack_rows(&COMMAND_LAYOUT, <const unsigned char *>(cmds + i), c, to, last)
            if at + m >= room:
                return -1
            if to == self.pack_scratch:
                memcpy(out + at, to, m)
            at += m
            i += c
        return at

    cdef int64_t group_commit(self) noexcept nogil:
        """Write what was appended, durably with fsync="always" (O_DSYNC: the write returns once the
        device has it; timed as the commit's fsync); the durable sequence, or a negative code.  A new
        segment begins when this one is full, or when the write would grow a file without room (a new
        journal's first segment, or the spare came late) and a spare is ready."""
        cdef int64_t t0 = _now_ns(CLOCK_MONOTONIC)
        cdef int rc
        cdef int64_t pending = self.buf_len - self.committed
        cdef int64_t spare = self.spares.ready() if self.spares is not None else 0
        if self.closed or self.failed:
            return XOS_J_CLOSED
        if pending == 0:
            return self._durable_seq
        if self.seg_size > XOS_JOURNAL_FILE_HEADER_SIZE and self.seg_size + pending > self.segment_bytes:
            rc = self.new_segment(self._durable_seq + 1, spare)
        elif spare and self.blk_off + _round_up(self.buf_len, self.block) > self.seg_room:
            rc = self.new_segment(self._durable_seq + 1, spare)
        else:
            rc = self.write_buffer()
        if rc:
            return rc
        self._commits += 1
        self._bytes_written += pending
        if self.fsync_always:
            t0 = _now_ns(CLOCK_MONOTONIC) - t0
            self._fsyncs += 1
            self._fsync_ns += t0
            self._last_fsync_ns = t0
            if t0 > self._max_fsync_ns:
                self._max_fsync_ns = t0
        self._durable_seq = self._last_seq
        return self._durable_seq

    # ---- Python edge

    def _raise(self, int64_t rc, first_seq=None):
        if rc == XOS_J_SEQUENCE:
            raise ValueError(f"journal sequence gap: the batch starts at {first_seq}, "
                             f"the journal continues at {self._last_seq + 1}")
        if rc == XOS_J_NOMEM:
            raise MemoryError("journal buffer")
        if rc == XOS_J_ARG:
            raise ValueError("negative command count")
        if rc == XOS_J_IO or (rc == XOS_J_CLOSED and self.failed):
            op = (<bytes>self.err_op).decode() if self.err_op != NULL else "?"
            raise JournalError(self.err_no, f"journal {op} failed: {os.strerror(self.err_no)} "
                               f"(the writer is now failed; reopen the journal to continue)")
        if rc == XOS_J_CLOSED:
            raise ValueError("journal writer is closed")
        raise RuntimeError(f"journal error {rc}")

    def append_array(self, cnp.ndarray commands, first_seq=None):
        """Append a COMMAND_DTYPE array whose first command has sequence ``first_seq``
        (default: the next one). Returns the new last sequence. Not durable until ``commit``."""
        if commands.dtype != COMMAND_DTYPE:
            raise TypeError(f"commands must be a COMMAND_DTYPE array, not {commands.dtype}")
        if commands.ndim != 1:
            commands = commands.reshape(-1)
        commands = np.ascontiguousarray(commands)
        cdef int64_t seq = self._last_seq + 1 if first_seq is None else first_seq
        cdef int64_t n = commands.shape[0]
        cdef const xos_command *p = <const xos_command *>cnp.PyArray_DATA(commands)
        cdef int rc
        if n > 4096:
            with nogil:
                rc = self.append(p, n, seq)
        else:
            rc = self.append(p, n, seq)
        if rc:
            self._raise(rc, seq)
        return self._last_seq

    def commit(self):
        """Write everything appended (fsync="always": durably); returns ``durable_seq``."""
        cdef int64_t rc
        with nogil:
            rc = self.group_commit()
        if rc < 0:
            self._raise(rc)
        return rc

    def close(self):
        """Commit, sync (in both fsync modes) and release the directory."""
        if self.closed:
            return
        cdef int64_t rc = 0
        if self.spares is not None:
            self.spares.stop()
        if not self.failed:
            with nogil:
                rc = self.group_commit()
            if rc >= 0 and self.fd >= 0 and fdatasync(self.fd):
                rc = self.fail("fdatasync")
        self.closed = True
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1
        if self.dir_fd >= 0:
            close(self.dir_fd)  # releases the flock
            self.dir_fd = -1
        if rc < 0:
            self._raise(rc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def fsync(self):
        return "always" if self.fsync_always else "off"

    @property
    def last_seq(self):
        """Sequence of the last command appended (0 before the first)."""
        return self._last_seq

    @property
    def durable_seq(self):
        """Commands up to here are written (and, with fsync="always", synced)."""
        return self._durable_seq

    @property
    def pending_bytes(self):
        return self.buf_len - self.committed

    @property
    def bytes_written(self):
        return self._bytes_written

    @property
    def fsyncs(self):
        """Durable writes made by commit (one per commit that had data, fsync="always")."""
        return self._fsyncs

    @property
    def fsync_ns(self):
        """Total time of those writes (the device's, O_DSYNC: what an fdatasync would wait for)."""
        return self._fsync_ns

    @property
    def last_fsync_ns(self):
        return self._last_fsync_ns

    @property
    def max_fsync_ns(self):
        return self._max_fsync_ns

    @property
    def dir_fsyncs(self):
        return self._dir_fsyncs

    @property
    def commits(self):
        return self._commits

    @property
    def frames(self):
        return self._frames

    @property
    def packed_frames(self):
        """Frames written packed (the others packed to 64 bytes a command or more, and went as they are)."""
        return self._packed_frames

    @property
    def segments_created(self):
        return self._segments_created

    @property
    def segment_path(self):
        return os.path.join(self.directory, segment_name(self.seg_first_seq))

    @property
    def segment_size(self):
        return self.seg_size

    @property
    def failed_(self):
        return bool(self.failed)

    @property
    def preallocated(self):
        """Segments begun in a zero-filled spare."""
        return self._preallocated

    @property
    def spare(self):
        """The spare segment: "ready", "filling", "stopped" (closed), "off" (fsync="off") or "failed: why"."""
        return self.spares.status if self.spares is not None else "off"

    @property
    def spare_ready_bytes(self):
        """The ready spare's size (0 when none is ready)."""
        return self.spares.ready() if self.spares is not None else 0

    def stats(self):
        return {
            "last_seq": self._last_seq, "durable_seq": self._durable_seq,
            "bytes_written": self._bytes_written, "commits": self._commits, "frames": self._frames,
            "packed_frames": self._packed_frames, "fsyncs": self._fsyncs, "fsync_ns": self._fsync_ns,
            "max_fsync_ns": self._max_fsync_ns, "dir_fsyncs": self._dir_fsyncs,
            "segments_created": self._segments_created, "direct_io": bool(self.direct),
            "preallocated_segments": self._preallocated, "spare": self.spare,
        }


# ---------------------------------------------------------------- reader


READ_CHUNK = 4 << 20   # bytes per read() of a segment (module-level so tests can shrink it)


class _SegmentEnd:
    """How the scan of one segment ended."""
    __slots__ = ("status", "end", "next_seq", "size", "problem")


def _segment_chunks(path, int64_t name_seq, holder, res):
    """Read a segment through a reused buffer; yield (buf, hi, first_seq, records) for each run of valid
    frames (they are buf[0:hi]); on exhaustion ``res`` tells where and why it stopped.

    ``holder`` is a one-item list keeping the buffer between segments.  The buffer grows only when
    one frame is larger than it (at most 64 MiB + 24 bytes, frame lengths are checked first).
    """
    cdef xos_journal_scan r
    cdef xos_journal_frame_header h
    cdef int64_t base, filled, rem, need
    cdef uint8_t[::1] view
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        res.size = size
        head = f.read(XOS_JOURNAL_FILE_HEADER_SIZE)
        res.problem = _header_problem(np.frombuffer(head, dtype=np.uint8), name_seq)
        if res.problem is not None:
            res.status, res.end, res.next_seq = -1, 0, name_seq
            return
        buf = holder[0]
        if buf is None:
            buf = holder[0] = np.empty(READ_CHUNK, dtype=np.uint8)
        base = XOS_JOURNAL_FILE_HEADER_SIZE   # file offset of buf[0]
        filled = 0
        eof = False
        next_seq = name_seq
        while True:
            mv = memoryview(buf)
            while filled < buf.shape[0] and not eof:
                got = f.readinto(mv[filled:])
                if not got:
                    eof = True
                else:
                    filled += got
            view = buf
            r = _scan(view[:filled], 0, next_seq)
            if r.end:
                yield buf, r.end, next_seq, r.records
            next_seq = r.next_seq
            if r.status == XOS_JSCAN_ZEROS and not eof and _data_after(f, buf):
                r.status = XOS_JSCAN_AFTER_ZEROS   # the zero fill is followed by data further on
            if eof or r.status not in (XOS_JSCAN_END, XOS_JSCAN_TORN_HEADER, XOS_JSCAN_TORN_PAYLOAD):
                res.status = XOS_JSCAN_END if r.status == XOS_JSCAN_ZEROS else r.status
                res.end, res.next_seq = base + r.end, next_seq
                return
            # more of the file to come: keep the unfinished frame, refill after it
            rem = filled - r.end
            if rem:
                buf[:rem] = buf[r.end:filled]
            base += r.end
            filled = rem
            if r.status == XOS_JSCAN_TORN_PAYLOAD:
                memcpy(&h, &view[0], sizeof(h))
                need = XOS_JOURNAL_FRAME_HEADER_SIZE + h.payload_len
                if need > buf.shape[0]:
                    bigger = np.empty(need, dtype=np.uint8)
                    bigger[:rem] = buf[:rem]
                    buf = holder[0] = bigger


def _data_after(f, buf):
    """Whether what is left of file ``f`` (read through ``buf``) holds a byte that is not zero."""
    mv = memoryview(buf)
    while True:
        got = f.readinto(mv)
        if not got:
            return False
        if buf[:got].any():
            return True


class JournalReader:
    """Replays the journal in ``directory``.

        r = JournalReader("journal/")
        for first_seq, cmds in r.read_from(1): ...   # one COMMAND_DTYPE array per frame (batch)
        first_seq, cmds = r.read_all()                # everything, one array
        r.report                                      # [Damage]: what was not replayed, and why

    Every frame's magic, length, CRC32C and sequence continuity (within and
    across segments) is checked.  Reading stops at the first invalid frame:
    what comes before it is returned, and the rest is described in
    ``report`` (``where="tail"`` in the last segment, the expected result of
    a crash mid-write; ``"middle"`` in an older segment, which is real
    corruption and also drops the later segments).  Never raises on bad data.
    Segments are read with ``read()`` through one 4 MiB buffer (no mmap, so
    a file truncated under the reader cannot crash it).
    """

    def __init__(self, directory):
        self.directory = os.path.abspath(os.fspath(directory))
        self.report = []
        self.first_seq = 0     # first sequence in the journal (0 = empty), after a read
        self.next_seq = 0      # sequence after the last valid record, after a read
        self._holder = [None]

    @property
    def last_seq(self):
        return self.next_seq - 1 if self.next_seq else 0

    def segments(self):
        return list_segments(self.directory)

    def _start(self, segs, from_seq):
        start = 0
        if from_seq is not None:
            for i, (s, _) in enumerate(segs):
                if s <= from_seq:
                    start = i
        return start

    def _valid_chunks(self, segs, start):
        """Yield (buf, hi, first_seq, records): validated frames buf[0:hi], in order, from segment ``start`` on."""
        self.report = []
        self.first_seq = segs[0][0] if segs else 0
        self.next_seq = self.first_seq
        expected = None
        for i in range(start, len(segs)):
            name_seq, path = segs[i]
            where = "tail" if i == len(segs) - 1 else "middle"
            if expected is not None and name_seq != expected:
                self._damaged(segs, i, Damage(path, 0, _size(path), f"segment starts at sequence {name_seq}, "
                                              f"the previous one ends before {expected}", where, expected))
                return
            self.next_seq = name_seq
            res = _SegmentEnd()
            try:
                for chunk in _segment_chunks(path, name_seq, self._holder, res):
                    self.next_seq = chunk[2]
                    yield chunk
            except OSError as exc:
                self._damaged(segs, i, Damage(path, 0, _size(path), f"unreadable: {exc}", where, self.next_seq))
                return
            self.next_seq = res.next_seq
            if res.problem is not None:
                self._damaged(segs, i, Damage(path, 0, res.size, res.problem[0], where, name_seq))
                return
            if res.status != XOS_JSCAN_END:
                self._damaged(segs, i, Damage(path, res.end, max(0, res.size - res.end),
                                              SCAN_REASONS[res.status], where, res.next_seq))
                return
            expected = res.next_seq

    def _damaged(self, segs, i, damage):
        self.report.append(damage)
        for _, path in segs[i + 1:]:
            self.report.append(Damage(path, 0, _size(path), "follows damage in an earlier segment", "middle",
                                      damage.next_seq))

    def read_from(self, from_seq=None):
        """Yield (first_seq, COMMAND_DTYPE array) per frame, in order, from ``from_seq`` (default: the start).
        A frame holding ``from_seq`` is cut to start there."""
        cdef xos_journal_frame_header h
        cdef const uint8_t[::1] view
        cdef int64_t off, hi, skip, lo_seq = from_seq if from_seq is not None else 0
        segs = list_segments(self.directory)
        for buf, py_hi, _, _ in self._valid_chunks(segs, self._start(segs, from_seq)):
            view = buf
            hi = py_hi
            off = 0
            while off < hi:
                memcpy(&h, &view[off], sizeof(h))
                off += XOS_JOURNAL_FRAME_HEADER_SIZE
                skip = 0
                if h.first_seq < lo_seq:
                    skip = min(<int64_t>h.count, lo_seq - h.first_seq)
                if skip < h.count:
                    out = np.empty(h.count - skip, dtype=COMMAND_DTYPE)
                    _copied(_copy_payloads(&view[0], off - XOS_JOURNAL_FRAME_HEADER_SIZE, off + h.payload_len, skip,
                                           <uint8_t *>cnp.PyArray_DATA(out)), self.directory)
                    yield h.first_seq + skip, out
                off += h.payload_len

    def read_all(self, from_seq=None):
        """(first_seq, one COMMAND_DTYPE array of every valid command from ``from_seq``)."""
        cdef const uint8_t[::1] view
        cdef int64_t hi, skip, k, n = 0, lo_seq, rc
        cdef uint8_t *dst
        segs = list_segments(self.directory)
        start = self._start(segs, from_seq)
        # a guess at the records, ~16 bytes a packed one (grown if short): one output array, pages touched only as
        # filled
        bound = sum(max(0, _size(p) - XOS_JOURNAL_FILE_HEADER_SIZE) // READ_GUESS_RECORD_BYTES for _, p in segs[start:])
        out = np.empty(bound, dtype=COMMAND_DTYPE)
        first = None
        for buf, py_hi, chunk_seq, records in self._valid_chunks(segs, start):
            view = buf
            hi = py_hi
            lo_seq = from_seq if from_seq is not None else chunk_seq
            if first is None:
                first = max(lo_seq, chunk_seq)
            k = records
            skip = min(k, max(0, lo_seq - chunk_seq))
            if n + k - skip > out.shape[0]:   # more than guessed, or the files grew since they were measured
                bigger = np.empty(2 * (n + k - skip), dtype=COMMAND_DTYPE)
                bigger[:n] = out[:n]
                out = bigger
            dst = <uint8_t *>cnp.PyArray_DATA(out) + n * XOS_JOURNAL_RECORD_SIZE
            with nogil:
                rc = _copy_payloads(&view[0], 0, hi, skip, dst)
            _copied(rc, self.directory)
            n += k - skip
        if first is None:
            first = from_seq if from_seq is not None else (self.first_seq or 1)
        return first, out[:n]


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---------------------------------------------------------------- benchmark support


def append_commit_loop(JournalWriter w, cnp.ndarray commands, int64_t batch, cnp.ndarray fsync_ns=None):
    """The engine's path, timed in C: append ``commands`` in batches of ``batch`` and commit after each.

    Returns the wall time in ns (CLOCK_MONOTONIC).  ``fsync_ns`` (int64, one per batch), when given,
    receives each commit's durable-write time.
    """
    if commands.dtype != COMMAND_DTYPE or not commands.flags.c_contiguous:
        raise TypeError("commands must be a contiguous COMMAND_DTYPE array")
    cdef int64_t n = commands.shape[0]
    cdef int64_t nb = (n + batch - 1) // batch if batch > 0 else 0
    if batch < 1:
        raise ValueError("batch must be positive")
    cdef int64_t *lat = NULL
    if fsync_ns is not None:
        if fsync_ns.dtype != np.int64 or not fsync_ns.flags.c_contiguous or fsync_ns.shape[0] < nb:
            raise ValueError("fsync_ns must be a contiguous int64 array with one entry per batch")
        lat = <int64_t *>cnp.PyArray_DATA(fsync_ns)
    cdef const xos_command *p = <const xos_command *>cnp.PyArray_DATA(commands)
    cdef int64_t i = 0, k, b = 0, t0, t1, rc = 0, seq = w._last_seq + 1
    with nogil:
        t0 = _now_ns(CLOCK_MONOTONIC)
        while i < n:
            k = batch if n - i > batch else n - i
            rc = w.append(p + i, k, seq + i)
            if rc:
                break
            rc = w.group_commit()
            if rc < 0:
                break
            rc = 0
            if lat != NULL:
                lat[b] = w._last_fsync_ns
            i += k
            b += 1
        t1 = _now_ns(CLOCK_MONOTONIC)
    if rc:
        w._raise(rc, seq + i)
    return t1 - t0

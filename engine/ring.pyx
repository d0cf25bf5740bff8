# cython: language_level=3
"""Lock-free shared-memory event ring: one producer, up to 8 consumers.

The ring is one file under /dev/shm (layout in ``includes/ringlayout.h``):
a header, then ``capacity`` 128-byte ``xos_event`` slots.  The producer
copies a batch into the slots and publishes it with ONE release store of its
cursor; each consumer owns a cursor (events it has consumed) that it
advances with a release store after it is done with a batch.  The producer
never overwrites a slot a registered consumer has not passed (backpressure).

Waiting, on either side, spins a few tens of CPU pauses, then yields a few
times, then sleeps on a futex after setting its ``sleeping`` word, so the
other side pays a wake-up syscall only when someone actually sleeps.  A
consumer that waits in an event loop instead (the gateway) ``arm``s its
doorbell, a FIFO beside the ring that the producer writes a byte into, and
polls its fd.

Positions: the producer cursor counts events published; the event at ring
position ``p`` has ``seq == p + 1`` (events carry dense seqs from 1), so a
consumer whose cursor is ``c`` reads seq ``c + 1`` next and ``seek(seq)``
sets its cursor to ``seq - 1``.
"""
cimport cython
from libc.errno cimport errno, EAGAIN
from libc.stdio cimport snprintf
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t, INT64_MAX
from libc.string cimport memcpy, memset, strncpy, strerror
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.time cimport nanosleep, timespec
from posix.fcntl cimport open as c_open, O_WRONLY, O_NONBLOCK
from posix.unistd cimport read, write, close as c_close

import glob
import logging
import os
import stat
import struct
import time

import numpy as np
cimport numpy as cnp

from records cimport xos_event, XOS_LAYOUT_VERSION
from eventkeep cimport xos_event_kept
from atomics cimport *
from ringlayout cimport *

from .records import EVENT_DTYPE, LAYOUT_VERSION

cnp.import_array()

cdef extern from "<sys/mman.h>" nogil:
    int MAP_POPULATE

DEF SPIN_PAUSES = 48                  # "tens of pauses" before giving the CPU away
DEF YIELDS = 4                        # sched_yield()s before sleeping
DEF CONSUMER_SLEEP_NS = 100000000     # futex sleeps are capped: a lost wake-up costs at most this
DEF LAZY_WINDOW_NS = 50000000        # a napping consumer naps until this long has passed without events
DEF PRODUCER_SLEEP_NS = 10000000

log = logging.getLogger("xos.ring")

SLOT_SIZE = 128
MAX_CONSUMERS = XOS_RING_MAX_CONSUMERS
NAME_BYTES = XOS_RING_NAME_BYTES
DATA_OFFSET = XOS_RING_DATA_OFFSET
RING_MAGIC = XOS_RING_MAGIC
RING_LAYOUT = XOS_RING_LAYOUT
assert LAYOUT_VERSION == XOS_LAYOUT_VERSION
# the fixed part of header line 0, for reading a ring (or a stale file) without mapping it
HEADER_STRUCT = struct.Struct("<qIIqqqII")


class RingError(Exception):
    """An event ring cannot be created, attached or used as asked."""


class RingLayoutError(RingError):
    """The shared memory is not a ring this build can read."""


class RingInUseError(RingError):
    """The shared memory belongs to a live process."""


# ---------------------------------------------------------------------------
# names, processes

def shm_names(name):
    """(``/NAME``, ``/dev/shm/NAME``) for a ring name given with or without the slash."""
    if not isinstance(name, str):
        raise TypeError(f"ring name must be a str, not {type(name).__name__}")
    base = name[1:] if name.startswith("/") else name
    if not base or "/" in base or base in (".", "..") or len(base) > 200:
        raise ValueError(f"invalid shared-memory name {name!r}: want '/name' with no other '/'")
    return "/" + base, "/dev/shm/" + base


def proc_start(pid):
    """Start time of process ``pid`` (clock ticks after boot), or None if it is gone or a zombie."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X", b"x"):
        return None
    return int(rest[19])


def pid_alive(pid, start=0):
    """Is ``pid`` running and (when ``start`` is known) the same process that registered?"""
    s = proc_start(pid)
    return s is not None and (start == 0 or s == start)


cdef int64_t _my_start = 0


cdef int64_t my_start():
    global _my_start
    if _my_start == 0:
        _my_start = proc_start(os.getpid()) or 0
    return _my_start


def consumer_doorbell_path(path, consumer_name):
    """The FIFO that wakes consumer ``consumer_name`` of the ring file ``path`` (when it waits on it)."""
    return f"{path}.{consumer_name}.doorbell"


def make_doorbell(path):
    """A doorbell FIFO, made if missing (a file of another kind there is replaced), opened for reading without
    blocking (and for writing, so that it never reads end-of-file); returns the fd."""
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            os.unlink(path)
            os.mkfifo(path, 0o600)
    except FileNotFoundError:
        os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK)


def size_and_map(fd, path, size, map_fd):
    """A new shared-memory file (``fd``, open read-write): sized, mapped by ``map_fd(fd, size)``, closed; unlinked
    again if either fails."""
    try:
        os.ftruncate(fd, size)
        map_fd(fd, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


cdef void ring_fifo(int *fd, const char *path) noexcept nogil:
    """A byte into a doorbell FIFO, its write end ``fd[0]`` opened on first use; one that cannot be opened or
    written (no reader: it is gone) is closed and tried again next time.  EAGAIN: full of unread wake-ups."""
    cdef char byte = 1
    if fd[0] < 0:
        fd[0] = c_open(path, O_WRONLY | O_NONBLOCK)
        if fd[0] < 0:
            return
    if write(fd[0], &byte, 1) < 0 and errno != EAGAIN:
        c_close(fd[0])
        fd[0] = -1


cdef void drain_fd(int fd) noexcept nogil:
    """Read a doorbell's bytes off (they only said: look).  A short read emptied the FIFO: no second read
    to hear EAGAIN (a syscall on each wake-up of a lone order's path); a byte rung after it wakes the
    next wait early, which then finds what it rang for, as it would have anyway."""
    cdef char buf[256]
    while read(fd, buf, sizeof(buf)) == sizeof(buf):
        pass


# ---------------------------------------------------------------------------
# C helpers

cdef inline uint64_t pattern_price(int64_t seq) noexcept nogil:
    return <uint64_t>seq * <uint64_t>0x9E3779B97F4A7C15


cdef inline uint64_t pattern_fee(int64_t seq) noexcept nogil:
    return (<uint64_t>seq ^ <uint64_t>0x5555AAAA5555AAAA) * <uint64_t>0xBF58476D1CE4E5B9


def pattern(seq):
    """The payload ``publish_pattern`` writes for ``seq`` (numpy int64 array): (price, taker_fee)."""
    s = np.asarray(seq, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        price = s * np.uint64(0x9E3779B97F4A7C15)
        fee = (s ^ np.uint64(0x5555AAAA5555AAAA)) * np.uint64(0xBF58476D1CE4E5B9)
    return price.view(np.int64), fee.view(np.int64)


cdef inline void sleep_ns(int64_t ns) noexcept nogil:
    cdef timespec ts
    ts.tv_sec = ns // 1000000000
    ts.tv_nsec = ns % 1000000000
    nanosleep(&ts, NULL)


cdef const xos_event *event_pointer(cnp.ndarray events) except NULL:
    if events.dtype != EVENT_DTYPE:
        raise TypeError(f"events must have EVENT_DTYPE, not {events.dtype}")
    if events.ndim != 1 or not events.flags.c_contiguous:
        raise ValueError("events must be a 1-d C-contiguous array")
    if events.shape[0] == 0:
        return <const xos_event *>1  # never dereferenced
    return <const xos_event *>cnp.PyArray_DATA(events)


# ---------------------------------------------------------------------------
# mapping

cdef class _RingMap:
    def __dealloc__(self):
        self.unmap()

    cdef void unmap(self) noexcept:
        if self.hdr != NULL:
            munmap(<void *>self.hdr, self.size)
            self.hdr = NULL
            self.slots = NULL

    cdef _map(self, int fd, size_t size, bint populate):
        cdef int flags = MAP_SHARED | (MAP_POPULATE if populate else 0)
        cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, fd, 0)
        if p == MAP_FAILED:
            e = errno
            raise OSError(e, f"mmap of {self.path}: {strerror(e).decode()}")
        self.hdr = <xos_ring_header *>p
        self.size = size

    def _check_open(self):
        if self.hdr == NULL:
            raise RingError(f"ring {self.name} is closed")

    @property
    def capacity(self):
        return self.cap

    @property
    def published(self):
        """Events published so far (the producer cursor; the last one has this seq)."""
        self._check_open()
        return xos_load_acquire_64(&self.hdr.cursor)


def _read_header(path):
    """The fixed header fields of an existing file, or None when it is too short."""
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = os.pread(fd, HEADER_STRUCT.size, 0)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if len(raw) < HEADER_STRUCT.size:
        return None, size
    (magic, version, slot, cap, pid, start, ring_layout, data_off) = HEADER_STRUCT.unpack(raw)
    return dict(magic=magic, version=version, slot_size=slot, capacity=cap, pid=pid, start=start,
                ring_layout=ring_layout, data_offset=data_off), size


def check_header(name, fields, size):
    """Raise RingLayoutError naming what is wrong with a ring header this build cannot read."""
    if fields is None or fields["magic"] == 0:
        raise RingLayoutError(f"ring {name} is not initialised (empty header: its creator died or is still creating it)")
    if fields["magic"] != XOS_RING_MAGIC:
        raise RingLayoutError(f"shared memory {name} is not an xos event ring (magic {fields['magic']:#x})")
    if fields["version"] != XOS_LAYOUT_VERSION:
        raise RingLayoutError(f"ring {name} has layout version {fields['version']}, "
                              f"this build reads version {XOS_LAYOUT_VERSION}")
    if fields["ring_layout"] != XOS_RING_LAYOUT:
        raise RingLayoutError(f"ring {name} has ring header layout {fields['ring_layout']}, "
                              f"this build reads header layout {XOS_RING_LAYOUT}")
    if fields["slot_size"] != sizeof(xos_event):
        raise RingLayoutError(f"ring {name} has slot size {fields['slot_size']} bytes, "
                              f"this build's events are {sizeof(xos_event)} bytes")
    cap = fields["capacity"]
    if cap < 2 or cap & (cap - 1):
        raise RingLayoutError(f"ring {name} has capacity {cap}, not a power of two")
    if fields["data_offset"] != XOS_RING_DATA_OFFSET:
        raise RingLayoutError(f"ring {name} has its slots at offset {fields['data_offset']}, "
                              f"this build expects {XOS_RING_DATA_OFFSET}")
    want = XOS_RING_DATA_OFFSET + cap * sizeof(xos_event)
    if size != want:
        raise RingLayoutError(f"ring {name} is {size} bytes, a ring of capacity {cap} is {want}")


# ---------------------------------------------------------------------------
# producer

@cython.final
cdef class EventRing(_RingMap):
    """The producer end: ``EventRing.create(name, capacity)``."""

    def __dealloc__(self):
        for i in range(XOS_RING_MAX_CONSUMERS):
            if self.doorbell_fds[i] > 0:
                c_close(self.doorbell_fds[i])

    @staticmethod
    def create(name, int64_t capacity=1 << 16, *, consumers=(), int64_t start=0, populate=True):
        """Create the ring ``name`` (``/dev/shm/NAME``).

        ``consumers`` names consumer slots reserved from the start (cursor 0, no process yet):
        the producer keeps every event for them until they attach under that name, so a
        worker that starts after the first publish still sees the whole stream.

        ``start`` is the sequence of the last event already published elsewhere (an engine
        restarting from a snapshot): the first event published here must carry seq ``start + 1``.

        An existing file whose creator is alive is refused (RingInUseError); one left by a dead
        process is reported (log warning, ``stale_removed``), unlinked and created fresh.
        """
        cdef EventRing r = EventRing.__new__(EventRing)
        cdef xos_ring_header *h
        r.name, r.path = shm_names(name)
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 2, not {capacity}")
        if start < 0:
            raise ValueError(f"start must not be negative, not {start}")
        r.stale_removed = None
        size = XOS_RING_DATA_OFFSET + capacity * sizeof(xos_event)
        for attempt in range(3):
            try:
                fd = os.open(r.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:
                r.stale_removed = _remove_stale(r.name, r.path)
        else:
            raise RingInUseError(f"shared memory {r.path} keeps reappearing; another engine is starting?")
        size_and_map(fd, r.path, size, lambda fd, size: r._map(fd, size, populate))
        h = r.hdr
        h.layout_version = XOS_LAYOUT_VERSION
        h.slot_size = sizeof(xos_event)
        h.capacity = capacity
        h.creator_pid = os.getpid()
        h.creator_start = my_start()
        h.ring_layout = XOS_RING_LAYOUT
        h.data_offset = XOS_RING_DATA_OFFSET
        h.max_consumers = XOS_RING_MAX_CONSUMERS
        if len(consumers) > XOS_RING_MAX_CONSUMERS:
            raise ValueError(f"at most {XOS_RING_MAX_CONSUMERS} consumers, not {len(consumers)}")
        for i, consumer_name in enumerate(consumers):
            raw_name = consumer_name.encode()
            if not 1 <= len(raw_name) < XOS_RING_NAME_BYTES or b"\0" in raw_name:
                raise ValueError(f"consumer name must be 1..{XOS_RING_NAME_BYTES - 1} bytes: {consumer_name!r}")
            memcpy(h.consumers[i].name, <const char *>raw_name, len(raw_name))
            h.consumers[i].pid = 0  # no process: the first attach under this name takes the slot over
            h.consumers[i].cursor = start
            h.consumers[i].state = XOS_RING_ACTIVE
        r.slots = <xos_event *>((<char *>h) + XOS_RING_DATA_OFFSET)
        r.cap = capacity
        r.mask = capacity - 1
        h.cursor = start
        h.claim = start
        r.pos = start
        r.limit = start
        r.epoch = -1
        r.interrupt_fd = -1
        r.path_b = os.fsencode(r.path)
        r.path_c = r.path_b
        for i in range(XOS_RING_MAX_CONSUMERS):
            r.doorbell_fds[i] = -1
        xos_store_release_64(&h.magic, XOS_RING_MAGIC)  # last: attachers see a complete header
        return r

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    cdef int64_t refresh_limit(self) noexcept nogil:
        """Recompute how far the producer may write: the slowest registered cursor + capacity."""
        cdef xos_ring_header *h = self.hdr
        cdef int64_t m = INT64_MAX, c
        cdef int i
        self.epoch = xos_load_acquire_32(&h.epoch)
        for i in range(XOS_RING_MAX_CONSUMERS):
            if xos_load_acquire_32(&h.consumers[i].state) == XOS_RING_ACTIVE:
                c = xos_load_acquire_64(&h.consumers[i].cursor)
                if c < m:
                    m = c
        self.limit = INT64_MAX if m == INT64_MAX else m + self.cap
        return self.limit

    cdef bint make_room(self, int64_t end) noexcept nogil:
        """Wait until every registered consumer has passed the slots up to ring position ``end``;
        False if a byte on ``interrupt_fd`` (a signal) ended the wait first."""
        cdef xos_ring_header *h = self.hdr
        cdef int64_t t0, spins = 0
        cdef char byte
        cdef bint room = True
        if self.refresh_limit() >= end:
            return True
        t0 = xos_now_ns()
        h.waits += 1
        while True:
            if spins < SPIN_PAUSES:
                xos_cpu_pause()
            elif spins < SPIN_PAUSES + YIELDS:
                xos_yield()
            else:
                h.producer_need = end - self.cap
                xos_store_seq_cst_32(&h.producer_sleeping, 1)
                if self.refresh_limit() >= end:
                    break
                h.sleeps += 1
                xos_futex_wait_timeout(&h.producer_sleeping, 1, PRODUCER_SLEEP_NS)  # a signal cuts it short
                if self.interrupt_fd >= 0 and read(self.interrupt_fd, &byte, 1) == 1:
                    room = False
                    break
            spins += 1
            if self.refresh_limit() >= end:
                break
        xos_store_release_32(&h.producer_sleeping, 0)
        h.wait_ns += xos_now_ns() - t0
        return room

    cdef void wake_consumers(self) noexcept nogil:
        cdef xos_ring_header *h = self.hdr
        cdef int i
        cdef int32_t was
        xos_fence()  # the cursor store before the sleeping-flag loads
        for i in range(XOS_RING_MAX_CONSUMERS):
            if xos_load_relaxed_32(&h.consumers[i].sleeping) != XOS_RING_AWAKE:
                was = xos_exchange_32(&h.consumers[i].sleeping, XOS_RING_AWAKE)
                if was == XOS_RING_FUTEX:
                    xos_futex_wake(&h.consumers[i].sleeping, 1)
                    h.wakes += 1
                elif was == XOS_RING_DOORBELL:
                    self.ring_doorbell(i)
                    h.wakes += 1

    cdef void ring_doorbell(self, int i) noexcept nogil:
        """A byte into consumer ``i``'s FIFO, opened again whenever consumers have come or gone since (the
        registration epoch); one that cannot be opened or written (its reader is gone) is tried again at the next
        wake-up."""
        cdef xos_ring_consumer *s = &self.hdr.consumers[i]
        cdef char path[512]
        cdef int32_t epoch = xos_load_acquire_32(&self.hdr.epoch)
        if self.doorbell_fds[i] >= 0 and self.doorbell_epochs[i] != epoch:  # consumers came or went: maybe another here
            c_close(self.doorbell_fds[i])
            self.doorbell_fds[i] = -1
        path[0] = 0  # made only when the FIFO must be opened
        if self.doorbell_fds[i] < 0:
            if snprintf(path, sizeof(path), "%s.%.23s.doorbell", self.path_c, s.name) >= <int>sizeof(path):
                return
            self.doorbell_epochs[i] = epoch
        ring_fifo(&self.doorbell_fds[i], path)

    cdef int64_t publish(self, const xos_event *events, int64_t n) noexcept nogil:
        """Copy ``n`` events into the ring and publish them with one cursor store per chunk of at
        most ``capacity`` events; waits while a registered consumer has not passed the slots.
        Returns how many it published: fewer than ``n`` (and ``interrupted`` set) only when a
        signal ended a wait, so that a process told to stop is not held by a consumer that never
        reads (events a journal holds are published again by the next run)."""
        cdef xos_ring_header *h = self.hdr
        cdef int64_t done = 0, k, end, i0, first
        while done < n:
            k = n - done
            if k > self.cap:
                k = self.cap
            end = self.pos + k
            xos_store_seq_cst_64(&h.claim, end)  # before the epoch load: see RingConsumer.settle
            if end > self.limit or xos_load_acquire_32(&h.epoch) != self.epoch:
                if not self.make_room(end):
                    self.interrupted = True
                    return done
            i0 = self.pos & self.mask
            first = self.cap - i0
            if first > k:
                first = k
            memcpy(&self.slots[i0], &events[done], <size_t>first * sizeof(xos_event))
            if k > first:
                memcpy(&self.slots[0], &events[done + first], <size_t>(k - first) * sizeof(xos_event))
            xos_store_release_64(&h.cursor, end)
            self.pos = end
            self.wake_consumers()
            done += k
        return n

    def interrupt_waits_on(self, int fd):
        """Let a byte on ``fd`` end a wait for room: a non-blocking pipe given to
        ``signal.set_wakeup_fd``, so SIGTERM / SIGINT reach a producer stuck behind a consumer that
        does not read.  -1 turns it off."""
        self.interrupt_fd = fd

    def publish_array(self, cnp.ndarray events not None):
        """Publish a numpy array of EVENT_DTYPE (blocking while the ring is full); returns the count."""
        self._check_open()
        cdef const xos_event *p = event_pointer(events)
        cdef int64_t n = events.shape[0], r
        with nogil:
            r = self.publish(p, n)
        return r

    def publish_pattern(self, int64_t total, int64_t batch=1024, *, bint stamp=True, int64_t period_ns=0):
        """Benchmark/test producer in C: ``total`` events in batches of ``batch``, each with
        ``seq`` = its ring position + 1, ``price``/``taker_fee`` = ``pattern(seq)``, ``kind`` 3 and,
        when ``stamp``, ``ts`` = CLOCK_MONOTONIC ns taken just before the batch is published.
        ``period_ns`` > 0 paces batches (one every period).  Returns the seconds it took."""
        self._check_open()
        if batch < 1:
            raise ValueError("batch must be >= 1")
        cdef cnp.ndarray buf = np.zeros(batch, dtype=EVENT_DTYPE)
        cdef xos_event *b = <xos_event *>cnp.PyArray_DATA(buf)
        cdef int64_t done = 0, k, i, seq, now, t0, next_t
        with nogil:
            t0 = xos_now_ns()
            next_t = t0
            while done < total:
                k = total - done
                if k > batch:
                    k = batch
                if period_ns > 0:
                    now = xos_now_ns()
                    if next_t > now:
                        sleep_ns(next_t - now)
                    next_t += period_ns
                now = xos_now_ns() if stamp else 0
                for i in range(k):
                    seq = self.pos + i + 1
                    b[i].kind = 3
                    b[i].seq = seq
                    b[i].ts = now
                    b[i].price = <int64_t>pattern_price(seq)
                    b[i].taker_fee = <int64_t>pattern_fee(seq)
                self.publish(b, k)
                done += k
            now = xos_now_ns()
        return (now - t0) / 1e9

    @property
    def cursor(self):
        return self.pos

    @property
    def stats(self):
        """Producer wait counters: waits, wait_ns, sleeps (futex), wakes (issued to consumers)."""
        self._check_open()
        h = self.hdr
        return dict(waits=h.waits, wait_ns=h.wait_ns, sleeps=h.sleeps, wakes=h.wakes)

    @property
    def wait_ns(self):
        return self.stats["wait_ns"]

    @property
    def waits(self):
        return self.stats["waits"]

    def close(self, unlink=True):
        """Mark the ring closed (waiting consumers return), unmap it and, by default, unlink the file and the
        consumers' doorbells."""
        if self.hdr != NULL:
            xos_store_release_32(&self.hdr.closed, 1)
            for i in range(XOS_RING_MAX_CONSUMERS):
                if xos_exchange_32(&self.hdr.consumers[i].sleeping, XOS_RING_AWAKE) == XOS_RING_DOORBELL:
                    self.ring_doorbell(i)
                xos_futex_wake(&self.hdr.consumers[i].sleeping, 1 << 30)
                if self.doorbell_fds[i] >= 0:
                    c_close(self.doorbell_fds[i])
                    self.doorbell_fds[i] = -1
            self.unmap()
            if unlink:
                for path in [self.path] + glob.glob(consumer_doorbell_path(glob.escape(self.path), "*")):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass


def _remove_stale(name, path):
    """An existing ring file: refuse if its creator lives, else report and unlink it."""
    try:
        fields, size = _read_header(path)
    except FileNotFoundError:
        return None
    if fields is not None and fields["magic"] == XOS_RING_MAGIC:
        pid, start = fields["pid"], fields["start"]
        if pid_alive(pid, start):
            raise RingInUseError(f"another engine (pid {pid}) is using shared memory {path}")
        msg = f"removing stale shared memory {path} left by dead pid {pid}"
    elif fields is None or fields["magic"] == 0:
        age = time.time() - os.stat(path).st_mtime
        if age < 5:
            raise RingInUseError(f"shared memory {path} is being created by another process")
        msg = f"removing stale shared memory {path} (never initialised, {age:.0f} s old)"
    else:
        raise RingError(f"shared memory {path} exists and is not an xos event ring; not touching it")
    log.warning(msg)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return msg


# ---------------------------------------------------------------------------
# consumers

@cython.final
cdef class RingConsumer(_RingMap):
    """A consumer end: ``RingConsumer.attach(name, consumer_name)``."""

    def __dealloc__(self):
        if self.doorbell_fd > 0:
            c_close(self.doorbell_fd)

    @staticmethod
    def attach(name, consumer_name, *, populate=True):
        """Register as ``consumer_name`` in ring ``name``.

        Takes a free consumer slot and starts at the producer's cursor (new events only), or
        takes over the slot of the same name whose process has died and resumes from its cursor.
        """
        cdef RingConsumer c = RingConsumer.__new__(RingConsumer)
        cdef xos_ring_header *h
        cdef xos_ring_consumer *s
        c.name, c.path = shm_names(name)
        raw_name = consumer_name.encode()
        if not 1 <= len(raw_name) < XOS_RING_NAME_BYTES or b"\0" in raw_name:
            raise ValueError(f"consumer name must be 1..{XOS_RING_NAME_BYTES - 1} bytes: {consumer_name!r}")
        c.consumer_name = consumer_name
        c.doorbell_fd = -1
        try:
            fd = os.open(c.path, os.O_RDWR)
        except FileNotFoundError:
            raise RingError(f"no event ring {c.name} ({c.path} does not exist)") from None
        try:
            fields, size = _read_header(c.path)
            check_header(c.name, fields, size)
            c._map(fd, size, populate)
        finally:
            os.close(fd)
        h = c.hdr
        c.cap = h.capacity
        c.mask = c.cap - 1
        c.slots = <xos_event *>((<char *>h) + XOS_RING_DATA_OFFSET)
        pid = os.getpid()
        start = my_start()
        # our own name's slot (take it over if its process is dead), else a free slot
        c.slot = -1
        for i in range(XOS_RING_MAX_CONSUMERS):
            s = &h.consumers[i]
            if xos_load_acquire_32(&s.state) == XOS_RING_ACTIVE and s.name[:len(raw_name) + 1] == raw_name + b"\0":
                old_pid = xos_load_acquire_64(&s.pid)
                old_start = s.pid_start
                if pid_alive(old_pid, old_start):
                    c.unmap()
                    raise RingInUseError(f"consumer {consumer_name!r} of ring {c.name} is attached by live pid {old_pid}")
                if not xos_cas_64(&s.pid, old_pid, pid):
                    c.unmap()
                    raise RingInUseError(f"consumer {consumer_name!r} of ring {c.name} was just taken over by another process")
                s.pid_start = start
                s.sleeping = 0
                c.slot = i
                c.me = s
                c.pos = xos_load_acquire_64(&s.cursor)
                c.rpos = c.pos
                log.info("ring %s: consumer %r resumes (slot %d, cursor %d) after dead pid %d",
                         c.name, consumer_name, i, c.pos, old_pid)
                break
        if c.slot < 0:
            for i in range(XOS_RING_MAX_CONSUMERS):
                s = &h.consumers[i]
                if xos_cas_32(&s.state, XOS_RING_FREE, XOS_RING_CLAIMING):
                    c.slot = i
                    c.me = s
                    break
            else:
                c.unmap()
                raise RingError(f"ring {c.name} has no free consumer slot (all {XOS_RING_MAX_CONSUMERS} in use)")
            memset(s.name, 0, XOS_RING_NAME_BYTES)
            memcpy(s.name, <const char *>raw_name, len(raw_name))
            s.pid = pid
            s.pid_start = start
            s.waits = 0
            s.wait_ns = 0
            s.sleeps = 0
            s.sleeping = 0
            c.pos = xos_load_acquire_64(&h.cursor)
            xos_store_release_64(&s.cursor, c.pos)
            xos_store_release_32(&s.state, XOS_RING_ACTIVE)
            while not c.settle():  # the producer lapped the cursor we read: start again at its cursor
                c.pos = xos_load_acquire_64(&h.cursor)
                xos_store_release_64(&s.cursor, c.pos)
            c.rpos = c.pos
        return c

    def settle(self):
        """After moving the cursor back (or registering): make the producer re-read the cursors and
        check that it cannot be writing over our position.  True when the position is safe."""
        cdef xos_ring_header *h = self.hdr
        xos_fetch_add_32(&h.epoch, 1)
        # The producer stores `claim` (seq_cst) before loading `epoch`: either it sees our new
        # epoch and re-reads our cursor, or we see the claim of the chunk it may be writing.
        return self.pos >= xos_load_seq_cst_64(&h.claim) - self.cap

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()

    cpdef int64_t available(self) noexcept nogil:
        """Events published and not yet read (by ``read``/``take``) or consumed."""
        return xos_load_acquire_64(&self.hdr.cursor) - self.rpos

    cdef int64_t wait_nogil(self, int64_t timeout_ns) noexcept nogil:
        cdef xos_ring_header *h = self.hdr
        cdef xos_ring_consumer *me = self.me
        cdef int64_t avail = xos_load_acquire_64(&h.cursor) - self.rpos
        cdef int64_t t0, now, deadline, slice_ns
        cdef int i
        if avail > 0 or timeout_ns == 0:
            if avail > 0 and self.nap_ns > 0:
                self.seen_ns = xos_now_ns()
            return avail
        for i in range(SPIN_PAUSES):
            xos_cpu_pause()
            avail = xos_load_acquire_64(&h.cursor) - self.rpos
            if avail > 0:
                if self.nap_ns > 0:
                    self.seen_ns = xos_now_ns()
                return avail
        t0 = xos_now_ns()
        deadline = t0 + timeout_ns if timeout_ns > 0 else INT64_MAX
        me.waits += 1
        for i in range(YIELDS):
            xos_yield()
            avail = xos_load_acquire_64(&h.cursor) - self.rpos
            if avail > 0:
                break
        while avail <= 0:
            if xos_load_acquire_32(&h.closed):
                break
            now = xos_now_ns()
            if now >= deadline:
                break
            slice_ns = deadline - now
            if self.nap_ns > 0 and now - self.seen_ns < LAZY_WINDOW_NS:
                # a consumer off the order's answer path naps and looks again, unflagged: the producer's
                # wake-up at every batch costs it a syscall and, on few cores, the CPU (the woken process
                # preempts it or the gateway); once quiet for the window it sleeps until woken
                if slice_ns > self.nap_ns:
                    slice_ns = self.nap_ns
                sleep_ns(slice_ns)
                avail = xos_load_acquire_64(&h.cursor) - self.rpos
                continue
            if slice_ns > CONSUMER_SLEEP_NS:
                slice_ns = CONSUMER_SLEEP_NS
            # then re-check: the producer checks after its cursor store
            xos_store_seq_cst_32(&me.sleeping, XOS_RING_FUTEX)
            avail = xos_load_acquire_64(&h.cursor) - self.rpos
            if avail > 0:
                xos_store_release_32(&me.sleeping, 0)
                break
            me.sleeps += 1
            xos_futex_wait_timeout(&me.sleeping, XOS_RING_FUTEX, slice_ns)
            xos_store_release_32(&me.sleeping, 0)
            avail = xos_load_acquire_64(&h.cursor) - self.rpos
        now = xos_now_ns()
        me.wait_ns += now - t0
        if avail > 0:
            self.seen_ns = now
        return avail

    def wait(self, int64_t timeout_ns=-1):
        """Wait until events are available (spin, yield, then futex sleep; with ``nap_ns`` set, naps of
        that length instead of the futex sleep until 50 ms have passed since a wait last found events);
        returns how many (0 on timeout or when the producer closed the ring).  ``timeout_ns`` < 0: no
        limit."""
        self._check_open()
        cdef int64_t r
        with nogil:
            r = self.wait_nogil(timeout_ns)
        return r

    cdef int64_t contiguous(self, const xos_event **first, int64_t max_n) noexcept nogil:
        """Zero-copy view: the next unread events up to ``max_n`` that are contiguous in the ring
        (they stop at the wrap).  Valid until ``advance`` passes them."""
        cdef int64_t n = xos_load_acquire_64(&self.hdr.cursor) - self.pos
        cdef int64_t i0 = self.pos & self.mask
        if n > max_n:
            n = max_n
        if n > self.cap - i0:
            n = self.cap - i0
        first[0] = &self.slots[i0]
        return n

    cdef void advance(self, int64_t n) noexcept nogil:
        """Mark ``n`` more events consumed (release store) and wake the producer if it sleeps for room."""
        cdef xos_ring_header *h = self.hdr
        self.pos += n
        if self.rpos < self.pos:
            self.rpos = self.pos
        xos_store_seq_cst_64(&self.me.cursor, self.pos)  # release + a barrier before the loads below
        if xos_load_relaxed_32(&h.producer_sleeping) != 0 and self.pos >= xos_load_relaxed_64(&h.producer_need):
            if xos_exchange_32(&h.producer_sleeping, 0) != 0:
                xos_futex_wake(&h.producer_sleeping, 1)

    def read(self, int64_t max_n):
        """A copy of up to ``max_n`` unread events (numpy EVENT_DTYPE), without consuming them."""
        return self.copy_unread(max_n, False)

    def take(self, int64_t max_n):
        """Like ``read``, and the next ``read``/``take`` starts after these events; the ring keeps
        them until ``commit``/``release_to`` consumes them.  For workers that make their state
        durable only now and then: they consume only as far as their last checkpoint."""
        return self.copy_unread(max_n, True)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def take_kinds(self, int64_t max_n, const uint8_t[::1] keep):
        """``take`` of up to ``max_n`` events that copies out only those ``keep`` marks (a byte per
        kind, ``engine.workers.kind_mask``: every event of the kind, or only those of no order):
        returns ``(chosen, first_seq, last_seq)``, ``chosen`` in order and ``first_seq .. last_seq``
        the seqs taken (``last_seq < first_seq`` when none were).  A worker that follows a few kinds
        is spared copying the rest."""
        cdef int64_t n = self.unread_upto(max_n), count = 0, i, nkeep = keep.shape[0]
        cdef const uint8_t *kept = &keep[0] if nkeep else NULL
        cdef cnp.ndarray out = np.empty(n, dtype=EVENT_DTYPE)
        cdef xos_event *o = <xos_event *>cnp.PyArray_DATA(out)
        cdef const xos_event *e
        cdef int64_t first_seq = self.rpos + 1
        with nogil:
            for i in range(n):
                e = &self.slots[(self.rpos + i) & self.mask]
                if xos_event_kept(e, kept, nkeep):
                    memcpy(&o[count], e, sizeof(xos_event))
                    count += 1
        self.rpos += n
        return out[:count], first_seq, first_seq + n - 1

    def next_ts(self):
        """The ``ts`` of the next unread event (the first the next take gets), or None while none is
        published: a consumer that groups events by matcher batch (one ``ts`` a batch) learns from it
        whether its take ended one."""
        self._check_open()
        if self.available() <= 0:
            return None
        return self.slots[self.rpos & self.mask].ts

    def release_to(self, int64_t seq):
        """Consume every event up to and including ``seq`` (which must have been taken)."""
        self._check_open()
        if seq < self.pos or seq > self.rpos:
            raise RingError(f"release_to({seq}): consumed up to {self.pos}, taken up to {self.rpos} "
                            f"in ring {self.name}")
        if seq > self.pos:
            self.advance(seq - self.pos)

    cdef int64_t unread_upto(self, int64_t max_n) except -1:
        """How many unread events (at most ``max_n``) a read or take gets now."""
        self._check_open()
        cdef int64_t n = self.available()
        if n > max_n:
            n = max_n
        return n if n > 0 else 0

    cdef copy_unread(self, int64_t max_n, bint take):
        cdef int64_t n = self.unread_upto(max_n)
        cdef cnp.ndarray out = np.empty(n, dtype=EVENT_DTYPE)
        cdef xos_event *o = <xos_event *>cnp.PyArray_DATA(out)
        cdef int64_t i0 = self.rpos & self.mask, first = self.cap - i0
        if first > n:
            first = n
        with nogil:
            memcpy(o, &self.slots[i0], <size_t>first * sizeof(xos_event))
            if n > first:
                memcpy(&o[first], &self.slots[0], <size_t>(n - first) * sizeof(xos_event))
        if take:
            self.rpos += n
        return out

    def commit(self, int64_t n):
        """Consume ``n`` events: advance the cursor (release store), waking the producer if it waits."""
        self._check_open()
        cdef int64_t unconsumed = xos_load_acquire_64(&self.hdr.cursor) - self.pos
        if n < 0 or n > unconsumed:
            raise RingError(f"commit({n}): only {unconsumed} events are unconsumed in ring {self.name}")
        if n:
            self.advance(n)

    def seek(self, int64_t seq):
        """Read event ``seq`` next (cursor = seq - 1).  Only within what the ring still holds:
        published events from ``published - capacity + 1`` on, up to ``published + 1``."""
        self._check_open()
        cdef int64_t target = seq - 1, old = self.pos
        cdef int64_t published = xos_load_acquire_64(&self.hdr.cursor)
        cdef int64_t oldest = published - self.cap if published > self.cap else 0
        if target > published or target < oldest:
            raise RingError(f"seek({seq}): ring {self.name} holds seqs {oldest + 1}..{published} "
                            f"(next to be published: {published + 1})")
        self.pos = target
        xos_store_seq_cst_64(&self.me.cursor, target)
        if target < old and not self.settle():
            self.pos = old
            xos_store_seq_cst_64(&self.me.cursor, old)
            raise RingError(f"seek({seq}): the producer has moved past it in ring {self.name}")
        self.rpos = self.pos

    def consume_checksum(self, int64_t max_total, int64_t batch=4096, *, bint verify=True,
                         int64_t timeout_ns=-1, cnp.ndarray lat_values=None, cnp.ndarray lat_counts=None):
        """Benchmark/test consumer in C: read and commit up to ``max_total`` events in batches of at
        most ``batch``, returning dict(count, checksum, seq_errors, payload_errors, seconds,
        lat_runs).  With ``verify`` each event's seq must be its position + 1 and its payload
        ``pattern(seq)``.  If int64 arrays ``lat_values``/``lat_counts`` are given, one-hop latency
        (now - ts) is recorded run-length encoded into them (``lat_runs`` pairs).  Stops early on
        ``timeout_ns`` without events or when the producer closes the ring."""
        self._check_open()
        if batch < 1:
            raise ValueError("batch must be >= 1")
        cdef int64_t *lv = NULL
        cdef int64_t *lc = NULL
        cdef int64_t lat_cap = 0, runs = 0
        if lat_values is not None:
            if lat_values.dtype != np.int64 or lat_counts is None or lat_counts.dtype != np.int64 \
                    or not lat_values.flags.c_contiguous or not lat_counts.flags.c_contiguous:
                raise TypeError("lat_values and lat_counts must be contiguous int64 arrays")
            lv = <int64_t *>cnp.PyArray_DATA(lat_values)
            lc = <int64_t *>cnp.PyArray_DATA(lat_counts)
            lat_cap = min(lat_values.shape[0], lat_counts.shape[0])
        cdef int64_t done = 0, n, i, pos, now, lat, t0, t1
        cdef int64_t seq_err = 0, pay_err = 0
        cdef uint64_t sum = 0
        cdef const xos_event *e
        with nogil:
            t0 = xos_now_ns()
            while done < max_total:
                n = self.contiguous(&e, max_total - done if max_total - done < batch else batch)
                if n == 0:
                    if self.wait_nogil(timeout_ns) == 0:
                        break
                    continue
                pos = self.pos
                if lv != NULL:
                    now = xos_now_ns()
                for i in range(n):
                    sum += <uint64_t>e[i].seq + <uint64_t>e[i].price + <uint64_t>e[i].taker_fee
                    if verify:
                        seq_err += e[i].seq != pos + i + 1
                        pay_err += (<uint64_t>e[i].price != pattern_price(e[i].seq)) | \
                                   (<uint64_t>e[i].taker_fee != pattern_fee(e[i].seq))
                    if lv != NULL:
                        lat = now - e[i].ts
                        if runs > 0 and lv[runs - 1] == lat:
                            lc[runs - 1] += 1
                        elif runs < lat_cap:
                            lv[runs] = lat
                            lc[runs] = 1
                            runs += 1
                self.advance(n)
                done += n
            t1 = xos_now_ns()
        return dict(count=done, checksum=int(sum), seq_errors=seq_err, payload_errors=pay_err,
                    seconds=(t1 - t0) / 1e9, end_ns=t1, lat_runs=runs)

    @property
    def cursor(self):
        """Events consumed: the next event read has seq ``cursor + 1``."""
        return self.pos

    def producer_closed(self):
        """Did the producer close the ring (a clean shutdown: nothing more will be published)?"""
        self._check_open()
        return xos_load_acquire_32(&self.hdr.closed) != 0

    @property
    def producer_pid(self):
        """The pid of the process that created this ring (the producer)."""
        self._check_open()
        return self.hdr.creator_pid

    def producer_alive(self):
        """Is the process that created this ring still running?  A worker whose producer died
        leaves, to attach to the ring the restarted producer creates."""
        self._check_open()
        return pid_alive(self.hdr.creator_pid, self.hdr.creator_start)

    @property
    def stats(self):
        self._check_open()
        return dict(waits=self.me.waits, wait_ns=self.me.wait_ns, sleeps=self.me.sleeps)

    def doorbell(self):
        """This consumer's doorbell (made if missing): an fd to poll in an event loop, after ``arm``."""
        self._check_open()
        if self.doorbell_fd < 0:
            self.doorbell_fd = make_doorbell(consumer_doorbell_path(self.path, self.consumer_name))
        return self.doorbell_fd

    def arm(self):
        """Say this consumer is about to wait on its doorbell: False (disarmed again) when events came
        meanwhile, True when the producer will ring for the next ones (or when it closes the ring)."""
        self._check_open()
        if self.doorbell_fd < 0:
            raise RingError(f"consumer {self.consumer_name!r} of ring {self.name} has no doorbell: call doorbell()")
        xos_store_seq_cst_32(&self.me.sleeping, XOS_RING_DOORBELL)  # then re-check, as wait() does
        if self.available() > 0 or xos_load_acquire_32(&self.hdr.closed):
            xos_store_release_32(&self.me.sleeping, XOS_RING_AWAKE)
            return False
        self.me.sleeps += 1
        return True

    def disarm(self):
        """After the wait: no doorbell wanted, and those rung are read off."""
        self._check_open()
        xos_store_release_32(&self.me.sleeping, XOS_RING_AWAKE)
        if self.doorbell_fd >= 0:
            drain_fd(self.doorbell_fd)

    def detach(self):
        """Leave the ring: the slot is freed, the producer no longer waits for this consumer."""
        if self.hdr != NULL:
            xos_store_release_32(&self.me.sleeping, XOS_RING_AWAKE)
            xos_store_release_32(&self.me.state, XOS_RING_FREE)
            xos_fetch_add_32(&self.hdr.epoch, 1)
            self.unmap()
        if self.doorbell_fd >= 0:
            os.close(self.doorbell_fd)
            self.doorbell_fd = -1


# ---------------------------------------------------------------------------
# status

def ring_status(name):
    """A snapshot of ring ``name`` for ``xos status``: cursors, lags and wait counters."""
    rname, path = shm_names(name)
    fields, size = _read_header(path)
    check_header(rname, fields, size)
    fd = os.open(path, os.O_RDONLY)
    cdef void *p
    try:
        p = mmap(NULL, XOS_RING_DATA_OFFSET, PROT_READ, MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if p == MAP_FAILED:
        raise OSError(errno, f"mmap of {path}")
    cdef xos_ring_header *h = <xos_ring_header *>p
    cdef xos_ring_consumer *s
    try:
        published = xos_load_acquire_64(&h.cursor)
        consumers = []
        for i in range(XOS_RING_MAX_CONSUMERS):
            s = &h.consumers[i]
            state = xos_load_acquire_32(&s.state)
            if state == XOS_RING_FREE:
                continue
            cur = xos_load_acquire_64(&s.cursor)
            consumers.append(dict(
                slot=i, name=(<bytes>s.name[:XOS_RING_NAME_BYTES]).split(b"\0", 1)[0].decode(errors="replace"),
                pid=s.pid, alive=pid_alive(s.pid, s.pid_start), state="active" if state == XOS_RING_ACTIVE else "claiming",
                cursor=cur, lag=published - cur, sleeping=bool(s.sleeping),
                waits=s.waits, wait_ns=s.wait_ns, sleeps=s.sleeps))
        return dict(
            name=rname, path=path, capacity=h.capacity, published=published, claim=h.claim,
            creator_pid=h.creator_pid, creator_alive=pid_alive(h.creator_pid, h.creator_start),
            closed=bool(h.closed), layout_version=h.layout_version, slot_size=h.slot_size,
            producer=dict(waits=h.waits, wait_ns=h.wait_ns, sleeps=h.sleeps, wakes=h.wakes,
                          sleeping=bool(h.producer_sleeping)),
            consumers=consumers)
    finally:
        munmap(p, XOS_RING_DATA_OFFSET)

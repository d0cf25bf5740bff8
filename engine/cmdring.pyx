# cython: language_level=3
"""Shared-memory command ring: the gateway's commands into the matcher, one producer, one consumer.

Over ZeroMQ each forward crossed two I/O threads (the gateway's, then the matcher's) before the
matcher's poll returned: three wake-ups, 78-80 us one way here at a calm pace, and 20-50 us of the
gateway's CPU in ``send``.  Here the gateway copies a forward into the slots and publishes it with one
release store of ``head``; only when the matcher has said it is about to sleep does it ring the
doorbell, a byte into a FIFO the matcher polls together with its ZeroMQ input (the other producers:
feeds, workers, tools): one wake-up, 9 us.

Lifetime.  The matcher creates the ring (``CommandRing.consumer``) and unlinks it, with its doorbell,
when it stops cleanly (``close``), setting ``closed`` first so that a live gateway attaches to the next
one.  A matcher that restarts while the gateway that produced into the ring lives takes the ring over
and goes on from ``tail``: what the gateway published meanwhile is not lost.  A ring whose producer is
dead is made anew (its commands, never acknowledged, go with it: a later engine must not run them).
The gateway attaches with ``CommandRing.producer``; ``publish`` puts a whole forward in or nothing, and never
waits: the gateway also routes the matcher's events, and a gateway waiting for room while the matcher waits for
it to take events would wait forever.
"""
cimport cython
from libc.errno cimport errno
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy, strerror
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close as c_close

import os
import struct

cimport numpy as cnp

from records cimport xos_command, XOS_LAYOUT_VERSION, XOS_CMD_MULTI_LEG
from atomics cimport *
from cmdringlayout cimport *
from engine.ring cimport drain_fd, ring_fifo

from .api import MAX_LEGS as _MAX_LEGS
from .records import COMMAND_DTYPE
from .ring import (RingError, RingInUseError, RingLayoutError, make_doorbell, pid_alive, proc_start, shm_names,
                   size_and_map)

cdef int64_t MAX_LEGS = _MAX_LEGS  # legs of a multi-leg order: a batch never ends among them

cnp.import_array()

cdef extern from "<sys/mman.h>" nogil:
    int MAP_POPULATE

DATA_OFFSET = XOS_CMD_RING_DATA_OFFSET
# the header's lines as read from the file: 0 (magic .. closed), 1 (head, producer pid and start, full, doorbells)
# and 2 (tail, consumer pid and start)
HEADER_STRUCT = struct.Struct("<qIIqIIi")
PRODUCER_STRUCT = struct.Struct("<qqqqq")
CONSUMER_STRUCT = struct.Struct("<qqq")


def doorbell_path(path):
    """The FIFO beside the ring file ``path`` that wakes its consumer."""
    return path + ".doorbell"


def read_header(path):
    """The header fields of an existing ring file (None when it is too short) and its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = os.pread(fd, HEADER_STRUCT.size, 0)
        producer = os.pread(fd, PRODUCER_STRUCT.size, 64)
        consumer = os.pread(fd, CONSUMER_STRUCT.size, 128)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if len(raw) < HEADER_STRUCT.size or len(producer) < PRODUCER_STRUCT.size or len(consumer) < CONSUMER_STRUCT.size:
        return None, size
    magic, version, slot, cap, ring_layout, data_off, closed = HEADER_STRUCT.unpack(raw)
    head, pid, start, full, doorbells = PRODUCER_STRUCT.unpack(producer)
    tail, consumer_pid, consumer_start = CONSUMER_STRUCT.unpack(consumer)
    return dict(magic=magic, version=version, slot_size=slot, capacity=cap, ring_layout=ring_layout,
                data_offset=data_off, closed=closed, head=head, producer_pid=pid, producer_start=start, full=full,
                doorbells=doorbells, tail=tail, consumer_pid=consumer_pid,
                consumer_start=consumer_start), size


def command_ring_status(name):
    """A snapshot of command ring ``name`` for ``xos status``: its cursors and lag, its two ends, its counters."""
    rname, path = shm_names(name)
    try:
        fields, size = read_header(path)
    except FileNotFoundError:
        raise RingError(f"no command ring {rname} ({path} does not exist)") from None
    check_header(rname, fields, size)
    return dict(path=path, capacity=fields["capacity"], closed=bool(fields["closed"]), published=fields["head"],
                taken=fields["tail"], lag=fields["head"] - fields["tail"], producer_pid=fields["producer_pid"],
                producer_alive=pid_alive(fields["producer_pid"], fields["producer_start"]),
                consumer_pid=fields["consumer_pid"],
                consumer_alive=pid_alive(fields["consumer_pid"], fields["consumer_start"]),
                full=fields["full"], doorbells=fields["doorbells"])


def check_header(name, fields, size):
    """Raise RingLayoutError naming what is wrong with a command ring this build cannot use."""
    if fields is None or fields["magic"] == 0:
        raise RingLayoutError(f"command ring {name} is not initialised (empty header: its creator died or is "
                              f"still creating it)")
    if fields["magic"] != XOS_CMD_RING_MAGIC:
        raise RingLayoutError(f"shared memory {name} is not an xos command ring (magic {fields['magic']:#x})")
    if fields["version"] != XOS_LAYOUT_VERSION:
        raise RingLayoutError(f"command ring {name} has record layout version {fields['version']}, "
                              f"this build reads version {XOS_LAYOUT_VERSION}")
    if fields["ring_layout"] != XOS_CMD_RING_LAYOUT or fields["data_offset"] != XOS_CMD_RING_DATA_OFFSET:
        raise RingLayoutError(f"command ring {name} has header layout {fields['ring_layout']} (slots at "
                              f"{fields['data_offset']}), this build reads layout {XOS_CMD_RING_LAYOUT} (slots at "
                              f"{XOS_CMD_RING_DATA_OFFSET})")
    if fields["slot_size"] != sizeof(xos_command):
        raise RingLayoutError(f"command ring {name} has {fields['slot_size']}-byte slots, this build's commands "
                              f"are {sizeof(xos_command)} bytes")
    cap = fields["capacity"]
    if cap < 2 or cap & (cap - 1):
        raise RingLayoutError(f"command ring {name} has capacity {cap}, not a power of two")
    want = XOS_CMD_RING_DATA_OFFSET + cap * sizeof(xos_command)
    if size != want:
        raise RingLayoutError(f"command ring {name} is {size} bytes, a ring of capacity {cap} is {want}")


@cython.final
cdef class _Mapping:
    """The ring file's mapping, unmapped when its end closes or goes."""
    cdef void *addr
    cdef size_t size

    def __dealloc__(self):
        if self.addr != NULL:
            munmap(self.addr, self.size)


@cython.final
cdef class CommandRing:
    """One end of a command ring: ``CommandRing.consumer(name, capacity)`` (the matcher) or
    ``CommandRing.producer(name)`` (the gateway)."""

    def __dealloc__(self):
        if self.doorbell_fd >= 0:
            c_close(self.doorbell_fd)
            self.doorbell_fd = -1

    cdef void unmap(self) noexcept:
        self.mapping = None
        self.hdr = NULL
        self.slots = NULL

    cdef _map(self, int fd, size_t size):
        cdef _Mapping m = _Mapping.__new__(_Mapping)
        cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0)  # no faults later
        if p == MAP_FAILED:
            e = errno
            raise OSError(e, f"mmap of {self.path}: {strerror(e).decode()}")
        m.addr, m.size = p, size
        self.mapping = m
        self.hdr = <xos_cmd_ring_header *>p
        self.slots = <xos_command *>((<char *>p) + XOS_CMD_RING_DATA_OFFSET)

    def _check_open(self):
        if self.hdr == NULL:
            raise RingError(f"command ring {self.name} is closed")

    @staticmethod
    def consumer(name, int64_t capacity):
        """The matcher's end of ring ``name`` (``/dev/shm/NAME``, its doorbell ``NAME.doorbell`` beside it).

        The ring a live producer is using is taken over as it is (same capacity), from its ``tail``; any
        other file there is replaced by a new, empty ring.  A live consumer already there is refused
        (RingInUseError)."""
        cdef CommandRing r = CommandRing.__new__(CommandRing)
        r.name, r.path = shm_names(name)
        r.doorbell_path = doorbell_path(r.path)
        r.doorbell_fd = -1
        r.is_producer = False
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"command ring capacity must be a power of two >= 2, not {capacity}")
        size = XOS_CMD_RING_DATA_OFFSET + capacity * sizeof(xos_command)
        r.replaced = None
        try:
            fields, found = read_header(r.path)
        except FileNotFoundError:
            fields = None
        else:
            r.replaced = r._take_over(fields, found, capacity)
        if r.hdr == NULL:
            r._create(size, capacity)
        r.claim(&r.hdr.consumer_pid, &r.hdr.consumer_start, "matcher", "consumes")
        r.doorbell_fd = make_doorbell(r.doorbell_path)
        return r

    cdef claim(self, int64_t *pid, int64_t *start, str who, str does):
        """Hold this end (``pid``, ``start``: its owner's fields in the header) for this process; refused while
        another live process holds it."""
        if pid[0] and pid[0] != os.getpid() and pid_alive(pid[0], start[0]):
            other = pid[0]
            self.unmap()
            raise RingInUseError(f"another {who} (pid {other}) {does} command ring {self.path}")
        pid[0] = os.getpid()
        start[0] = proc_start(os.getpid()) or 0
        self.cap = self.hdr.capacity
        self.mask = self.cap - 1

    def _take_over(self, fields, size, int64_t capacity):
        """Map the existing file if its producer lives and it is a ring of this capacity (returns None);
        else unlink it, closing it first for a producer still mapping it, and say why."""
        try:
            check_header(self.name, fields, size)
        except RingLayoutError as exc:
            why = str(exc)
        else:
            pid = fields["consumer_pid"]
            if pid != os.getpid() and pid_alive(pid, fields["consumer_start"]):  # before touching anything
                raise RingInUseError(f"another matcher (pid {pid}) consumes command ring {self.path}")
            if fields["capacity"] != capacity:
                why = f"capacity {fields['capacity']}, {capacity} wanted"
            elif fields["closed"]:
                why = "closed"
            elif not pid_alive(fields["producer_pid"], fields["producer_start"]):
                why = "its producer is gone: its commands, never acknowledged, are dropped"
            else:
                fd = os.open(self.path, os.O_RDWR)
                try:
                    self._map(fd, size)
                finally:
                    os.close(fd)
                return None
            fd = os.open(self.path, os.O_RDWR)  # a live producer mapping it must move to the new ring
            try:
                os.pwrite(fd, struct.pack("<i", 1), 32)  # ``closed``
            finally:
                os.close(fd)
        os.unlink(self.path)
        return f"replaced command ring {self.path}: {why}"

    def _create(self, size, int64_t capacity):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        size_and_map(fd, self.path, size, self._map)
        h = self.hdr
        h.layout_version = XOS_LAYOUT_VERSION
        h.slot_size = sizeof(xos_command)
        h.capacity = capacity
        h.ring_layout = XOS_CMD_RING_LAYOUT
        h.data_offset = XOS_CMD_RING_DATA_OFFSET
        xos_store_release_64(&h.magic, XOS_CMD_RING_MAGIC)  # last: attachers see a complete header

    @staticmethod
    def producer(name):
        """The gateway's end of ring ``name``: RingError when there is none yet (or it is closed), RingLayoutError
        when this build cannot use it, RingInUseError when another live producer holds it."""
        cdef CommandRing r = CommandRing.__new__(CommandRing)
        r.name, r.path = shm_names(name)
        r.doorbell_path = doorbell_path(r.path)
        r.doorbell_fd = -1
        r.doorbell_path_b = os.fsencode(r.doorbell_path)
        r.is_producer = True
        r.replaced = None
        try:
            fd = os.open(r.path, os.O_RDWR)
        except FileNotFoundError:
            raise RingError(f"no command ring {r.name} ({r.path} does not exist: is the matcher running?)") from None
        try:
            fields, size = read_header(r.path)
            check_header(r.name, fields, size)
            if fields["closed"]:
                raise RingError(f"command ring {r.name} is closed (its matcher stopped)")
            r._map(fd, size)
        finally:
            os.close(fd)
        r.claim(&r.hdr.producer_pid, &r.hdr.producer_start, "gateway", "produces into")
        r.head = xos_load_acquire_64(&r.hdr.head)
        r.doorbell_c = r.doorbell_path_b
        return r

    # ------------------------------------------------------------------ producer

    cdef void ring_doorbell(self) noexcept nogil:
        """Wake the consumer if it said it sleeps; a doorbell that cannot be opened or written (no matcher
        reads it: it died) is tried again next time (the next matcher looks at the ring before it sleeps)."""
        cdef xos_cmd_ring_header *h = self.hdr
        xos_fence()  # the head store before the sleeping-flag load
        if xos_load_relaxed_32(&h.consumer_sleeping) == 0 or xos_exchange_32(&h.consumer_sleeping, 0) == 0:
            return
        h.doorbells += 1
        ring_fifo(&self.doorbell_fd, self.doorbell_c)

    def publish(self, cnp.ndarray commands not None):
        """Put a whole array of COMMAND_DTYPE into the ring: True once published; False, with nothing published,
        when there is no room for all of it (``full`` counts these) or the ring is closed (its matcher stopped).
        It never waits (see the module's doc): the caller keeps the commands and tries again."""
        if commands.dtype != COMMAND_DTYPE or commands.ndim != 1 or not commands.flags.c_contiguous:
            raise TypeError("commands must be a 1-d C-contiguous array of COMMAND_DTYPE")
        return self.publish_from(<const char *>cnp.PyArray_DATA(commands), commands.shape[0],
                                 sizeof(xos_command)) == 1

    cdef int publish_from(self, const char *src, int64_t n, Py_ssize_t stride) except -2:
        """``publish`` of ``n`` commands each ``stride`` bytes after the last (the gateway's ``ForwardBatch`` keeps
        each beside its session and rid, and publishes straight from there): 1 published, 0 no room for all
        (``full`` counts it), -1 the ring is closed."""
        cdef xos_cmd_ring_header *h = self.hdr
        cdef int64_t i
        self._check_open()
        if not self.is_producer:
            raise RingError(f"command ring {self.name}: the consumer's end cannot publish")
        if n > self.cap:
            raise ValueError(f"{n} commands do not fit command ring {self.name} of {self.cap}")
        if xos_load_acquire_32(&h.closed):
            return -1
        if self.head + n - xos_load_acquire_64(&h.tail) > self.cap:
            h.full += 1
            return 0
        if n == 0:
            return 1
        with nogil:
            if stride == sizeof(xos_command):  # whole runs: at most two copies (where the ring wraps)
                i = self.cap - (self.head & self.mask)
                if i > n:
                    i = n
                memcpy(&self.slots[self.head & self.mask], src, <size_t>i * sizeof(xos_command))
                if n > i:
                    memcpy(&self.slots[0], src + i * stride, <size_t>(n - i) * sizeof(xos_command))
            else:
                for i in range(n):
                    memcpy(&self.slots[(self.head + i) & self.mask], src + i * stride, sizeof(xos_command))
            self.head += n
            xos_store_release_64(&h.head, self.head)
            self.ring_doorbell()
        return 1

    # ------------------------------------------------------------------ consumer

    cpdef int64_t available(self) noexcept:
        """Commands published and not yet taken."""
        if self.hdr == NULL:
            return 0
        return xos_load_acquire_64(&self.hdr.head) - self.hdr.tail

    def take_into(self, unsigned char[::1] batch, int64_t at, int64_t room):
        """Copy up to ``room`` of the waiting commands, oldest first, into ``batch`` (COMMAND_DTYPE records as
        bytes) after its first ``at`` and take them (their slots are the producer's again).  The
        batch never ends inside a multi-leg order (``engine.api.whole_units``: a MultiLeg header with 2..MAX_LEGS
        legs and the legs), unless it is empty and too small for it.  Returns ``at`` + how many were taken."""
        self._check_open()
        cdef int64_t size = sizeof(xos_command), avail = self.available(), k, h, i0, first
        cdef int64_t tail = self.hdr.tail
        cdef const xos_command *c
        if at < 0 or room < 0 or (at + room) * size > batch.shape[0]:
            raise ValueError(f"take_into: {room} commands after the first {at} do not fit {batch.shape[0]} bytes")
        k = room if room < avail else avail
        if k < avail:  # a cut: not among a multi-leg order's records
            for h in range(k - MAX_LEGS if k > MAX_LEGS else 0, k):
                c = &self.slots[(tail + h) & self.mask]
                if c.kind == XOS_CMD_MULTI_LEG and 2 <= c.qty <= MAX_LEGS and h + 1 + c.qty > k:
                    if h or at:
                        k = h
                    break
        i0 = tail & self.mask
        first = self.cap - i0 if k > self.cap - i0 else k
        if k:
            memcpy(&batch[at * size], &self.slots[i0], first * size)
            if k > first:
                memcpy(&batch[(at + first) * size], &self.slots[0], (k - first) * size)
        xos_store_release_64(&self.hdr.tail, tail + k)
        return at + k

    def arm(self):
        """Say the consumer is about to sleep on the doorbell: False (disarmed again) when commands came
        meanwhile, True when the producer will ring for the next ones."""
        cdef xos_cmd_ring_header *h = self.hdr
        self._check_open()
        xos_store_seq_cst_32(&h.consumer_sleeping, 1)
        if xos_load_acquire_64(&h.head) - h.tail > 0:
            xos_store_release_32(&h.consumer_sleeping, 0)
            return False
        return True

    def disarm(self):
        """After the sleep: no more doorbells wanted, and those rung are read off the FIFO."""
        self._check_open()
        xos_store_release_32(&self.hdr.consumer_sleeping, 0)
        drain_fd(self.doorbell_fd)

    @property
    def fileno(self):
        """The doorbell's fd, to poll (the consumer's end)."""
        return self.doorbell_fd

    @property
    def closed(self):
        return self.hdr == NULL or xos_load_acquire_32(&self.hdr.closed) != 0

    @property
    def capacity(self):
        return self.cap

    @property
    def consumer_pid(self):
        """The pid of the matcher that consumes the ring (0: none yet, or not mapped)."""
        return 0 if self.hdr == NULL else self.hdr.consumer_pid

    @property
    def stats(self):
        """head, tail, full (publishes refused for want of room), doorbells (wake-ups rung)."""
        self._check_open()
        h = self.hdr
        return dict(head=xos_load_acquire_64(&h.head), tail=xos_load_acquire_64(&h.tail), full=h.full,
                    doorbells=h.doorbells)

    def close(self):
        """The producer lets go of the ring.  The consumer marks it closed (the producer attached moves to the
        next ring), and unlinks it and its doorbell."""
        cdef xos_cmd_ring_header *h = self.hdr
        if h != NULL:
            if self.is_producer:
                h.producer_pid = 0
            else:
                xos_store_release_32(&h.closed, 1)
                for path in (self.path, self.doorbell_path):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            self.unmap()
        if self.doorbell_fd >= 0:
            c_close(self.doorbell_fd)
            self.doorbell_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

cimport cython
from libc.stdint cimport int32_t, int64_t

from records cimport xos_event
from ringlayout cimport xos_ring_header, xos_ring_consumer


cdef void ring_fifo(int *fd, const char *path) noexcept nogil
cdef void drain_fd(int fd) noexcept nogil


cdef class _RingMap:
    cdef xos_ring_header *hdr
    cdef xos_event *slots
    cdef int64_t cap
    cdef int64_t mask
    cdef size_t size
    cdef readonly str name          # "/xos-x"
    cdef readonly str path          # "/dev/shm/xos-x"
    cdef void unmap(self) noexcept
    cdef _map(self, int fd, size_t size, bint populate)


@cython.final
cdef class EventRing(_RingMap):
    cdef int64_t pos                # events published (the shared cursor's value)
    cdef int64_t limit              # publishing up to here is safe without looking at the consumers
    cdef int32_t epoch              # consumers' registration epoch `limit` was computed at
    cdef readonly object stale_removed
    cdef int interrupt_fd           # a signal wake-up fd: a byte on it ends a wait for room (-1: none)
    cdef bytes path_b               # path, for the consumers' doorbell paths without the GIL
    cdef const char *path_c
    cdef int doorbell_fds[8]        # per consumer slot: its doorbell's write end, -1 until opened
    cdef int32_t doorbell_epochs[8] # the registration epoch it was opened at (another since: opened anew)
    cdef readonly bint interrupted  # a publish stopped short because of it
    cdef int64_t refresh_limit(self) noexcept nogil
    cdef bint make_room(self, int64_t end) noexcept nogil
    cdef void wake_consumers(self) noexcept nogil
    cdef void ring_doorbell(self, int i) noexcept nogil
    cdef int64_t publish(self, const xos_event *events, int64_t n) noexcept nogil


@cython.final
cdef class RingConsumer(_RingMap):
    cdef xos_ring_consumer *me
    cdef int64_t pos                # events consumed (this consumer's shared cursor)
    cdef int64_t rpos               # events read (>= pos): taken ahead, not yet consumed
    cdef readonly int slot
    cdef readonly str consumer_name
    cdef public int64_t nap_ns      # > 0: a wait naps this long at a time, unflagged, for LAZY_WINDOW_NS
    cdef int64_t seen_ns            # when a wait last found events (the napping window runs from it)
    cdef int doorbell_fd            # its doorbell FIFO (read end), -1 until ``doorbell()``
    cpdef int64_t available(self) noexcept nogil
    cdef int64_t wait_nogil(self, int64_t timeout_ns) noexcept nogil
    cdef int64_t contiguous(self, const xos_event **first, int64_t max_n) noexcept nogil
    cdef void advance(self, int64_t n) noexcept nogil
    cdef int64_t unread_upto(self, int64_t max_n) except -1
    cdef copy_unread(self, int64_t max_n, bint take)

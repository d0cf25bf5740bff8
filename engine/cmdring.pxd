cimport cython
from libc.stdint cimport int64_t

from records cimport xos_command
from cmdringlayout cimport xos_cmd_ring_header


@cython.final
cdef class CommandRing:
    cdef object mapping             # the _Mapping the header and slots are in (None once closed)
    cdef xos_cmd_ring_header *hdr
    cdef xos_command *slots
    cdef int64_t cap
    cdef int64_t mask
    cdef int64_t head               # the producer's: commands published (the shared head's value)
    cdef int doorbell_fd            # the consumer's FIFO (read end); the producer's write end, -1 until opened
    cdef bytes doorbell_path_b
    cdef const char *doorbell_c     # the producer's: doorbell_path_b, for opening it without the GIL
    cdef readonly str name          # "/xos-commands"
    cdef readonly str path          # "/dev/shm/xos-commands"
    cdef readonly str doorbell_path
    cdef readonly bint is_producer
    cdef readonly object replaced   # the consumer's: why an existing file was replaced (None: none, or taken over)
    cdef void unmap(self) noexcept
    cdef _map(self, int fd, size_t size)
    cdef claim(self, int64_t *pid, int64_t *start, str who, str does)
    cdef void ring_doorbell(self) noexcept nogil
    cdef int publish_from(self, const char *src, int64_t n, Py_ssize_t stride) except -2
    cpdef int64_t available(self) noexcept

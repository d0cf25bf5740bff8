from libc.stdint cimport int64_t, uint8_t


cdef class IntTable:
    cdef readonly int64_t ncols
    cdef int64_t cap                # slots: a power of two, the load at most 1/2
    cdef int64_t mask
    cdef int64_t count
    cdef void *block                # one allocation: keys, then vals, then used
    cdef int64_t *keys              # [cap]
    cdef int64_t *vals              # [cap * ncols]
    cdef uint8_t *used              # [cap]
    cdef int resize(self, int64_t cap) noexcept nogil
    cdef int64_t find(self, int64_t key) noexcept nogil
    cdef int64_t insert(self, int64_t key) noexcept nogil
    cdef void erase(self, int64_t slot) noexcept nogil
    cdef void fit(self) noexcept nogil

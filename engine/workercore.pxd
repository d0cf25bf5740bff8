from libc.stdint cimport int64_t, uint8_t


cdef class IntTable:
    cdef readonly int64_t ncols
    cdef int64_t cap
    cdef int64_t mask
    cdef int64_t count
    cdef object _keys               # numpy int64[cap]
    cdef object _used               # numpy uint8[cap]
    cdef object _vals               # numpy int64[cap, ncols]
    cdef int64_t *keys
    cdef uint8_t *used
    cdef int64_t *vals
    cdef void _alloc(self, int64_t cap) except *
    cdef int64_t find(self, int64_t key) noexcept nogil
    cdef int64_t insert(self, int64_t key) noexcept nogil
    cdef void erase(self, int64_t slot) noexcept nogil

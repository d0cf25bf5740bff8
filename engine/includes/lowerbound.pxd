from libc.stdint cimport int64_t

cdef extern from "lowerbound.h" nogil:
    int64_t xos_lower_bound(const int64_t *a, int64_t n, int64_t key)

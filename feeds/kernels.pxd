# Declarations of feeds/kernels.pyx: an observation's refusal reasons (REASONS' indices) and the
# round's C helpers.
from libc.stdint cimport int64_t

cdef enum:
    OK, UNKNOWN_MARKET, NOT_FINITE, NOT_POSITIVE, BAD_TIMESTAMP, FUTURE_TIMESTAMP, TOO_LARGE, BELOW_ONE_TICK, OUT_OF_ORDER

cdef int64_t median_of(int64_t *values, int64_t k) noexcept nogil
cdef int64_t deviation_limit(int64_t median, int64_t bps) noexcept nogil

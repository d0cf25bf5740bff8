# Declarations of gateway/mdbook.pyx: the market-data publisher's L2 book of one market.
from libc.stdint cimport int64_t, uint8_t

cdef packed struct LevelRow:  # gateway.mdmessages.LEVEL_DTYPE (25 bytes)
    uint8_t side
    int64_t price, qty, count

cdef struct Level:
    int64_t price, qty, count

cdef class MarketBook:
    cdef public int64_t market, seq, trade_number, ts
    cdef public bint halted
    cdef Level *levels[2]  # per side: ascending by price
    cdef Py_ssize_t n[2]
    cdef Py_ssize_t capacity[2]
    cdef int merge(self, int side, const LevelRow *rows, Py_ssize_t k, int64_t *dq, int64_t *dc) except -1

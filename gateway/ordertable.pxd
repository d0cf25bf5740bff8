# Declarations of gateway/ordertable.pyx: the order table's row (gateway.server.ORDER_ROW_DTYPE).
from libc.stdint cimport int64_t, uint8_t, uint32_t

cdef packed struct OrderRow:
    int64_t order_id, account, client_id, price, qty, filled, remaining, ts, closed_seq
    uint32_t market, venue
    uint8_t side, status

cdef Py_ssize_t find_row(const OrderRow *rows, Py_ssize_t n, int64_t order_id) noexcept nogil

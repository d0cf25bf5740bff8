# Declarations of gateway/routing.pyx: the order table's row (gateway.server.ORDER_ROW_DTYPE), an
# execution report's (gateway.messages.REPORT_ROW_DTYPE), an ack's (gateway.messages.ACK_ROW_DTYPE),
# an account's FIFO of pending commands, the commands of the next forward (ForwardBatch), the reply pass
# (ReplyRouter) and the helpers over event records.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

from engine.rowpack cimport RowPacking
from gateway.intake cimport Command, Pending
from records cimport xos_event

cdef packed struct OrderRow:
    int64_t order_id, account, client_id, price, qty, filled, remaining, ts, closed_seq
    uint32_t market, venue
    uint8_t side, status

cdef struct ClosedTally:  # compact_orders: one account's closed rows
    Py_ssize_t count, seen  # its closed rows; those put in the selection so far
    Py_ssize_t at  # where its closed_seqs start in the selection (an account over the limit)
    int64_t cut  # the oldest closed_seq it keeps
    Py_ssize_t ties  # rows at ``cut`` it still keeps

cdef packed struct ReportRow:
    uint8_t kind, side, liquidity, reason
    uint16_t code
    uint32_t market, venue
    int64_t order_id, client_id, price, qty, remaining, fee, seq, cmd_seq, ts

cdef packed struct AckRow:
    int64_t rid, order_id, client_id, cmd_seq, durable_seq, count, ts

cdef class PendingRows:
    cdef Pending *rows
    cdef Py_ssize_t capacity
    cdef int resize(self, Py_ssize_t capacity) except -1

cdef class PendingQueue(PendingRows):
    cdef Py_ssize_t head, tail
    cdef int push(self, const Pending *rows, Py_ssize_t n) except -1

cdef class ForwardBatch(PendingRows):
    cdef Py_ssize_t n
    cdef readonly int64_t sent  # the commands of every forward so far: the next one's ``send_seq``
    cdef Pending *room(self, Py_ssize_t more) except NULL

cdef enum:
    KIND_MASK_SIZE = 64  # event kinds a ReplyRouter's masks cover (engine.workers.KIND_SLOTS)

cdef class ReplyRouter:
    cdef uint8_t routed[KIND_MASK_SIZE]  # the kinds that concern an account (gateway.server ROUTED)
    cdef uint8_t own_first[KIND_MASK_SIZE]  # the kinds that answer a command (OWN_FIRST)
    cdef object fifo
    cdef bint journaling
    cdef readonly int64_t claimed  # the command whose first event came last: its later events answer nothing
    cdef readonly object keyed  # the accounts with keys: sorted, unique int64
    cdef readonly object acks, ack_sid, reports, report_to  # ack rows and their sessions; report rows, their accounts
    cdef readonly list rejects, lost  # of the last batch (see ``answer``)
    cdef object ack_dtype, report_dtype
    cdef bytearray out  # the message send_rows is writing
    cdef RowPacking ack_packing, report_packing
    cdef list packed  # send_rows' packed acks and reports for one session (bytearrays)
    cdef make_room(self, Py_ssize_t events)
    cdef Py_ssize_t answer(self, const xos_event *e, PendingQueue q, AckRow *a, int64_t *sid) except -1

cdef Py_ssize_t event_records(const unsigned char[::1] events, const xos_event **first) except -1
cdef bint is_keyed(const int64_t *keyed, Py_ssize_t n, int64_t account) noexcept nogil
cdef bint is_listing(const xos_event *e) noexcept nogil
cdef Py_ssize_t find_row(const OrderRow *rows, Py_ssize_t n, int64_t order_id) noexcept nogil
cdef bint echoes(const xos_event *e, const Command *c) noexcept nogil
cdef Py_ssize_t follow(OrderRow *table, Py_ssize_t n, const xos_event *e, int64_t *fill) noexcept nogil
cdef Py_ssize_t report(const xos_event *e, const int64_t *fill, ReportRow *out, int64_t *to) noexcept nogil

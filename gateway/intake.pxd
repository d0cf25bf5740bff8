# Declarations of gateway/intake.pyx: the libzmq message type and functions it calls (bound at
# import from the libzmq pyzmq loaded), and the row layouts it converts.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

cdef extern from *:
    """
    typedef struct { unsigned char bytes[64]; } __attribute__((aligned(8))) xos_zmq_msg_t;  /* zmq_msg_t */
    """
    ctypedef struct xos_zmq_msg_t:
        pass

ctypedef int (*msg_init_f)(xos_zmq_msg_t *) noexcept nogil
ctypedef int (*msg_recv_f)(xos_zmq_msg_t *, void *, int) noexcept nogil
ctypedef int (*msg_close_f)(xos_zmq_msg_t *) noexcept nogil
ctypedef void *(*msg_data_f)(xos_zmq_msg_t *) noexcept nogil
ctypedef size_t (*msg_size_f)(xos_zmq_msg_t *) noexcept nogil
ctypedef int (*msg_more_f)(xos_zmq_msg_t *) noexcept nogil
ctypedef const char *(*msg_gets_f)(xos_zmq_msg_t *, const char *) noexcept nogil
ctypedef int (*errno_f)() noexcept nogil
ctypedef int (*send_f)(void *, const void *, size_t, int) noexcept nogil
ctypedef int (*getsockopt_f)(void *, int, void *, size_t *) noexcept nogil

cdef packed struct CommandRow:  # gateway.messages.COMMAND_ROW_DTYPE (format 2)
    uint8_t kind, side, tif, ord_type, stp, flags
    uint32_t market, venue
    int64_t rid, price, qty, id, expire_at

cdef packed struct Command:  # engine.records.COMMAND_DTYPE
    uint16_t kind
    uint8_t side, tif, ord_type, stp
    uint16_t flags
    uint32_t venue, market
    int64_t ts, account, price, qty, id, aux

cdef packed struct Pending:  # gateway.routing.PENDING_DTYPE
    int64_t sid, rid
    Command cmd
    int64_t send_seq  # its place among all the commands this gateway forwarded, Leg records too (ForwardBatch)

cdef int recv_part(xos_zmq_msg_t *part, void *socket, int flags) except -2
cdef int send_two(void *socket, const char *head, size_t head_size, const char *body, size_t body_size) except -2
cdef Py_ssize_t read_int(const unsigned char *b, Py_ssize_t i, Py_ssize_t size, int64_t *out) noexcept nogil
cdef bint order_rows_body(const unsigned char *b, Py_ssize_t size, int64_t *rid, Py_ssize_t *rows_at,
                          Py_ssize_t *rows_len, int64_t *row_format) noexcept nogil
cdef void append_bytes(bytearray buf, const void *data, Py_ssize_t n) except *
cdef int row_rule(const CommandRow *r) noexcept nogil

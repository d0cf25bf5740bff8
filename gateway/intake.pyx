# cython: language_level=3
"""The gateway's receive loop in C: drain its ROUTER socket through libzmq directly; and the sends
that run once per message (a reply to its routing id, a load generator's orders) the same way.
The matcher drains its input the same way (``drain_records``).

pyzmq costs about 2 us a message here (two ``recv`` calls and a ``RCVMORE`` check that builds an
option enum; a ``send`` about 1 us); the gateway receives one message per order at one order per
message, so the loop that takes messages off the socket runs in C and hands Python a list of them
per call.  It calls
the libzmq that pyzmq itself loaded (its functions found by ``ctypes`` in that library, see
``bind_libzmq``): the socket belongs to that copy of libzmq, so no other may touch it.
"""
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Realloc
from libc.errno cimport EAGAIN, EHOSTUNREACH, EINTR
from libc.stdint cimport INT64_MAX, int64_t, uint64_t, uintptr_t
from libc.string cimport memcmp, memcpy
from packedrows cimport xos_unpack_rows

from records cimport XOS_CF_BY_CLIENT_ID as BY_CLIENT_ID
from records cimport XOS_CF_POST_ONLY as POST_ONLY
from records cimport XOS_CMD_AMEND as AMEND
from records cimport XOS_CMD_CANCEL as CANCEL
from records cimport XOS_CMD_MASS_CANCEL as MASS_CANCEL
from records cimport XOS_CMD_PLACE as PLACE

from engine.rowpack cimport RowPacking
from gateway.rowformats cimport FIXED_ROWS, PACKED_ROWS


cdef msg_init_f msg_init = NULL
cdef msg_recv_f msg_recv = NULL
cdef msg_close_f msg_close = NULL
cdef msg_data_f msg_data = NULL
cdef msg_size_f msg_size = NULL
cdef msg_more_f msg_more = NULL
cdef msg_gets_f msg_gets = NULL
cdef errno_f zmq_errno = NULL
cdef send_f zmq_send = NULL
cdef getsockopt_f zmq_getsockopt = NULL
cdef int DONTWAIT = 1  # ZMQ_DONTWAIT
cdef int SNDMORE = 2  # ZMQ_SNDMORE
cdef int ZMQ_EVENTS = 15
cdef int ZMQ_POLLIN = 1

ROW_FORMATS = (FIXED_ROWS, PACKED_ROWS)  # the C paths' (gateway/rowformats.pxd), held equal to gateway.messages' by a test

FUNCTIONS = ("zmq_msg_init", "zmq_msg_recv", "zmq_msg_close", "zmq_msg_data", "zmq_msg_size", "zmq_msg_more",
             "zmq_msg_gets", "zmq_errno", "zmq_send", "zmq_getsockopt")


def bind_libzmq(dict addresses) -> None:
    """Take the addresses of ``FUNCTIONS`` in the libzmq pyzmq uses."""
    global msg_init, msg_recv, msg_close, msg_data, msg_size, msg_more, msg_gets, zmq_errno, zmq_send, zmq_getsockopt
    missing = [name for name in FUNCTIONS if not addresses.get(name)]
    if missing:
        raise ImportError(f"libzmq functions not found: {missing}")
    msg_init = <msg_init_f><uintptr_t>addresses["zmq_msg_init"]
    msg_recv = <msg_recv_f><uintptr_t>addresses["zmq_msg_recv"]
    msg_close = <msg_close_f><uintptr_t>addresses["zmq_msg_close"]
    msg_data = <msg_data_f><uintptr_t>addresses["zmq_msg_data"]
    msg_size = <msg_size_f><uintptr_t>addresses["zmq_msg_size"]
    msg_more = <msg_more_f><uintptr_t>addresses["zmq_msg_more"]
    msg_gets = <msg_gets_f><uintptr_t>addresses["zmq_msg_gets"]
    zmq_errno = <errno_f><uintptr_t>addresses["zmq_errno"]
    zmq_send = <send_f><uintptr_t>addresses["zmq_send"]
    zmq_getsockopt = <getsockopt_f><uintptr_t>addresses["zmq_getsockopt"]


cdef int recv_part(xos_zmq_msg_t *part, void *socket, int flags) except -2:
    """0 with a part received, -1 when none is waiting (DONTWAIT); raises on other errors."""
    cdef int err
    while True:
        msg_init(part)
        if msg_recv(part, socket, flags) >= 0:
            return 0
        err = zmq_errno()
        msg_close(part)
        if err == EAGAIN:
            return -1
        if err != EINTR:
            import zmq
            raise zmq.ZMQError(err)


cdef int send_part(void *socket, const char *at, size_t size, int flags) except -2:
    """0 with ``size`` bytes at ``at`` sent as one frame (copied), else the errno of EAGAIN or EHOSTUNREACH;
    raises on others."""
    cdef int rc, err
    while True:
        with nogil:  # a blocking send may wait for room
            rc = zmq_send(socket, at, size, flags)
        if rc >= 0:
            return 0
        err = zmq_errno()
        if err == EAGAIN or err == EHOSTUNREACH:
            return err
        if err != EINTR:
            import zmq
            raise zmq.ZMQError(err)
        PyErr_CheckSignals()


def readable(uintptr_t socket) -> bool:
    """Whether a socket (its ``underlying`` handle) has a message to read: ``ZMQ_EVENTS`` & ``POLLIN``, which
    also lets libzmq take its pending commands.  After a send on an edge-triggered fd this is how a request
    that came meanwhile is found (pyzmq's ``getsockopt`` costs ~3 us warm, this call ~1)."""
    cdef int events = 0, err
    cdef size_t size = sizeof(events)
    while zmq_getsockopt(<void *>socket, ZMQ_EVENTS, &events, &size) != 0:
        err = zmq_errno()
        if err != EINTR:
            import zmq
            raise zmq.ZMQError(err)
    return (events & ZMQ_POLLIN) != 0


def drain_records(uintptr_t socket, unsigned char[::1] into, Py_ssize_t at, Py_ssize_t record_size) -> tuple:
    """Receive the messages waiting on a socket (its ``underlying`` handle), each one frame of whole
    ``record_size``-byte records, copying each into ``into`` from byte ``at`` while it fits.  Returns
    ``(at, malformed, spill)``: where the copied bytes end, how many messages were not whole records
    (dropped), and the first message that did not fit (bytes; None when none), after which it stops.
    The matcher's intake: two pyzmq ``recv`` calls (one raising ``Again``) and numpy's copy took
    ~100 us a batch for one order when caches are cold."""
    cdef void *s = <void *>socket
    cdef xos_zmq_msg_t part
    cdef Py_ssize_t size, malformed = 0
    if msg_recv == NULL:
        raise RuntimeError("gateway.intake.bind_libzmq was not called")
    if record_size <= 0 or not 0 <= at <= into.shape[0]:
        raise ValueError(f"drain_records: record_size {record_size}, at {at} of {into.shape[0]} bytes")
    while recv_part(&part, s, DONTWAIT) == 0:
        size = <Py_ssize_t>msg_size(&part)
        if size == 0 or size % record_size:
            malformed += 1
        elif at + size <= into.shape[0]:
            memcpy(&into[at], msg_data(&part), size)
            at += size
        else:
            spill = PyBytes_FromStringAndSize(<const char *>msg_data(&part), size)
            msg_close(&part)
            return at, malformed, spill
        msg_close(&part)
    return at, malformed, None


def send_slices(uintptr_t socket, const unsigned char[::1] blob, const int64_t[::1] offsets, Py_ssize_t first,
                Py_ssize_t n) -> int:
    """Send messages ``first .. first + n - 1`` of ``blob`` as one-frame messages on a socket (its
    ``underlying`` handle), message k being ``blob[offsets[k]:offsets[k + 1]]``, waiting for room as
    pyzmq's ``send`` does; returns ``n`` (raises ``ZMQError`` on a failure).  The load clients' sends:
    messages made into one buffer cost no Python object each."""
    cdef void *s = <void *>socket
    cdef Py_ssize_t k
    cdef int64_t start, end
    cdef int err
    if first < 0 or n < 0 or first + n + 1 > offsets.shape[0]:
        raise ValueError(f"send_slices: messages {first} .. {first + n - 1} of {offsets.shape[0] - 1}")
    for k in range(first, first + n):  # all checked before any is sent
        start, end = offsets[k], offsets[k + 1]
        if not 0 <= start <= end <= blob.shape[0]:
            raise ValueError(f"send_slices: message {k} spans bytes {start} .. {end} of {blob.shape[0]}")
    for k in range(first, first + n):
        start, end = offsets[k], offsets[k + 1]
        err = send_part(s, <const char *>&blob[0] + start if blob.shape[0] else NULL, <size_t>(end - start), 0)
        if err:
            import zmq
            raise zmq.ZMQError(err)
    return n


def send_pair(uintptr_t socket, bytes head not None, bytes body not None) -> int:
    """Send ``head`` and ``body`` as one two-frame message on a socket (its ``underlying`` handle)
    without waiting: a ROUTER's routing id and reply, a PUB's topic and update (pyzmq's
    ``send_multipart`` costs ~3 us).  0 when sent; on a ROUTER, EHOSTUNREACH when the peer is gone
    (ROUTER_MANDATORY) and EAGAIN when its queue is full (a PUB drops at its high-water mark
    instead); raises ``ZMQError`` on other errors."""
    return send_two(<void *>socket, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head), PyBytes_AS_STRING(body),
                    PyBytes_GET_SIZE(body))


cdef int send_two(void *socket, const char *head, size_t head_size, const char *body, size_t body_size) except -2:
    """``send_pair`` from C buffers."""
    cdef int err = send_part(socket, head, head_size, SNDMORE | DONTWAIT)
    if err:
        return err
    # the socket takes the body once it took the head
    err = send_part(socket, body, body_size, DONTWAIT)
    if err:
        import zmq
        raise zmq.ZMQError(err)
    return 0


cdef Py_ssize_t read_int(const unsigned char *b, Py_ssize_t i, Py_ssize_t size, int64_t *out) noexcept nogil:
    """The MessagePack integer at ``b[i]`` into ``out``: the index past it, or -1 when there is none
    there or it does not fit an int64 (what msgspec would refuse for an I64 field)."""
    cdef unsigned char c
    cdef uint64_t u = 0
    cdef Py_ssize_t width, k
    cdef bint signed
    if i >= size:
        return -1
    c = b[i]
    if c <= 0x7f:  # positive fixint
        out[0] = c
        return i + 1
    if c >= 0xe0:  # negative fixint
        out[0] = <int64_t>c - 256
        return i + 1
    if 0xcc <= c <= 0xcf:  # uint 8, 16, 32, 64
        width, signed = 1 << (c - 0xcc), False
    elif 0xd0 <= c <= 0xd3:  # int 8, 16, 32, 64
        width, signed = 1 << (c - 0xd0), True
    else:
        return -1
    if i + 1 + width > size:
        return -1
    for k in range(width):  # big-endian
        u = (u << 8) | b[i + 1 + k]
    if signed:
        if width < 8 and u >> (8 * width - 1):
            u |= ~((<uint64_t>1 << (8 * width)) - 1)  # sign-extend
    elif u > <uint64_t>INT64_MAX:
        return -1
    out[0] = <int64_t>u
    return i + 1 + width


cdef bint order_rows_body(const unsigned char *b, Py_ssize_t size, int64_t *rid, Py_ssize_t *rows_at,
                          Py_ssize_t *rows_len, int64_t *row_format) noexcept nogil:
    """Whether ``b`` is an OrderRows message as msgspec writes it (gateway.messages: an array of
    the tag "rows", rid, rows as bin, format), and where its fields are.  Anything else, even what
    msgspec would also read, is not: the caller hands that to msgspec."""
    cdef Py_ssize_t i, n
    if size < 9 or b[0] != 0x94 or memcmp(b + 1, b"\xa4rows", 5) != 0:
        return False
    i = read_int(b, 6, size, rid)
    if i < 0 or i + 2 > size:
        return False
    if b[i] == 0xc4:  # bin 8, 16, 32: big-endian lengths
        n, i = b[i + 1], i + 2
    elif b[i] == 0xc5 and i + 3 <= size:
        n, i = (<Py_ssize_t>b[i + 1] << 8) | b[i + 2], i + 3
    elif b[i] == 0xc6 and i + 5 <= size:
        n = (<Py_ssize_t>b[i + 1] << 24) | (<Py_ssize_t>b[i + 2] << 16) | (<Py_ssize_t>b[i + 3] << 8) | b[i + 4]
        i += 5
    else:
        return False
    if i + n > size:
        return False
    rows_at[0], rows_len[0] = i, n
    return read_int(b, i + n, size, row_format) == size


cdef extern from "Python.h":
    ctypedef struct PyByteArrayObject:
        Py_ssize_t ob_alloc  # the allocation's size


cdef void append_bytes(bytearray buf, const void *data, Py_ssize_t n) except *:
    cdef Py_ssize_t at = PyByteArray_GET_SIZE(buf)
    if at + n >= (<PyByteArrayObject *>buf).ob_alloc:
        # double the allocation: CPython grows a bytearray by an eighth, and a burst's rows joined message by
        # message were copied ~8 times over (3 % of the gateway at 16 orders a message); the resize to the
        # size below keeps it, being less than half smaller
        PyByteArray_Resize(buf, 2 * (at + n))
    PyByteArray_Resize(buf, at + n)
    memcpy(PyByteArray_AS_STRING(buf) + at, data, n)


cdef unsigned char *read_rows = NULL  # a packed message's rows, read before they join the session's: kept
cdef Py_ssize_t read_rows_room = 0  # its room, in rows (the most a burst asked for)


def drain_burst(uintptr_t socket, dict sessions, Py_ssize_t limit, Py_ssize_t max_bytes, Py_ssize_t max_rows,
                RowPacking packing not None) -> tuple:
    """Take up to ``limit`` messages waiting on a ROUTER socket (its ``underlying`` handle); fewer:
    the socket is empty.  Returns ``(rows, others, taken)``.

    ``rows``: the OrderRows messages of known sessions (``sessions``' routing ids) that need no
    more checks than C makes here (one frame, at most ``max_bytes``, 1 to ``max_rows`` whole rows of
    FIXED_ROWS or rows of PACKED_ROWS that ``packing``, the command rows', reads), by routing id:
    [their (rid, row count) pairs as int64s, their rows joined as FIXED_ROWS, the format of the
    last], in arrival order.  Such a message costs no Python object.  ``others``: every other
    message, in order, as (routing id, body, the ZAP User-Id when the routing id is not a
    session's else None, how many frames followed the body).  Once a session has a message in
    ``others``, its later ones go there too, so that handling ``rows`` first keeps each session's
    order."""
    cdef xos_zmq_msg_t part
    cdef void *s = <void *>socket
    cdef const char *user
    cdef const unsigned char *body
    cdef Py_ssize_t taken = 0, size, extra, rows_at, rows_len
    cdef int more, bad_field
    cdef int64_t head[2]
    cdef int64_t fmt, bad_row
    cdef bytes routing_id, last_id = None
    cdef bint known = False
    cdef list entry = None
    global read_rows, read_rows_room
    cdef unsigned char *grown
    if msg_recv == NULL:
        raise RuntimeError("gateway.intake.bind_libzmq was not called")
    if packing.layout.row_size != sizeof(CommandRow):
        raise ValueError(f"drain_burst: a packing of {packing.layout.row_size}-byte rows, not command rows")
    if max_rows < 1:
        raise ValueError(f"drain_burst: max_rows {max_rows}")
    # no message of at most max_bytes holds more packed rows than this (each takes its map at least)
    cdef Py_ssize_t readable = max(1, min(max_rows, max_bytes // <Py_ssize_t>packing.layout.map_bytes))
    if readable > read_rows_room:
        grown = <unsigned char *>PyMem_Realloc(read_rows, readable * sizeof(CommandRow))
        if grown == NULL:
            raise MemoryError()
        read_rows, read_rows_room = grown, readable
    rows, others, slowed = {}, [], set()
    while taken < limit:
        if recv_part(&part, s, DONTWAIT) < 0:
            break
        taken += 1
        size = <Py_ssize_t>msg_size(&part)
        if last_id is not None and PyBytes_GET_SIZE(last_id) == size and \
                memcmp(PyBytes_AS_STRING(last_id), msg_data(&part), size) == 0:
            routing_id = last_id  # most bursts are runs from one connection
        else:
            routing_id = last_id = PyBytes_FromStringAndSize(<char *>msg_data(&part), size)
            known, entry = routing_id in sessions, None
        more = msg_more(&part)
        msg_close(&part)
        if not more:
            continue  # a ROUTER always delivers the routing id with a body; nothing to answer
        recv_part(&part, s, 0)  # the rest of a multipart message is there already
        more = msg_more(&part)
        body = <const unsigned char *>msg_data(&part)
        size = <Py_ssize_t>msg_size(&part)
        if (known and not more and size <= max_bytes and routing_id not in slowed
                and order_rows_body(body, size, &head[0], &rows_at, &rows_len, &fmt) and 0 < rows_len):
            head[1] = 0
            if fmt == FIXED_ROWS and rows_len <= max_rows * <Py_ssize_t>sizeof(CommandRow) \
                    and rows_len % sizeof(CommandRow) == 0:
                head[1] = rows_len // sizeof(CommandRow)
            elif fmt == PACKED_ROWS:
                # read with room for max_rows, not counted first (~40 % of reading them, bench.rowpack): a message
                # of more rows, or one that does not read, goes the slow way, where its Error names what is
                # wrong (BATCH_TOO_LARGE for the count)
                head[1] = max(0, xos_unpack_rows(&packing.layout, body + rows_at, rows_len, read_rows, readable,
                                                 &bad_row, &bad_field))
            if head[1]:
                if entry is None:
                    entry = rows.get(routing_id)
                    if entry is None:
                        entry = rows[routing_id] = [bytearray(), bytearray(), fmt]
                entry[2] = fmt
                append_bytes(entry[0], head, sizeof(head))
                append_bytes(entry[1], body + rows_at if fmt == FIXED_ROWS else read_rows,
                             head[1] * sizeof(CommandRow))
                msg_close(&part)
                continue
        data = PyBytes_FromStringAndSize(<const char *>body, size)
        user_id = None
        if not known:
            user = msg_gets(&part, b"User-Id")
            if user != NULL:
                user_id = user.decode("ascii")
        else:
            slowed.add(routing_id)
        msg_close(&part)
        extra = 0
        while more:
            recv_part(&part, s, 0)
            more = msg_more(&part)
            msg_close(&part)
            extra += 1
        others.append((routing_id, data, user_id, extra))
    return rows, others, taken


@cython.wraparound(True)  # setup.py turns it off for every extension; the [-1] here need it
def libzmq_addresses() -> dict:
    """``FUNCTIONS``' addresses in the libzmq that pyzmq loaded (its own shared library, or pyzmq's
    extension itself when libzmq is linked into it)."""
    import ctypes

    from zmq.backend.cython import _zmq

    with open("/proc/self/maps") as maps:
        paths = [line.split()[-1] for line in maps if "libzmq" in line.rsplit("/", 1)[-1]]
    for path in dict.fromkeys(paths + [_zmq.__file__]):
        lib = ctypes.CDLL(path)
        try:
            return {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in FUNCTIONS}
        except AttributeError:
            continue
    raise ImportError(f"no libzmq with {FUNCTIONS} among {paths + [_zmq.__file__]}")


bind_libzmq(libzmq_addresses())


# ---------------------------------------------------------------------------------- OrderRows

# What a row breaks (``row_rules``' index); 0: nothing.
BAD_KIND, BAD_SIDE, BAD_TIF, BAD_ORD_TYPE, BAD_STP, BAD_FLAGS, NO_TARGET, VENUE_NOT_PLACE = range(1, 9)


cdef int row_rule(const CommandRow *r) noexcept nogil:
    """The first rule ``r`` breaks (numbers above), or 0."""
    if r.kind < PLACE or r.kind > MASS_CANCEL:
        return 1
    if r.side > 1:
        return 2
    if r.tif > 2:
        return 3
    if r.ord_type > 1:
        return 4
    if r.stp > 3:
        return 5
    if r.flags & ~(POST_ONLY if r.kind == PLACE else BY_CLIENT_ID if r.kind == CANCEL or r.kind == AMEND else 0):
        return 6
    if (r.kind == CANCEL or r.kind == AMEND) and r.id == 0:
        return 7
    if r.kind != PLACE and r.venue != 0:
        return 8
    return 0

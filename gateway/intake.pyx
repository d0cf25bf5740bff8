# cython: language_level=3
"""The gateway's receive loop in C: drain its ROUTER socket through libzmq directly.

pyzmq costs about 2 us a message here (two ``recv`` calls and a ``RCVMORE`` check that builds an
option enum); the gateway receives one message per order at one order per message, so the loop
that takes messages off the socket runs in C and hands Python a list of them per call.  It calls
the libzmq that pyzmq itself loaded (its functions found by ``ctypes`` in that library, see
``bind_libzmq``): the socket belongs to that copy of libzmq, so no other may touch it.
"""
cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR
from libc.stdint cimport uintptr_t

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

cdef msg_init_f msg_init = NULL
cdef msg_recv_f msg_recv = NULL
cdef msg_close_f msg_close = NULL
cdef msg_data_f msg_data = NULL
cdef msg_size_f msg_size = NULL
cdef msg_more_f msg_more = NULL
cdef msg_gets_f msg_gets = NULL
cdef errno_f zmq_errno = NULL
cdef int DONTWAIT = 1  # ZMQ_DONTWAIT

FUNCTIONS = ("zmq_msg_init", "zmq_msg_recv", "zmq_msg_close", "zmq_msg_data", "zmq_msg_size", "zmq_msg_more",
             "zmq_msg_gets", "zmq_errno")


def bind_libzmq(dict addresses) -> None:
    """Take the addresses of ``FUNCTIONS`` in the libzmq pyzmq uses."""
    global msg_init, msg_recv, msg_close, msg_data, msg_size, msg_more, msg_gets, zmq_errno
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


def drain(uintptr_t socket, dict known, Py_ssize_t limit) -> list:
    """Up to ``limit`` messages waiting on a ROUTER socket (its ``underlying`` handle), each as
    (routing id, body, the ZAP User-Id when the routing id is not in ``known`` else None, how many
    frames followed the body).  Fewer than ``limit``: the socket is empty."""
    cdef xos_zmq_msg_t part
    cdef void *s = <void *>socket
    cdef const char *user
    cdef int more
    cdef Py_ssize_t extra
    out = []
    if msg_recv == NULL:
        raise RuntimeError("gateway.intake.bind_libzmq was not called")
    while len(out) < limit:
        if recv_part(&part, s, DONTWAIT) < 0:
            break
        routing_id = PyBytes_FromStringAndSize(<char *>msg_data(&part), <Py_ssize_t>msg_size(&part))
        more = msg_more(&part)
        msg_close(&part)
        if not more:
            continue  # a ROUTER always delivers the routing id with a body; nothing to answer
        recv_part(&part, s, 0)  # the rest of a multipart message is there already
        body = PyBytes_FromStringAndSize(<char *>msg_data(&part), <Py_ssize_t>msg_size(&part))
        user_id = None
        if routing_id not in known:
            user = msg_gets(&part, b"User-Id")
            if user != NULL:
                user_id = user.decode("ascii")
        more = msg_more(&part)
        msg_close(&part)
        extra = 0
        while more:
            recv_part(&part, s, 0)
            more = msg_more(&part)
            msg_close(&part)
            extra += 1
        out.append((routing_id, body, user_id, extra))
    return out


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

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

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

cdef packed struct Pending:  # gateway.server.PENDING_DTYPE
    int64_t sid, rid
    Command cmd

# What a row breaks (``row_rules``' index); 0: nothing.
BAD_KIND, BAD_SIDE, BAD_TIF, BAD_ORD_TYPE, BAD_STP, BAD_FLAGS, NO_TARGET, VENUE_NOT_PLACE = range(1, 9)
DEF PLACE = 1
DEF CANCEL = 2
DEF AMEND = 3
DEF MASS_CANCEL = 4
DEF POST_ONLY = 1
DEF BY_CLIENT_ID = 2
DEF ALL_MARKETS = 4


cdef inline int row_rule(const CommandRow *r) noexcept nogil:
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


def rows_to_pending(const unsigned char[::1] data, const int64_t[::1] sids, const int64_t[::1] accounts,
                    const int64_t[::1] counts, Pending[::1] out, int64_t[:, ::1] refused) -> int:
    """Check the rows of a burst's OrderRows messages (``data``: their rows joined; message i has
    ``counts[i]`` rows, from session ``sids[i]`` of ``accounts[i]``) and write the rows of each
    message whose rows all keep the rules into ``out`` as pending commands, in order.  A message
    with a bad row is left out whole: ``refused[i]`` = (its first bad row, the rule it breaks),
    else (-1, 0).  Returns how many pending commands were written."""
    cdef const CommandRow *rows = <const CommandRow *>&data[0] if data.shape[0] else NULL
    cdef Py_ssize_t i, j, first = 0, n = 0, rule, total = 0
    cdef const CommandRow *r
    cdef Pending *p
    for i in range(counts.shape[0]):
        total += counts[i]
    if (data.shape[0] != <Py_ssize_t>sizeof(CommandRow) * total or out.shape[0] < total
            or sids.shape[0] != counts.shape[0] or accounts.shape[0] != counts.shape[0]
            or refused.shape[0] != counts.shape[0]):
        raise ValueError("rows_to_pending: rows, counts, sessions, accounts, out or refused disagree")
    with nogil:
        for i in range(sids.shape[0]):
            refused[i, 0], refused[i, 1] = -1, 0
            for j in range(counts[i]):
                rule = row_rule(&rows[first + j])
                if rule:
                    refused[i, 0], refused[i, 1] = j, rule
                    break
            if refused[i, 0] < 0:
                for j in range(counts[i]):
                    r = &rows[first + j]
                    p = &out[n]
                    p.sid, p.rid = sids[i], r.rid
                    p.cmd.kind, p.cmd.side, p.cmd.tif, p.cmd.ord_type, p.cmd.stp = r.kind, r.side, r.tif, r.ord_type, r.stp
                    p.cmd.flags = ALL_MARKETS if r.kind == MASS_CANCEL and r.market == 0 else r.flags
                    p.cmd.venue, p.cmd.market, p.cmd.ts, p.cmd.account = r.venue, r.market, 0, accounts[i]
                    p.cmd.price, p.cmd.qty, p.cmd.id, p.cmd.aux = r.price, r.qty, r.id, r.expire_at
                    n += 1
            first += counts[i]
    return n

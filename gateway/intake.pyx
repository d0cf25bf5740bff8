# cython: language_level=3
"""The gateway's receive loop in C: drain its ROUTER socket through libzmq directly.

pyzmq costs about 2 us a message here (two ``recv`` calls and a ``RCVMORE`` check that builds an
option enum); the gateway receives one message per order at one order per message, so the loop
that takes messages off the socket runs in C and hands Python a list of them per call.  It calls
the libzmq that pyzmq itself loaded (its functions found by ``ctypes`` in that library, see
``bind_libzmq``): the socket belongs to that copy of libzmq, so no other may touch it.
"""
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

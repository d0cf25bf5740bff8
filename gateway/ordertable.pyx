# cython: language_level=3
"""The gateway's order table, followed in C: a batch of the keyed accounts' events applied to the
table's rows one event at a time, in event order (``OrderTable.apply`` in gateway/server.py holds
the table and its queries).  In numpy the same needed ``rounds`` of non-overlapping events and
some sixty calls a batch; the loop is what the events mean."""
from libc.stdint cimport int64_t
from libc.string cimport memmove, memset

from records cimport xos_event, XOS_EV_ACCEPTED, XOS_EV_FILL, XOS_EV_CANCELLED, XOS_EV_AMENDED, XOS_EF_MAKER_DONE

# OrderRow.status (gateway.server OPEN, FILLED, CANCELLED_STATUS)
DEF OPEN = 0
DEF FILLED = 1
DEF CANCELLED = 2


cdef Py_ssize_t find_row(const OrderRow *rows, Py_ssize_t n, int64_t order_id) noexcept nogil:
    """The row of ``order_id`` in ``rows[:n]`` (sorted by order id), or -1."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if rows[mid].order_id < order_id:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < n and rows[lo].order_id == order_id else -1


def follow(OrderRow[::1] rows, Py_ssize_t n, const unsigned char[::1] events, int64_t[:, ::1] fills) -> int:
    """Apply ``events`` (EVENT_DTYPE records as bytes, in event order) to the table ``rows[:n]``
    (sorted by order id); returns the table's new length.  An Accepted of an order adds its row
    (``rows`` must have room for every Accepted); a Fill, Cancelled or Amended updates the rows it
    names that the table has.  ``fills[k]``, for the k-th Fill: the taker's client id, the maker's
    client id (0: an order the table does not have) and the maker's open size after it (-1: a maker
    the table does not have)."""
    cdef Py_ssize_t count, i, k = 0, t, mk, at
    cdef const xos_event *ev
    cdef const xos_event *e
    cdef OrderRow *r
    cdef OrderRow *table = &rows[0] if rows.shape[0] else NULL
    cdef int64_t left
    if events.shape[0] % sizeof(xos_event):
        raise ValueError(f"events: {events.shape[0]} bytes are not whole {sizeof(xos_event)}-byte records")
    count = events.shape[0] // sizeof(xos_event)
    ev = <const xos_event *>&events[0] if count else NULL
    with nogil:
        for i in range(count):
            e = &ev[i]
            if e.kind == XOS_EV_ACCEPTED:
                if e.order_id <= 0 or e.flags != 0:
                    continue  # a mass cancel's or a listing's acceptance: no order
                if n >= rows.shape[0]:
                    with gil:
                        raise ValueError("follow: the table has no room for another order")
                at = n
                if n and table[n - 1].order_id >= e.order_id:  # not expected: the matcher numbers in order
                    at = 0
                    while table[at].order_id < e.order_id:
                        at += 1
                    memmove(&table[at + 1], &table[at], <size_t>(n - at) * sizeof(OrderRow))
                r = &table[at]
                memset(r, 0, sizeof(OrderRow))
                r.order_id, r.account, r.client_id, r.price = e.order_id, e.account, e.client_id, e.price
                r.qty, r.remaining, r.ts = e.qty, e.remaining, e.ts
                r.market, r.venue, r.side, r.status = e.market, e.venue, e.side, OPEN
                n += 1
            elif e.kind == XOS_EV_FILL:
                if k >= fills.shape[0]:
                    with gil:
                        raise ValueError(f"follow: more fills than the {fills.shape[0]} rows given")
                t = find_row(table, n, e.order_id)
                mk = find_row(table, n, e.maker_order)
                fills[k, 0] = table[t].client_id if t >= 0 else 0
                fills[k, 1] = table[mk].client_id if mk >= 0 else 0
                left = 0 if e.flags & XOS_EF_MAKER_DONE else (table[mk].remaining - e.qty if mk >= 0 else -1)
                fills[k, 2] = left
                k += 1
                if mk >= 0:
                    r = &table[mk]
                    r.filled += e.qty
                    r.remaining = left
                    if left == 0:
                        r.status, r.closed_seq = FILLED, e.seq
                if t >= 0:
                    r = &table[t]
                    r.filled += e.qty
                    r.remaining = e.remaining
                    if e.remaining == 0:
                        r.status, r.closed_seq = FILLED, e.seq
            elif e.kind == XOS_EV_CANCELLED:
                t = find_row(table, n, e.order_id)
                if t >= 0:
                    r = &table[t]
                    r.remaining = e.remaining
                    if e.remaining != 0:
                        r.qty -= e.qty  # a decrement (STP) shrinks the order; a full cancel keeps its size
                    else:
                        r.status, r.closed_seq = CANCELLED, e.seq
            elif e.kind == XOS_EV_AMENDED:
                t = find_row(table, n, e.order_id)
                if t >= 0:
                    r = &table[t]
                    r.remaining = e.remaining
                    r.price = e.price
                    r.qty = r.filled + e.remaining
    return n

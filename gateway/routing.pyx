# cython: language_level=3
"""The gateway's reply side in C, a batch of ring events at a time, one event at a time in event
order: which events concern the accounts with keys (``select_keyed``), which of them answer a
command (``own_firsts``), the order table following them (``follow``; ``OrderTable`` in
gateway/server.py holds the table and answers queries) and the execution reports made of them
(``report_rows``).  In numpy these took over a hundred calls a batch, whatever its size."""
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memmove, memset

from records cimport (XOS_CANCEL_USER, XOS_CMD_ISOLATED_MARGIN, XOS_EF_MAKER_DONE, XOS_EF_MARKET_LISTING,
                     XOS_EV_ACCEPTED, XOS_EV_AMENDED, XOS_EV_CANCELLED, XOS_EV_FILL, XOS_EV_LIQUIDATION,
                     XOS_EV_POSITION)

# ReportRow.kind (gateway.messages.REPORT_KINDS) and liquidity (LIQUIDITY)
DEF REPORT_FILL = 1
DEF REPORT_CANCEL = 2
DEF REPORT_AMEND = 3
DEF MAKER = 1
DEF TAKER = 2

# OrderRow.status (gateway.server STATUS_NAMES' indices)
DEF OPEN = 0
DEF FILLED = 1
DEF CANCELLED = 2


cdef Py_ssize_t event_records(const unsigned char[::1] events, const xos_event **first) except -1:
    """How many EVENT_DTYPE records ``events`` (their bytes) holds; ``first``: where they start."""
    if events.shape[0] % sizeof(xos_event):
        raise ValueError(f"events: {events.shape[0]} bytes are not whole {sizeof(xos_event)}-byte records")
    first[0] = <const xos_event *>&events[0] if events.shape[0] else NULL
    return events.shape[0] // sizeof(xos_event)


cdef bint is_keyed(const int64_t[::1] keyed, int64_t account) noexcept nogil:
    """``account`` in ``keyed`` (sorted, unique), by binary search."""
    cdef Py_ssize_t lo = 0, hi = keyed.shape[0], mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if keyed[mid] < account:
            lo = mid + 1
        else:
            hi = mid
    return lo < keyed.shape[0] and keyed[lo] == account


cdef bint is_listing(const xos_event *e) noexcept nogil:
    """A market's listing echo (ListMarket's: its sender in ``maker_account``)."""
    return e.kind == XOS_EV_ACCEPTED and e.flags == XOS_EF_MARKET_LISTING


def select_keyed(const unsigned char[::1] events, const uint8_t[::1] kinds, const int64_t[::1] keyed,
                 uint8_t[::1] out) -> int:
    """``out[i]``: whether event i (of ``events``, EVENT_DTYPE records as bytes), of a kind ``kinds``
    marks, concerns an account in ``keyed`` (sorted, unique): its account; a fill's maker account;
    a listing's sender (``maker_account``); a Liquidation's sender (``client_id``; its account is
    the target).  Returns how many do."""
    cdef const xos_event *ev
    cdef const xos_event *e
    cdef Py_ssize_t count = event_records(events, &ev), i, n = 0
    cdef bint mine
    if out.shape[0] < count:
        raise ValueError(f"select_keyed: {count} events, room for {out.shape[0]}")
    with nogil:
        for i in range(count):
            e = &ev[i]
            mine = e.kind < kinds.shape[0] and kinds[e.kind] and (
                is_keyed(keyed, e.account)
                or ((e.kind == XOS_EV_FILL or is_listing(e)) and is_keyed(keyed, e.maker_account))
                or (e.kind == XOS_EV_LIQUIDATION and is_keyed(keyed, e.client_id)))
            out[i] = mine
            n += mine
    return n


def own_firsts(const unsigned char[::1] events, const uint8_t[::1] kinds, int64_t claimed, int64_t[::1] at,
               int64_t[::1] sender) -> int:
    """The event that answers each command: the first of its command (by ``cmd_seq``; ``claimed``:
    the command whose first event came in an earlier batch) among those of a kind ``kinds`` marks,
    a Cancelled only when the user's, a Position only when an IsolatedMargin's.  ``at[k]``: its
    index; ``sender[k]``: whose command it answers (its account; a Liquidation's ``client_id``; a
    listing's ``maker_account``).  Returns how many."""
    cdef const xos_event *ev
    cdef const xos_event *e
    cdef Py_ssize_t count = event_records(events, &ev), i, n = 0
    if at.shape[0] < count or sender.shape[0] < count:
        raise ValueError(f"own_firsts: {count} events, room for {min(at.shape[0], sender.shape[0])}")
    with nogil:
        for i in range(count):
            e = &ev[i]
            if e.kind >= kinds.shape[0] or not kinds[e.kind] or \
                    (e.kind == XOS_EV_CANCELLED and e.reason != XOS_CANCEL_USER) or \
                    (e.kind == XOS_EV_POSITION and e.flags != XOS_CMD_ISOLATED_MARGIN):
                continue
            if e.cmd_seq == claimed:
                continue  # a later event of a command already answered
            claimed = e.cmd_seq
            at[n] = i
            sender[n] = e.client_id if e.kind == XOS_EV_LIQUIDATION else \
                e.maker_account if is_listing(e) else e.account
            n += 1
    return n


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
    count = event_records(events, &ev)
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


def report_rows(const unsigned char[::1] events, const int64_t[:, ::1] fills, ReportRow[::1] rows,
                int64_t[::1] to) -> int:
    """The execution reports of ``events`` (EVENT_DTYPE records as bytes, in event order) into
    ``rows`` (zeroed), in event order: a Fill makes the taker's row then the maker's (client ids and
    the maker's open size from ``fills``, as ``follow`` returned them), a Cancelled or an Amended
    one row.  ``to[i]``: the account row i goes to.  Returns how many rows."""
    cdef Py_ssize_t count, i, n = 0, f = 0, need
    cdef const xos_event *ev
    cdef const xos_event *e
    cdef ReportRow *r
    count = event_records(events, &ev)
    with nogil:
        for i in range(count):
            e = &ev[i]
            if e.kind != XOS_EV_FILL and e.kind != XOS_EV_CANCELLED and e.kind != XOS_EV_AMENDED:
                continue
            need = n + (2 if e.kind == XOS_EV_FILL else 1)
            if need > rows.shape[0] or need > to.shape[0] or (e.kind == XOS_EV_FILL and f >= fills.shape[0]):
                with gil:
                    raise ValueError("report_rows: more reports than the rows (or fills) given")
            r = &rows[n]
            r.side, r.market, r.venue, r.order_id, r.client_id = e.side, e.market, e.venue, e.order_id, e.client_id
            r.price, r.qty, r.remaining, r.seq, r.cmd_seq, r.ts = e.price, e.qty, e.remaining, e.seq, e.cmd_seq, e.ts
            to[n] = e.account
            if e.kind == XOS_EV_FILL:
                r.kind, r.liquidity, r.fee, r.client_id = REPORT_FILL, TAKER, e.taker_fee, fills[f, 0]
                rows[n + 1] = r[0]
                r = &rows[n + 1]
                r.order_id, r.venue = e.maker_order, e.client_id  # a fill's client_id is the maker's venue
                r.client_id, r.side, r.remaining = fills[f, 1], 1 - e.side, fills[f, 2]
                r.fee, r.liquidity = e.maker_fee, MAKER
                to[n + 1] = e.maker_account
                n += 2
                f += 1
            else:
                r.kind = REPORT_CANCEL if e.kind == XOS_EV_CANCELLED else REPORT_AMEND
                if e.kind == XOS_EV_CANCELLED:
                    r.reason, r.code = e.reason, e.code
                n += 1
    return n

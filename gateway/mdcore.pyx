# cython: language_level=3
"""The market-data publisher's pass over the ring's order events in C, one event at a time: the
L3 ops of each command (``l3_ops``), the resting-order table they move, and each op's change of
its levels for the check against the matcher's BookLevel aggregates (``level_mismatches``).  In
numpy it took some 70 calls a pass with sorts by order id; ``gateway.marketdata.MarketDataCore`` keeps the rest (levels,
trades, messages) and the order table (``engine.workercore.IntTable``) is pickled with it."""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free

from engine.workercore cimport IntTable
from records cimport (XOS_EF_PRIORITY_LOST, XOS_EV_ACCEPTED, XOS_EV_AMENDED, XOS_EV_CANCELLED, XOS_EV_FILL,
                     xos_event)

from .mdmessages import OP_ADD as _OP_ADD, OP_AMEND as _OP_AMEND, OP_CANCEL as _OP_CANCEL, OP_EXECUTE as _OP_EXECUTE

ORDER_COLUMNS = ("market", "side", "price", "remaining", "rest_seq")  # the table's columns (mdcore.pxd)
assert len(ORDER_COLUMNS) == ORDER_COLS

cdef uint8_t OP_ADD = _OP_ADD, OP_AMEND = _OP_AMEND, OP_CANCEL = _OP_CANCEL, OP_EXECUTE = _OP_EXECUTE


cdef inline bint about_order(const xos_event *e) noexcept nogil:
    """An event about the order in its ``order_id`` (a fill's: the taker)."""
    return (e.kind == XOS_EV_ACCEPTED and e.order_id > 0) or e.kind == XOS_EV_AMENDED or \
        e.kind == XOS_EV_FILL or e.kind == XOS_EV_CANCELLED


def l3_ops(const unsigned char[::1] events, IntTable orders, OpRow[::1] ops, int64_t[::1] op_key,
           int64_t[:, ::1] deltas) -> tuple:
    """Apply whole matcher batches of order events (EVENT_DTYPE records as bytes, in seq order; other
    kinds are skipped) to ``orders`` and write their L3 ops, in event order, into ``ops`` with each
    op's ``(batch << 32) | market`` in ``op_key`` (batch: 0, 1, ... as the events' ``ts`` changes).

    Per command: an order entering the book (Accepted, or Amended with priority lost) rests with
    what its command's last event about it left (nothing: no add); a cancel of its remainder in
    the same command never rested (no op); a Fill executes the maker; a Cancelled or an Amended of
    a resting order states its remaining.  An op on an order the table does not hold is counted
    and left out.  ``deltas`` rows (market, side, price, qty change, count change): what each op
    did to its levels (two rows when an amend moved the order).  Returns (ops, delta rows, ops left
    out)."""
    cdef Py_ssize_t count = events.shape[0] // sizeof(xos_event), i, adds = 0
    cdef const xos_event *ev = <const xos_event *>&events[0] if count else NULL
    cdef int64_t *incoming  # a command's orders entering the book (usually one; a multi-leg order's legs)
    cdef int64_t *final  # what its last event about each left
    if events.shape[0] % sizeof(xos_event):
        raise ValueError(f"l3_ops: {events.shape[0]} bytes are not whole {sizeof(xos_event)}-byte events")
    if orders.ncols != ORDER_COLS:
        raise ValueError(f"l3_ops: the order table needs {ORDER_COLS} columns, not {orders.ncols}")
    if ops.shape[0] < count or op_key.shape[0] < count or deltas.shape[0] < 2 * count or deltas.shape[1] != 5:
        raise ValueError(f"l3_ops: {count} events need room for {count} ops and {2 * count} delta rows of 5")
    for i in range(count):
        if (ev[i].kind == XOS_EV_ACCEPTED and ev[i].order_id > 0) or ev[i].kind == XOS_EV_AMENDED:
            adds += 1  # the most orders that can enter the book (an Amended re-enters with priority lost)
    orders.reserve(adds)
    incoming = <int64_t *>PyMem_Malloc(2 * max(adds, 1) * sizeof(int64_t))
    if incoming is NULL:
        raise MemoryError()
    final = incoming + max(adds, 1)
    try:
        n, d, unknown = pass_commands(ev, count, orders, ops, op_key, deltas, incoming, final)
    finally:
        PyMem_Free(incoming)
    return n, d, unknown


cdef tuple pass_commands(const xos_event *ev, Py_ssize_t count, IntTable orders, OpRow[::1] ops,
                         int64_t[::1] op_key, int64_t[:, ::1] deltas, int64_t *incoming, int64_t *final):
    """``l3_ops``' loop; ``incoming`` and ``final`` have room for every Accepted and Amended of the events."""
    cdef Py_ssize_t i = 0, j, k, q, n = 0, d = 0, unknown = 0, n_in
    cdef const xos_event *e
    cdef int64_t batch = -1, ts = 0, order_id, fin, before, after, p_before, p_after, slot, value
    cdef int64_t *row
    cdef uint8_t op, side, reason
    cdef bint lost, folded
    with nogil:
        while i < count:
            j = i + 1  # the command's events: i .. j - 1
            while j < count and ev[j].cmd_seq == ev[i].cmd_seq:
                j += 1
            if batch < 0 or ev[i].ts != ts:
                batch += 1
                ts = ev[i].ts
            n_in = 0  # its incoming orders, and what its last event about each left
            for k in range(i, j):
                e = &ev[k]
                if (e.kind == XOS_EV_ACCEPTED and e.order_id > 0) or \
                        (e.kind == XOS_EV_AMENDED and e.flags & XOS_EF_PRIORITY_LOST):
                    for q in range(n_in):
                        if incoming[q] == e.order_id:
                            break
                    else:
                        incoming[n_in] = e.order_id
                        n_in += 1
            for q in range(n_in):
                for k in range(j - 1, i - 1, -1):
                    if about_order(&ev[k]) and ev[k].order_id == incoming[q]:
                        final[q] = ev[k].remaining
                        break
            for k in range(i, j):
                e = &ev[k]
                fin = 0
                folded = False
                for q in range(n_in):
                    if incoming[q] == e.order_id:
                        fin, folded = final[q], True
                        break
                reason = 0
                if e.kind == XOS_EV_ACCEPTED:
                    if e.order_id <= 0 or fin <= 0:
                        continue  # a listing or a mass cancel's acceptance; an order that never rested
                    op, order_id, side, value = OP_ADD, e.order_id, e.side, fin
                elif e.kind == XOS_EV_AMENDED:
                    lost = (e.flags & XOS_EF_PRIORITY_LOST) != 0
                    op, order_id, side, reason = OP_AMEND, e.order_id, e.side, lost
                    value = fin if lost else e.remaining
                elif e.kind == XOS_EV_FILL:
                    op, order_id, side, value = OP_EXECUTE, e.maker_order, 1 - e.side, e.qty
                elif e.kind == XOS_EV_CANCELLED:
                    if folded:
                        continue  # the incoming order's remainder never rested
                    op, order_id, side, reason, value = OP_CANCEL, e.order_id, e.side, e.reason, e.remaining
                else:
                    continue
                slot = orders.find(order_id)
                if op == OP_ADD:
                    before = p_before = 0
                    slot = orders.insert(order_id)
                    row = &orders.vals[slot * ORDER_COLS]
                    row[O_MARKET], row[O_SIDE], row[O_REST_SEQ] = e.market, side, e.seq
                elif slot < 0:
                    unknown += 1
                    continue
                else:
                    row = &orders.vals[slot * ORDER_COLS]
                    before, p_before = row[O_REMAINING], row[O_PRICE]
                after = before - value if op == OP_EXECUTE else value
                p_after = e.price
                row[O_REMAINING], row[O_PRICE] = after, p_after
                if op == OP_AMEND and reason:
                    row[O_REST_SEQ] = e.seq  # back of its level
                if after <= 0:
                    orders.erase(slot)
                ops[n].op, ops[n].side, ops[n].reason = op, side, reason
                ops[n].order_id, ops[n].price = order_id, e.price
                ops[n].qty = value if op == OP_ADD or (op == OP_AMEND and reason) else e.qty
                ops[n].remaining = after
                ops[n].trade_id = e.seq if op == OP_EXECUTE else 0
                op_key[n] = (batch << 32) | e.market
                n += 1
                # its levels: minus what it had where it was, plus what it has where it is
                deltas[d, 0], deltas[d, 1], deltas[d, 2] = e.market, side, p_after
                if p_before == p_after:
                    deltas[d, 3] = after - before
                    deltas[d, 4] = (after > 0) - (before > 0)
                else:
                    deltas[d, 3], deltas[d, 4] = after, after > 0
                    if before > 0:
                        d += 1
                        deltas[d, 0], deltas[d, 1], deltas[d, 2] = e.market, side, p_before
                        deltas[d, 3], deltas[d, 4] = -before, -1
                d += 1
            i = j
    return n, d, unknown


cdef inline void add_change(LevelSum *table, uint64_t mask, int64_t level_side, int64_t price, int64_t qty,
                            int64_t count) noexcept nogil:
    cdef uint64_t h = <uint64_t>level_side * <uint64_t>0x9E3779B97F4A7C15 ^ <uint64_t>price * <uint64_t>0xC2B2AE3D27D4EB4F
    cdef LevelSum *s
    h ^= h >> 29
    while True:
        s = &table[h & mask]
        if not s.used:
            s.used, s.level_side, s.price, s.qty, s.count = True, level_side, price, qty, count
            return
        if s.level_side == level_side and s.price == price:
            s.qty += qty
            s.count += count
            return
        h += 1


def level_mismatches(const int64_t[:, ::1] l3, const int64_t[::1] market, const int64_t[::1] side,
                     const int64_t[::1] price, const int64_t[::1] qty, const int64_t[::1] count) -> int:
    """How many levels the L3 ops changed otherwise than their BookLevel events did: ``l3`` rows are
    ``l3_ops``' deltas (market, side, price, qty change, count change), and ``market`` .. ``count``
    the levels' changes by their BookLevel aggregates, a row per level.  0 when the two agree.  Sums in
    a hash table, one pass each (a sort by level cost more than the rest of a market-data pass)."""
    cdef Py_ssize_t n3 = l3.shape[0], n2 = market.shape[0], i, cap = 16, mismatches = 0
    cdef LevelSum *table
    if n3 and l3.shape[1] != 5:
        raise ValueError(f"level_mismatches: l3 rows have 5 columns, not {l3.shape[1]}")
    if not (side.shape[0] == price.shape[0] == qty.shape[0] == count.shape[0] == n2):
        raise ValueError("level_mismatches: market, side, price, qty and count must have one length")
    while cap < 2 * (n3 + n2):
        cap <<= 1
    table = <LevelSum *>calloc(cap, sizeof(LevelSum))
    if table is NULL:
        raise MemoryError()
    with nogil:
        for i in range(n3):
            add_change(table, cap - 1, l3[i, 0] * 2 + l3[i, 1], l3[i, 2], l3[i, 3], l3[i, 4])
        for i in range(n2):
            add_change(table, cap - 1, market[i] * 2 + side[i], price[i], -qty[i], -count[i])
        for i in range(cap):
            if table[i].used and (table[i].qty != 0 or table[i].count != 0):
                mismatches += 1
    free(table)
    return mismatches

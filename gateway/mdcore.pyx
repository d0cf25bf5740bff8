# cython: language_level=3
"""The market-data publisher's pass over the ring's events in C (``md_pass``): the L3 ops of each
command and the resting-order table they move, the L2 increments (the last BookLevel of each level
in each matcher batch), the trades and the halts, sorted into one group per (matcher batch,
market); and the check of each level's L3 change against its BookLevel change
(``level_mismatches``).  In numpy this took some 120 calls a pass, about 120 us whatever the
batch; ``gateway.marketdata.MarketDataCore`` keeps the books and the messages, and the order table
(``engine.workercore.IntTable``) is pickled with it."""
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint16_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from engine.arrays cimport RecordLayout, record_layout
from hashmap cimport xos_hmap, xos_hmap_free, xos_hmap_get, xos_hmap_init, xos_hmap_put
from engine.workercore cimport IntTable
from gateway.mdbook cimport LevelRow
from records cimport (XOS_EF_PRIORITY_LOST, XOS_EV_ACCEPTED, XOS_EV_AMENDED, XOS_EV_BOOK_LEVEL, XOS_EV_CANCELLED,
                     XOS_EV_FILL, XOS_EV_MARKET_STATUS, xos_event)

from .mdmessages import OP_ADD as _OP_ADD, OP_AMEND as _OP_AMEND, OP_CANCEL as _OP_CANCEL, OP_EXECUTE as _OP_EXECUTE

ORDER_COLUMNS = ("market", "side", "price", "remaining", "rest_seq")  # the table's columns (mdcore.pxd)
assert len(ORDER_COLUMNS) == ORDER_COLS
# ``md_pass``' groups: one row per (matcher batch, market) with something to publish
GROUP_COLUMNS = ("key", "op_lo", "op_hi", "level_lo", "level_hi", "trade_lo", "trade_hi", "halted")
assert len(GROUP_COLUMNS) == GROUP_COLS

cdef int64_t KEY_MARKET = 0xFFFFFFFF  # a key's market: (batch << 32) | market
cdef uint8_t OP_ADD = _OP_ADD, OP_AMEND = _OP_AMEND, OP_CANCEL = _OP_CANCEL, OP_EXECUTE = _OP_EXECUTE


cdef inline bint about_order(const xos_event *e) noexcept nogil:
    """An event about the order in its ``order_id`` (a fill's: the taker)."""
    return (e.kind == XOS_EV_ACCEPTED and e.order_id > 0) or e.kind == XOS_EV_AMENDED or \
        e.kind == XOS_EV_FILL or e.kind == XOS_EV_CANCELLED


cdef int op_rows_layout(object array) except -1:
    cdef const OpRow[::1] view = array  # Cython checks the dtype against the struct, field by field
    return 0


cdef int level_rows_layout(object array) except -1:
    cdef const LevelRow[::1] view = array
    return 0


cdef int trade_rows_layout(object array) except -1:
    cdef const TradeRow[::1] view = array
    return 0


# gateway.mdmessages' OP_DTYPE, LEVEL_DTYPE and TRADE_DTYPE arrays (a typed memoryview per call cost ~2.5 us each)
cdef RecordLayout OP_ROWS = record_layout("L3 op rows", op_rows_layout)
cdef RecordLayout LEVEL_ROWS = record_layout("level rows", level_rows_layout)
cdef RecordLayout TRADE_ROWS = record_layout("trade rows", trade_rows_layout)


def md_pass(const unsigned char[::1] events, IntTable orders, ops, int64_t[:, ::1] deltas, levels,
            int64_t[::1] level_key, trades, int64_t[:, ::1] groups, int64_t[::1] batch_ts) -> tuple:
    """One pass over whole matcher batches of events (EVENT_DTYPE records as bytes, in seq order; the
    kinds it does not use are skipped), a batch being the events of one ``ts``.  The batches are
    numbered 0, 1, ... (``batch_ts[b]``: batch b's ts) and each row below has the key
    ``(batch << 32) | market``:

    * ``ops``: the L3 ops by key, each key's in event order.  Per command: an order entering the book
      (Accepted, or Amended with priority lost) rests with what its command's last event about it
      left (nothing: no add); a cancel of its remainder in the same command never rested (no op); a
      Fill executes the maker; a Cancelled or an Amended of a resting order states its remaining.
      ``orders`` follows them; an op on an order it does not hold is counted and left out.
      ``deltas`` rows (market, side, price, qty change, count change): what each op did to its levels
      (two rows when an amend moved the order), for ``level_mismatches``.
    * ``levels`` (their keys in ``level_key``): the last BookLevel of each level in each batch, by key,
      then bids before asks, each ascending by price: what ``MarketBook.update`` takes.
    * ``trades``: the Fills by key, each key's in event order, ``number`` left 0 (the caller numbers
      them per market).
    * ``groups``: a row (GROUP_COLUMNS) per key with ops, levels or a MarketStatus, ascending: the key,
      the bounds of its ops, levels and trades, and ``halted`` from its last MarketStatus (1 halted,
      0 live, -1 none).

    Each output has room for a row per event (``deltas`` for two).  Returns (groups, ops, levels,
    trades, delta rows, ops left out, Accepted events of no order: listings, or mass cancels; counted
    here, so that the caller looks for listings only in a batch that may hold one)."""
    cdef Py_ssize_t count = events.shape[0] // sizeof(xos_event), i, adds = 0, n_ops, n_deltas, unknown
    cdef Py_ssize_t orderless = 0
    cdef Py_ssize_t n_levels = 0, n_trades = 0, n_status = 0, n_groups = 0, k, n_batches = 0
    cdef const xos_event *ev = <const xos_event *>&events[0] if count else NULL
    cdef int64_t *incoming  # a command's orders entering the book (usually one; a multi-leg order's legs)
    cdef int64_t *final  # what its last event about each left
    cdef int64_t *op_key
    cdef int64_t key
    cdef uint16_t kind
    cdef const xos_event *e
    cdef SortItem *op_items
    cdef SortItem *items  # the BookLevels', then the Fills', then the MarketStatuses'
    cdef SortItem *level_items
    cdef SortItem *trade_items
    cdef SortItem *status_items
    cdef SortItem *scratch
    cdef OpRow *op_rows
    cdef uint8_t *halted
    cdef Py_ssize_t op_room, level_room, trade_room
    cdef OpRow *op_out = <OpRow *>OP_ROWS.records(ops, &op_room, True)
    cdef LevelRow *level_out = <LevelRow *>LEVEL_ROWS.records(levels, &level_room, True)
    cdef TradeRow *trade_out = <TradeRow *>TRADE_ROWS.records(trades, &trade_room, True)
    if events.shape[0] % sizeof(xos_event):
        raise ValueError(f"md_pass: {events.shape[0]} bytes are not whole {sizeof(xos_event)}-byte events")
    if orders.ncols != ORDER_COLS:
        raise ValueError(f"md_pass: the order table needs {ORDER_COLS} columns, not {orders.ncols}")
    if (op_room < count or level_room < count or level_key.shape[0] < count or trade_room < count
            or groups.shape[0] < count or batch_ts.shape[0] < count or deltas.shape[0] < 2 * count
            or deltas.shape[1] != 5 or groups.shape[1] != GROUP_COLS):
        raise ValueError(f"md_pass: {count} events need room for {count} ops, levels, trades, groups of "
                         f"{GROUP_COLS} and batches, and {2 * count} delta rows of 5")
    for i in range(count):
        kind = ev[i].kind
        if (kind == XOS_EV_ACCEPTED and ev[i].order_id > 0) or kind == XOS_EV_AMENDED:
            adds += 1  # the most orders that can enter the book (an Amended re-enters with priority lost)
        elif kind == XOS_EV_ACCEPTED and ev[i].order_id == 0:
            orderless += 1
        elif kind == XOS_EV_BOOK_LEVEL:
            n_levels += 1
        elif kind == XOS_EV_FILL:
            n_trades += 1
        elif kind == XOS_EV_MARKET_STATUS:
            n_status += 1
    k = max(count, 1)
    incoming = <int64_t *>PyMem_Malloc((2 * max(adds, 1) + k) * sizeof(int64_t) + 3 * k * sizeof(SortItem)
                                       + k * sizeof(OpRow) + k)
    if incoming is NULL:
        raise MemoryError()
    final = incoming + max(adds, 1)
    op_key = final + max(adds, 1)
    op_items = <SortItem *>(op_key + k)
    items = op_items + k
    scratch = items + k
    op_rows = <OpRow *>(scratch + k)
    halted = <uint8_t *>(op_rows + k)
    try:
        n_ops, n_deltas, unknown = pass_commands(ev, count, orders, op_out, op_key, deltas,
                                                 incoming, final)
        with nogil:
            # one more pass over the 128-byte events (each pass is a stream through memory): the
            # batches, and the BookLevels, Fills and MarketStatuses each keyed in its own part of ``items``
            level_items, trade_items, status_items = items, items + n_levels, items + n_levels + n_trades
            n_levels = n_trades = n_status = 0
            for i in range(count):
                e = &ev[i]
                if i == 0 or e.ts != ev[i - 1].ts:
                    batch_ts[n_batches] = e.ts
                    n_batches += 1
                key = (<int64_t>(n_batches - 1) << 32) | e.market
                if e.kind == XOS_EV_BOOK_LEVEL:
                    level_items[n_levels].k1 = (key << 1) | e.side  # (batch, market, side), then price
                    level_items[n_levels].k2, level_items[n_levels].i = e.price, i
                    n_levels += 1
                elif e.kind == XOS_EV_FILL:
                    trade_items[n_trades].k1, trade_items[n_trades].k2, trade_items[n_trades].i = key, 0, i
                    n_trades += 1
                elif e.kind == XOS_EV_MARKET_STATUS:
                    status_items[n_status].k1, status_items[n_status].k2, status_items[n_status].i = key, 0, i
                    n_status += 1
            sort_ops(op_out, op_key, n_ops, op_items, scratch, op_rows)
            n_levels = last_levels(ev, level_items, n_levels, scratch, level_out, &level_key[0] if count else NULL)
            if n_levels < 0:
                with gil:
                    raise MemoryError("md_pass: no memory to fold the BookLevels")
            fill_trades(ev, trade_items, n_trades, scratch, trade_out)
            stable_sort(status_items, scratch, n_status)
            for i in range(n_status):
                halted[i] = ev[status_items[i].i].qty == 1
            n_groups = group_keys(op_key, n_ops, &level_key[0] if count else NULL, n_levels, trade_items, n_trades,
                                  status_items, halted, n_status, groups)
    finally:
        PyMem_Free(incoming)
    return n_groups, n_ops, n_levels, n_trades, n_deltas, unknown, orderless



cdef tuple pass_commands(const xos_event *ev, Py_ssize_t count, IntTable orders, OpRow *ops, int64_t *op_key,
                         int64_t[:, ::1] deltas, int64_t *incoming, int64_t *final):
    """The L3 ops of whole matcher batches of events (see ``md_pass``), in event order, each with its
    ``(batch << 32) | market`` in ``op_key``; ``incoming`` and ``final`` have room for every Accepted and
    Amended of the events.  Returns (ops, delta rows, ops left out)."""
    cdef Py_ssize_t i = 0, j, k, q, n = 0, d = 0, unknown = 0, n_in
    cdef const xos_event *e
    cdef int64_t batch = -1, ts = 0, order_id, fin, before, after, p_before, p_after, slot, value
    cdef int64_t *row
    cdef uint8_t op, side, reason
    cdef bint lost, folded, no_memory = False
    with nogil:
        while i < count and not no_memory:
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
                    if slot < 0:
                        no_memory = True
                        break
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
        orders.fit()
    if no_memory:
        raise MemoryError("md_pass: the resting-order table could not grow")
    return n, d, unknown


cdef int add_change(xos_hmap *levels, int64_t *sums, Py_ssize_t *used, int64_t level_side, int64_t price,
                    int64_t qty, int64_t count) noexcept nogil:
    """Add a change to its level's sums (``sums``: qty, count per level, in the order first seen; ``levels``
    maps (level_side, price) to each one's place); 0, or -1 out of memory."""
    cdef int64_t at = xos_hmap_get(levels, level_side, price)
    if at < 0:
        at = used[0]
        if xos_hmap_put(levels, level_side, price, at):
            return -1
        sums[2 * at] = sums[2 * at + 1] = 0
        used[0] += 1
    sums[2 * at] += qty
    sums[2 * at + 1] += count
    return 0


def level_mismatches(const int64_t[:, ::1] l3, levels, const int64_t[::1] level_key, const int64_t[::1] qty,
                     const int64_t[::1] count) -> int:
    """How many levels the L3 ops changed otherwise than their BookLevel events did: ``l3`` rows are
    ``md_pass``' deltas (market, side, price, qty change, count change); ``levels`` are its level rows
    (their market in the low 32 bits of ``level_key``) and ``qty``/``count`` each one's change by the
    BookLevel aggregates (``MarketBook.update``'s).  0 when the two agree.  Sums per level touched, found
    through a hash map, one pass each (a sort by level cost more than the rest of a market-data pass; a table
    sized for every change, zeroed and scanned whole, was a twentieth of it)."""
    cdef Py_ssize_t n3 = l3.shape[0], n2, i, used = 0, mismatches = 0
    cdef xos_hmap index
    cdef int64_t *sums
    cdef int rc = 0
    cdef const LevelRow *lv = <const LevelRow *>LEVEL_ROWS.records(levels, &n2, False)
    if n3 and l3.shape[1] != 5:
        raise ValueError(f"level_mismatches: l3 rows have 5 columns, not {l3.shape[1]}")
    if not (level_key.shape[0] == qty.shape[0] == count.shape[0] == n2):
        raise ValueError("level_mismatches: levels, level_key, qty and count must have one length")
    sums = <int64_t *>malloc(2 * max(n3 + n2, 1) * sizeof(int64_t))  # room for every change's level
    if sums is NULL or xos_hmap_init(&index, 64):
        free(sums)
        raise MemoryError("level_mismatches: no memory for the levels' sums")
    with nogil:
        for i in range(n3):
            rc |= add_change(&index, sums, &used, l3[i, 0] * 2 + l3[i, 1], l3[i, 2], l3[i, 3], l3[i, 4])
        for i in range(n2):
            rc |= add_change(&index, sums, &used, (level_key[i] & KEY_MARKET) * 2 + lv[i].side, lv[i].price,
                             -qty[i], -count[i])
        for i in range(used):
            mismatches += sums[2 * i] != 0 or sums[2 * i + 1] != 0
    xos_hmap_free(&index)
    free(sums)
    if rc:
        raise MemoryError("level_mismatches: no memory for the levels' sums")
    return mismatches


cdef inline bint sorts_before(const SortItem *a, const SortItem *b) noexcept nogil:
    return a.k1 < b.k1 or (a.k1 == b.k1 and a.k2 < b.k2)


cdef void stable_sort(SortItem *items, SortItem *scratch, Py_ssize_t n) noexcept nogil:
    """Sort by (k1, k2), equal items keeping their order: a bottom-up merge sort (nothing to do when
    they are in order already, the usual case of one market)."""
    cdef Py_ssize_t i, j, k, lo, mid, hi, width = 1
    cdef SortItem *src = items
    cdef SortItem *dst = scratch
    cdef SortItem *t
    cdef bint ordered = True
    for i in range(1, n):
        if sorts_before(&items[i], &items[i - 1]):
            ordered = False
            break
    if ordered:
        return
    while width < n:
        lo = 0
        while lo < n:
            mid = lo + width if lo + width < n else n
            hi = lo + 2 * width if lo + 2 * width < n else n
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if sorts_before(&src[j], &src[i]):
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
            lo = hi
        t = src
        src = dst
        dst = t
        width *= 2
    if src != items:
        memcpy(items, src, n * sizeof(SortItem))


cdef void sort_ops(OpRow *ops, int64_t *op_key, Py_ssize_t n, SortItem *items, SortItem *scratch,
                   OpRow *copy) noexcept nogil:
    """The ops and their keys by key, each key's in event order."""
    cdef Py_ssize_t i
    for i in range(n):
        items[i].k1, items[i].k2, items[i].i = op_key[i], 0, i
    stable_sort(items, scratch, n)
    memcpy(copy, ops, n * sizeof(OpRow))
    for i in range(n):
        ops[i] = copy[items[i].i]
        op_key[i] = items[i].k1


cdef Py_ssize_t keep_last(SortItem *items, Py_ssize_t n) noexcept nogil:
    """Fold ``items`` (in event order) to one per (k1, k2), in place, in order of first appearance, each with
    the ``i`` of its last; returns how many, or -1 out of memory.  A batch's BookLevels come back to the same
    few levels again and again: sorting every one of them cost more than the rest of a market-data pass."""
    cdef Py_ssize_t u = 0, j
    cdef int64_t at
    cdef xos_hmap kept  # (k1, k2) -> its place in items[:u]
    if xos_hmap_init(&kept, 64):
        return -1
    for j in range(n):
        at = xos_hmap_get(&kept, items[j].k1, items[j].k2)
        if at >= 0:
            items[at].i = items[j].i
            continue
        if xos_hmap_put(&kept, items[j].k1, items[j].k2, u):
            xos_hmap_free(&kept)
            return -1
        items[u] = items[j]
        u += 1
    xos_hmap_free(&kept)
    return u


cdef Py_ssize_t last_levels(const xos_event *ev, SortItem *items, Py_ssize_t n, SortItem *scratch, LevelRow *levels,
                            int64_t *level_key) noexcept nogil:
    """Each level's last BookLevel per batch: ``items`` the BookLevels keyed (batch, market, side) and
    price, in event order; out by that key, each level's aggregate after the batch.  -1 out of memory."""
    cdef Py_ssize_t i
    cdef const xos_event *e
    n = keep_last(items, n)
    if n < 0:
        return -1
    stable_sort(items, scratch, n)
    for i in range(n):
        e = &ev[items[i].i]
        levels[i].side, levels[i].price, levels[i].qty, levels[i].count = e.side, e.price, e.qty, e.remaining
        level_key[i] = items[i].k1 >> 1
    return n


cdef void fill_trades(const xos_event *ev, SortItem *items, Py_ssize_t n, SortItem *scratch,
                      TradeRow *trades) noexcept nogil:
    """The Fills (``items``, keyed, in event order) as trade rows by key, each key's in event order; their
    keys stay in ``items[:n].k1``."""
    cdef Py_ssize_t i
    cdef const xos_event *e
    stable_sort(items, scratch, n)
    for i in range(n):
        e = &ev[items[i].i]
        trades[i].id, trades[i].number, trades[i].price, trades[i].qty = e.seq, 0, e.price, e.qty
        trades[i].side, trades[i].taker_order, trades[i].maker_order = e.side, e.order_id, e.maker_order


cdef Py_ssize_t group_keys(const int64_t *op_key, Py_ssize_t n_ops, const int64_t *level_key, Py_ssize_t n_levels,
                           const SortItem *trade, Py_ssize_t n_trades, const SortItem *status,
                           const uint8_t *halted, Py_ssize_t n_status, int64_t[:, ::1] groups) noexcept nogil:
    """A row per key of the ops, levels and statuses (all by key), ascending: its bounds in each, and the
    last status's ``halted`` (-1: none).  A key's trades ride with it (a Fill has its maker's execute op)."""
    cdef Py_ssize_t o = 0, lv = 0, t = 0, s = 0, g = 0
    cdef int64_t key
    while o < n_ops or lv < n_levels or s < n_status:
        key = INT64_MAX
        if o < n_ops and op_key[o] < key:
            key = op_key[o]
        if lv < n_levels and level_key[lv] < key:
            key = level_key[lv]
        if s < n_status and status[s].k1 < key:
            key = status[s].k1
        groups[g, 0], groups[g, 1] = key, o
        while o < n_ops and op_key[o] == key:
            o += 1
        groups[g, 2], groups[g, 3] = o, lv
        while lv < n_levels and level_key[lv] == key:
            lv += 1
        groups[g, 4] = lv
        while t < n_trades and trade[t].k1 < key:
            t += 1  # none: every Fill's key has its execute op
        groups[g, 5] = t
        while t < n_trades and trade[t].k1 == key:
            t += 1
        groups[g, 6], groups[g, 7] = t, -1
        while s < n_status and status[s].k1 == key:
            groups[g, 7] = halted[s]
            s += 1
        g += 1
    return g

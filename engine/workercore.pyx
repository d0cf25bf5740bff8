"""Hot loops of the worker cores (``engine/workers``): per-order state in C.

``IntTable``: an int64 key -> row of ``ncols`` int64 values, open addressing (linear probing,
power-of-two capacity, load <= 1/2, backward-shift deletion: no tombstones).  It grows as keys come and
shrinks (``fit``, after each pass) once a burst has gone, so its slots stay about twice its keys: a
table sized for a whole batch's new orders, most of them gone again within it, spread the probes of
a few hundred live orders over megabytes and missed the cache at each.  It pickles as its entries
(the worker checkpoints pickle their cores).

``select_fresh`` is every core's first pass over a batch: the sequence check and the choice of the
event kinds the core follows, in one loop, so the numpy work after it sees only those events.

``margin_holds`` and ``risk_orders`` walk a batch of events (``EVENT_DTYPE``, C-contiguous, seq
order) and follow every order through Accepted / Fill / Cancelled / Amended exactly as the Python
cores did, with Python's floor division; events of other kinds are skipped.

``nonzero_cells`` finds the margin book's non-zero account x asset cells for its checkpoint and its views;
``revalue_cells`` values them for its account view, exactly (``includes/valuation.h``).
"""
cimport cython
from libc.stdint cimport INT64_MIN, int64_t, uint64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

cimport numpy as cnp
import numpy as np

from records cimport (XOS_EV_BALANCE, XOS_EV_MARKET_STATUS, XOS_EV_OUTCOME_POSITION, XOS_EV_POSITION, XOS_EV_REJECTED,
                     XOS_EV_VENUE, XOS_EV_VENUE_TRANSFER, xos_event)
from eventkeep cimport XOS_KEEP_ALL, XOS_KEEP_ORDERLESS, xos_event_kept
from intmath cimport xos_moved_past
from lowerbound cimport xos_lower_bound
from valuation cimport xos_revalue_cells, xos_row_fits, xos_row_value

cnp.import_array()

cdef enum:
    EVFLAG_LIQUIDATION = 32
    EV_ACCEPTED = 1
    EV_FILL = 3
    EV_CANCELLED = 4
    EV_AMENDED = 5
    SIDE_BUY = 0


cdef inline int64_t fdiv(int64_t a, int64_t b) noexcept nogil:
    """Python's ``a // b`` (floor) for ``b != 0``."""
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline uint64_t mix(int64_t k) noexcept nogil:
    cdef uint64_t x = <uint64_t>k * 0x9E3779B97F4A7C15ULL
    x ^= x >> 31
    x *= 0xBF58476D1CE4E5B9ULL
    x ^= x >> 29
    return x


cdef enum:
    MIN_SLOTS = 16


cdef inline int64_t capacity_for(int64_t keys) noexcept nogil:
    """The slots for ``keys`` at a load of at most 1/2: a power of two, at least ``MIN_SLOTS``."""
    cdef int64_t cap = MIN_SLOTS
    while cap < 2 * keys:
        cap <<= 1
    return cap


def _restore_table(ncols, keys, vals):
    t = IntTable(ncols, len(keys))
    t.update(keys, vals)
    return t


cdef class IntTable:
    """int64 key -> ``ncols`` int64 values (see the module docstring)."""

    def __cinit__(self):
        self.block = NULL

    def __init__(self, int64_t ncols, int64_t capacity=16):
        if ncols < 1:
            raise ValueError("ncols must be >= 1")
        self.ncols = ncols
        if self.resize(capacity_for(capacity)) < 0:
            raise MemoryError(f"IntTable: no memory for {capacity} keys")

    def __dealloc__(self):
        free(self.block)

    cdef int resize(self, int64_t cap) noexcept nogil:
        """Move the entries into ``cap`` slots (a power of two above twice the count): 0, or -1 out of
        memory (the table unchanged)."""
        cdef int64_t n = self.ncols, i, j, c, old_cap = self.cap
        cdef int64_t *old_keys = self.keys
        cdef int64_t *old_vals = self.vals
        cdef uint8_t *old_used = self.used
        cdef void *old_block = self.block
        cdef char *block = <char *>malloc(cap * (sizeof(int64_t) * (n + 1) + 1))
        if block is NULL:
            return -1
        self.block = block
        self.keys = <int64_t *>block
        self.vals = self.keys + cap
        self.used = <uint8_t *>(self.vals + cap * n)
        memset(self.used, 0, cap)
        self.cap, self.mask, self.count = cap, cap - 1, 0
        for i in range(old_cap if old_block is not NULL else 0):
            if old_used[i]:
                j = self.insert(old_keys[i])
                for c in range(n):
                    self.vals[j * n + c] = old_vals[i * n + c]
        free(old_block)
        return 0

    cdef int64_t find(self, int64_t key) noexcept nogil:
        cdef uint64_t i = mix(key) & <uint64_t>self.mask
        while self.used[i]:
            if self.keys[i] == key:
                return <int64_t>i
            i = (i + 1) & <uint64_t>self.mask
        return -1

    cdef int64_t insert(self, int64_t key) noexcept nogil:
        """The slot of ``key``, a new one (values zeroed) if absent; -1 out of memory.  The table grows
        at a load of 1/2 (its slots move: a slot found before an insert is stale after it)."""
        cdef uint64_t i = mix(key) & <uint64_t>self.mask
        cdef int64_t c
        while self.used[i]:
            if self.keys[i] == key:
                return <int64_t>i
            i = (i + 1) & <uint64_t>self.mask
        if 2 * (self.count + 1) > self.cap:
            if self.resize(2 * self.cap) < 0:
                return -1
            i = mix(key) & <uint64_t>self.mask
            while self.used[i]:
                i = (i + 1) & <uint64_t>self.mask
        self.used[i] = 1
        self.keys[i] = key
        for c in range(self.ncols):
            self.vals[i * self.ncols + c] = 0
        self.count += 1
        return <int64_t>i

    cdef void erase(self, int64_t slot) noexcept nogil:
        """Remove the entry at ``slot`` (backward-shift deletion)."""
        cdef uint64_t i = <uint64_t>slot, j = <uint64_t>slot, home
        cdef uint64_t mask = <uint64_t>self.mask
        cdef int64_t c, n = self.ncols
        while True:
            j = (j + 1) & mask
            if not self.used[j]:
                break
            home = mix(self.keys[j]) & mask
            # move j into the hole at i unless its home lies cyclically in (i, j]
            if (i <= j and (home <= i or home > j)) or (i > j and (home <= i and home > j)):
                self.keys[i] = self.keys[j]
                for c in range(n):
                    self.vals[i * n + c] = self.vals[j * n + c]
                i = j
        self.used[i] = 0
        self.count -= 1

    cdef void fit(self) noexcept nogil:
        """Shrink a table far emptier than its slots (a burst left it large): its probes stay within a
        few cache-sized pages.  Out of memory it stays as it is."""
        if self.cap > MIN_SLOTS and 16 * self.count < self.cap:
            self.resize(capacity_for(2 * self.count))

    def reserve(self, int64_t extra):
        """Make room for ``extra`` more keys without passing a load of 1/2."""
        cdef int64_t need = self.count + extra
        if 2 * need > self.cap and self.resize(capacity_for(need)) < 0:
            raise MemoryError(f"IntTable: no memory for {need} keys")

    def update(self, keys, vals):
        """Set the rows of ``keys`` (int64[n]) to ``vals`` (int64[n, ncols])."""
        cdef const int64_t[::1] k = np.ascontiguousarray(keys, np.int64)
        cdef const int64_t[:, ::1] v = np.ascontiguousarray(vals, np.int64).reshape(len(k), self.ncols)
        cdef int64_t i, c, s
        self.reserve(len(k))
        for i in range(len(k)):
            s = self.insert(k[i])
            for c in range(self.ncols):
                self.vals[s * self.ncols + c] = v[i, c]

    def ids_of(self, keys):
        """For a table used as an index (``ncols == 1``, nothing ever erased): the id of each key
        (int64[n]), a key not yet present getting the next id (``len(self)``) in order of first
        appearance; ids are dense ``0 .. len(self) - 1``."""
        if self.ncols != 1:
            raise ValueError("ids_of needs a one-column table")
        cdef const int64_t[::1] k = np.ascontiguousarray(keys, np.int64)
        cdef int64_t n = k.shape[0], i, s = 0
        out = np.empty(n, np.int64)
        cdef int64_t[::1] o = out
        with nogil:  # no reserve for all n: a batch of known keys must not spread the table over n's room
            for i in range(n):
                s = self.find(k[i])
                if s < 0:
                    s = self.insert(k[i])
                    if s < 0:
                        break
                    self.vals[s] = self.count - 1
                o[i] = self.vals[s]
        if s < 0:
            raise MemoryError(f"IntTable: no memory for {self.count + 1} keys")
        return out

    def arrays(self):
        """``(keys, vals)`` of every entry (slot order)."""
        keys = np.empty(self.count, np.int64)
        vals = np.empty((self.count, self.ncols), np.int64)
        cdef int64_t[::1] k = keys
        cdef int64_t[:, ::1] v = vals
        cdef int64_t i, j = 0
        for i in range(self.cap):
            if self.used[i]:
                k[j] = self.keys[i]
                memcpy(&v[j, 0], &self.vals[i * self.ncols], self.ncols * sizeof(int64_t))
                j += 1
        return keys, vals

    def get(self, int64_t key):
        """The values of ``key`` as a tuple, or ``None``."""
        cdef int64_t s = self.find(key)
        if s < 0:
            return None
        return tuple([self.vals[s * self.ncols + c] for c in range(self.ncols)])

    def pop(self, int64_t key):
        """Remove ``key``: its values as a tuple, or ``None`` if it is absent."""
        values = self.get(key)
        if values is not None:
            self.erase(self.find(key))
        return values

    def to_dict(self) -> dict:
        keys, vals = self.arrays()
        return {k: tuple(v) for k, v in zip(keys.tolist(), vals.tolist())}

    def __contains__(self, key):
        return self.find(key) >= 0

    def __len__(self):
        return self.count

    @property
    def slots(self) -> int:
        """How many slots the table has now (a power of two, at least twice its keys)."""
        return self.cap

    def __reduce__(self):
        keys, vals = self.arrays()
        return _restore_table, (self.ncols, keys, vals)


cdef const xos_event *event_data(cnp.ndarray events) except NULL:
    if not events.flags.c_contiguous or events.dtype.itemsize != sizeof(xos_event):
        raise TypeError("expected a C-contiguous EVENT_DTYPE array")
    return <const xos_event *>cnp.PyArray_DATA(events)


KEEP_ALL, KEEP_ORDERLESS = XOS_KEEP_ALL, XOS_KEEP_ORDERLESS  # a kind's byte in a keep mask (eventkeep.h)


@cython.boundscheck(False)
@cython.wraparound(False)
def select_fresh(cnp.ndarray events, int64_t cursor, const uint8_t[::1] keep):
    """``(chosen, last_seq, gap_at)`` for a batch in seq order: the events after ``cursor`` that
    ``keep`` marks (as ``RingConsumer.take_kinds`` reads it), copied out in order; the seq of the batch's last
    event (``cursor`` when nothing in it is new); ``gap_at`` is -1, or the index of the first event
    that breaks the sequence (0: the batch starts after ``cursor + 1``), and then nothing is chosen."""
    cdef const xos_event *ev = event_data(events)
    cdef int64_t n = len(events), i, start, count = 0, nkeep = keep.shape[0]
    cdef const uint8_t *kept = &keep[0] if nkeep else NULL
    cdef cnp.ndarray out
    cdef xos_event *dst
    if n == 0:
        return events[:0], cursor, -1
    with nogil:
        for i in range(1, n):
            if ev[i].seq != ev[i - 1].seq + 1:
                break
        else:
            i = 0
    if i:
        return events[:0], cursor, i
    if ev[0].seq > cursor + 1:
        return events[:0], cursor, 0
    start = cursor + 1 - ev[0].seq
    if start >= n:
        return events[:0], cursor, -1
    out = np.empty(n - start, dtype=events.dtype)
    dst = <xos_event *>cnp.PyArray_DATA(out)
    with nogil:
        for i in range(start, n):
            if xos_event_kept(&ev[i], kept, nkeep):
                memcpy(&dst[count], &ev[i], sizeof(xos_event))
                count += 1
    return out[:count], ev[n - 1].seq, -1


# ------------------------------------------------------------------------------- margin

# order row: [account row, market index, side of its hold (a perpetual or outcome order holds quote as
# a buy does), the price its hold is computed at, remaining, taker bps of its quote hold, leverage of its
# quote hold (1: spot, outcome), payout for an outcome sell (whose hold is at its NO leg, payout - price;
# 0 otherwise)]
cdef enum:
    M_ROW = 0
    M_MKT = 1
    M_SIDE = 2
    M_PRICE = 3
    M_REM = 4
    M_TB = 5
    M_LEV = 6
    M_NO_LEG = 7
    MARGIN_COLS = 8


cdef inline int64_t leg_price(const int64_t *o, int64_t price) noexcept nogil:
    """The price an order's hold is computed at: an outcome sell's NO leg, else its price."""
    return o[M_NO_LEG] - price if o[M_NO_LEG] else price


cdef inline int64_t hold_of(int64_t side, int64_t price, int64_t remaining, int64_t lot, int64_t tb,
                            int64_t lev) noexcept nogil:
    """A quote hold: lots x (ceil(price / leverage) + ceil(price x taker bps / 10000)); a base hold:
    the remaining size."""
    if side != SIDE_BUY:
        return remaining
    if tb < 0:
        tb = 0
    return fdiv(remaining, lot) * (-fdiv(-price, lev) - fdiv(-price * tb, 10000))


cdef enum:  # what went wrong in a pass over a batch (bits)
    PASS_LOT_ZERO = 1
    PASS_NO_MEMORY = 2


cdef int raise_pass_error(int rc) except -1:
    if rc & PASS_NO_MEMORY:
        raise MemoryError("an order table could not grow")
    if rc & PASS_LOT_ZERO:
        raise ZeroDivisionError("a market with lot size 0")
    return 0


cdef inline int rehold(IntTable t, int64_t slot, int64_t price, int64_t remaining, int64_t *held, int64_t ncol,
                       const int64_t *lot, const int64_t *base, const int64_t *quote) noexcept nogil:
    cdef int64_t *o = &t.vals[slot * MARGIN_COLS]
    cdef int64_t m = o[M_MKT], side = o[M_SIDE], asset
    if lot[m] == 0:
        return PASS_LOT_ZERO
    asset = quote[m] if side == SIDE_BUY else base[m]
    held[o[M_ROW] * ncol + asset] += (hold_of(side, price, remaining, lot[m], o[M_TB], o[M_LEV])
                                      - hold_of(side, o[M_PRICE], o[M_REM], lot[m], o[M_TB], o[M_LEV]))
    o[M_PRICE] = price
    o[M_REM] = remaining
    return 0


cdef inline int64_t ceil_div(int64_t a, int64_t b) noexcept nogil:
    """``ceil(a / b)`` for ``b > 0``."""
    return -fdiv(-a, b)


cdef inline int64_t tiered_margin(int64_t value, int64_t leverage, const int64_t *floors,
                                  const int64_t *leverages) noexcept nogil:
    """The matcher's tiered initial margin of notional ``value``: each bracket's part over its leverage,
    rounded up per bracket, a bracket's leverage at most the ones below (``leverage`` for the first);
    ``floors`` / ``leverages``: the next 3 brackets (floor 0: unused, and none after it)."""
    cdef int64_t margin = 0, floor = 0, k
    for k in range(3):
        if floors[k] == 0 or value <= floors[k]:
            break
        margin += ceil_div(floors[k] - floor, leverage)
        floor = floors[k]
        if leverages[k] < leverage:
            leverage = leverages[k]
    return margin + ceil_div(value - floor, leverage)


@cython.boundscheck(False)
@cython.wraparound(False)
def revalue_positions(const int64_t[::1] slots, positions, const int64_t[::1] mark, const int64_t[::1] leverage,
                      const int64_t[::1] maintenance_bps, const int64_t[:, ::1] tier_floors,
                      const int64_t[:, ::1] tier_leverages, int64_t[:, ::1] upnl_sum, int64_t[:, ::1] maint_sum,
                      const int64_t[:, ::1] total, const int64_t[:, ::1] held, const int64_t[:, ::1] margin_sum):
    """Revalue the perpetual positions at ``slots`` of a ``PositionBook`` (``positions``) at their
    market's ``mark`` (arrays by market id; 0 = none yet: valued at entry), ``leverage``,
    ``maintenance_bps`` and margin tiers (``tier_floors`` / ``tier_leverages``, market id x 3), moving
    ``upnl_sum`` / ``maint_sum`` (row x asset) by the changes of the cross slots (an isolated one,
    ``positions.isolated``, counts only for itself); a slot given twice is revalued once in effect.
    Returns ``(row, asset, market)`` triples, int64[k, 3], a triple possibly repeated: market 0 for a
    (row, asset) among those slots whose cross equity ``total - held + margin_sum + upnl_sum`` (the
    matcher's: free plus the cross positions' margin and unrealised PnL, order holds left out) is below
    ``maint_sum``; the market for an open isolated slot whose ``margin + unrealised`` is below its own
    maintenance."""
    cdef const int64_t[::1] market = positions.market, lot = positions.lot, size = positions.size
    cdef const int64_t[::1] entry = positions.entry, row = positions.row, quote = positions.quote
    cdef const int64_t[::1] margin = positions.margin, isolated = positions.isolated
    cdef int64_t[::1] upnl = positions.upnl, maint = positions.maint
    cdef int64_t n = slots.shape[0], i, s, m, r, q, lots, notional, u, mm, k = 0
    under = np.empty((n, 3), np.int64)
    cdef int64_t[:, ::1] out = under
    with nogil:
        for i in range(n):
            s = slots[i]
            m = market[s]
            lots = (size[s] if size[s] >= 0 else -size[s]) // lot[s]
            if mark[m] > 0:
                notional = mark[m] * lots
                u = notional - entry[s] if size[s] > 0 else (entry[s] - notional if size[s] < 0 else 0)
            else:
                notional = entry[s]
                u = 0
            mm = ceil_div(tiered_margin(notional, leverage[m], &tier_floors[m, 0], &tier_leverages[m, 0])
                          * maintenance_bps[m], 10000) if lots else 0
            if not isolated[s]:
                r = row[s]
                q = quote[s]
                upnl_sum[r, q] += u - upnl[s]
                maint_sum[r, q] += mm - maint[s]
            upnl[s] = u
            maint[s] = mm
        for i in range(n):
            s = slots[i]
            r = row[s]
            q = quote[s]
            if isolated[s]:
                if size[s] != 0 and margin[s] + upnl[s] < maint[s]:
                    out[k, 0] = r
                    out[k, 1] = q
                    out[k, 2] = market[s]
                    k += 1
            elif maint_sum[r, q] > 0 and total[r, q] - held[r, q] + margin_sum[r, q] + upnl_sum[r, q] < maint_sum[r, q]:
                out[k, 0] = r
                out[k, 1] = q
                out[k, 2] = 0
                k += 1
    return under[:k]


@cython.boundscheck(False)
@cython.wraparound(False)
def largest_cross_positions(positions, int64_t nrows):
    """Per account row (``nrows`` of them): the slot of its open cross position (size != 0, not isolated) in
    a ``PositionBook`` with the largest maintenance requirement, the lowest slot among equal ones; -1 for a
    row without one.  One pass over the slots (int64[nrows])."""
    cdef const int64_t[::1] row = positions.row, size = positions.size, maint = positions.maint
    cdef const int64_t[::1] isolated = positions.isolated
    cdef int64_t n = len(positions), s, r
    best = np.full(nrows, -1, np.int64)
    cdef int64_t[::1] b = best
    with nogil:
        for s in range(n):
            r = row[s]
            if size[s] == 0 or isolated[s] or r >= nrows:
                continue
            if b[r] < 0 or maint[s] > maint[b[r]]:
                b[r] = s
    return best


@cython.boundscheck(False)
@cython.wraparound(False)
def nonzero_cells(const int64_t[:, ::1] a, int64_t nrows, int64_t ncols, const int64_t[:, ::1] b=None):
    """The flat index (``row * a.shape[1] + column``, ascending) of each cell of ``a[:nrows, :ncols]`` that
    is not zero, or whose cell of ``b`` (of ``a``'s shape) is not.  numpy's ``flatnonzero`` over the margin
    book's account x asset arrays took ~50 ms each at 100,000 accounts: it reads every column, and the
    cells twice (a count, then the indices); this reads the columns in use once."""
    if nrows < 0 or ncols < 0 or nrows > a.shape[0] or ncols > a.shape[1]:
        raise ValueError(f"nonzero_cells: {nrows} x {ncols} cells of an array of shape {a.shape[0]} x {a.shape[1]}")
    if b is not None and (b.shape[0] != a.shape[0] or b.shape[1] != a.shape[1]):
        raise ValueError(f"nonzero_cells: b's shape {b.shape[0]} x {b.shape[1]} is not a's {a.shape[0]} x {a.shape[1]}")
    cdef int64_t width = a.shape[1], r, c, k = 0, room = 4096, cell
    cdef const int64_t *pa
    cdef const int64_t *pb
    cdef int64_t *out = <int64_t *>malloc(room * sizeof(int64_t))
    cdef int64_t *grown
    cdef bint two = b is not None, failed = out == NULL
    with nogil:
        for r in range(nrows):
            if failed:
                break
            if k + ncols > room:  # room for a whole row's cells, doubled as they come
                room = 2 * (k + ncols)
                grown = <int64_t *>realloc(out, room * sizeof(int64_t))
                if grown == NULL:
                    failed = True
                    break
                out = grown
            pa, cell = &a[r, 0], r * width
            if not two:
                for c in range(ncols):
                    out[k] = cell + c
                    k += pa[c] != 0
            else:
                pb = &b[r, 0]
                for c in range(ncols):
                    out[k] = cell + c
                    k += (pa[c] | pb[c]) != 0
    if failed:
        free(out)
        raise MemoryError(f"nonzero_cells: no room for {room} cell indices")
    cells = np.empty(k, np.int64)
    if k:
        memcpy(cnp.PyArray_DATA(cells), out, k * sizeof(int64_t))
    free(out)
    return cells


@cython.boundscheck(False)
@cython.wraparound(False)
def revalue_cells(const int64_t[::1] cells, const int64_t[::1] amounts, const int64_t[::1] w, const int64_t[::1] s,
                  int64_t nrows):
    """Per row ``r < nrows``, the exact sum over its cells (``cells``: flat ``row * width + column``, ascending; a
    cell may come several times, its amounts added first) of ``floor(amount * w[column] / 2**s[column])`` (``0 <=
    w < 2**31``, any shift): ``(values, over)``, int64 values (0 in the rows of ``over``, where the sum does not
    fit in int64, or where one cell's amount reaches 2**96 or its value 2**100, far past any sum that fits), in 128
    bits (``includes/valuation.h``)."""
    cdef int64_t m = cells.shape[0], width = w.shape[0], r
    if amounts.shape[0] != m or s.shape[0] != width or width == 0 or nrows < 0:
        raise ValueError(f"revalue_cells: {m} cells with {amounts.shape[0]} amounts, {width} weights with "
                         f"{s.shape[0]} shifts, {nrows} rows")
    for r in range(width):
        if not 0 <= w[r] < 1 << 31:  # (weight_bits gives 31 bits): a product of an amount then fits in 128 bits
            raise ValueError(f"revalue_cells: column {r}'s weight {w[r]} is not in 0 .. 2**31 - 1")
    cdef xos_row_value *rows = <xos_row_value *>calloc(max(nrows, 1), sizeof(xos_row_value))
    if rows == NULL:
        raise MemoryError(f"revalue_cells: no room for {nrows} rows")
    cdef int rc
    with nogil:
        rc = xos_revalue_cells(&cells[0] if m else NULL, &amounts[0] if m else NULL, m, &w[0], &s[0], width, nrows,
                               rows)
    if rc:
        free(rows)
        raise ValueError(f"revalue_cells: {'a cell outside ' if rc == -1 else 'cells not in order in '}"
                         f"{nrows} rows x {width} columns")
    values, over = np.zeros(nrows, np.int64), np.zeros(nrows, np.uint8)
    cdef int64_t[::1] out = values
    cdef uint8_t[::1] refused = over
    for r in range(nrows):
        refused[r] = not xos_row_fits(&rows[r], &out[r])
    free(rows)
    return values, np.flatnonzero(over)


@cython.boundscheck(False)
@cython.wraparound(False)
def count_kinds(cnp.ndarray events, int64_t[::1] present) -> int:
    """Add each event of a batch to ``present[its kind]``; returns how many are Accepted events of no order
    (listings and mass cancels), so that a core looks for listings only in a batch that has one.  A kind
    past ``present`` is refused."""
    cdef int64_t n = len(events), i, orderless = 0, slots = present.shape[0]
    cdef const xos_event *ev = event_data(events) if n else NULL
    for i in range(n):
        if ev[i].kind >= slots:
            raise ValueError(f"count_kinds: event kind {ev[i].kind} (seq {ev[i].seq}) is past the {slots} counted")
        present[ev[i].kind] += 1
        orderless += ev[i].kind == EV_ACCEPTED and ev[i].order_id == 0
    return orderless


cdef inline int64_t index_of(const int64_t *keys, const int64_t *values, int64_t n, int64_t key) noexcept nogil:
    """``values[i]`` where ``keys[i] == key`` (``keys`` sorted), or -1."""
    cdef int64_t at = xos_lower_bound(keys, n, key)
    return values[at] if at < n and keys[at] == key else -1


@cython.boundscheck(False)
@cython.wraparound(False)
def margin_rows(cnp.ndarray events, const int64_t[::1] market_ids, const int64_t[::1] market_index,
                const int64_t[::1] account_ids, const int64_t[::1] account_rows, int64_t[::1] midx,
                int64_t[::1] rows) -> tuple:
    """One pass over a batch for ``MarginBook``: into ``midx`` the index of each event's market in the market
    arrays (``market_ids`` sorted, each one's index beside it) for an order's Accepted, a Fill, a Position and
    an OutcomePosition (0 for the others), into ``rows`` each order's Accepted's account row (``account_ids``
    sorted, each one's row beside it; 0 for the others).  Returns (the first of those events whose market is
    not listed, or -1; whether an event names an account without a row: an Accepted's, a Balance's, a
    VenueTransfer's, a position's, a Fill's taker or maker; rows are given in order of first appearance
    first, then this pass runs again).  In numpy this was a dozen calls and passes over the batch."""
    cdef int64_t n = len(events), i, bad = -1, nm = market_ids.shape[0], na = account_ids.shape[0]
    cdef const xos_event *ev = event_data(events) if n else NULL
    cdef const xos_event *e
    cdef const int64_t *mk = &market_ids[0] if nm else NULL
    cdef const int64_t *mi = &market_index[0] if nm else NULL
    cdef const int64_t *ak = &account_ids[0] if na else NULL
    cdef const int64_t *ar = &account_rows[0] if na else NULL
    cdef bint fresh = False
    cdef int kind
    if market_index.shape[0] != nm or account_rows.shape[0] != na:
        raise ValueError("margin_rows: ids and their indexes differ in length")
    if midx.shape[0] < n or rows.shape[0] < n:
        raise ValueError(f"margin_rows: {n} events, room for {min(midx.shape[0], rows.shape[0])}")
    with nogil:
        for i in range(n):
            e = &ev[i]
            kind = e.kind
            midx[i] = rows[i] = 0
            if kind == EV_ACCEPTED or kind == EV_FILL or kind == XOS_EV_POSITION or kind == XOS_EV_OUTCOME_POSITION:
                midx[i] = index_of(mk, mi, nm, e.market)
                if midx[i] < 0:
                    midx[i] = 0
                    if bad < 0:
                        bad = i
                rows[i] = index_of(ak, ar, na, e.account)
                fresh |= rows[i] < 0 or (kind == EV_FILL and index_of(ak, ar, na, e.maker_account) < 0)
                if kind != EV_ACCEPTED or rows[i] < 0:
                    rows[i] = 0
            elif kind == XOS_EV_BALANCE or kind == XOS_EV_VENUE_TRANSFER:
                fresh |= index_of(ak, ar, na, e.account) < 0
    return bad, fresh


@cython.boundscheck(False)
@cython.wraparound(False)
def margin_holds(IntTable orders, cnp.ndarray events, const int64_t[::1] rows, const int64_t[::1] midx,
                 int64_t[:, ::1] held, const int64_t[::1] m_lot, const int64_t[::1] m_tb,
                 const int64_t[::1] m_base, const int64_t[::1] m_quote, const int64_t[::1] m_perp,
                 const int64_t[::1] m_lev, const int64_t[::1] m_payout):
    """Move the holds of ``held`` (account row x asset) for a batch.  ``rows[i]`` / ``midx[i]``: the
    row of event i's account and the index of its market in the ``m_*`` arrays (read for an order's
    Accepted; ``m_tb`` is the taker fee of venue 0's orders; an order in a market ``m_perp`` marks holds
    quote on either side, as a buy does, at the market's leverage ``m_lev``; an outcome market's, whose
    ``m_payout`` is > 0, too, a sell's at its NO leg ``payout - price``).  Orders live in ``orders``
    (``MARGIN_COLS`` columns) until their remaining is 0."""
    cdef int64_t n = len(events), i, s, k, rc = 0
    cdef int kind
    if n == 0:
        return
    cdef const xos_event *ev = event_data(events)
    if orders.ncols != MARGIN_COLS:
        raise ValueError("orders table must have MARGIN_COLS columns")
    if len(rows) < n or len(midx) < n:
        raise ValueError("rows / midx shorter than the batch")
    cdef int64_t *hp = &held[0, 0] if held.shape[0] > 0 and held.shape[1] > 0 else NULL
    cdef int64_t ncol = held.shape[1]
    cdef const int64_t *lot = &m_lot[0] if len(m_lot) else NULL
    cdef const int64_t *tb = &m_tb[0] if len(m_tb) else NULL
    cdef const int64_t *base = &m_base[0] if len(m_base) else NULL
    cdef const int64_t *quote = &m_quote[0] if len(m_quote) else NULL
    cdef const int64_t *perp = &m_perp[0] if len(m_perp) else NULL
    cdef const int64_t *lev = &m_lev[0] if len(m_lev) else NULL
    cdef const int64_t *payout = &m_payout[0] if len(m_payout) else NULL
    cdef int64_t *o
    with nogil:
        for i in range(n):
            kind = ev[i].kind
            if kind == EV_FILL:
                s = orders.find(ev[i].order_id)
                if s >= 0:
                    o = &orders.vals[s * MARGIN_COLS]
                    rc |= rehold(orders, s, o[M_PRICE], ev[i].remaining, hp, ncol, lot, base, quote)
                    if ev[i].remaining == 0:
                        orders.erase(s)
                k = orders.find(ev[i].maker_order)
                if k >= 0:
                    o = &orders.vals[k * MARGIN_COLS]
                    rc |= rehold(orders, k, o[M_PRICE], o[M_REM] - ev[i].qty, hp, ncol, lot, base, quote)
                    if o[M_REM] == 0:
                        orders.erase(k)
            elif kind == EV_ACCEPTED:
                # a liquidation's IOC order holds nothing (and never rests): not followed
                if ev[i].order_id > 0 and not (ev[i].flags & EVFLAG_LIQUIDATION):
                    s = orders.insert(ev[i].order_id)
                    if s < 0:
                        rc |= PASS_NO_MEMORY
                        break
                    o = &orders.vals[s * MARGIN_COLS]
                    o[M_ROW] = rows[i]
                    o[M_MKT] = midx[i]
                    o[M_SIDE] = SIDE_BUY if perp != NULL and perp[midx[i]] else ev[i].side  # the hold's side
                    o[M_LEV] = lev[midx[i]] if lev != NULL and lev[midx[i]] > 0 else 1
                    o[M_PRICE] = ev[i].price
                    o[M_REM] = 0
                    # venue 0's orders pay their market's fees; another venue's Accepted carries the
                    # order's own (its venue's, at its volume tier)
                    o[M_TB] = ev[i].taker_fee if ev[i].venue != 0 else (tb[midx[i]] if tb != NULL else 0)
                    o[M_NO_LEG] = payout[midx[i]] if payout != NULL and ev[i].side != SIDE_BUY else 0
                    rc |= rehold(orders, s, leg_price(o, ev[i].price), ev[i].qty, hp, ncol, lot, base, quote)
            elif kind == EV_CANCELLED or kind == EV_AMENDED:
                s = orders.find(ev[i].order_id)
                if s >= 0:
                    o = &orders.vals[s * MARGIN_COLS]
                    rc |= rehold(orders, s, leg_price(o, ev[i].price), ev[i].remaining, hp, ncol, lot, base, quote)
                    if ev[i].remaining == 0:
                        orders.erase(s)
        orders.fit()
    raise_pass_error(rc)


# ------------------------------------------------------------------------------- risk

# order row: [venue, lot, price, remaining]; open interest row: [oi]; rate row: [second, count, peak, total]
cdef enum:
    R_VENUE = 0
    R_LOT = 1
    R_PRICE = 2
    R_REM = 3
    RISK_COLS = 4
    RATE_COLS = 4


cdef inline int set_order(IntTable oi, int64_t *o, int64_t price, int64_t remaining) noexcept nogil:
    cdef int64_t lot = o[R_LOT]
    if lot == 0:
        return PASS_LOT_ZERO
    cdef int64_t s = oi.insert(o[R_VENUE])
    if s < 0:
        return PASS_NO_MEMORY
    oi.vals[s] += price * fdiv(remaining, lot) - o[R_PRICE] * fdiv(o[R_REM], lot)
    o[R_PRICE] = price
    o[R_REM] = remaining
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
def risk_walks(cnp.ndarray events, int64_t me, int status_unchanged, int venue_risk, int64_t[::1] control,
               int64_t[::1] fills) -> tuple:
    """One pass over a batch for ``RiskMonitor``: into ``control`` the indices of the events its breakers and
    listings walk one by one (an Accepted of no order: a listing's; a MarketStatus; a Rejected of account
    ``me`` with code ``status_unchanged``; a Venue event of flags ``venue_risk``), into ``fills`` the fills'.
    Returns (how many of each, how many Balance events, the largest ts).  In numpy this was a dozen passes
    over the batch's 128-byte records, about a fifth of a risk worker's CPU under an order flow."""
    cdef int64_t n = len(events), i, nc = 0, nf = 0, nb = 0, ts_max = INT64_MIN
    cdef const xos_event *e
    if n == 0:
        return 0, 0, 0, 0
    cdef const xos_event *ev = event_data(events)
    if control.shape[0] < n or fills.shape[0] < n:
        raise ValueError(f"risk_walks: {n} events, room for {min(control.shape[0], fills.shape[0])}")
    with nogil:
        for i in range(n):
            e = &ev[i]
            if e.ts > ts_max:
                ts_max = e.ts
            if e.kind == EV_FILL:
                fills[nf] = i
                nf += 1
            elif ((e.kind == EV_ACCEPTED and e.order_id == 0) or e.kind == XOS_EV_MARKET_STATUS
                  or (e.kind == XOS_EV_REJECTED and e.account == me and e.code == status_unchanged)
                  or (e.kind == XOS_EV_VENUE and e.flags == venue_risk)):
                control[nc] = i
                nc += 1
            elif e.kind == XOS_EV_BALANCE:
                nb += 1
    return nc, nf, nb, ts_max


@cython.boundscheck(False)
@cython.wraparound(False)
def band_breaches(const int64_t[::1] price, int64_t last, int64_t band_bps) -> int:
    """How many of a market's trades (in order, ``last`` the trade before them) moved past ``band_bps`` of the trade
    before (``xos_moved_past``: exact, none from a price of 0)."""
    cdef int64_t n = price.shape[0], i, count = 0, before = last
    with nogil:
        for i in range(n):
            count += xos_moved_past(price[i], before, band_bps)
            before = price[i]
    return count


@cython.boundscheck(False)
@cython.wraparound(False)
def breaker_walk(const int64_t[::1] window_ts, const int64_t[::1] window_price, const int64_t[::1] ts,
                 const int64_t[::1] price, int64_t window_ns, int64_t move_bps) -> tuple:
    """A circuit breaker over a market's run of trades (``ts`` non-decreasing, none before the window's): a trade's
    reference is the first trade at or after ``ts - window_ns``, of the window (the first trade of each ts before
    the run) and the run; the first trade moved past ``move_bps`` of its reference (``xos_moved_past``) trips it.
    Returns ``(trip, window_ts, window_price)``: the index of that trade (-1: none), and the window as it stands
    after the run, or after the trip: from the last trade's reference on, the first trade of each ts."""
    cdef int64_t w = window_ts.shape[0], n = ts.shape[0], i, k, ref = 0, end = n - 1, trip = -1, kept = 0, last_ts = 0
    cdef int64_t target
    if window_price.shape[0] != w or price.shape[0] != n:
        raise ValueError(f"breaker_walk: {w} window times with {window_price.shape[0]} prices, {n} trade times "
                         f"with {price.shape[0]} prices")
    for i in range(n):
        if (ts[i] < ts[i - 1]) if i else (w and ts[0] < window_ts[w - 1]):
            raise ValueError(f"breaker_walk: trade {i}'s time {ts[i]} is before the one before it")
    with nogil:
        for i in range(n):
            target = ts[i] - window_ns
            # the lower bound moves forward only (the targets do not go back); the trade itself is at or past it
            while ref < w + i and (window_ts[ref] if ref < w else ts[ref - w]) < target:
                ref += 1
            if xos_moved_past(price[i], window_price[ref] if ref < w else price[ref - w], move_bps):
                trip = end = i
                break
    out_ts, out_price = np.empty(w + end + 1 - ref, np.int64), np.empty(w + end + 1 - ref, np.int64)
    cdef int64_t[::1] ot = out_ts, op = out_price
    for k in range(ref, w + end + 1):  # the window kept: the first trade of each ts
        if k == ref or (window_ts[k] if k < w else ts[k - w]) != last_ts:
            ot[kept] = window_ts[k] if k < w else ts[k - w]
            op[kept] = window_price[k] if k < w else price[k - w]
            kept += 1
        last_ts = window_ts[k] if k < w else ts[k - w]
    return trip, out_ts[:kept], out_price[:kept]


cdef inline int64_t lot_at(const int64_t[::1] ids, const int64_t[::1] lots, const int64_t[::1] listed_at,
                           int64_t market, int64_t seq) noexcept nogil:
    """The lot of ``market`` (``ids`` sorted, its lot and listing seq beside it) for an event at ``seq``: 1 for a
    market not listed before it."""
    cdef int64_t at = xos_lower_bound(&ids[0], ids.shape[0], market) if ids.shape[0] else 0
    if at < ids.shape[0] and ids[at] == market and listed_at[at] < seq:
        return lots[at]
    return 1


@cython.boundscheck(False)
@cython.wraparound(False)
def risk_orders(IntTable orders, IntTable oi, IntTable rates, cnp.ndarray events, const int64_t[::1] market_ids,
                const int64_t[::1] market_lots, const int64_t[::1] listed_at):
    """Open interest per venue (``oi``, 1 column) and order rates per account (``rates``,
    ``RATE_COLS``) for a batch.  An order's lot is its market's (``market_ids`` sorted, each one's lot and
    listing seq in ``market_lots`` and ``listed_at``), 1 in a market not listed before its Accepted."""
    cdef int64_t n = len(events), i, s, k, sec, rc = 0
    cdef int kind
    if n == 0:
        return
    cdef const xos_event *ev = event_data(events)
    cdef int64_t *o
    cdef int64_t *r
    if orders.ncols != RISK_COLS or oi.ncols != 1 or rates.ncols != RATE_COLS:
        raise ValueError("bad table widths")
    if market_lots.shape[0] != market_ids.shape[0] or listed_at.shape[0] != market_ids.shape[0]:
        raise ValueError("risk_orders: market ids, lots and listing seqs disagree in length")
    with nogil:
        for i in range(n):
            kind = ev[i].kind
            if kind == EV_FILL:
                s = orders.find(ev[i].order_id)
                if s >= 0:
                    o = &orders.vals[s * RISK_COLS]
                    rc |= set_order(oi, o, o[R_PRICE], ev[i].remaining)
                    if ev[i].remaining == 0:
                        orders.erase(s)
                k = orders.find(ev[i].maker_order)
                if k >= 0:
                    o = &orders.vals[k * RISK_COLS]
                    rc |= set_order(oi, o, o[R_PRICE], o[R_REM] - ev[i].qty)
                    if o[R_REM] == 0:
                        orders.erase(k)
            elif kind == EV_ACCEPTED:
                # a liquidation's IOC order holds nothing (and never rests): not followed
                if ev[i].order_id > 0 and not (ev[i].flags & EVFLAG_LIQUIDATION):
                    s = orders.insert(ev[i].order_id)
                    if s < 0:
                        rc |= PASS_NO_MEMORY
                        break
                    o = &orders.vals[s * RISK_COLS]
                    o[R_VENUE] = ev[i].venue
                    o[R_LOT] = lot_at(market_ids, market_lots, listed_at, ev[i].market, ev[i].seq)
                    o[R_PRICE] = ev[i].price
                    o[R_REM] = 0
                    rc |= set_order(oi, o, ev[i].price, ev[i].qty)
                    sec = fdiv(ev[i].ts, 1000000000)
                    k = rates.find(ev[i].account)
                    if k < 0:
                        k = rates.insert(ev[i].account)
                        if k < 0:
                            rc |= PASS_NO_MEMORY
                            break
                        rates.vals[k * RATE_COLS] = sec
                    r = &rates.vals[k * RATE_COLS]
                    if r[0] != sec:
                        r[0] = sec
                        r[1] = 0
                    r[1] += 1
                    r[3] += 1
                    if r[1] > r[2]:
                        r[2] = r[1]
            elif kind == EV_CANCELLED or kind == EV_AMENDED:
                s = orders.find(ev[i].order_id)
                if s >= 0:
                    rc |= set_order(oi, &orders.vals[s * RISK_COLS], ev[i].price, ev[i].remaining)
                    if ev[i].remaining == 0:
                        orders.erase(s)
        orders.fit()
    raise_pass_error(rc)


MARGIN_COLUMNS = MARGIN_COLS
RISK_COLUMNS = RISK_COLS
RATE_COLUMNS = RATE_COLS

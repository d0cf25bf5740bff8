# cython: language_level=3
"""The market-data publisher's L2 book of one market in C: per side the levels ascending by price
(price, qty, count), changed a batch of BookLevel rows at a time by one merge, with the same
``side_levels`` and ``checksum`` as a subscriber's ``mdmessages.LevelBook`` (the reference the
tests hold it to).  In numpy a batch's change of one market took some 30 calls and three
``np.insert``s, about a third of the publisher's time."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy

from zlib import crc32

from . import mdmessages

# the subscriber's constants (mdmessages), as C values
cdef int BID = mdmessages.BID
cdef int ASK = mdmessages.ASK
cdef Py_ssize_t CHECKSUM_DEPTH = mdmessages.CHECKSUM_DEPTH
cdef Py_ssize_t LEVEL_BYTES = sizeof(Level)  # mdmessages._LEVEL, "<qqq": three little-endian int64s, as Level


cdef class MarketBook:
    """One market's L2 book as the publisher keeps it, with its seq, trade count, halt and time."""

    def __cinit__(self, int64_t market):
        self.market = market

    def __dealloc__(self):
        PyMem_Free(self.levels[0])
        PyMem_Free(self.levels[1])

    def __reduce__(self):  # the core is checkpointed with pickle
        return (_restore, (self.market, self.seq, self.trade_number, self.ts, self.halted,
                           self.side_bytes(BID), self.side_bytes(ASK)))

    def side_bytes(self, int side) -> bytes:
        """A side's levels ascending by price, as int64 (price, qty, count) triples."""
        return (<char *>self.levels[side])[:self.n[side] * sizeof(Level)] if self.n[side] else b""

    cdef int merge(self, int side, const LevelRow *rows, Py_ssize_t k, int64_t *dq, int64_t *dc) except -1:
        """Set ``rows[:k]`` (one side's, ascending by price, each price once; qty == count == 0
        removes the level) into the side by one merge; ``dq``/``dc``: each row's change of qty and
        count."""
        cdef Level *old = self.levels[side]
        cdef Py_ssize_t n = self.n[side], i = 0, j = 0, m = 0, room = n + k
        cdef Level *out
        if room > self.capacity[side] or old is NULL:
            room = max(room, 2 * self.capacity[side], 16)
        else:
            room = self.capacity[side]
        out = <Level *>PyMem_Malloc(room * sizeof(Level))
        if out is NULL:
            raise MemoryError()
        while i < n or j < k:
            if j == k or (i < n and old[i].price < rows[j].price):
                out[m] = old[i]
                m += 1
                i += 1
                continue
            if i < n and old[i].price == rows[j].price:
                dq[j], dc[j] = rows[j].qty - old[i].qty, rows[j].count - old[i].count
                i += 1
            else:
                dq[j], dc[j] = rows[j].qty, rows[j].count
            if rows[j].qty != 0 or rows[j].count != 0:
                out[m].price, out[m].qty, out[m].count = rows[j].price, rows[j].qty, rows[j].count
                m += 1
            j += 1
        PyMem_Free(old)
        self.levels[side], self.n[side], self.capacity[side] = out, m, room
        return 0

    def update(self, const unsigned char[::1] changed, int64_t[::1] dq, int64_t[::1] dc) -> None:
        """Apply LEVEL_DTYPE rows (as bytes; bids then asks, each ascending by price, each level
        once; qty == count == 0 removes it); ``dq[i]``/``dc[i]``: row i's change of qty and count."""
        cdef Py_ssize_t k = changed.shape[0] // sizeof(LevelRow), asks = 0, i
        cdef const LevelRow *rows = <const LevelRow *>&changed[0] if k else NULL
        if changed.shape[0] % sizeof(LevelRow) or dq.shape[0] < k or dc.shape[0] < k:
            raise ValueError(f"update: {changed.shape[0]} bytes of {sizeof(LevelRow)}-byte level rows, room for "
                             f"{min(dq.shape[0], dc.shape[0])} changes")
        while asks < k and rows[asks].side == BID:
            asks += 1
        for i in range(k):
            if rows[i].side != (BID if i < asks else ASK) or (
                    i and i != asks and rows[i].price <= rows[i - 1].price):
                raise ValueError(f"update: level row {i} (side {rows[i].side}, price {rows[i].price}) is out of "
                                 f"order: bids then asks, each ascending by price, each price once")
        if asks:
            self.merge(BID, rows, asks, &dq[0], &dc[0])
        if k > asks:
            self.merge(ASK, &rows[asks], k - asks, &dq[asks], &dc[asks])

    def side_levels(self, int side, Py_ssize_t depth=0) -> list:
        """``(price, qty, count)`` best first, at most ``depth`` of them (0: all)."""
        cdef Py_ssize_t n = self.n[side], count = n if depth <= 0 else min(depth, n), i
        cdef const Level *lv = self.levels[side]
        if side == BID:
            return [(lv[n - 1 - i].price, lv[n - 1 - i].qty, lv[n - 1 - i].count) for i in range(count)]
        return [(lv[i].price, lv[i].qty, lv[i].count) for i in range(count)]

    def checksum(self) -> int:
        """``mdmessages.book_checksum`` of the top CHECKSUM_DEPTH levels, without a Python object per level."""
        cdef Py_ssize_t nb = min(self.n[BID], CHECKSUM_DEPTH), na = min(self.n[ASK], CHECKSUM_DEPTH), i
        cdef bytes buf = PyBytes_FromStringAndSize(NULL, 2 + LEVEL_BYTES * (nb + na))
        cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(buf)
        cdef const Level *bids = self.levels[BID]
        cdef const Level *asks = self.levels[ASK]
        p[0], p[1] = <uint8_t>nb, <uint8_t>na
        p += 2
        for i in range(nb):  # best first: the highest bids (Level is three little-endian int64s, as "<qqq")
            memcpy(p, &bids[self.n[BID] - 1 - i], LEVEL_BYTES)
            p += LEVEL_BYTES
        for i in range(na):
            memcpy(p, &asks[i], LEVEL_BYTES)
            p += LEVEL_BYTES
        return crc32(buf)


def _restore(market, seq, trade_number, ts, halted, bids, asks) -> MarketBook:
    cdef MarketBook book = MarketBook(market)
    cdef Py_ssize_t side
    cdef const unsigned char[::1] raw
    book.seq, book.trade_number, book.ts, book.halted = seq, trade_number, ts, halted
    for side, data in ((BID, bids), (ASK, asks)):
        if not data:
            continue
        raw = data
        book.levels[side] = <Level *>PyMem_Malloc(len(data))
        if book.levels[side] is NULL:
            raise MemoryError()
        memcpy(book.levels[side], &raw[0], len(data))
        book.n[side] = book.capacity[side] = len(data) // sizeof(Level)
    return book

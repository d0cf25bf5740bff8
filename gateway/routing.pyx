# cython: language_level=3
"""The gateway's two passes over commands in C.

Requests: ``ForwardBatch`` collects the commands of the next forward into the matcher's input as
requests are read, puts each account's onto its FIFO of pending commands (``PendingQueue``) and
publishes them straight into the command ring.

Replies: ``ReplyRouter.route`` takes a batch of ring events in one pass, one event at a time in event
order: which events concern the accounts with keys, the order table following them (``follow``;
``OrderTable`` in gateway/server.py holds the table and answers queries), which pending command each
answers and how (``ReplyRouter.answer``, over the accounts' FIFOs; ``echoes`` holds the rules) and the
execution reports (``report``).

In numpy each side took tens of calls per burst or batch, whatever its size, each several
microseconds on the cold caches of a lone order's path."""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EHOSTUNREACH
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove, memset
from hashmap cimport xos_hmap, xos_hmap_free, xos_hmap_get, xos_hmap_init, xos_hmap_put
from lowerbound cimport xos_lower_bound

cimport numpy as cnp

from engine.arrays cimport RecordLayout, record_layout
from engine.cmdring cimport CommandRing
from engine.rowpack cimport RowPacking
from gateway.intake cimport CommandRow, row_rule, send_two
from gateway.rowformats cimport FIXED_ROWS, PACKED_ROWS
from packedrows cimport XOS_PACK_MAX_FIELDS, xos_pack_row_max, xos_pack_rows

import numpy as np

from engine.records import COMMAND_DTYPE

from records cimport (XOS_CANCEL_USER, XOS_CF_ALL_MARKETS, XOS_CF_BY_CLIENT_ID, XOS_CMD_AMEND, XOS_CMD_CANCEL,
                     XOS_CMD_CONVERT, XOS_CMD_ISOLATED_MARGIN, XOS_CMD_LIQUIDATE, XOS_CMD_LIST_MARKET,
                     XOS_CMD_MASS_CANCEL, XOS_CMD_MULTI_LEG, XOS_CMD_OUTCOME_CONFIG, XOS_CMD_PLACE, XOS_CMD_RESOLVE,
                     XOS_CMD_VENUE_MARKET_HALT, XOS_CMD_VENUE_MARKET_RESUME, XOS_CMD_VENUE_PARAMS,
                     XOS_EF_ASSET_LISTING, XOS_EF_MAKER_DONE, XOS_EF_MARKET_LISTING, XOS_EV_ACCEPTED, XOS_EV_AMENDED,
                     XOS_EV_CANCELLED, XOS_EV_FILL, XOS_EV_LIQUIDATION, XOS_EV_MARKET_STATUS, XOS_EV_ORACLE_CONFIG,
                     XOS_EV_OUTCOME_CONVERT, XOS_EV_OUTCOME_STATUS, XOS_EV_POSITION, XOS_EV_REJECTED, XOS_EV_VENUE,
                     XOS_OS_OPEN)

cnp.import_array()

cdef enum:
    LEG_SID = -2  # a Leg record's ``sid`` among pending commands: sent with its header, which answers for it
    LOST_SCAN = 64  # how far into an account's FIFO a matching event proves the commands before it lost
    FIFO_START = 256

LEG_RECORD = LEG_SID

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


cdef int order_rows_layout(object array) except -1:
    cdef const OrderRow[::1] view = array  # Cython checks the dtype against the struct, field by field
    return 0


cdef int report_rows_layout(object array) except -1:
    cdef const ReportRow[::1] view = array
    return 0


cdef int ack_rows_layout(object array) except -1:
    cdef const AckRow[::1] view = array
    return 0


# the tables and rows these functions fill: arrays of gateway.server.ORDER_ROW_DTYPE, and of
# gateway.messages.REPORT_ROW_DTYPE and ACK_ROW_DTYPE (a typed memoryview per call cost ~2.5 us each)
cdef RecordLayout ORDER_ROWS = record_layout("order rows", order_rows_layout)
cdef RecordLayout REPORT_ROWS = record_layout("report rows", report_rows_layout)
cdef RecordLayout ACK_ROWS = record_layout("ack rows", ack_rows_layout)


cdef Py_ssize_t event_records(const unsigned char[::1] events, const xos_event **first) except -1:
    """How many EVENT_DTYPE records ``events`` (their bytes) holds; ``first``: where they start."""
    if events.shape[0] % sizeof(xos_event):
        raise ValueError(f"events: {events.shape[0]} bytes are not whole {sizeof(xos_event)}-byte records")
    first[0] = <const xos_event *>&events[0] if events.shape[0] else NULL
    return events.shape[0] // sizeof(xos_event)


cdef bint is_listing(const xos_event *e) noexcept nogil:
    """A market's listing echo (ListMarket's: its sender in ``maker_account``)."""
    return e.kind == XOS_EV_ACCEPTED and e.flags == XOS_EF_MARKET_LISTING


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


cdef int64_t kth_largest(int64_t *a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """The ``k``-th largest (1: the largest) of ``a[:n]``, which it reorders (quickselect, Hoare's partition)."""
    cdef Py_ssize_t lo = 0, hi = n - 1, i, j, target = k - 1
    cdef int64_t pivot, swap
    while lo < hi:
        pivot = a[lo + ((hi - lo) >> 1)]
        i, j = lo, hi
        while i <= j:
            while a[i] > pivot:
                i += 1
            while a[j] < pivot:
                j -= 1
            if i <= j:
                swap = a[i]
                a[i] = a[j]
                a[j] = swap
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return a[target]
    return a[target]


def compact_orders(rows, Py_ssize_t n, Py_ssize_t keep) -> int:
    """Drop from ``rows[:n]`` (``gateway.server.ORDER_ROW_DTYPE``, sorted by order id) each account's closed
    orders beyond its newest ``keep`` by ``closed_seq`` (of equal ones, the earlier rows stay), in place and in
    order; returns how many rows are left.  Counts per account (found through a hash map), then a quickselect
    of the cut for the accounts over ``keep``: the numpy version (a lexsort and a dozen passes over the 80-byte
    rows) took 1.6-1.8 ms for 16,384 rows each time the gateway's table filled."""
    cdef Py_ssize_t room, i, w = 0, at = 0, n_accounts = 0
    cdef OrderRow *r = <OrderRow *>ORDER_ROWS.records(rows, &room, True)
    cdef xos_hmap index  # account -> its place in tallies
    cdef ClosedTally *tallies
    cdef ClosedTally *a
    cdef int64_t *seqs = NULL
    cdef int64_t k
    cdef int rc = 0
    if not 0 <= n <= room:
        raise ValueError(f"compact_orders: {n} rows of {room}")
    if keep < 0:
        raise ValueError(f"compact_orders: keep {keep} closed orders an account?")
    tallies = <ClosedTally *>malloc(max(n, 1) * sizeof(ClosedTally))
    if tallies is NULL or xos_hmap_init(&index, 64):
        free(tallies)
        raise MemoryError("compact_orders: no memory to count the closed orders")
    with nogil:
        for i in range(n):
            if r[i].status == OPEN:
                continue
            k = xos_hmap_get(&index, r[i].account, 0)
            if k < 0:
                k = n_accounts
                if xos_hmap_put(&index, r[i].account, 0, k):
                    rc = 1
                    break
                tallies[k].count = tallies[k].seen = 0
                n_accounts += 1
            tallies[k].count += 1
        for i in range(n_accounts if rc == 0 else 0):  # where each account over ``keep`` puts its closed_seqs
            if tallies[i].count > keep:
                tallies[i].at = at
                at += tallies[i].count
        if rc == 0 and at:
            seqs = <int64_t *>malloc(at * sizeof(int64_t))
            rc = seqs is NULL
        if rc == 0 and at:
            for i in range(n):
                if r[i].status != OPEN:
                    a = &tallies[xos_hmap_get(&index, r[i].account, 0)]
                    if a.count > keep:
                        seqs[a.at + a.seen] = r[i].closed_seq
                        a.seen += 1
            for i in range(n_accounts):
                a = &tallies[i]
                if a.count > keep:
                    a.cut = kth_largest(seqs + a.at, a.count, keep) if keep else INT64_MAX
                    a.ties = keep  # less those newer than the cut, below
                    for at in range(a.at, a.at + a.count):
                        a.ties -= seqs[at] > a.cut
        if rc == 0:
            for i in range(n):
                if r[i].status != OPEN:
                    a = &tallies[xos_hmap_get(&index, r[i].account, 0)]
                    if a.count > keep and r[i].closed_seq <= a.cut:
                        if r[i].closed_seq < a.cut or a.ties <= 0:
                            continue
                        a.ties -= 1
                if w != i:
                    r[w] = r[i]
                w += 1
    free(seqs)
    free(tallies)
    xos_hmap_free(&index)
    if rc:
        raise MemoryError("compact_orders: no memory to count the closed orders")
    return w



# The order table's queries, each one pass in C over the 90-byte rows: numpy's masks took a pass per field and
# copied each strided column, 11-60 ms a query or a history at a million rows (session 32).

def order_rows(rows, Py_ssize_t n, int64_t account, uint32_t market, bint closed) -> np.ndarray:
    """The places in ``rows[:n]`` of ``account``'s open orders (``closed``: its closed ones), in ``market``; 0 is
    every account (accounts are positive), every market."""
    cdef Py_ssize_t room, i, k = 0
    cdef const OrderRow *r = <const OrderRow *>ORDER_ROWS.records(rows, &room, False)
    if not 0 <= n <= room:
        raise ValueError(f"order_rows: {n} rows of {room}")
    cdef cnp.ndarray places = np.empty(n, np.intp)
    cdef Py_ssize_t *out = <Py_ssize_t *>cnp.PyArray_DATA(places)
    with nogil:
        for i in range(n):
            if (r[i].status != OPEN) == closed and (account == 0 or r[i].account == account) and \
                    (market == 0 or r[i].market == market):
                out[k] = i
                k += 1
    return places[:k]


def take_rows(rows, const Py_ssize_t[::1] places) -> np.ndarray:
    """A copy of the rows at ``places``: numpy's own take copies a packed row field by field, 10 times slower."""
    cdef Py_ssize_t room, i, k = places.shape[0]
    cdef const OrderRow *r = <const OrderRow *>ORDER_ROWS.records(rows, &room, False)
    cdef cnp.ndarray taken = np.empty(k, rows.dtype)
    cdef OrderRow *out = <OrderRow *>cnp.PyArray_DATA(taken)
    for i in range(k):
        if not 0 <= places[i] < room:
            raise ValueError(f"take_rows: place {places[i]} of {room} rows")
    with nogil:
        for i in range(k):
            out[i] = r[places[i]]
    return taken


def order_row(rows, Py_ssize_t n, int64_t order_id) -> int:
    """The place in ``rows[:n]`` (sorted by order id) of ``order_id``, or -1 (``find_row``)."""
    cdef Py_ssize_t room
    cdef const OrderRow *r = <const OrderRow *>ORDER_ROWS.records(rows, &room, False)
    if not 0 <= n <= room:
        raise ValueError(f"order_row: {n} rows of {room}")
    return find_row(r, n, order_id)


def client_order_row(rows, Py_ssize_t n, int64_t account, int64_t client_id) -> int:
    """The place in ``rows[:n]`` of ``account``'s newest order under ``client_id``, or -1.  The newest is the open
    one if there is one: the matcher refuses a client id one of the account's open orders has.  From the end, so
    a recent order is found at once."""
    cdef Py_ssize_t room, i = n - 1
    cdef const OrderRow *r = <const OrderRow *>ORDER_ROWS.records(rows, &room, False)
    if not 0 <= n <= room:
        raise ValueError(f"client_order_row: {n} rows of {room}")
    with nogil:
        while i >= 0 and not (r[i].client_id == client_id and r[i].account == account):
            i -= 1
    return i


def accounts_trading(rows, Py_ssize_t n, accounts) -> np.ndarray:
    """Which of ``accounts`` (sorted, unique int64) have an open order in ``rows[:n]``, as booleans."""
    cdef Py_ssize_t room, i, n_accounts, left
    cdef const OrderRow *r = <const OrderRow *>ORDER_ROWS.records(rows, &room, False)
    cdef const int64_t *a = <const int64_t *>INT64S.records(accounts, &n_accounts, False)
    cdef int64_t at
    if not 0 <= n <= room:
        raise ValueError(f"accounts_trading: {n} rows of {room}")
    cdef cnp.ndarray found = np.zeros(n_accounts, np.bool_)
    cdef uint8_t *hit = <uint8_t *>cnp.PyArray_DATA(found)
    left = n_accounts
    with nogil:
        for i in range(n):
            if left == 0:
                break
            if r[i].status == OPEN:
                at = xos_lower_bound(a, n_accounts, r[i].account) if n_accounts else 0
                if at < n_accounts and a[at] == r[i].account and not hit[at]:
                    hit[at] = 1
                    left -= 1
    return found


cdef class PendingRows:
    """A C buffer of ``Pending`` rows that grows: what an account's FIFO and a forward are made of."""

    def __cinit__(self):
        self.rows = <Pending *>PyMem_Malloc(FIFO_START * sizeof(Pending))
        if self.rows is NULL:
            raise MemoryError()
        self.capacity = FIFO_START

    def __dealloc__(self):
        PyMem_Free(self.rows)

    cdef int resize(self, Py_ssize_t capacity) except -1:
        cdef Pending *moved = <Pending *>PyMem_Realloc(self.rows, capacity * sizeof(Pending))
        if moved is NULL:
            raise MemoryError()
        self.rows, self.capacity = moved, capacity
        return 0


cdef class PendingQueue(PendingRows):
    """One account's sent-and-unanswered commands (``Pending`` rows), oldest first."""

    def __len__(self):
        return self.tail - self.head

    def rows_bytes(self) -> bytes:
        """The waiting rows (PENDING_DTYPE records), oldest first."""
        return (<char *>&self.rows[self.head])[:(self.tail - self.head) * sizeof(Pending)]

    cdef int push(self, const Pending *rows, Py_ssize_t n) except -1:
        cdef Py_ssize_t live = self.tail - self.head
        if self.tail + n > self.capacity:
            if live + n > self.capacity // 2:
                self.resize(max(2 * self.capacity, 2 * (live + n)))
            memmove(self.rows, &self.rows[self.head], live * sizeof(Pending))
            self.head, self.tail = 0, live
        memcpy(&self.rows[self.tail], rows, n * sizeof(Pending))
        self.tail += n
        return 0

    def take_sent_before(self, int64_t send_seq) -> list:
        """Take the commands sent before ``send_seq`` (``Pending.send_seq``) off the front, oldest first, as
        ``ReplyRouter.lost`` tuples: commands a dead matcher took and never journaled, once every event of the
        journaled ones is routed."""
        cdef list lost = []
        cdef const Pending *p
        while self.head < self.tail and self.rows[self.head].send_seq < send_seq:
            p = &self.rows[self.head]
            lost.append((p.sid, p.rid, p.cmd.kind, p.cmd.id, p.cmd.account))
            self.head += 1
        if self.head == self.tail:
            self.head = self.tail = 0
        return lost


PENDING_DTYPE = np.dtype([("sid", "<i8"), ("rid", "<i8"), ("cmd", COMMAND_DTYPE), ("send_seq", "<i8")])  # a Pending


cdef int pending_layout(object array) except -1:
    cdef const Pending[::1] view = array  # Cython checks the dtype against the struct, field by field
    return 0


pending_layout(np.zeros(1, PENDING_DTYPE))  # once, at import: ForwardBatch and PendingQueue hand out these rows


cdef class ForwardBatch(PendingRows):
    """The commands collected for the next forward into the matcher's input, in the order they came, each
    beside its session number, rid and ``send_seq`` (``Pending`` rows).  Requests go in as they are read: ``add`` one
    command, ``add_multi_leg`` a multi-leg order's records, ``add_rows`` a session's OrderRows messages,
    checked and converted here with no Python object per order.  ``enqueue`` then puts each account's onto
    its FIFO and ``publish`` copies the commands straight into the command ring: no array is made on the way
    (each numpy call costs microseconds on a lone order's cold caches)."""

    def __len__(self):
        return self.n

    cdef Pending *room(self, Py_ssize_t more) except NULL:
        """Where the next ``more`` rows go, numbered on (``send_seq``), not yet counted: a row counts once it is
        whole."""
        cdef Py_ssize_t i
        if self.n + more > self.capacity:
            self.resize(max(2 * self.capacity, self.n + more))
        for i in range(self.n, self.n + more):
            self.rows[i].send_seq = self.sent + i
        return &self.rows[self.n]

    def add(self, int64_t sid, int64_t rid, tuple command not None):
        """One command, ``command`` its 14 COMMAND_DTYPE fields in order, of session ``sid``'s request
        ``rid`` (LEG_RECORD for a multi-leg order's Leg records, -1 for the gateway's own).  A field out of
        its type's range raises OverflowError and adds nothing."""
        if len(command) != 14:
            raise ValueError(f"a command has 14 fields, not {len(command)}")
        cdef Pending *p = self.room(1)
        p.sid, p.rid = sid, rid
        p.cmd.kind, p.cmd.side, p.cmd.tif, p.cmd.ord_type, p.cmd.stp = command[0], command[1], command[2], \
            command[3], command[4]
        p.cmd.flags, p.cmd.venue, p.cmd.market, p.cmd.ts, p.cmd.account = command[5], command[6], command[7], \
            command[8], command[9]
        p.cmd.price, p.cmd.qty, p.cmd.id, p.cmd.aux = command[10], command[11], command[12], command[13]
        self.n += 1

    def add_multi_leg(self, int64_t sid, int64_t rid, cnp.ndarray commands not None):
        """A multi-leg order's records (COMMAND_DTYPE: its MultiLeg header, then its Leg records), all or
        none: the header as session ``sid``'s request ``rid``, each Leg record as LEG_RECORD (the header
        answers for them)."""
        cdef Py_ssize_t i, n
        cdef const Command *c
        cdef Pending *p
        if commands.dtype != COMMAND_DTYPE or commands.ndim != 1 or not commands.flags.c_contiguous:
            raise TypeError("add_multi_leg: commands must be a 1-d C-contiguous array of COMMAND_DTYPE")
        n, c = commands.shape[0], <const Command *>cnp.PyArray_DATA(commands)
        p = self.room(n)
        for i in range(n):
            p[i].sid, p[i].rid, p[i].cmd = sid if i == 0 else LEG_SID, rid, c[i]
        self.n += n

    def add_rows(self, int64_t sid, int64_t account, cnp.ndarray heads not None, data not None):
        """Session ``sid``'s (of ``account``) OrderRows messages: ``heads[i]`` = message i's (rid, row
        count), int64; ``data``: their COMMAND_ROW_DTYPE rows joined (bytes or bytearray).  Each message whose
        rows all keep the rules (gateway/intake.pyx ``row_rule``) adds its rows as commands, in order; a
        message with a bad row adds none.  Returns None when every message was added, else a list of
        (rid, first bad row, the rule it breaks, the bad row's offset in ``data``) of those left out."""
        cdef Py_buffer buf
        cdef const int64_t *h
        cdef const CommandRow *rows
        cdef const CommandRow *r
        cdef Pending *p
        cdef Py_ssize_t i, j, first = 0, total = 0, count, messages
        cdef int rule
        cdef list refused = None
        if (cnp.PyArray_TYPE(heads) != cnp.NPY_INT64 or cnp.PyArray_NDIM(heads) != 2 or heads.shape[1] != 2
                or not cnp.PyArray_IS_C_CONTIGUOUS(heads)):
            raise ValueError("add_rows: heads must be a C-contiguous int64 array of (rid, row count) pairs")
        messages, h = heads.shape[0], <const int64_t *>cnp.PyArray_DATA(heads)
        PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
        try:
            if buf.len % sizeof(CommandRow):
                raise ValueError(f"add_rows: {buf.len} bytes are not whole {sizeof(CommandRow)}-byte rows")
            for i in range(messages):
                count = h[2 * i + 1]
                if count < 0 or count > buf.len // <Py_ssize_t>sizeof(CommandRow) - total:
                    raise ValueError(f"add_rows: message {i} has {count} rows, {buf.len // sizeof(CommandRow)} rows "
                                     f"given in all")
                total += count
            if total * <Py_ssize_t>sizeof(CommandRow) != buf.len:
                raise ValueError(f"add_rows: the messages have {total} rows, {buf.len // sizeof(CommandRow)} given")
            rows = <const CommandRow *>buf.buf
            p = self.room(total)
            for i in range(messages):
                count = h[2 * i + 1]
                for j in range(count):
                    rule = row_rule(&rows[first + j])
                    if rule:
                        if refused is None:
                            refused = []
                        refused.append((h[2 * i], j, rule, (first + j) * sizeof(CommandRow)))
                        break
                else:
                    for j in range(count):
                        r = &rows[first + j]
                        p.sid, p.rid = sid, r.rid
                        p.cmd.kind, p.cmd.side, p.cmd.tif, p.cmd.ord_type, p.cmd.stp = r.kind, r.side, r.tif, \
                            r.ord_type, r.stp
                        p.cmd.flags = XOS_CF_ALL_MARKETS if r.kind == XOS_CMD_MASS_CANCEL and r.market == 0 else r.flags
                        p.cmd.venue, p.cmd.market, p.cmd.ts, p.cmd.account = r.venue, r.market, 0, account
                        p.cmd.price, p.cmd.qty, p.cmd.id, p.cmd.aux = r.price, r.qty, r.id, r.expire_at
                        p += 1
                        self.n += 1
                first += count
        finally:
            PyBuffer_Release(&buf)
        return refused

    def enqueue(self, fifo) -> int:
        """Put each command but a Leg record onto its account's FIFO (``fifo``: account -> PendingQueue, a
        defaultdict), oldest first: before the send, as the events can only follow it; the next forward's are
        numbered on from these.  Returns how many commands there are."""
        cdef Py_ssize_t i = 0, j
        cdef PendingQueue q
        self.sent += self.n
        while i < self.n:
            if self.rows[i].sid == LEG_SID:
                i += 1
                continue
            j = i + 1  # a run of one account's rows goes in at once
            while j < self.n and self.rows[j].sid != LEG_SID and self.rows[j].cmd.account == self.rows[i].cmd.account:
                j += 1
            q = fifo[self.rows[i].cmd.account]
            q.push(&self.rows[i], j - i)
            i = j
        return self.n

    def publish(self, CommandRing ring not None) -> int:
        """Copy the commands into ``ring`` (the gateway's end), all or none: 1 published, 0 the ring has no
        room for them all, -1 it is closed (``CommandRing.publish``)."""
        return ring.publish_from(<const char *>&self.rows[0].cmd, self.n, sizeof(Pending))

    def pending(self):
        """The collected rows, a PENDING_DTYPE array of their own (where they must wait, as an array,
        for room in the ring; and for tests)."""
        return np.frombuffer((<char *>self.rows)[:self.n * sizeof(Pending)], PENDING_DTYPE).copy()

    def clear(self) -> None:
        """Empty, for the next forward."""
        self.n = 0


cdef uint64_t LISTING_PARAMS = 0xFFFFFFFFFFFF  # a ListMarket aux's fees and band: AddMarket's aux


cdef inline int64_t listing_assets(const Command *c) noexcept nogil:
    """A ListMarket's assets (base in flags, quote in aux's top 16 bits) as AddMarket packs them."""
    return <int64_t>(((<uint64_t>c.aux >> 48) << 32) | c.flags)


cdef bint echoes(const xos_event *e, const Command *c) noexcept nogil:
    """Is ``e`` the own first event of command ``c`` (it echoes its fields)?  Rejected: the kind
    and the fields as sent; Accepted of a place: the order; of a mass cancel: no order; the user's Cancelled or an
    Amended: the target; venue, outcome, liquidation and margin commands: their echoes."""
    cdef int ek = e.kind, ck = c.kind
    cdef bint same_market = e.market == c.market
    cdef bint same_id = e.client_id == c.id
    cdef bint same_price_venue = e.price == c.price and e.venue == c.venue
    cdef bint same_values = same_id and same_market and same_price_venue and e.qty == c.qty
    cdef int64_t target = e.client_id if c.flags & XOS_CF_BY_CLIENT_ID else e.order_id
    if ek == XOS_EV_REJECTED and e.flags == ck and same_values:  # a Rejected names the command's kind in flags
        return True
    if ck == XOS_CMD_PLACE:
        return (ek == XOS_EV_ACCEPTED and e.order_id > 0 and same_id and same_market and e.side == c.side
                and same_price_venue)
    if ck == XOS_CMD_MASS_CANCEL:
        return ek == XOS_EV_ACCEPTED and e.order_id == 0 and same_market
    if ck == XOS_CMD_CANCEL:
        return ek == XOS_EV_CANCELLED and e.reason == XOS_CANCEL_USER and target == c.id
    if ck == XOS_CMD_AMEND:
        return ek == XOS_EV_AMENDED and target == c.id
    if ck < XOS_CMD_VENUE_PARAMS:
        return False
    if (ek == XOS_EV_VENUE or ek == XOS_EV_ORACLE_CONFIG) and e.flags == ck:  # accepted venue commands, echoed whole
        return same_values and e.side == c.side and e.remaining == c.aux
    if ck == XOS_CMD_MULTI_LEG:  # the first leg's Accepted or the one Rejected: parent id in maker_order, leg in reason
        return e.maker_order == c.id and ((ek == XOS_EV_ACCEPTED and e.reason == 1 and e.maker_account == c.qty)
                                          or (ek == XOS_EV_REJECTED and e.flags == ck and e.reason <= c.qty))
    if ck == XOS_CMD_OUTCOME_CONFIG:
        return (ek == XOS_EV_OUTCOME_STATUS and e.reason == XOS_OS_OPEN and same_market and e.price == c.price
                and e.order_id == c.id and e.maker_order == c.qty and e.client_id == c.aux)
    if ck == XOS_CMD_RESOLVE:  # the members' statuses in configuration order: the first may be another of the event
        return (ek == XOS_EV_OUTCOME_STATUS and e.reason != XOS_OS_OPEN
                and ((same_market and e.qty == c.qty) or e.client_id != 0))
    if ck == XOS_CMD_CONVERT:
        return ek == XOS_EV_OUTCOME_CONVERT and same_market and e.qty == c.qty
    if ck == XOS_CMD_LIQUIDATE:  # its account is the target
        return (ek == XOS_EV_LIQUIDATION and e.account == c.id and e.venue == c.venue and e.market == c.market
                and e.maker_order == c.aux)
    if ck == XOS_CMD_ISOLATED_MARGIN:
        return ek == XOS_EV_POSITION and e.flags == ck and same_market
    if ck == XOS_CMD_VENUE_MARKET_HALT or ck == XOS_CMD_VENUE_MARKET_RESUME:
        return ek == XOS_EV_MARKET_STATUS and e.flags == ck and same_market and e.venue == c.venue
    if ck == XOS_CMD_LIST_MARKET:  # AddMarket's listing echo: the assets and fees in its packing, the sender
        return (is_listing(e) and same_values and e.side == c.side and e.maker_account == c.account
                and e.account == listing_assets(c) and e.remaining == <int64_t>(<uint64_t>c.aux & LISTING_PARAMS))
    return False


def echo_mask(const unsigned char[::1] events, const unsigned char[::1] commands, uint8_t[::1] out) -> None:
    """``out[i]``: whether event i echoes command i (``echoes``; EVENT_DTYPE and COMMAND_DTYPE records
    as bytes, as many of each)."""
    cdef const xos_event *ev
    cdef Py_ssize_t count = event_records(events, &ev), i
    cdef const Command *cmd = <const Command *>&commands[0] if commands.shape[0] else NULL
    if commands.shape[0] != count * <Py_ssize_t>sizeof(Command) or out.shape[0] < count:
        raise ValueError(f"echo_mask: {count} events, {commands.shape[0]} bytes of commands, room for "
                         f"{out.shape[0]}")
    for i in range(count):
        out[i] = echoes(&ev[i], &cmd[i])


cdef int int64s_layout(object array) except -1:
    cdef const int64_t[::1] view = array
    return 0


cdef RecordLayout INT64S = record_layout("int64 values", int64s_layout)


cdef bint is_keyed(const int64_t *keyed, Py_ssize_t n, int64_t account) noexcept nogil:
    """``account`` in ``keyed[:n]`` (sorted, unique), by binary search."""
    cdef int64_t at = xos_lower_bound(keyed, n, account) if n else 0
    return at < n and keyed[at] == account


cdef Py_ssize_t follow(OrderRow *table, Py_ssize_t n, const xos_event *e, int64_t *fill) noexcept nogil:
    """Apply ``e`` to the table ``table[:n]`` (sorted by order id; room for one more row); returns its new
    length.  An Accepted of an order adds its row; a Fill, Cancelled or Amended updates the rows it
    names that the table has.  A Fill's ``fill``: the taker's client id, the maker's (0: an order the
    table does not have) and the maker's open size after it (-1: a maker the table does not have)."""
    cdef Py_ssize_t t, mk, at
    cdef OrderRow *r
    cdef int64_t left
    if e.kind == XOS_EV_ACCEPTED:
        if e.order_id <= 0 or e.flags != 0:
            return n  # a mass cancel's or a listing's acceptance: no order
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
        return n + 1
    if e.kind == XOS_EV_FILL:
        t = find_row(table, n, e.order_id)
        mk = find_row(table, n, e.maker_order)
        left = 0 if e.flags & XOS_EF_MAKER_DONE else (table[mk].remaining - e.qty if mk >= 0 else -1)
        fill[0] = table[t].client_id if t >= 0 else 0
        fill[1] = table[mk].client_id if mk >= 0 else 0
        fill[2] = left
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
    elif e.kind == XOS_EV_CANCELLED or e.kind == XOS_EV_AMENDED:
        t = find_row(table, n, e.order_id)
        if t < 0:
            return n
        r = &table[t]
        r.remaining = e.remaining
        if e.kind == XOS_EV_AMENDED:
            r.price = e.price
            r.qty = r.filled + e.remaining
        elif e.remaining != 0:
            r.qty -= e.qty  # a decrement (STP) shrinks the order; a full cancel keeps its size
        else:
            r.status, r.closed_seq = CANCELLED, e.seq
    return n


cdef Py_ssize_t report(const xos_event *e, const int64_t *fill, ReportRow *out, int64_t *to) noexcept nogil:
    """The execution reports of ``e`` into ``out`` (room for two), each written whole (the fields a
    kind does not use are 0): a Fill makes the taker's row then the maker's (client ids and the
    maker's open size from ``fill``, as ``follow`` made it), a Cancelled or an Amended one row.
    ``to[i]``: the account row i goes to.  Returns how many rows."""
    cdef ReportRow *r = out
    if e.kind != XOS_EV_FILL and e.kind != XOS_EV_CANCELLED and e.kind != XOS_EV_AMENDED:
        return 0
    memset(r, 0, sizeof(ReportRow))
    r.side, r.market, r.venue, r.order_id, r.client_id = e.side, e.market, e.venue, e.order_id, e.client_id
    r.price, r.qty, r.remaining, r.seq, r.cmd_seq, r.ts = e.price, e.qty, e.remaining, e.seq, e.cmd_seq, e.ts
    to[0] = e.account
    if e.kind != XOS_EV_FILL:
        r.kind = REPORT_CANCEL if e.kind == XOS_EV_CANCELLED else REPORT_AMEND
        if e.kind == XOS_EV_CANCELLED:
            r.reason, r.code = e.reason, e.code
        return 1
    r.kind, r.liquidity, r.fee, r.client_id = REPORT_FILL, TAKER, e.taker_fee, fill[0]
    out[1] = r[0]
    r = &out[1]
    r.order_id, r.venue = e.maker_order, e.client_id  # a fill's client_id is the maker's venue
    r.client_id, r.side, r.remaining = fill[1], 1 - e.side, fill[2]
    r.fee, r.liquidity = e.maker_fee, MAKER
    to[1] = e.maker_account
    return 2


cdef void add_run(dict plan, session, int k, Py_ssize_t start, Py_ssize_t end) except *:
    """Rows ``start .. end - 1`` of kind ``k`` (0 acks, 1 reports) to ``session`` in ``plan`` (``send_rows``)."""
    runs = plan.get(session)
    if runs is None:
        runs = plan[session] = [[], []]
    cdef list mine = runs[k]
    cdef Py_ssize_t last = len(mine) - 1
    if last > 0 and mine[last] == start:
        mine[last] = end
    else:
        mine += (start, end)


cdef inline Py_ssize_t rows_reply_size(Py_ssize_t tag_len, Py_ssize_t n) noexcept nogil:
    """The MessagePack size of a rows reply: [tag, bin of ``n`` bytes, format]."""
    return 1 + 1 + tag_len + (2 if n < 0x100 else 3 if n < 0x10000 else 5) + n + 1


cdef inline char *put_head(char *at, int fields, const char *tag, Py_ssize_t tag_len) noexcept nogil:
    """An array-like struct's head as msgspec writes it: a fixarray of ``fields``, the tag as a fixstr."""
    at[0] = <char>(0x90 | fields)
    at[1] = <char>(0xa0 | tag_len)
    memcpy(at + 2, tag, tag_len)
    return at + 2 + tag_len


cdef inline char *put_bin_head(char *at, Py_ssize_t n) noexcept nogil:
    """A MessagePack bin's head (bin 8, 16 or 32: big-endian lengths)."""
    cdef int k, width = 1 if n < 0x100 else 2 if n < 0x10000 else 4
    at[0] = <char>(0xc4 if width == 1 else 0xc5 if width == 2 else 0xc6)
    for k in range(width):
        at[1 + k] = <char>((n >> (8 * (width - 1 - k))) & 0xff)
    return at + 1 + width


cdef class ReplyRouter:
    """The gateway's reply side over a batch of ring events, in one pass in event order (``route``):
    which events concern the accounts with keys, the order table following them, which command each
    answers (its own first event) and how (an ack, a reject, or the commands before it lost), and the
    execution reports.  Its acks and reports are kept in arrays it grows, valid until the next
    ``route``."""

    def __init__(self, const uint8_t[::1] routed, const uint8_t[::1] own_first, fifo, bint journaling):
        """``routed`` and ``own_first``: kind masks (``kind_mask``); ``fifo``: account -> PendingQueue
        (``ForwardBatch.enqueue`` fills it); ``journaling``: an ack needs its command durable."""
        from gateway.messages import ACK_PACKING, ACK_ROW_DTYPE, REPORT_PACKING, REPORT_ROW_DTYPE

        if routed.shape[0] > KIND_MASK_SIZE or own_first.shape[0] > KIND_MASK_SIZE:
            raise ValueError(f"ReplyRouter: kind masks of {routed.shape[0]} and {own_first.shape[0]} kinds, "
                             f"at most {KIND_MASK_SIZE}")
        memset(self.routed, 0, KIND_MASK_SIZE)
        memset(self.own_first, 0, KIND_MASK_SIZE)
        if routed.shape[0]:
            memcpy(self.routed, &routed[0], routed.shape[0])
        if own_first.shape[0]:
            memcpy(self.own_first, &own_first[0], own_first.shape[0])
        self.fifo, self.journaling, self.claimed = fifo, journaling, 0
        self.ack_dtype, self.report_dtype = ACK_ROW_DTYPE, REPORT_ROW_DTYPE
        self.ack_packing, self.report_packing = ACK_PACKING, REPORT_PACKING
        self.packed = [bytearray(), bytearray()]
        self.keyed = np.zeros(0, np.int64)
        self.rejects, self.lost = [], []
        self.make_room(64)
        self.out = bytearray(4096)

    cdef make_room(self, Py_ssize_t events):
        """Output arrays for a batch of ``events``: an ack each at most, two reports (a fill)."""
        self.acks, self.ack_sid = np.empty(events, self.ack_dtype), np.empty(events, np.int64)
        self.reports, self.report_to = np.empty(2 * events, self.report_dtype), np.empty(2 * events, np.int64)

    def set_keyed(self, keyed) -> None:
        """The accounts with keys: a sorted int64 array of unique accounts."""
        cdef Py_ssize_t n, i
        cdef const int64_t *k = <const int64_t *>INT64S.records(keyed, &n, False)
        for i in range(1, n):
            if k[i] <= k[i - 1]:
                raise ValueError("ReplyRouter.set_keyed: the accounts must be sorted and unique")
        self.keyed = keyed.copy()  # read at every route: not the caller's to change

    def route(self, const unsigned char[::1] events, int64_t after, int64_t quiet_until, table) -> tuple:
        """Route ``events`` (EVENT_DTYPE records as bytes, in seq order) after seq ``after`` (earlier ones:
        a restarted matcher republishing what was routed).  The events of the kinds ``routed`` marks that
        concern an account with a key (its account; a fill's maker account; a listing's sender,
        ``maker_account``; a Liquidation's, ``client_id``) update ``table`` (an ``OrderTable``: its rows,
        sorted by order id, and ``n``).  Those after ``quiet_until`` (a restarted gateway rereads what its
        predecessor answered) also make execution reports (``report``), and each command's own first event
        answers it (``answer``): an Accepted, Rejected, Cancelled by the user, Amended, a venue's or an
        outcome market's echo, a Liquidation, an IsolatedMargin's Position; never another cancel (an expiry
        rides on whichever command came next, a resolution's cancels come before its OutcomeStatus).
        Returns (acks, reports, listings): how many rows of ``acks`` / ``ack_sid`` and of ``reports`` /
        ``report_to`` it made, and how many of the events list an asset or a market, whoever sent them."""
        cdef const xos_event *ev
        cdef const xos_event *e
        cdef Py_ssize_t count = event_records(events, &ev), i, n_keyed, room, n, room_out
        cdef Py_ssize_t orders = 0, n_acks = 0, n_reports = 0, listings = 0
        cdef const int64_t *keyed = <const int64_t *>INT64S.records(self.keyed, &n_keyed, False)
        cdef OrderRow *rows
        cdef int64_t fill[3]
        cdef int64_t sender, account = 0
        cdef PendingQueue q = None
        cdef bint looked = False
        del self.rejects[:]
        del self.lost[:]
        for i in range(count):  # room for every order that may be accepted (a bound: whoever's)
            orders += ev[i].kind == XOS_EV_ACCEPTED and ev[i].order_id > 0 and ev[i].flags == 0
        if table.n + orders > len(table.rows):
            table.reserve(orders)  # compacts, or grows
        n = table.n
        rows = <OrderRow *>ORDER_ROWS.records(table.rows, &room, True)
        if not 0 <= n <= room - orders:
            raise ValueError(f"ReplyRouter.route: a table of {n} rows in {room}, {orders} orders to add")
        if len(self.ack_sid) < count:
            self.make_room(max(count, 2 * len(self.ack_sid)))
        cdef AckRow *acks = <AckRow *>ACK_ROWS.records(self.acks, &room_out, True)
        cdef int64_t *ack_sid = <int64_t *>INT64S.records(self.ack_sid, &room_out, True)
        cdef ReportRow *reports = <ReportRow *>REPORT_ROWS.records(self.reports, &room_out, True)
        cdef int64_t *report_to = <int64_t *>INT64S.records(self.report_to, &room_out, True)
        try:
            for i in range(count):
                e = &ev[i]
                if e.seq <= after:
                    continue
                listings += e.kind == XOS_EV_ACCEPTED and \
                    (e.flags & (XOS_EF_ASSET_LISTING | XOS_EF_MARKET_LISTING)) != 0
                if e.kind >= KIND_MASK_SIZE or not self.routed[e.kind] or not (
                        is_keyed(keyed, n_keyed, e.account)
                        or ((e.kind == XOS_EV_FILL or is_listing(e)) and is_keyed(keyed, n_keyed, e.maker_account))
                        or (e.kind == XOS_EV_LIQUIDATION and is_keyed(keyed, n_keyed, e.client_id))):
                    continue
                n = follow(rows, n, e, fill)
                if e.seq <= quiet_until:
                    continue
                # its command's own first event (a Cancelled only the user's, a Position only an IsolatedMargin's)
                if self.own_first[e.kind] and e.cmd_seq != self.claimed and \
                        not (e.kind == XOS_EV_CANCELLED and e.reason != XOS_CANCEL_USER) and \
                        not (e.kind == XOS_EV_POSITION and e.flags != XOS_CMD_ISOLATED_MARGIN):
                    self.claimed = e.cmd_seq
                    sender = e.client_id if e.kind == XOS_EV_LIQUIDATION else \
                        e.maker_account if is_listing(e) else e.account
                    if not looked or sender != account:
                        account, looked = sender, True
                        q = self.fifo.get(account)
                    if q is not None and q.head != q.tail:
                        n_acks += self.answer(e, q, &acks[n_acks], &ack_sid[n_acks])
                n_reports += report(e, fill, &reports[n_reports], &report_to[n_reports])
        finally:
            table.n = n
        return n_acks, n_reports, listings

    cdef Py_ssize_t answer(self, const xos_event *e, PendingQueue q, AckRow *a, int64_t *sid) except -1:
        """Pair the answering event ``e`` with the command it echoes in its sender's FIFO ``q``: the head
        when it echoes; else the command it echoes deeper (within LOST_SCAN), and those before it were
        sent earlier on the same connection yet never executed: lost, one ``(sid, rid, kind, id, account)`` each
        in ``lost``.  An event that echoes none is a command another producer sent for the account.  A
        Rejected makes ``(sid, rid, kind, id, code, client_id, cmd_seq, leg)`` in ``rejects``; any other
        answer the ack ``a`` (its session in ``sid``), but for the gateway's own commands (sid < 0).
        Returns how many acks (0 or 1).  Raises when journaling and the command is not durable yet: an
        ack must never promise more."""
        cdef Py_ssize_t depth = min(<Py_ssize_t>LOST_SCAN, q.tail - q.head), d = 0, i
        cdef const Pending *p
        cdef int64_t last
        while d < depth and not echoes(e, &q.rows[q.head + d].cmd):
            d += 1
        if d == depth:
            return 0
        for i in range(q.head, q.head + d):
            p = &q.rows[i]
            self.lost.append((p.sid, p.rid, p.cmd.kind, p.cmd.id, p.cmd.account))
        p = &q.rows[q.head + d]
        q.head += d + 1
        if q.head == q.tail:
            q.head = q.tail = 0  # the row stays where p points until the next push
        if e.kind == XOS_EV_REJECTED:
            self.rejects.append((p.sid, p.rid, p.cmd.kind, p.cmd.id, e.code, e.client_id, e.cmd_seq, e.reason))
            return 0
        last = e.cmd_seq + (p.cmd.qty if p.cmd.kind == XOS_CMD_MULTI_LEG else 0)  # durable with its last Leg
        if self.journaling and e.durable_seq < last:
            raise RuntimeError(f"event {e.seq} of command {e.cmd_seq} published with durable_seq {e.durable_seq}: "
                               f"not acknowledging a command that is not durable")
        if p.sid < 0:
            return 0  # the gateway's own dead-man mass cancel
        sid[0] = p.sid
        a.rid, a.order_id, a.client_id = p.rid, e.order_id, e.client_id
        a.cmd_seq, a.durable_seq, a.ts = e.cmd_seq, e.durable_seq, e.ts
        a.count = e.qty if p.cmd.kind == XOS_CMD_MASS_CANCEL else 0
        if p.cmd.kind == XOS_CMD_MULTI_LEG:
            a.client_id = p.cmd.id  # the first leg's order id (the legs' are consecutive) and the parent id
        elif p.cmd.kind >= XOS_CMD_VENUE_PARAMS:
            a.order_id = a.client_id = 0  # another echo's order_id and client_id are other fields
        return 1

    def send_rows(self, uintptr_t socket, Py_ssize_t n_acks, Py_ssize_t n_reports, dict by_sid, by_account):
        """Send the last ``route``'s first ``n_acks`` acks and ``n_reports`` execution reports straight to their
        sessions (``gateway.server.Session``) on a ROUTER socket (its ``underlying`` handle), one message each:
        its AckRows, its ReportRows, or the two in a Replies, in the session's ``row_format`` (fixed or packed
        rows), the bytes ``gateway.messages.encode`` makes of them.  That is what the gateway's outbox sends for
        sessions that take rows, without the structs, the outbox and numpy around each batch.  An ack goes to its
        command's session (``by_sid``), a report to every session of its account (``by_account``), each
        session's rows in event order; rows without a session are left out.  When a session that would get rows
        takes structs (``row_format`` 0), nothing is sent and this returns None.  Else (replies, reports,
        dropped, gone): the replies sent (an AckRows and a ReportRows count one each), the report rows that had
        a session, the messages a full queue refused, and the sessions whose peer is gone (ROUTER_MANDATORY)."""
        cdef Py_ssize_t room, i, j, k, reports = 0, replies = 0, dropped = 0, size
        cdef Py_ssize_t n_rows[2]
        cdef const int64_t *ack_sid = <const int64_t *>INT64S.records(self.ack_sid, &room, False)
        if not 0 <= n_acks <= room:
            raise ValueError(f"ReplyRouter.send_rows: {n_acks} acks of {room}")
        cdef const int64_t *report_to = <const int64_t *>INT64S.records(self.report_to, &room, False)
        if not 0 <= n_reports <= room:
            raise ValueError(f"ReplyRouter.send_rows: {n_reports} reports of {room}")
        cdef const char *rows[2]
        rows[0] = <const char *>ACK_ROWS.records(self.acks, &room, False)
        rows[1] = <const char *>REPORT_ROWS.records(self.reports, &room, False)
        cdef Py_ssize_t row_size[2]
        row_size[0], row_size[1] = sizeof(AckRow), sizeof(ReportRow)
        cdef const int64_t *keys[2]  # an ack's session, a report's account
        cdef Py_ssize_t count[2]
        keys[0], keys[1], count[0], count[1] = ack_sid, report_to, n_acks, n_reports
        plan = {}  # session -> [its ack runs, its report runs]: flat lists of start, end
        # each run of rows with one session (one account) is looked up once: a batch is mostly one run
        for k in range(2):
            i = 0
            while i < count[k]:
                j = i + 1
                while j < count[k] and keys[k][j] == keys[k][i]:
                    j += 1
                if k == 0:
                    s = by_sid.get(keys[k][i])
                    group = () if s is None else (s,)
                else:
                    group = by_account.get(keys[k][i]) or ()
                    reports += j - i if group else 0
                for s in group:
                    if not s.row_format:
                        return None
                    if s.row_format != FIXED_ROWS and s.row_format != PACKED_ROWS:  # checked before any send
                        raise ValueError(f"ReplyRouter.send_rows: a session's row_format {s.row_format}")
                    add_run(plan, s, k, i, j)
                i = j
        gone = []
        cdef char *at
        cdef int err
        cdef int64_t row_format
        cdef Py_ssize_t n_bytes[2]
        cdef uint64_t last[XOS_PACK_MAX_FIELDS]
        cdef RowPacking packing
        for s, runs in plan.items():
            row_format = s.row_format
            for k in range(2):
                n_rows[k] = 0
                for i in range(0, len(runs[k]), 2):
                    n_rows[k] += <Py_ssize_t>runs[k][i + 1] - <Py_ssize_t>runs[k][i]
                n_bytes[k] = n_rows[k] * row_size[k]
                if row_format == PACKED_ROWS and n_rows[k]:  # packed first: the bin's head needs their size
                    packing = self.ack_packing if k == 0 else self.report_packing
                    if PyByteArray_GET_SIZE(self.packed[k]) < n_rows[k] * <Py_ssize_t>xos_pack_row_max(&packing.layout):
                        PyByteArray_Resize(self.packed[k], n_rows[k] * xos_pack_row_max(&packing.layout))
                    memset(last, 0, sizeof(last))
                    n_bytes[k] = 0
                    for i in range(0, len(runs[k]), 2):
                        j = runs[k][i]
                        n_bytes[k] += xos_pack_rows(&packing.layout, <const unsigned char *>rows[k] + j * row_size[k],
                                                    <Py_ssize_t>runs[k][i + 1] - j,
                                                    <unsigned char *>PyByteArray_AS_STRING(self.packed[k]) + n_bytes[k],
                                                    last)
            size = rows_reply_size(4, n_bytes[0]) if n_rows[0] else 0
            size += rows_reply_size(7, n_bytes[1]) if n_rows[1] else 0
            if n_rows[0] and n_rows[1]:
                size += 1 + 8 + 1  # Replies: [tag, [acks, reports]]
            if PyByteArray_GET_SIZE(self.out) < size:
                PyByteArray_Resize(self.out, size)
            at = PyByteArray_AS_STRING(self.out)
            if n_rows[0] and n_rows[1]:
                at = put_head(at, 2, b"replies", 7)
                at[0] = <char>0x92
                at += 1
            for k in range(2):
                if n_rows[k]:
                    at = put_head(at, 3, b"acks" if k == 0 else b"reports", 4 if k == 0 else 7)
                    at = put_bin_head(at, n_bytes[k])
                    if row_format == PACKED_ROWS:
                        memcpy(at, PyByteArray_AS_STRING(self.packed[k]), n_bytes[k])
                        at += n_bytes[k]
                    else:
                        for i in range(0, len(runs[k]), 2):
                            j = runs[k][i]
                            size = (<Py_ssize_t>runs[k][i + 1] - j) * row_size[k]
                            memcpy(at, rows[k] + j * row_size[k], size)
                            at += size
                    at[0] = <char>row_format  # a positive fixint
                    at += 1
            routing_id = s.routing_id
            if type(routing_id) is not bytes:
                raise TypeError(f"ReplyRouter.send_rows: a routing_id of {type(routing_id).__name__}, not bytes")
            err = send_two(<void *>socket, PyBytes_AS_STRING(routing_id), PyBytes_GET_SIZE(routing_id),
                           PyByteArray_AS_STRING(self.out), at - PyByteArray_AS_STRING(self.out))
            if err == EAGAIN:
                dropped += 1  # the client does not read: its queue is full
            elif err == EHOSTUNREACH:
                gone.append(s)
            else:
                replies += (n_rows[0] > 0) + (n_rows[1] > 0)
        return replies, reports, dropped, gone

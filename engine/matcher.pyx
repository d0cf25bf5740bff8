# cython: language_level=3
"""The single-threaded matcher: validate -> risk -> match -> emit, all in C.

Everything below ``process`` runs ``noexcept nogil`` on C structs; Python
objects appear only in the batch entry points and the query methods.  The
semantics are specified in docs/ARCHITECTURE.md and mirrored line by line
by ``engine.reference.ReferenceEngine``; the test suite runs both.
"""
cimport cython
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, realloc, free, abort
from libc.string cimport memset, memcpy, memmove
from libc.stdio cimport fprintf, stderr
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

import numpy as np
cimport numpy as cnp

from records cimport *
from codes cimport *
from hashmap cimport xos_hmap, xos_hmap_init, xos_hmap_free, xos_hmap_get, xos_hmap_put, xos_hmap_del, xos_hmap_fit
from intmath cimport (XOS_MAX_MONEY, xos_fee, xos_buy_hold, xos_mul_capped, xos_mul_div, xos_outside_band,
                     xos_ratio_cmp, xos_bankruptcy_price, xos_sum_exceeds, XOS_RATE_SCALE, xos_premium,
                     xos_funding_amount)
from engine.ring cimport EventRing

from .api import CommandAPI
from .records import COMMAND_DTYPE, EVENT_DTYPE, LAYOUT_VERSION, unpack_symbol
from .views import (AssetView, CollateralAssetView, FundingView, MarginTiersView, MarketRiskView, MarketView, OracleView, OrderView, OutcomeEventView, OutcomeView, PositionView,
                    VenueCollateralView, VenueFeesView, VenueMarketRiskView, VenueParamsView, VenueView)

cnp.import_array()

DEF BID = 0
DEF ASK = 1
DEF NONE = -1
DEF MAX_LEVERAGE = 100  # MarketRisk bounds (reference.MAX_LEVERAGE); 1 until set
DEF DEFAULT_MAINTENANCE_BPS = 5000  # reference.DEFAULT_MAINTENANCE_BPS
DEF DEFAULT_IMPACT_LOTS = 1  # reference.DEFAULT_IMPACT_LOTS
DEF DEFAULT_FUNDING_INTERVAL = 3600000000000  # reference.DEFAULT_FUNDING_INTERVAL (1 h)
DEF DEFAULT_SAMPLE_INTERVAL = 60000000000  # reference.DEFAULT_SAMPLE_INTERVAL (1 min)
DEF DEFAULT_FUNDING_CAP = 1000000  # reference.DEFAULT_FUNDING_CAP (1 %)
DEF INDEX_KEYS = 1024  # the order and client-id indexes' starting room, and the least they shrink to
DEF TOUCHED_KEYS = 64  # the same for the batch's touched levels (a big batch may touch thousands)
DEF EVENTS_KEPT = 65536  # events the batch buffer keeps room for whatever batches make (8 MiB)
DEF BALANCE_BLOCK = 8  # balance entries kept together per account; more are found by hash
DEF MAX_LEGS = 4  # legs of a multi-leg order (reference.MAX_LEGS, api.MAX_LEGS)
DEF ALL_POOLS = 0xFFFFFFFFFFFFFFFF
DEF WITHDRAW_WEIGHTS = -1  # reference.WITHDRAW_WEIGHTS: a Withdraw's unified check, at its risk groups' lowest weights

cdef extern from *:
    ctypedef long long int128_t "__int128"  # exact unified sums (reference: Python ints)


cdef inline int64_t clamp64(int128_t x) noexcept nogil:
    """An exact amount as an int64 event field (reference ``_clamp64``)."""
    if x > <int128_t>INT64_MAX:
        return INT64_MAX
    if x < -<int128_t>INT64_MAX - 1:
        return -INT64_MAX - 1
    return <int64_t>x


cdef inline void die(const char *what) noexcept nogil:
    # Out of memory inside a command would leave it half applied; the journal
    # (not the heap) is the durable state, so the process stops here.
    fprintf(stderr, b"xos matcher: out of memory (%s)\n", what)
    abort()


cdef inline void *grow(void *ptr, int64_t *cap, int64_t need, size_t item, const char *what) noexcept nogil:
    cdef int64_t n = cap[0] if cap[0] > 0 else 16
    while n < need:
        n *= 2
    cdef void *p = realloc(ptr, <size_t>n * item)
    if p == NULL:
        die(what)
    cap[0] = n
    return p


cdef inline Balance *grow_balances(Balance *bals, int64_t *cap, int64_t need) noexcept nogil:
    # Orders keep balance indexes in 32 bits: 2^31 entries (64 GiB of them) is far past any
    # machine this runs on, but never wrap silently.
    if need > 0x7FFFFFFF:
        die(b"balance table past 2^31 entries")
    return <Balance *>grow(bals, cap, need, sizeof(Balance), b"balances")


cdef inline int64_t stale_deadline(const Oracle *o) noexcept nogil:
    """When the oracle goes stale without a newer price (saturating at the end of time)."""
    return INT64_MAX if o.timeout > INT64_MAX - o.updated_at else o.updated_at + o.timeout


cdef inline int64_t order_hold_per_lot(Market *m, int64_t price, int32_t taker_bps) noexcept nogil:
    """An order's hold per lot: price + its worst-case taker fee; a perpetual order's ceil(price / max
    leverage) + that fee (saturated like ``xos_buy_hold``)."""
    if m.max_leverage <= 1:
        return xos_buy_hold(1, price, taker_bps)
    return price // m.max_leverage + (price % m.max_leverage != 0) + xos_fee(price, taker_bps if taker_bps > 0 else 0)


cdef inline int64_t initial_margin(const Market *m, int64_t value) noexcept nogil:
    """The tiered initial margin of a position of notional ``value`` (reference ``_initial_margin``): each bracket's
    part over its leverage, rounded up per bracket; a bracket's leverage is at most the ones below it."""
    cdef int64_t margin = 0, floor = 0, part
    cdef int32_t leverage = m.max_leverage, k
    for k in range(m.n_tiers):
        if value <= m.tier_floor[k]:
            break
        part = m.tier_floor[k] - floor
        margin += part // leverage + (part % leverage != 0)
        floor = m.tier_floor[k]
        if m.tier_leverage[k] < leverage:
            leverage = m.tier_leverage[k]
    part = value - floor
    return margin + part // leverage + (part % leverage != 0)


cdef inline bint book_has_orders(BookSide *bs) noexcept nogil:
    return bs.n > 0  # its best level (levels[n - 1]) is never empty


cdef inline bint crosses(uint8_t side, int64_t price, int64_t best) noexcept nogil:
    """Would an order on ``side`` at ``price`` trade with a resting price ``best``?"""
    if side == BID:
        return best <= price
    return best >= price


cdef inline int32_t level_search(BookSide *bs, uint8_t side, int64_t price, bint *found) noexcept nogil:
    """Index of the level at ``price``, or the insertion index when absent.

    Levels are sorted ascending by ``sign * price`` (bids +, asks -) so that the
    best price is at the end on both sides.
    """
    cdef int32_t n = bs.n, base = 0, half
    cdef int64_t sign = 1 - 2 * <int64_t>side
    cdef int64_t key = sign * price, k
    if n == 0:
        found[0] = False
        return 0
    # Most activity is at the top of the book: check the best level first.
    if bs.levels[n - 1].price == price:
        found[0] = True
        return n - 1
    while n > 1:  # branch-free lower bound: the compiler turns the step into a cmov
        half = n >> 1
        base = base + half if sign * bs.levels[base + half].price <= key else base
        n -= half
    k = sign * bs.levels[base].price
    found[0] = k == key
    return base if k >= key else base + 1


cdef void sort_slots_by_id(int32_t *slots, int64_t *ids, int64_t n) noexcept nogil:
    """Heap sort of ``slots`` by ``ids`` (ids are unique): no allocation, no recursion."""
    cdef int64_t start, end, root, child, t64
    cdef int32_t t32
    start = n // 2 - 1
    end = n
    while end > 1:
        if start >= 0:
            root = start
            start -= 1
        else:
            end -= 1
            t64 = ids[0]; ids[0] = ids[end]; ids[end] = t64
            t32 = slots[0]; slots[0] = slots[end]; slots[end] = t32
            root = 0
        while True:
            child = 2 * root + 1
            if child >= end:
                break
            if child + 1 < end and ids[child + 1] > ids[child]:
                child += 1
            if ids[root] >= ids[child]:
                break
            t64 = ids[root]; ids[root] = ids[child]; ids[child] = t64
            t32 = slots[root]; slots[root] = slots[child]; slots[child] = t32
            root = child


cdef inline bint adl_before(const AdlEntry *a, const AdlEntry *b) noexcept nogil:
    """ADL order: profit per margin descending, then account, then market (reference ``_adl_ranking``)."""
    cdef int r = xos_ratio_cmp(a.profit, a.margin, b.profit, b.margin)
    if r:
        return r > 0
    if a.account != b.account:
        return a.account < b.account
    return a.market < b.market


cdef void adl_sift(AdlEntry *e, int64_t root, int64_t end) noexcept nogil:
    cdef int64_t child
    cdef AdlEntry t
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and adl_before(&e[child], &e[child + 1]):
            child += 1
        if not adl_before(&e[root], &e[child]):
            return
        t = e[root]
        e[root] = e[child]
        e[child] = t
        root = child


cdef void sort_adl(AdlEntry *e, int64_t n) noexcept nogil:
    """Heap sort into ADL order (keys are unique: no allocation, no recursion)."""
    cdef int64_t i = n // 2 - 1
    cdef AdlEntry t
    while i >= 0:
        adl_sift(e, i, n)
        i -= 1
    i = n - 1
    while i > 0:
        t = e[0]
        e[0] = e[i]
        e[i] = t
        adl_sift(e, 0, i)
        i -= 1


cdef void compact(BookSide *bs) noexcept nogil:
    """Drop the tombstone levels (amortised: runs once they are half the side)."""
    cdef int32_t i, kept = 0
    for i in range(bs.n):
        if bs.levels[i].count:
            if kept != i:
                bs.levels[kept] = bs.levels[i]
            kept += 1
    bs.n = kept
    bs.empty = 0


cdef inline bint venue_gates(VenueRisk *r) noexcept nogil:
    """Does this row stop or bound any order (so the place path must look it up)?"""
    return r.band_bps > 0 or r.oi_cap > 0 or r.halted


cdef class Matcher:
    """The C state machine; ``Engine`` adds the command builders."""

    def __cinit__(self, int64_t max_orders=1 << 20, int64_t max_accounts=1 << 20,
                  int32_t max_markets=4096, int32_t max_assets=1024, int32_t max_venues=1024):
        if max_orders < 1 or max_orders > (1 << 30):
            raise ValueError("max_orders must be in 1..2**30")
        if max_accounts < 1 or max_accounts > (1 << 30):
            raise ValueError("max_accounts must be in 1..2**30")
        if max_markets < 1 or max_assets < 1:
            raise ValueError("max_markets and max_assets must be positive")
        if max_venues < 1 or max_venues > (1 << 16):
            raise ValueError("max_venues must be in 1..2**16")
        cdef int64_t i
        self.max_venues = max_venues
        self.offer_words = (max_markets >> 6) + 1
        self.venue_table = <Venue *>calloc(max_venues, sizeof(Venue))
        self.offers = <uint64_t *>calloc(<size_t>(max_venues * self.offer_words), sizeof(uint64_t))
        if (self.venue_table == NULL or self.offers == NULL or xos_hmap_init(&self.allow_index, 64)
                or xos_hmap_init(&self.fee_index, 64) or xos_hmap_init(&self.volume_index, 64)
                or xos_hmap_init(&self.oracle_index, 64) or xos_hmap_init(&self.position_index, 64)
                or xos_hmap_init(&self.outcome_event_index, 64) or xos_hmap_init(&self.venue_risk_index, 64)
                or xos_hmap_init(&self.cap_index, 64) or xos_hmap_init(&self.venue_coll_index, 64)):
            raise MemoryError()
        # venue 0: the protocol's permissionless venue, live from the start, changed only by the admin
        self.venue_table[0].exists = True
        self.venue_table[0].accepts = ALL_POOLS
        self.set_status(&self.venue_table[0], XOS_VSTATUS_LIVE)
        self.next_release = INT64_MAX
        self.next_stale_at = INT64_MAX
        self.next_finalize_at = INT64_MAX
        self.next_sample_at = INT64_MAX
        self.max_orders = max_orders
        self.max_accounts = max_accounts
        self.max_markets = max_markets
        self.max_assets = max_assets
        self.market_table = <Market *>calloc(max_markets + 1, sizeof(Market))
        self.outcome_table = <OutcomeMarket *>calloc(max_markets + 1, sizeof(OutcomeMarket))
        self.outcome_order = <uint32_t *>calloc(max_markets + 1, sizeof(uint32_t))
        self.asset_table = <Asset *>calloc(max_assets + 1, sizeof(Asset))
        self.fee_pool = <int64_t *>calloc(max_assets + 1, sizeof(int64_t))
        self.orders = <Order *>calloc(max_orders, sizeof(Order))
        self.accts = <Account *>calloc(max_accounts, sizeof(Account))
        self.coll_market = <uint32_t *>calloc(max_assets + 1, sizeof(uint32_t))
        self.coll_bound = <int32_t *>calloc(max_assets + 1, sizeof(int32_t))
        self.coll_eq = <int64_t *>calloc(max_assets + 1, sizeof(int64_t))
        self.coll_req = <int64_t *>calloc(max_assets + 1, sizeof(int64_t))
        self.coll_seen = <int64_t *>calloc(max_assets + 1, sizeof(int64_t))
        self.coll_list = <uint32_t *>calloc(max_assets + 1, sizeof(uint32_t))
        if (self.coll_market == NULL or self.coll_bound == NULL or self.coll_eq == NULL or self.coll_req == NULL
                or self.coll_seen == NULL or self.coll_list == NULL):
            raise MemoryError()
        for i in range(max_assets + 1):
            self.coll_bound[i] = -1
        if (self.market_table == NULL or self.outcome_table == NULL or self.outcome_order == NULL
                or self.asset_table == NULL or self.fee_pool == NULL
                or self.orders == NULL or self.accts == NULL):
            raise MemoryError()
        for i in range(max_orders):
            self.orders[i].next = <int32_t>(i + 1) if i + 1 < max_orders else NONE
        self.free_slot = 0
        if (xos_hmap_init(&self.order_index, INDEX_KEYS) or xos_hmap_init(&self.client_index, INDEX_KEYS)
                or xos_hmap_init(&self.account_index, 1024) or xos_hmap_init(&self.balance_index, 1024)
                or xos_hmap_init(&self.touched_index, TOUCHED_KEYS)):
            raise MemoryError()

    def __dealloc__(self):
        cdef int32_t m
        if self.market_table != NULL:
            for m in range(self.max_markets + 1):
                free(self.market_table[m].sides[0].levels)
                free(self.market_table[m].sides[1].levels)
        free(self.market_table)
        free(self.asset_table)
        free(self.fee_pool)
        free(self.orders)
        free(self.accts)
        free(self.bals)
        free(self.heap)
        free(self.touched)
        free(self.events)
        free(self.venue_table)
        free(self.offers)
        xos_hmap_free(&self.allow_index)
        xos_hmap_free(&self.fee_index)
        xos_hmap_free(&self.volume_index)
        free(self.venue_pool)
        free(self.volume_rows)
        xos_hmap_free(&self.oracle_index)
        free(self.oracle_rows)
        xos_hmap_free(&self.position_index)
        xos_hmap_free(&self.cap_index)
        xos_hmap_free(&self.venue_coll_index)
        free(self.coll_market)
        free(self.coll_bound)
        free(self.coll_eq)
        free(self.coll_req)
        free(self.coll_seen)
        free(self.coll_list)
        free(self.position_rows)
        free(self.dirty_marks)
        free(self.outcome_table)
        free(self.outcome_order)
        xos_hmap_free(&self.outcome_event_index)
        free(self.outcome_event_rows)
        xos_hmap_free(&self.venue_risk_index)
        free(self.venue_risk_rows)
        xos_hmap_free(&self.order_index)
        xos_hmap_free(&self.touched_index)
        xos_hmap_free(&self.client_index)
        xos_hmap_free(&self.account_index)
        xos_hmap_free(&self.balance_index)

    # ------------------------------------------------------------------ events

    cdef inline xos_event *emit(self, uint16_t kind) noexcept nogil:
        if self.n_events == self.cap_events:
            self.events = <xos_event *>grow(self.events, &self.cap_events, self.n_events + 1,
                                            sizeof(xos_event), b"events")
        cdef xos_event *e = &self.events[self.n_events]
        self.n_events += 1
        memset(e, 0, sizeof(xos_event))
        self._event_seq += 1
        e.kind = kind
        e.seq = self._event_seq
        e.cmd_seq = self._cmd_seq
        e.ts = self._now
        return e

    cdef inline xos_event *emit_order(self, uint16_t kind, Order *o) noexcept nogil:
        cdef xos_event *e = self.emit(kind)
        e.side = o.side
        e.market = o.market
        e.venue = o.venue
        e.order_id = o.id
        e.account = o.account
        e.client_id = o.client_id
        e.price = o.price
        return e

    cdef void reject(self, const xos_command *c, uint16_t code) noexcept nogil:
        cdef xos_event *e = self.emit(XOS_EV_REJECTED)
        e.code = code
        e.flags = c.kind  # the command refused: its sender pairs the event with it by kind and fields
        e.side = c.side
        e.market = c.market
        e.venue = c.venue
        e.account = c.account
        e.client_id = c.id
        e.price = c.price
        e.qty = c.qty

    cdef void touch(self, uint32_t market, uint8_t side, int64_t price, int64_t qty, int32_t count) noexcept nogil:
        """Note a level's new aggregate: BookLevel events go out once per level at the end of the batch
        (``run_batch``), with its aggregate then; a perpetual market's mark is recomputed at the end of
        this command."""
        cdef int64_t key = (<int64_t>market << 1) | side
        cdef int64_t i = xos_hmap_get(&self.touched_index, key, price)
        self.dirty_mark(market)
        if i >= 0:
            self.touched[i].qty = qty
            self.touched[i].count = count
            return
        if self.n_touched == self.cap_touched:
            self.touched = <Touched *>grow(self.touched, &self.cap_touched, self.n_touched + 1,
                                           sizeof(Touched), b"touched levels")
        if xos_hmap_put(&self.touched_index, key, price, self.n_touched):
            die(b"touched levels")
        self.touched[self.n_touched].market = market
        self.touched[self.n_touched].side = side
        self.touched[self.n_touched].price = price
        self.touched[self.n_touched].qty = qty
        self.touched[self.n_touched].count = count
        self.n_touched += 1

    cdef void emit_touched_levels(self) noexcept nogil:
        """The batch's BookLevel events, one per level touched, in order of first touch."""
        cdef int64_t i
        cdef Touched *t
        cdef xos_event *e
        for i in range(self.n_touched):
            t = &self.touched[i]
            e = self.emit(XOS_EV_BOOK_LEVEL)
            e.cmd_seq = self.unit_seq  # a multi-leg unit's events carry its header's seq
            e.market = t.market
            e.venue = self.market_table[t.market].venue
            e.side = t.side
            e.price = t.price
            e.qty = t.qty
            e.remaining = t.count
        # sized for batches like this one: a burst batch's thousands of levels are not probed ever after
        xos_hmap_fit(&self.touched_index, TOUCHED_KEYS)
        self.forget_touched()

    cdef void forget_touched(self) noexcept nogil:
        cdef int64_t i
        for i in range(self.n_touched):
            xos_hmap_del(&self.touched_index, (<int64_t>self.touched[i].market << 1) | self.touched[i].side,
                         self.touched[i].price)
        self.n_touched = 0

    # ------------------------------------------------------------ accounts

    cdef inline int64_t account_index_of(self, int64_t account) noexcept nogil:
        return xos_hmap_get(&self.account_index, account, 0)

    cdef int64_t new_account(self, int64_t account) noexcept nogil:
        cdef int64_t acct_idx = self.n_accounts, b
        self.n_accounts += 1
        self.accts[acct_idx].id = account
        self.accts[acct_idx].region = 0
        self.accts[acct_idx].order_head = NONE
        self.accts[acct_idx].order_tail = NONE
        self.accts[acct_idx].balance_head = -1
        self.accts[acct_idx].position_head = NONE
        self.accts[acct_idx].perp_orders = 0
        self.accts[acct_idx].n_balances = 0
        if self.n_bals + BALANCE_BLOCK > self.cap_bals:
            self.bals = <Balance *>grow_balances(self.bals, &self.cap_bals, self.n_bals + BALANCE_BLOCK)
        self.accts[acct_idx].balance_block = self.n_bals
        for b in range(self.n_bals, self.n_bals + BALANCE_BLOCK):
            self.bals[b].asset = 0
        self.n_bals += BALANCE_BLOCK
        if xos_hmap_put(&self.account_index, account, 0, acct_idx):
            die(b"account index")
        return acct_idx

    cdef int64_t balance_of(self, int64_t acct_idx, uint32_t asset) noexcept nogil:
        """The account's balance entry for ``asset`` (-1 if none).

        Each account's first BALANCE_BLOCK entries sit together in one block,
        so a short scan of a cache line or two beats a hash probe into a table
        of every balance; only the entries past the block use the hash.
        """
        cdef Account *a = &self.accts[acct_idx]
        cdef int64_t b = a.balance_block
        cdef int64_t end = b + (a.n_balances if a.n_balances < BALANCE_BLOCK else BALANCE_BLOCK)
        while b < end:
            if self.bals[b].asset == asset:
                return b
            b += 1
        if a.n_balances > BALANCE_BLOCK:
            return xos_hmap_get(&self.balance_index, acct_idx, asset)
        return -1

    cdef int64_t ensure_balance(self, int64_t acct_idx, uint32_t asset) noexcept nogil:
        cdef int64_t b = self.balance_of(acct_idx, asset)
        cdef Account *a = &self.accts[acct_idx]
        if b >= 0:
            return b
        if a.n_balances < BALANCE_BLOCK:
            b = a.balance_block + a.n_balances
        else:
            if self.n_bals == self.cap_bals:
                self.bals = <Balance *>grow_balances(self.bals, &self.cap_bals, self.n_bals + 1)
            b = self.n_bals
            self.n_bals += 1
            if xos_hmap_put(&self.balance_index, acct_idx, asset, b):
                die(b"balance index")
        self.bals[b].free = 0
        self.bals[b].held = 0
        self.bals[b].asset = asset
        self.bals[b].owner = <int32_t>acct_idx
        self.bals[b].next = a.balance_head
        a.balance_head = b
        a.n_balances += 1
        return b

    cdef inline int64_t free_of(self, int64_t acct_idx, uint32_t asset) noexcept nogil:
        cdef int64_t b = self.balance_of(acct_idx, asset)
        return self.bals[b].free if b >= 0 else 0

    # --------------------------------------------------------------- holds

    cdef inline void release_hold(self, Order *o, int64_t qty) noexcept nogil:
        """Return the hold of ``qty`` of the order to free (buys, perpetual and outcome orders hold quote)."""
        cdef int64_t amount
        cdef Balance *b
        if o.side == BID or self.market_table[o.market].kind != XOS_MARKET_SPOT:
            amount = (qty // self.market_table[o.market].lot_size) * o.hold_per_lot
            b = &self.bals[o.bal_quote]
        else:
            amount = qty
            b = &self.bals[o.bal_base]
        b.held -= amount
        b.free += amount

    # ------------------------------------------------------------- the book

    cdef void rest(self, Market *m, int32_t slot) noexcept nogil:
        """Append an order at the back of its price level."""
        cdef Order *o = &self.orders[slot]
        cdef BookSide *bs = &m.sides[o.side]
        cdef bint found
        cdef int32_t at = level_search(bs, o.side, o.price, &found)
        cdef Level *lv
        cdef int64_t cap
        if not found:
            if bs.n == bs.cap:
                cap = bs.cap
                bs.levels = <Level *>grow(bs.levels, &cap, bs.n + 1, sizeof(Level), b"levels")
                bs.cap = <int32_t>cap
            memmove(&bs.levels[at + 1], &bs.levels[at], <size_t>(bs.n - at) * sizeof(Level))
            bs.n += 1
            lv = &bs.levels[at]
            lv.price = o.price
            lv.qty = 0
            lv.count = 0
            lv.head = NONE
            lv.tail = NONE
        else:
            lv = &bs.levels[at]
            if lv.count == 0:
                bs.empty -= 1
        self._rest_seq += 1
        o.rest_seq = self._rest_seq
        o.prev = lv.tail
        o.next = NONE
        if lv.tail != NONE:
            self.orders[lv.tail].next = slot
        else:
            lv.head = slot
        lv.tail = slot
        lv.qty += o.remaining
        lv.count += 1
        self.touch(o.market, o.side, o.price, lv.qty, lv.count)

    cdef void unlink(self, Market *m, int32_t slot) noexcept nogil:
        """Take a resting order out of its price level (the level goes when empty)."""
        cdef Order *o = &self.orders[slot]
        cdef BookSide *bs = &m.sides[o.side]
        cdef bint found
        cdef int32_t at = level_search(bs, o.side, o.price, &found)
        cdef Level *lv = &bs.levels[at]
        if o.prev != NONE:
            self.orders[o.prev].next = o.next
        else:
            lv.head = o.next
        if o.next != NONE:
            self.orders[o.next].prev = o.prev
        else:
            lv.tail = o.prev
        lv.qty -= o.remaining
        lv.count -= 1
        self.touch(o.market, o.side, o.price, lv.qty, lv.count)
        if lv.count == 0:
            # An emptied level below the best stays as a tombstone: removing it would
            # move every level between it and the best, and its price is often reused.
            if at == bs.n - 1:
                bs.n -= 1
                while bs.n > 0 and bs.levels[bs.n - 1].count == 0:
                    bs.n -= 1
                    bs.empty -= 1
            else:
                bs.empty += 1
                if bs.empty > 64 and bs.empty * 2 > bs.n:
                    compact(bs)

    cdef void level_reduce(self, Market *m, Order *o, int64_t qty) noexcept nogil:
        """A resting order's remaining drops by ``qty`` (it stays in place)."""
        cdef BookSide *bs = &m.sides[o.side]
        cdef bint found
        cdef int32_t at = level_search(bs, o.side, o.price, &found)
        bs.levels[at].qty -= qty
        self.touch(o.market, o.side, o.price, bs.levels[at].qty, bs.levels[at].count)

    cdef void register(self, int32_t slot) noexcept nogil:
        """The order rests for the first time: index it and link it to its account."""
        cdef Order *o = &self.orders[slot]
        cdef Account *a = &self.accts[o.acct_idx]
        if xos_hmap_put(&self.order_index, o.id, 0, slot) or xos_hmap_put(&self.client_index, o.account, o.client_id, slot):
            die(b"order index")
        o.acct_prev = a.order_tail
        o.acct_next = NONE
        if a.order_tail != NONE:
            self.orders[a.order_tail].acct_next = slot
        else:
            a.order_head = slot
        a.order_tail = slot
        o.registered = True
        if self.market_table[o.market].kind == XOS_MARKET_PERPETUAL:
            a.perp_orders += 1
        self.n_open += 1
        self.venue_table[o.venue].open_orders += 1
        if o.expire_at > 0:
            self.heap_push(o.expire_at, o.id)

    cdef void retire(self, int32_t slot) noexcept nogil:
        """The order is done: drop its indexes and give its pool slot back."""
        cdef Order *o = &self.orders[slot]
        cdef Account *a
        if o.registered:
            a = &self.accts[o.acct_idx]
            if o.acct_prev != NONE:
                self.orders[o.acct_prev].acct_next = o.acct_next
            else:
                a.order_head = o.acct_next
            if o.acct_next != NONE:
                self.orders[o.acct_next].acct_prev = o.acct_prev
            else:
                a.order_tail = o.acct_prev
            xos_hmap_del(&self.order_index, o.id, 0)
            xos_hmap_del(&self.client_index, o.account, o.client_id)
            if self.market_table[o.market].kind == XOS_MARKET_PERPETUAL:
                a.perp_orders -= 1
            self.n_open -= 1
            self.venue_table[o.venue].open_orders -= 1
            o.registered = False
        o.id = 0
        o.next = self.free_slot
        self.free_slot = slot

    cdef void cancel_order(self, int32_t slot, bint in_level, uint8_t reason, uint16_t code,
                           int64_t qty) noexcept nogil:
        """Take ``qty`` off an order (all of it when qty == remaining) and report it."""
        cdef Order *o = &self.orders[slot]
        cdef Market *m = &self.market_table[o.market]
        cdef xos_event *e
        self.release_hold(o, qty)
        if m.kind == XOS_MARKET_PERPETUAL and o.client_id:  # a placed order (a pseudo order has client id 0)
            self.venue_open(o, -qty)
        if qty == o.remaining:
            if in_level:
                self.unlink(m, slot)
            o.remaining = 0
        else:
            if in_level:
                self.level_reduce(m, o, qty)
            o.remaining -= qty
        o.qty -= qty
        e = self.emit_order(XOS_EV_CANCELLED, o)
        e.reason = reason
        e.code = code
        e.qty = qty
        e.remaining = o.remaining
        if o.remaining == 0:
            self.retire(slot)

    # ------------------------------------------------------------- matching

    cdef void fill(self, Market *m, int32_t t, int32_t k, int64_t q) noexcept nogil:
        """Trade ``q`` between taker slot ``t`` and the best resting maker ``k``."""
        cdef Order *T = &self.orders[t]
        cdef Order *K = &self.orders[k]
        cdef int64_t price = K.price
        cdef int64_t lots = q // m.lot_size
        cdef int64_t notional = price * lots
        cdef int64_t taker_fee, maker_fee
        if m.kind == XOS_MARKET_OUTCOME:  # each side's fee is on what it pays: YES at price, NO at payout - price
            taker_fee = xos_fee(self.outcome_leg(m, T.side, price) * lots, T.taker_bps)
            maker_fee = xos_fee(self.outcome_leg(m, K.side, price) * lots, K.maker_bps)
        else:
            taker_fee = xos_fee(notional, T.taker_bps)
            maker_fee = xos_fee(notional, K.maker_bps)
        if maker_fee < -taker_fee:
            maker_fee = -taker_fee  # a rebate is paid out of the same fill's taker fee, never more
        cdef Order *buyer
        cdef Order *seller
        cdef int64_t buyer_fee, seller_fee, released
        cdef int64_t taker_pos = NONE, maker_pos = NONE, taker_pnl = 0, maker_pnl = 0
        cdef int64_t taker_cash = 0, maker_cash = 0
        if m.kind == XOS_MARKET_PERPETUAL:
            taker_pos = self.perp_fill(m, T, q, price, taker_fee, &taker_pnl)
            maker_pos = self.perp_fill(m, K, q, price, maker_fee, &maker_pnl)
        elif m.kind == XOS_MARKET_OUTCOME:
            # each side: its hold for these lots is released and pays its fee, then its position moves
            released = lots * T.hold_per_lot
            self.bals[T.bal_quote].held -= released
            self.bals[T.bal_quote].free += released - taker_fee
            taker_pos = self.outcome_move(m, T.market, T.account, T.bal_quote, q if T.side == BID else -q, price,
                                          &taker_cash) - self.position_rows
            released = lots * K.hold_per_lot
            self.bals[K.bal_quote].held -= released
            self.bals[K.bal_quote].free += released - maker_fee
            maker_pos = self.outcome_move(m, K.market, K.account, K.bal_quote, q if K.side == BID else -q, price,
                                          &maker_cash) - self.position_rows
        else:
            if T.side == BID:
                buyer = T
                seller = K
                buyer_fee = taker_fee
                seller_fee = maker_fee
            else:
                buyer = K
                seller = T
                buyer_fee = maker_fee
                seller_fee = taker_fee
            # buyer: its hold for these lots pays notional + fee, the rest goes back to free
            released = lots * buyer.hold_per_lot
            self.bals[buyer.bal_quote].held -= released
            self.bals[buyer.bal_quote].free += released - notional - buyer_fee
            self.bals[buyer.bal_base].free += q
            # seller: the held base leaves, the proceeds less its fee arrive
            self.bals[seller.bal_base].held -= q
            self.bals[seller.bal_quote].free += notional - seller_fee
        if T.venue == 0 and K.venue == 0:  # the protocol venue's fees: the protocol's pool
            self.fee_pool[m.quote] += taker_fee + maker_fee
        else:  # the taker's venue funds the rebate; the maker's venue keeps a positive maker fee
            self.collect(T.venue, m.quote, taker_fee + (maker_fee if maker_fee < 0 else 0))
            self.collect(K.venue, m.quote, maker_fee if maker_fee > 0 else 0)
        if self.venue_table[T.venue].n_tiers:
            self.add_volume(T, m.quote, notional)
        if self.venue_table[K.venue].n_tiers:
            self.add_volume(K, m.quote, notional)
        m.last_price = price

        T.remaining -= q
        T.filled += q
        K.remaining -= q
        K.filled += q
        cdef BookSide *bs = &m.sides[K.side]
        cdef Level *lv = &bs.levels[bs.n - 1]
        cdef bint found
        if lv.price != price:  # the maker was reached past orders its venue cannot trade with
            lv = &bs.levels[level_search(bs, K.side, price, &found)]
        lv.qty -= q
        self.touch(K.market, K.side, price, lv.qty, lv.count)

        cdef xos_event *e = self.emit_order(XOS_EV_FILL, T)
        e.client_id = K.venue
        e.price = price
        e.qty = q
        e.remaining = T.remaining
        e.maker_order = K.id
        e.maker_account = K.account
        e.maker_fee = maker_fee
        e.taker_fee = taker_fee
        if K.remaining == 0:
            e.flags |= XOS_EF_MAKER_DONE
        if T.remaining == 0:
            e.flags |= XOS_EF_TAKER_DONE
        if m.kind == XOS_MARKET_OUTCOME:
            self.emit_outcome_position(&self.position_rows[taker_pos], T.bal_quote, T.side, XOS_OC_FILL, T.venue, T.id,
                                       price, taker_cash)
            self.emit_outcome_position(&self.position_rows[maker_pos], K.bal_quote, K.side, XOS_OC_FILL, K.venue, K.id,
                                       price, maker_cash)
        elif taker_pos != NONE:  # after the Fill, before the maker's slot can be retired
            self.emit_position(m, T, &self.position_rows[taker_pos], price, taker_pnl)
            self.emit_position(m, K, &self.position_rows[maker_pos], price, maker_pnl)
        if K.remaining == 0:
            self.unlink(m, k)
            self.retire(k)

    cdef Position *position_of(self, int64_t account, uint32_t market) noexcept nogil:
        """The account's position in the market, created flat on its first fill there."""
        cdef int64_t i = xos_hmap_get(&self.position_index, account, market)
        cdef Position *p
        if i >= 0:
            return &self.position_rows[i]
        if self.n_positions == self.cap_positions:
            self.position_rows = <Position *>grow(self.position_rows, &self.cap_positions, self.n_positions + 1,
                                                  sizeof(Position), b"positions")
        if xos_hmap_put(&self.position_index, account, market, self.n_positions):
            die(b"position index")
        p = &self.position_rows[self.n_positions]
        memset(p, 0, sizeof(Position))
        p.account = account
        p.market = market
        cdef Account *a = &self.accts[self.account_index_of(account)]  # every position's account exists
        p.next_of_account = a.position_head
        a.position_head = self.n_positions
        p.next_of_market = self.market_table[market].position_head
        self.market_table[market].position_head = self.n_positions
        self.n_positions += 1
        return p

    cdef int64_t perp_fill(self, Market *m, Order *o, int64_t q, int64_t price, int64_t fee,
                           int64_t *pnl) noexcept nogil:
        """One side of a perpetual fill (ARCHITECTURE, "Perpetual markets"; reference ``_perp_fill``):
        the order's hold for these lots is released and pays the fee; the closed part of the position
        gives back its share of entry value and margin and realises its PnL into free; the opened part
        takes min(its notional, what the hold left after the fee) as margin. Returns the position's row."""
        cdef Position *p = self.position_of(o.account, o.market)
        cdef Balance *b = &self.bals[o.bal_quote]
        cdef int64_t lot = m.lot_size
        cdef int64_t released = (q // lot) * o.hold_per_lot
        cdef int64_t left = released - fee
        cdef int64_t delta = q if o.side == BID else -q
        cdef int64_t open_size = p.size if p.size >= 0 else -p.size
        cdef int64_t closed = 0, closed_entry, closed_margin, exit_value, opened, add
        b.held -= released
        b.free += left
        pnl[0] = 0
        if (p.size < 0 and delta > 0) or (p.size > 0 and delta < 0):
            closed = q if q < open_size else open_size
            closed_entry = xos_mul_div(p.entry_value, closed, open_size)
            closed_margin = xos_mul_div(p.margin, closed, open_size)
            exit_value = price * (closed // lot)
            pnl[0] = exit_value - closed_entry if p.size > 0 else closed_entry - exit_value
            p.entry_value -= closed_entry
            p.margin -= closed_margin
            b.held -= closed_margin
            b.free += closed_margin + pnl[0]
        opened = q - closed
        if opened:
            add = price * (opened // lot)
            p.entry_value += add
            add = add // m.max_leverage + (add % m.max_leverage != 0)  # the initial margin, ceil(notional / L)
            if add > left:
                add = left if left > 0 else 0
            p.margin += add
            b.free -= add
            b.held += add
        p.size += delta
        p.realised += pnl[0]
        # every position change is some venue's (a liquidation's and a transfer's: the listing venue's); a pseudo
        # order (client id 0: a liquidation's IOC order, a position transfer) was never in the open sizes
        cdef VenueRisk *r = self.venue_risk_of(o.venue, o.market, True)
        if o.side == BID:
            r.open_buy -= q if o.client_id else 0
            r.long_oi += opened
            r.short_oi -= closed
        else:
            r.open_sell -= q if o.client_id else 0
            r.short_oi += opened
            r.long_oi -= closed
        return p - self.position_rows

    cdef void emit_position(self, Market *m, Order *o, Position *p, int64_t price, int64_t pnl) noexcept nogil:
        cdef Balance *b = &self.bals[o.bal_quote]
        cdef xos_event *e = self.emit(XOS_EV_POSITION)
        e.side = o.side
        e.market = o.market
        e.venue = o.venue
        e.order_id = o.id
        e.account = o.account
        e.client_id = p.margin
        e.price = price
        e.qty = p.size
        e.remaining = p.entry_value
        e.maker_order = b.free
        e.maker_account = b.held
        e.maker_fee = pnl
        e.taker_fee = p.realised

    cdef bint fok_fillable(self, Market *m, Order *T) noexcept nogil:
        cdef BookSide *bs = &m.sides[1 - T.side]
        cdef int32_t i = bs.n - 1
        cdef int32_t k
        cdef int64_t need = T.remaining
        while i >= 0 and crosses(T.side, T.price, bs.levels[i].price):
            k = bs.levels[i].head
            while k != NONE:
                if not self.eligible(T.venue, self.orders[k].venue):
                    pass  # passed over: it cannot trade with this order
                elif self.orders[k].acct_idx == T.acct_idx:
                    if T.stp != XOS_STP_CANCEL_MAKER:
                        return False
                else:
                    need -= self.orders[k].remaining
                    if need <= 0:
                        return True
                k = self.orders[k].next
            i -= 1
        return False

    cdef inline bint eligible(self, uint32_t taker_venue, uint32_t maker_venue) noexcept nogil:
        """May orders of these two venues trade?  Each must accept the other's pool, and the
        maker's venue must let its orders trade (a halted or retired venue's mask is 0)."""
        cdef Venue *a
        cdef Venue *b
        if taker_venue == maker_venue:
            return True  # the taker's venue is live, so is the maker's
        a = &self.venue_table[taker_venue]
        b = &self.venue_table[maker_venue]
        return ((a.match_mask >> b.pool) & (b.match_mask >> a.pool) & 1) != 0

    cdef bint eligible_cross(self, Market *m, Order *T) noexcept nogil:
        """Does an order that ``T``'s venue may trade with cross ``T``'s price?"""
        cdef BookSide *bs = &m.sides[1 - T.side]
        cdef int32_t i = bs.n - 1, k
        while i >= 0 and crosses(T.side, T.price, bs.levels[i].price):
            k = bs.levels[i].head
            while k != NONE:
                if self.eligible(T.venue, self.orders[k].venue):
                    return True
                k = self.orders[k].next
            i -= 1
        return False

    cdef inline bint meet(self, Market *m, int32_t t, int32_t k) noexcept nogil:
        """The taker in slot ``t`` meets the eligible maker ``k``: a fill or a self-trade action.
        True when the taker is gone; when it is not, the maker is."""
        cdef Order *T = &self.orders[t]
        cdef Order *K = &self.orders[k]
        cdef int64_t q = T.remaining if T.remaining < K.remaining else K.remaining
        if K.acct_idx != T.acct_idx:
            self.fill(m, t, k, q)
            if T.remaining == 0:
                self.retire(t)
                return True
        elif T.stp == XOS_STP_CANCEL_TAKER:
            self.cancel_order(t, False, XOS_CANCEL_STP, XOS_SELF_TRADE_PREVENTED, T.remaining)
            return True
        elif T.stp == XOS_STP_CANCEL_MAKER:
            self.cancel_order(k, True, XOS_CANCEL_STP, XOS_SELF_TRADE_PREVENTED, K.remaining)
        elif T.stp == XOS_STP_CANCEL_BOTH:
            self.cancel_order(k, True, XOS_CANCEL_STP, XOS_SELF_TRADE_PREVENTED, K.remaining)
            self.cancel_order(t, False, XOS_CANCEL_STP, XOS_SELF_TRADE_PREVENTED, T.remaining)
            return True
        else:  # DECREMENT_BOTH: both shrink by q without a trade
            self.cancel_order(k, True, XOS_CANCEL_STP, XOS_SELF_TRADE_PREVENTED, q)
            if q == T.remaining:
                self.cancel_order(t, False, XOS_CANCEL_STP, XOS_SELF_TRADE_PREVENTED, q)
                return True
            self.cancel_order(t, False, XOS_CANCEL_STP, XOS_SELF_TRADE_PREVENTED, q)
        return False

    cdef bint match(self, Market *m, int32_t t) noexcept nogil:
        """Match the taker in slot ``t`` against the book; True when the taker is gone.

        While the oldest order at the best price may trade with the taker this is the plain
        price-time loop; the first time it may not, ``match_past`` takes over."""
        cdef Order *T = &self.orders[t]
        cdef BookSide *bs = &m.sides[1 - T.side]
        cdef int32_t k
        while bs.n > 0 and crosses(T.side, T.price, bs.levels[bs.n - 1].price):
            k = bs.levels[bs.n - 1].head
            if self.orders[k].venue != T.venue and not self.eligible(T.venue, self.orders[k].venue):
                return self.match_past(m, t)
            if self.meet(m, t, k):
                return True
        return False

    cdef bint match_past(self, Market *m, int32_t t) noexcept nogil:
        """Matching that passes over makers the taker's venue may not trade with: they keep
        their place, and price-time priority holds among the others.  A cursor (level index,
        slot) walks the crossing orders in priority order; everything before it was passed
        over and is untouched, so after each maker leaves the walk resumes at its successor
        (its level found again by price: an emptied level may have gone)."""
        cdef Order *T = &self.orders[t]
        cdef BookSide *bs = &m.sides[1 - T.side]
        cdef int32_t i = bs.n - 1
        cdef int32_t k = bs.levels[i].head
        cdef int32_t nxt
        cdef int64_t price
        cdef bint found
        while True:
            while k == NONE:
                i -= 1
                if i < 0 or not crosses(T.side, T.price, bs.levels[i].price):
                    return False
                k = bs.levels[i].head  # NONE for a tombstone level
            if not self.eligible(T.venue, self.orders[k].venue):
                k = self.orders[k].next
                continue
            nxt = self.orders[k].next
            price = bs.levels[i].price
            if self.meet(m, t, k):
                return True
            i = level_search(bs, 1 - T.side, price, &found)
            k = nxt if found else NONE  # not found: i is where it was, so i - 1 is next

    cdef void take_and_rest(self, Market *m, int32_t t) noexcept nogil:
        """Post-only check, FOK check, matching, then rest or cancel the remainder.

        The order in slot ``t`` is not in a price level: new, or amended with
        its priority lost (then it is still registered).
        """
        cdef Order *T = &self.orders[t]
        cdef BookSide *opp = &m.sides[1 - T.side]
        if (T.post_only and opp.n > 0 and crosses(T.side, T.price, opp.levels[opp.n - 1].price)
                and self.eligible_cross(m, T)):
            self.cancel_order(t, False, XOS_CANCEL_POST_ONLY, XOS_POST_ONLY_WOULD_CROSS, T.remaining)
            return
        if T.tif == XOS_TIF_FOK and not self.fok_fillable(m, T):
            self.cancel_order(t, False, XOS_CANCEL_FOK, XOS_FOK_NOT_FILLABLE, T.remaining)
            return
        if self.match(m, t):
            return
        if T.tif == XOS_TIF_GTC:
            self.rest(m, t)
            if not T.registered:
                self.register(t)
        else:
            self.cancel_order(t, False, XOS_CANCEL_IOC, XOS_IOC_NOT_FILLED, T.remaining)

    # ---------------------------------------------------------------- expiry

    cdef inline bint heap_less(self, int64_t a, int64_t b) noexcept nogil:
        return (self.heap[a].expire_at < self.heap[b].expire_at or
                (self.heap[a].expire_at == self.heap[b].expire_at and
                 self.heap[a].order_id < self.heap[b].order_id))

    cdef void heap_swap(self, int64_t a, int64_t b) noexcept nogil:
        cdef Expiry tmp = self.heap[a]
        self.heap[a] = self.heap[b]
        self.heap[b] = tmp

    cdef void heap_push(self, int64_t expire_at, int64_t order_id) noexcept nogil:
        if self.n_heap == self.cap_heap:
            self.heap = <Expiry *>grow(self.heap, &self.cap_heap, self.n_heap + 1, sizeof(Expiry), b"expiry heap")
        cdef int64_t i = self.n_heap
        self.n_heap += 1
        self.heap[i].expire_at = expire_at
        self.heap[i].order_id = order_id
        while i > 0 and self.heap_less(i, (i - 1) >> 1):
            self.heap_swap(i, (i - 1) >> 1)
            i = (i - 1) >> 1

    cdef void heap_pop(self) noexcept nogil:
        cdef int64_t i = 0, c
        self.n_heap -= 1
        self.heap[0] = self.heap[self.n_heap]
        while True:
            c = 2 * i + 1
            if c >= self.n_heap:
                break
            if c + 1 < self.n_heap and self.heap_less(c + 1, c):
                c += 1
            if not self.heap_less(c, i):
                break
            self.heap_swap(i, c)
            i = c

    cdef void expire_orders(self) noexcept nogil:
        cdef int64_t slot
        while self.n_heap > 0 and self.heap[0].expire_at <= self._now:
            slot = xos_hmap_get(&self.order_index, self.heap[0].order_id, 0)
            self.heap_pop()
            if slot >= 0:  # orders that already left the book leave stale entries
                self.cancel_order(<int32_t>slot, True, XOS_CANCEL_EXPIRED, 0, self.orders[slot].remaining)

    # ------------------------------------------------------------- commands

    cdef uint16_t locate_order(self, const xos_command *c, int32_t *slot) noexcept nogil:
        """The open order a cancel or amend names, or the code saying why not.

        The common case (the order exists and belongs to the account) needs no
        account lookup; only a miss walks the checks in their specified order.
        """
        cdef int64_t s, acct_idx
        cdef uint16_t code
        if c.flags & ~XOS_CF_BY_CLIENT_ID:
            return XOS_INVALID_FLAGS
        if c.flags & XOS_CF_BY_CLIENT_ID:
            s = xos_hmap_get(&self.client_index, c.account, c.id)
        else:
            s = xos_hmap_get(&self.order_index, c.id, 0)
            if s >= 0 and self.orders[s].account != c.account:
                s = -1
        if s >= 0:
            slot[0] = <int32_t>s
            return XOS_OK
        code = self.check_account(c.account, &acct_idx)
        if code:
            return code
        if c.flags & XOS_CF_BY_CLIENT_ID or c.id <= 0 or c.id > self._last_order_id:
            return XOS_UNKNOWN_ORDER
        if xos_hmap_get(&self.order_index, c.id, 0) >= 0:
            return XOS_UNKNOWN_ORDER  # open, but another account's
        return XOS_ORDER_CLOSED

    cdef uint16_t check_account(self, int64_t account, int64_t *acct_idx) noexcept nogil:
        if account <= 0:
            return XOS_INVALID_ACCOUNT_ID
        acct_idx[0] = self.account_index_of(account)
        if acct_idx[0] < 0:
            return XOS_UNKNOWN_ACCOUNT
        return XOS_OK

    cdef uint16_t check_price_qty(self, Market *m, int64_t price, int64_t qty) noexcept nogil:
        if price <= 0:
            return XOS_PRICE_NOT_POSITIVE
        if price % m.tick_size:
            return XOS_PRICE_OFF_TICK
        if qty <= 0:
            return XOS_QTY_NOT_POSITIVE
        if qty % m.lot_size:
            return XOS_QTY_OFF_LOT
        return XOS_OK

    cdef void cmd_place(self, const xos_command *c) noexcept nogil:
        cdef Admission adm
        cdef uint16_t code = self.admit(c, &adm)
        if code == XOS_OK:
            code = self.afford(c, &adm, 0, 0, 0, NULL, 0)
        if code:
            self.reject(c, code)
            return
        self.take_and_rest(&self.market_table[c.market], self.accept(c, &adm))

    cdef uint16_t admit(self, const xos_command *c, Admission *adm) noexcept nogil:
        """PlaceOrder's checks up to the price bands and the venue's risk limits; the first failing one's code.  When
        all pass, ``adm`` holds the account, the fees, the hold per lot and what the order takes from free (``afford``)."""
        cdef uint16_t code = XOS_OK
        cdef Market *m
        cdef int64_t acct_idx = -1, hold = 0, lots, per_lot = 0
        cdef int16_t maker_bps = 0, taker_bps = 0
        if c.side > 1:
            code = XOS_INVALID_SIDE
        elif c.ord_type > XOS_ORD_MARKET:
            code = XOS_INVALID_ORDER_TYPE
        elif c.tif > XOS_TIF_FOK or (c.ord_type == XOS_ORD_MARKET and c.tif == XOS_TIF_GTC):
            code = XOS_INVALID_TIF
        elif c.stp > XOS_STP_DECREMENT_BOTH:
            code = XOS_INVALID_STP
        elif ((c.flags & ~(XOS_CF_POST_ONLY | XOS_CF_REDUCE_ONLY))
              or ((c.flags & XOS_CF_POST_ONLY) and (c.ord_type != XOS_ORD_LIMIT or c.tif != XOS_TIF_GTC))
              or ((c.flags & XOS_CF_REDUCE_ONLY) and c.tif == XOS_TIF_GTC)):
            code = XOS_INVALID_FLAGS
        elif c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists:
            code = XOS_UNKNOWN_MARKET
        if code:
            return code
        m = &self.market_table[c.market]
        cdef bint perp = m.kind == XOS_MARKET_PERPETUAL
        cdef bint outcome = m.kind == XOS_MARKET_OUTCOME
        cdef bint quote_held = m.kind != XOS_MARKET_SPOT  # both sides of perpetual and outcome orders hold quote
        cdef bint reduce_only = (c.flags & XOS_CF_REDUCE_ONLY) != 0
        cdef int64_t leg = c.price
        if outcome and self.outcome_table[c.market].state == 0:
            code = XOS_OUTCOME_NOT_CONFIGURED
        elif reduce_only and not perp:
            code = XOS_INVALID_FLAGS
        elif c.venue >= <uint32_t>self.max_venues or not self.venue_table[c.venue].exists:
            code = XOS_UNKNOWN_VENUE
        elif not self.offered(c.venue, c.market):
            code = XOS_MARKET_NOT_OFFERED
        elif self.venue_table[c.venue].status != XOS_VSTATUS_LIVE:
            code = XOS_VENUE_NOT_LIVE
        else:
            code = self.check_account(c.account, &acct_idx)
            if code == XOS_OK:
                code = self.check_access(c.venue, c.account, acct_idx)
        if code == XOS_OK:
            if c.id <= 0:
                code = XOS_INVALID_CLIENT_ID
            else:
                code = self.check_price_qty(m, c.price, c.qty)
        if code == XOS_OK:
            lots = c.qty // m.lot_size
            if c.venue == 0:  # the protocol venue charges the market's fees
                maker_bps = <int16_t>m.maker_bps
                taker_bps = <int16_t>m.taker_bps
            else:
                self.order_fees(m, c.venue, c.account, &maker_bps, &taker_bps)
            if outcome:
                leg = self.outcome_leg(m, c.side, c.price)
            per_lot = order_hold_per_lot(m, leg, taker_bps)
            hold = xos_mul_capped(lots, per_lot)
            if c.qty < m.min_size:
                code = XOS_QTY_BELOW_MIN
            elif c.qty > XOS_MAX_MONEY:
                code = XOS_QTY_TOO_LARGE
            elif outcome and c.price >= self.outcome_table[c.market].payout:
                code = XOS_OUTCOME_PRICE_OUT_OF_RANGE
            elif xos_buy_hold(lots, leg, taker_bps) > XOS_MAX_MONEY:  # the notional, whatever the leverage
                code = XOS_PRICE_TOO_LARGE
            elif c.aux < 0 or (c.aux > 0 and c.tif != XOS_TIF_GTC):
                code = XOS_INVALID_EXPIRY
            elif c.aux > 0 and c.aux <= self._now:
                code = XOS_EXPIRED_ON_ARRIVAL
            elif xos_hmap_get(&self.client_index, c.account, c.id) >= 0:
                code = XOS_DUPLICATE_CLIENT_ID
            elif m.halted:
                code = XOS_MARKET_HALTED
            elif outcome and self.outcome_table[c.market].state != XOS_OS_OPEN:
                code = self.outcome_order_code(c.market)
            elif reduce_only and not self.reduces(c):
                code = XOS_REDUCE_ONLY_WOULD_INCREASE
            # a reduce-only order takes on no risk: it goes on while the oracle is stale
            elif not reduce_only and m.stale_oracles and self.oracle_stale(c.venue, c.market):
                code = XOS_ORACLE_STALE
            else:
                code = self.check_venue_risk(self.venue_risk_of(c.venue, c.market, False) if m.venue_gates else NULL,
                                             m, c.side, c.price, True, c.qty, reduce_only)
        if code:
            return code
        adm.acct_idx = acct_idx
        # a reduce-only order holds nothing: its fill frees the closed margin and PnL and pays its fee from them, so a
        # position can always be closed, even with no free balance left (reference ``_admit``)
        adm.per_lot = 0 if reduce_only else per_lot
        adm.maker_bps = maker_bps
        adm.taker_bps = taker_bps
        adm.asset = m.quote if c.side == BID or quote_held else m.base
        adm.amount = 0 if reduce_only else (hold if c.side == BID or quote_held else c.qty)
        return XOS_OK

    cdef uint16_t afford(self, const xos_command *c, Admission *adm, int64_t committed, int64_t group_committed,
                         int64_t slots_committed, const Admission *earlier, int64_t n_earlier) noexcept nogil:
        """PlaceOrder's last checks (balance, margin, exposure cap, order capacity).  ``committed`` of the order's
        asset, ``group_committed`` of it in holds of perpetual orders of its market's risk group and
        ``slots_committed`` pool slots are already taken by earlier legs of the same multi-leg order (0 for a
        PlaceOrder), ``earlier`` their admissions, so the legs are checked together: committed <= free, so no sum
        here can overflow.  With a valuation asset a perpetual order may take its free balance below zero (a loan
        against the other collateral) when the unified check passes (reference ``_afford``)."""
        cdef Market *m = &self.market_table[c.market]
        cdef bint reduce_only = (c.flags & XOS_CF_REDUCE_ONLY) != 0
        cdef bint beyond_free = adm.amount > 0 and adm.amount > self.free_of(adm.acct_idx, adm.asset) - committed
        cdef uint32_t assets[MAX_LEGS]
        cdef int64_t amounts[MAX_LEGS]
        cdef int64_t i
        cdef uint16_t code
        if beyond_free and not (self.valuation_asset and m.kind == XOS_MARKET_PERPETUAL):
            return XOS_INSUFFICIENT_BALANCE
        if self.valuation_asset:
            # a reduce-only order (IOC / FOK: its hold is back by the end of the command) only lowers the requirement
            if not reduce_only and (beyond_free or n_earlier > 0 or self.may_owe(adm.acct_idx)):
                for i in range(n_earlier):
                    assets[i] = earlier[i].asset
                    amounts[i] = earlier[i].amount
                assets[n_earlier] = adm.asset
                amounts[n_earlier] = adm.amount
                code = self.unified_code(adm.acct_idx, c.venue, assets, amounts, n_earlier + 1)
                if code:
                    return code
        elif (not reduce_only and self.accts[adm.acct_idx].position_head != NONE
                and self.margin_excess(adm.acct_idx, adm.asset) - committed < adm.amount):
            return XOS_INSUFFICIENT_MARGIN
        if ((c.flags & XOS_CF_REDUCE_ONLY) == 0 and self.cap_index.count and m.kind == XOS_MARKET_PERPETUAL
                and self.over_cap(adm.acct_idx, m, adm.amount + group_committed)):
            return XOS_EXPOSURE_CAP_EXCEEDED
        if self.n_open + slots_committed >= self.max_orders:
            return XOS_ORDER_CAPACITY
        return XOS_OK

    cdef int32_t accept(self, const xos_command *c, Admission *adm) noexcept nogil:
        """An admitted order takes a pool slot and the next order id, its hold moves from free to held and
        ``Accepted`` is emitted; returns the slot (the order is not in the book yet)."""
        cdef Market *m = &self.market_table[c.market]
        cdef bint quote_held = m.kind != XOS_MARKET_SPOT  # both sides of perpetual and outcome orders hold quote
        cdef int64_t acct_idx = adm.acct_idx
        cdef int32_t t = self.free_slot
        cdef Order *o = &self.orders[t]
        self.free_slot = o.next
        self._last_order_id += 1
        o.id = self._last_order_id
        o.account = c.account
        o.client_id = c.id
        o.price = c.price
        o.qty = c.qty
        o.filled = 0
        o.remaining = c.qty
        o.expire_at = c.aux
        o.hold_per_lot = adm.per_lot
        o.maker_bps = adm.maker_bps
        o.taker_bps = adm.taker_bps
        o.acct_idx = <int32_t>acct_idx
        o.bal_base = self.ensure_balance(acct_idx, m.base)
        o.bal_quote = self.ensure_balance(acct_idx, m.quote)
        o.prev = NONE
        o.next = NONE
        o.market = c.market
        o.venue = c.venue
        o.side = c.side
        o.stp = c.stp
        o.post_only = (c.flags & XOS_CF_POST_ONLY) != 0
        o.tif = c.tif
        o.registered = False
        cdef Balance *b = &self.bals[o.bal_quote if c.side == BID or quote_held else o.bal_base]
        b.free -= adm.amount
        b.held += adm.amount
        if m.kind == XOS_MARKET_PERPETUAL:
            self.venue_open(o, c.qty)
        cdef xos_event *e = self.emit_order(XOS_EV_ACCEPTED, o)
        e.qty = o.qty
        e.remaining = o.remaining
        if o.venue:  # its venue's fees at its tier (venue 0's orders pay the market's, known from the listing)
            e.maker_fee = o.maker_bps
            e.taker_fee = o.taker_bps
        return t

    # ------------------------------------------------------ multi-leg orders

    cdef int64_t cmd_multi_leg(self, const xos_command *c, int64_t available) noexcept nogil:
        """A MultiLeg header ``c`` and the Leg records after it (``available`` records from ``c`` on are in
        this batch).  Every leg is checked as a limit FOK PlaceOrder of the header's account, the holds of all
        legs together, in leg order; then one Accepted per leg and the legs' matching, in leg order; or one
        Rejected naming the leg.  Returns the records used: the header alone when its legs are not there."""
        cdef int64_t n = c.qty, i, j, committed, group_committed
        cdef xos_command legs[MAX_LEGS]
        cdef Admission adm[MAX_LEGS]
        cdef int32_t slots[MAX_LEGS]
        cdef uint16_t code = XOS_OK
        cdef Order probe
        cdef xos_event *e
        if n < 2 or n > MAX_LEGS:
            self.reject_leg(c, c, XOS_INVALID_LEG_COUNT, 0)
            return 1
        for i in range(1, n + 1):
            if i >= available or c[i].kind != XOS_CMD_LEG:
                self.reject_leg(c, c, XOS_LEGS_INCOMPLETE, 0)
                return 1
        if c.id <= 0:
            self.reject_leg(c, c, XOS_INVALID_CLIENT_ID, 0)
            return n + 1
        for i in range(n):
            legs[i] = c[i + 1]
            legs[i].kind = XOS_CMD_PLACE
            if legs[i].account != c.account:
                code = XOS_LEG_ACCOUNT_MISMATCH
            elif legs[i].ord_type != XOS_ORD_LIMIT:
                code = XOS_INVALID_ORDER_TYPE
            elif legs[i].tif != XOS_TIF_FOK:
                code = XOS_INVALID_TIF
            for j in range(i):
                if code == XOS_OK and legs[j].market == legs[i].market:
                    code = XOS_DUPLICATE_LEG_MARKET
            if code == XOS_OK:
                code = self.admit(&legs[i], &adm[i])
            for j in range(i):
                if code == XOS_OK and legs[j].id == legs[i].id:
                    code = XOS_DUPLICATE_CLIENT_ID
            if code == XOS_OK:
                committed = group_committed = 0
                for j in range(i):
                    if adm[j].asset == adm[i].asset:
                        committed += adm[j].amount
                        if (self.market_table[legs[j].market].kind == XOS_MARKET_PERPETUAL
                                and self.market_table[legs[j].market].venue == self.market_table[legs[i].market].venue):
                            group_committed += adm[j].amount
                code = self.afford(&legs[i], &adm[i], committed, group_committed, i, adm, i)
            if code == XOS_OK:
                probe.side = legs[i].side
                probe.price = legs[i].price
                probe.remaining = legs[i].qty
                probe.venue = legs[i].venue
                probe.acct_idx = <int32_t>adm[i].acct_idx
                probe.stp = legs[i].stp
                if not self.fok_fillable(&self.market_table[legs[i].market], &probe):
                    code = XOS_LEG_NOT_FILLABLE
            if code:
                self.reject_leg(c, &c[i + 1], code, i + 1)
                return n + 1
        # legs are in distinct markets: filling one leaves the others' books, and so their checks, as they were
        for i in range(n):
            slots[i] = self.accept(&legs[i], &adm[i])
            e = &self.events[self.n_events - 1]
            e.reason = <uint8_t>(i + 1)
            e.maker_order = c.id
            e.maker_account = n
        for i in range(n):
            self.take_and_rest(&self.market_table[legs[i].market], slots[i])
        return n + 1

    cdef void reject_leg(self, const xos_command *header, const xos_command *c, uint16_t code,
                         int64_t leg) noexcept nogil:
        """A multi-leg order's one Rejected: the failing record's fields (``c``, the header itself when the
        header is at fault, leg 0), the header's account, ``reason`` the leg number, ``maker_order`` its parent id."""
        self.reject(c, code)
        cdef xos_event *e = &self.events[self.n_events - 1]
        e.account = header.account
        e.flags = header.kind
        e.reason = <uint8_t>leg
        e.maker_order = header.id

    cdef bint reduces(self, const xos_command *c) noexcept nogil:
        """A reduce-only order is on the position's closing side and no larger than it (it is IOC or
        FOK, so only its own fills move the position while it lives: it can never flip it)."""
        cdef int64_t i = xos_hmap_get(&self.position_index, c.account, c.market)
        cdef int64_t size = self.position_rows[i].size if i >= 0 else 0
        if c.side == BID:
            return size < 0 and c.qty <= -size
        return size > 0 and c.qty <= size

    cdef void cmd_cancel(self, const xos_command *c) noexcept nogil:
        cdef int32_t slot = NONE
        cdef uint16_t code = self.locate_order(c, &slot)
        if code:
            self.reject(c, code)
            return
        self.cancel_order(slot, True, XOS_CANCEL_USER, 0, self.orders[slot].remaining)

    cdef void cmd_amend(self, const xos_command *c) noexcept nogil:
        cdef int64_t old_hold, new_hold, extra, per_lot
        cdef int32_t slot = NONE
        cdef uint16_t code = self.locate_order(c, &slot)
        cdef Order *o
        cdef Market *m
        cdef int64_t price
        if code == XOS_OK:
            o = &self.orders[slot]
            m = &self.market_table[o.market]
            price = c.price if c.price != 0 else o.price
            if c.price < 0:
                code = XOS_PRICE_NOT_POSITIVE
            elif price != o.price:
                code = self.check_price_qty(m, price, c.qty)
            elif c.qty <= 0:  # the order's own price was checked when it was placed
                code = XOS_QTY_NOT_POSITIVE
            elif c.qty % m.lot_size:
                code = XOS_QTY_OFF_LOT
        cdef int64_t leg
        if code == XOS_OK:
            leg = self.outcome_leg(m, o.side, price) if m.kind == XOS_MARKET_OUTCOME else price
            per_lot = o.hold_per_lot if price == o.price else order_hold_per_lot(m, leg, o.taker_bps)
            new_hold = xos_mul_capped(c.qty // m.lot_size, per_lot)
            if c.qty > o.remaining and c.qty < m.min_size:
                code = XOS_QTY_BELOW_MIN
            elif c.qty > XOS_MAX_MONEY:
                code = XOS_QTY_TOO_LARGE
            elif m.kind == XOS_MARKET_OUTCOME and price >= self.outcome_table[o.market].payout:
                code = XOS_OUTCOME_PRICE_OUT_OF_RANGE
            elif xos_buy_hold(c.qty // m.lot_size, leg, o.taker_bps) > XOS_MAX_MONEY:
                code = XOS_PRICE_TOO_LARGE
            elif m.halted:
                code = XOS_MARKET_HALTED
            elif m.kind == XOS_MARKET_OUTCOME and self.outcome_table[o.market].state != XOS_OS_OPEN:
                code = self.outcome_order_code(o.market)
            elif self.venue_table[o.venue].status != XOS_VSTATUS_LIVE:
                code = XOS_VENUE_NOT_LIVE
            elif ((price != o.price or c.qty > o.remaining) and m.stale_oracles
                  and self.oracle_stale(o.venue, o.market)):
                code = XOS_ORACLE_STALE  # only a pure size reduction goes on while the oracle is stale
            else:
                code = self.check_venue_risk(self.venue_risk_of(o.venue, o.market, False) if m.venue_gates else NULL,
                                             m, o.side, price, price != o.price, c.qty - o.remaining, False)
            if code == XOS_OK:
                if o.side == BID or m.kind != XOS_MARKET_SPOT:
                    old_hold = (o.remaining // m.lot_size) * o.hold_per_lot
                    extra = new_hold - old_hold
                    # free < 0 after a leveraged loss; with a valuation asset a perpetual order may borrow
                    if (extra > 0 and extra > self.bals[o.bal_quote].free
                            and not (self.valuation_asset and m.kind == XOS_MARKET_PERPETUAL)):
                        code = XOS_INSUFFICIENT_BALANCE
                    elif extra > 0 and self.valuation_asset:
                        if extra > self.bals[o.bal_quote].free or self.may_owe(o.acct_idx):
                            code = self.unified_code(o.acct_idx, o.venue, &m.quote, &extra, 1)
                    elif extra > 0 and self.margin_short(o.acct_idx, m.quote, extra):
                        code = XOS_INSUFFICIENT_MARGIN
                    if (code == XOS_OK and extra > 0 and self.cap_index.count and m.kind == XOS_MARKET_PERPETUAL
                            and self.over_cap(o.acct_idx, m, extra)):
                        code = XOS_EXPOSURE_CAP_EXCEEDED
                else:
                    extra = c.qty - o.remaining
                    if extra > 0 and extra > self.bals[o.bal_base].free:
                        code = XOS_INSUFFICIENT_BALANCE
                    elif extra > 0 and self.valuation_asset:
                        if self.may_owe(o.acct_idx):
                            code = self.unified_code(o.acct_idx, o.venue, &m.base, &extra, 1)
                    elif extra > 0 and self.margin_short(o.acct_idx, m.base, extra):
                        code = XOS_INSUFFICIENT_MARGIN
        if code:
            self.reject(c, code)
            return

        cdef Balance *b = &self.bals[o.bal_quote if o.side == BID or m.kind != XOS_MARKET_SPOT else o.bal_base]
        b.free -= extra
        b.held += extra
        if m.kind == XOS_MARKET_PERPETUAL:
            self.venue_open(o, c.qty - o.remaining)
        cdef bint keeps_priority = price == o.price and c.qty <= o.remaining
        cdef xos_event *e
        if keeps_priority:
            self.level_reduce(m, o, o.remaining - c.qty)
            o.qty -= o.remaining - c.qty
            o.remaining = c.qty
            e = self.emit_order(XOS_EV_AMENDED, o)
            e.qty = o.remaining
            e.remaining = o.remaining
            return
        self.unlink(m, slot)
        o.price = price
        o.hold_per_lot = per_lot
        o.qty = o.filled + c.qty
        o.remaining = c.qty
        e = self.emit_order(XOS_EV_AMENDED, o)
        e.flags = XOS_EF_PRIORITY_LOST
        e.qty = o.remaining
        e.remaining = o.remaining
        self.take_and_rest(m, slot)

    cdef void cmd_mass_cancel(self, const xos_command *c) noexcept nogil:
        cdef int64_t acct_idx = -1, count = 0
        cdef uint16_t code = XOS_OK
        cdef bint all_markets = (c.flags & XOS_CF_ALL_MARKETS) != 0
        cdef bint by_venue = (c.flags & XOS_CF_BY_VENUE) != 0
        cdef int32_t k, nxt
        if c.flags & ~(XOS_CF_ALL_MARKETS | XOS_CF_BY_VENUE):
            code = XOS_INVALID_FLAGS
        if code == XOS_OK:
            code = self.check_account(c.account, &acct_idx)
        if code == XOS_OK and not all_markets and (
                c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists):
            code = XOS_UNKNOWN_MARKET
        if code == XOS_OK and by_venue and (c.venue >= <uint32_t>self.max_venues or
                                            not self.venue_table[c.venue].exists):
            code = XOS_UNKNOWN_VENUE
        if code:
            self.reject(c, code)
            return
        k = self.accts[acct_idx].order_head
        while k != NONE:
            if self.mass_cancel_selects(c, &self.orders[k], all_markets, by_venue):
                count += 1
            k = self.orders[k].acct_next
        cdef xos_event *e = self.emit(XOS_EV_ACCEPTED)
        e.account = c.account
        e.market = 0 if all_markets else c.market
        e.venue = c.venue if by_venue else 0
        e.qty = count
        k = self.accts[acct_idx].order_head
        while k != NONE:
            nxt = self.orders[k].acct_next
            if self.mass_cancel_selects(c, &self.orders[k], all_markets, by_venue):
                self.cancel_order(k, True, XOS_CANCEL_MASS, 0, self.orders[k].remaining)
            k = nxt

    cdef inline bint mass_cancel_selects(self, const xos_command *c, const Order *o, bint all_markets,
                                         bint by_venue) noexcept nogil:
        return (all_markets or o.market == c.market) and (not by_venue or o.venue == c.venue)

    cdef void cmd_balance(self, const xos_command *c) noexcept nogil:
        cdef uint16_t code = XOS_OK
        cdef int64_t acct_idx = -1, b
        cdef bint deposit = c.kind == XOS_CMD_DEPOSIT
        cdef Asset *a
        if c.account <= 0:
            code = XOS_INVALID_ACCOUNT_ID
        elif not deposit:
            code = self.check_account(c.account, &acct_idx)
        if code == XOS_OK:
            if c.market < 1 or c.market > <uint32_t>self.max_assets or not self.asset_table[c.market].exists:
                code = XOS_UNKNOWN_ASSET
            elif c.qty <= 0:
                code = XOS_AMOUNT_NOT_POSITIVE
        if code == XOS_OK:
            a = &self.asset_table[c.market]
            if deposit:
                acct_idx = self.account_index_of(c.account)
                if c.qty > XOS_MAX_MONEY - a.outstanding:
                    code = XOS_BALANCE_OVERFLOW
                elif acct_idx < 0 and self.n_accounts >= self.max_accounts:
                    code = XOS_ACCOUNT_CAPACITY
            elif c.qty > self.free_of(acct_idx, c.market):
                code = XOS_INSUFFICIENT_FREE_BALANCE
            elif self.valuation_asset:
                if self.may_owe(acct_idx):
                    code = self.unified_code(acct_idx, WITHDRAW_WEIGHTS, &c.market, &c.qty, 1)
            elif self.margin_short(acct_idx, c.market, c.qty):
                code = XOS_INSUFFICIENT_MARGIN
        if code:
            self.reject(c, code)
            return
        if acct_idx < 0:
            acct_idx = self.new_account(c.account)
        b = self.ensure_balance(acct_idx, c.market)
        cdef int64_t delta = c.qty if deposit else -c.qty
        self.bals[b].free += delta
        a.outstanding += delta
        cdef xos_event *e = self.emit(XOS_EV_BALANCE)
        e.account = c.account
        e.market = c.market
        e.qty = delta
        e.remaining = self.bals[b].free
        e.taker_fee = self.bals[b].held

    cdef void cmd_add_asset(self, const xos_command *c) noexcept nogil:
        cdef uint16_t code = XOS_OK
        if c.market < 1 or c.market > <uint32_t>self.max_assets:
            code = XOS_INVALID_ASSET_ID
        elif self.asset_table[c.market].exists:
            code = XOS_ASSET_EXISTS
        elif c.price < 0 or c.price > 18:
            code = XOS_INVALID_DECIMALS
        if code:
            self.reject(c, code)
            return
        cdef Asset *a = &self.asset_table[c.market]
        a.exists = True
        a.decimals = <int32_t>c.price
        a.symbol_lo = c.id
        a.symbol_hi = c.aux
        a.outstanding = 0
        self.emit_listing(c)

    cdef void cmd_add_market(self, const xos_command *c) noexcept nogil:
        """The admin's listing (trusted input): ``account`` holds base | quote << 32, ``aux`` the fees and band."""
        cdef uint64_t packed_assets = <uint64_t>c.account
        cdef uint64_t params = <uint64_t>c.aux
        self.list_market(c, <uint32_t>(packed_assets & <uint64_t>0xFFFFFFFFu), <uint32_t>(packed_assets >> 32),
                         <int16_t>(params & 0xFFFF), <int16_t>((params >> 16) & 0xFFFF), params >> 32, 0)

    cdef void cmd_list_market(self, const xos_command *c) noexcept nogil:
        """AddMarket from a live venue's operator (or the admin): the sender in ``account``, so base in ``flags``
        and quote in ``aux``'s top 16 bits beside the fees and a u16 band (records.pack_listing)."""
        cdef uint16_t code = self.check_operator(c)
        cdef uint64_t aux = <uint64_t>c.aux
        if code == XOS_OK and c.venue == 0:
            code = XOS_PROTOCOL_VENUE
        if code:
            self.reject(c, code)
            return
        self.list_market(c, c.flags, <uint32_t>(aux >> 48), <int16_t>(aux & 0xFFFF), <int16_t>((aux >> 16) & 0xFFFF),
                         (aux >> 32) & 0xFFFF, c.account)

    cdef void list_market(self, const xos_command *c, uint32_t base, uint32_t quote, int32_t maker, int32_t taker,
                          uint64_t band, int64_t sender) noexcept nogil:
        """AddMarket's checks and listing; ``sender`` > 0 (a ListMarket's): the venue must hold the minimum stake,
        and the listing echo carries the sender in ``maker_account``."""
        cdef uint16_t code = XOS_OK
        cdef xos_event *e
        if c.market < 1 or c.market > <uint32_t>self.max_markets:
            code = XOS_INVALID_MARKET_ID
        elif self.market_table[c.market].exists:
            code = XOS_MARKET_EXISTS
        elif c.venue >= <uint32_t>self.max_venues or not self.venue_table[c.venue].exists:
            code = XOS_UNKNOWN_VENUE
        elif self.venue_table[c.venue].status != XOS_VSTATUS_LIVE:
            code = XOS_VENUE_NOT_LIVE
        elif sender and self.venue_table[c.venue].stake < self.min_stake:
            code = XOS_STAKE_BELOW_MINIMUM
        elif c.side > XOS_MARKET_OUTCOME:
            code = XOS_INVALID_MARKET_KIND
        elif (base < 1 or base > <uint32_t>self.max_assets or not self.asset_table[base].exists
              or quote < 1 or quote > <uint32_t>self.max_assets or not self.asset_table[quote].exists):
            code = XOS_UNKNOWN_ASSET
        elif base == quote:
            code = XOS_SAME_BASE_AND_QUOTE
        elif c.price <= 0:
            code = XOS_INVALID_TICK_SIZE
        elif c.qty <= 0:
            code = XOS_INVALID_LOT_SIZE
        elif c.id <= 0 or c.id % c.qty:
            code = XOS_INVALID_MIN_SIZE
        elif maker < -1000 or taker > 1000 or maker > taker or maker + taker < 0:
            code = XOS_INVALID_FEES
        elif band > 10000:
            code = XOS_INVALID_PRICE_BAND
        if code:
            self.reject(c, code)
            return
        cdef Market *m = &self.market_table[c.market]
        m.exists = True
        m.kind = c.side
        m.venue = c.venue
        m.base = base
        m.quote = quote
        m.tick_size = c.price
        m.lot_size = c.qty
        m.min_size = c.id
        m.maker_bps = maker
        m.taker_bps = taker
        m.band_bps = <int32_t>band
        m.last_price = 0
        m.max_leverage = 1
        m.maintenance_bps = DEFAULT_MAINTENANCE_BPS
        m.impact_lots = DEFAULT_IMPACT_LOTS
        m.slice_lots = 0
        m.mark = 0
        m.position_head = NONE
        m.funding_interval = DEFAULT_FUNDING_INTERVAL
        m.sample_interval = DEFAULT_SAMPLE_INTERVAL
        m.interest = 0
        m.clamp = 0
        m.cap = DEFAULT_FUNDING_CAP
        m.n_tiers = 0
        self.schedule_funding(m)
        self.set_offer(c.venue, c.market, True)  # the listing venue offers it
        e = self.emit_listing(c)  # a ListMarket's fields are AddMarket's packing in the echo
        e.account = <int64_t>((<uint64_t>quote << 32) | base)
        e.remaining = <int64_t>((<uint64_t>maker & 0xFFFF) | ((<uint64_t>taker & 0xFFFF) << 16) | (band << 32))
        e.maker_account = sender

    cdef void cmd_market_status(self, const xos_command *c) noexcept nogil:
        cdef bint halt = c.kind == XOS_CMD_HALT
        cdef uint16_t code = XOS_OK
        cdef xos_event *e
        if c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists:
            code = XOS_UNKNOWN_MARKET
        elif self.market_table[c.market].halted == halt:
            code = XOS_MARKET_STATUS_UNCHANGED
        if code:
            self.reject(c, code)
            return
        self.market_table[c.market].halted = halt
        e = self.emit(XOS_EV_MARKET_STATUS)
        e.market = c.market
        e.venue = self.market_table[c.market].venue
        e.account = c.account
        e.qty = halt

    # ---------------------------------------------------------------- venues

    cdef inline bint offered(self, uint32_t venue, uint32_t market) noexcept nogil:
        return (self.offers[<int64_t>venue * self.offer_words + <int64_t>(market >> 6)] >> (market & 63)) & 1

    cdef void set_offer(self, uint32_t venue, uint32_t market, bint on) noexcept nogil:
        cdef uint64_t *word = &self.offers[<int64_t>venue * self.offer_words + <int64_t>(market >> 6)]
        if on:
            word[0] |= (<uint64_t>1) << (market & 63)
        else:
            word[0] &= ~((<uint64_t>1) << (market & 63))

    cdef void set_status(self, Venue *v, uint8_t status) noexcept nogil:
        v.status = status
        # a halted or retired venue's resting orders are passed over by every other venue's takers
        v.match_mask = v.accepts if status == XOS_VSTATUS_LIVE or status == XOS_VSTATUS_WINDING_DOWN else 0

    cdef inline uint16_t check_access(self, uint32_t venue, int64_t account, int64_t acct_idx) noexcept nogil:
        cdef Venue *v = &self.venue_table[venue]
        if v.access == XOS_ACCESS_ALLOW_LIST and xos_hmap_get(&self.allow_index, account, venue) < 0:
            return XOS_ACCOUNT_NOT_ALLOWED
        if (v.blocked_regions >> self.accts[acct_idx].region) & 1:
            return XOS_REGION_BLOCKED
        return XOS_OK

    cdef uint16_t check_operator(self, const xos_command *c) noexcept nogil:
        """The command names an existing venue and comes from its operator or the admin."""
        if c.account <= 0:
            return XOS_INVALID_ACCOUNT_ID
        if c.venue >= <uint32_t>self.max_venues or not self.venue_table[c.venue].exists:
            return XOS_UNKNOWN_VENUE
        if c.account != self.venue_table[c.venue].operator and c.account != self.admin:
            return XOS_NOT_VENUE_OPERATOR
        return XOS_OK

    cdef void emit_venue(self, const xos_command *c) noexcept nogil:
        """An accepted venue command, echoed whole (flags = its kind): consumers follow venues
        from the event stream alone."""
        self.echo(XOS_EV_VENUE, c)

    cdef void echo(self, uint16_t kind, const xos_command *c) noexcept nogil:
        """An accepted command's fields in an event of ``kind`` (flags = the command kind)."""
        cdef xos_event *e = self.emit(kind)
        e.flags = c.kind
        e.venue = c.venue
        e.market = c.market
        e.side = c.side
        e.account = c.account
        e.price = c.price
        e.qty = c.qty
        e.client_id = c.id
        e.remaining = c.aux

    cdef void transfer(self, uint8_t reason, uint32_t venue, int64_t account, uint32_t asset, int64_t amount,
                       int64_t bucket_after, int64_t into_held=0) noexcept nogil:
        """``amount`` of ``asset`` into (> 0) or out of (< 0) the account's balance, against a venue's bucket (its
        locked stake or its fee pool, already updated by the caller; the event carries what the bucket holds after):
        ``into_held`` of it into (or out of) held (an isolated position's margin, moved by the caller), the rest free."""
        cdef int64_t b = self.ensure_balance(self.account_index_of(account), asset)
        self.bals[b].free += amount - into_held
        self.bals[b].held += into_held
        cdef xos_event *e = self.emit(XOS_EV_VENUE_TRANSFER)
        e.reason = reason
        e.venue = venue
        e.market = asset
        e.account = account
        e.qty = amount
        e.remaining = self.bals[b].free
        e.taker_fee = self.bals[b].held
        e.price = bucket_after

    cdef void release_unbonds(self) noexcept nogil:
        """Release every unbonding whose time has come (venue id order) to its operator."""
        cdef int64_t next_at = INT64_MAX, amount
        cdef int32_t i
        cdef Venue *v
        for i in range(1, self.max_venues):
            v = &self.venue_table[i]
            if v.unbonding == 0:
                continue
            if v.unbond_at <= self._now:
                amount = v.unbonding
                v.unbonding = 0
                v.unbond_at = 0
                self.transfer(XOS_XFER_STAKE_RELEASE, <uint32_t>i, v.operator, self.stake_asset, amount, v.stake)
            elif v.unbond_at < next_at:
                next_at = v.unbond_at
        self.next_release = next_at

    cdef int64_t *fee_slot(self, uint32_t venue, uint32_t asset) noexcept nogil:
        """The venue's collected-fee counter for the asset (created at 0); valid until the next call."""
        cdef int64_t i = xos_hmap_get(&self.fee_index, venue, asset)
        if i < 0:
            if self.n_venue_pool == self.cap_venue_pool:
                self.venue_pool = <int64_t *>grow(self.venue_pool, &self.cap_venue_pool, self.n_venue_pool + 1,
                                                  sizeof(int64_t), b"venue fees")
            i = self.n_venue_pool
            self.n_venue_pool += 1
            self.venue_pool[i] = 0
            if xos_hmap_put(&self.fee_index, venue, asset, i):
                die(b"venue fee index")
        return &self.venue_pool[i]

    cdef void collect(self, uint32_t venue, uint32_t asset, int64_t amount) noexcept nogil:
        if amount == 0:
            return
        if venue == 0:
            self.fee_pool[asset] += amount
        else:
            self.fee_slot(venue, asset)[0] += amount

    cdef Volume *volume_of(self, int64_t account, uint32_t venue, bint create) noexcept nogil:
        cdef int64_t i = xos_hmap_get(&self.volume_index, account, venue)
        if i < 0:
            if not create:
                return NULL
            if self.n_volumes == self.cap_volumes:
                self.volume_rows = <Volume *>grow(self.volume_rows, &self.cap_volumes, self.n_volumes + 1, sizeof(Volume),
                                              b"volumes")
            i = self.n_volumes
            self.n_volumes += 1
            memset(&self.volume_rows[i], 0, sizeof(Volume))
            if xos_hmap_put(&self.volume_index, account, venue, i):
                die(b"volume index")
        return &self.volume_rows[i]

    cdef void add_volume(self, Order *o, uint32_t quote, int64_t notional) noexcept nogil:
        """Count a fill towards the order's account's tier on its venue (tier-asset markets only)."""
        cdef Venue *v = &self.venue_table[o.venue]
        cdef int64_t epoch
        cdef Volume *vol
        if quote != v.tier_asset:
            return
        epoch = self._now // v.tier_epoch
        vol = self.volume_of(o.account, o.venue, True)
        if vol.epoch != epoch:
            vol.previous = vol.current if vol.epoch == epoch - 1 else 0
            vol.current = 0
            vol.epoch = epoch
        vol.current = vol.current + notional if notional < XOS_MAX_MONEY - vol.current else XOS_MAX_MONEY

    cdef void order_fees(self, Market *m, uint32_t venue, int64_t account, int16_t *maker, int16_t *taker) noexcept nogil:
        """The fees of an order of a venue other than 0 (venue 0 charges the market's): its own, at the
        highest tier whose minimum the account's volume there in the previous epoch reaches."""
        cdef Venue *v = &self.venue_table[venue]
        cdef Volume *vol
        cdef int64_t epoch, last = 0
        cdef int32_t i
        maker[0] = <int16_t>v.maker_bps
        taker[0] = <int16_t>v.taker_bps
        if v.n_tiers == 0:
            return
        vol = self.volume_of(account, venue, False)
        if vol != NULL:
            epoch = self._now // v.tier_epoch
            if vol.epoch == epoch:
                last = vol.previous
            elif vol.epoch == epoch - 1:
                last = vol.current
        for i in range(v.n_tiers):
            if last >= v.tiers[i].min_volume:
                maker[0] = <int16_t>v.tiers[i].maker_bps
                taker[0] = <int16_t>v.tiers[i].taker_bps

    cdef void cmd_venue_fees(self, const xos_command *c) noexcept nogil:
        """VenueFees (base maker / taker and the split) and VenueFeeTier (a volume tier)."""
        cdef uint16_t code = self.check_operator(c)
        cdef Venue *v = &self.venue_table[c.venue]
        cdef uint64_t packed = <uint64_t>c.aux
        cdef int32_t maker = <int16_t>(packed & 0xFFFF)
        cdef int32_t taker = <int16_t>((packed >> 16) & 0xFFFF)
        cdef int32_t op_bps = <int32_t>((packed >> 32) & 0xFFFF)
        cdef int32_t ins_bps = <int32_t>((packed >> 48) & 0xFFFF)
        cdef int32_t t = c.side - 1
        if code == XOS_OK:
            if c.venue == 0:
                code = XOS_PROTOCOL_VENUE
            elif v.status == XOS_VSTATUS_RETIRED:
                code = XOS_VENUE_RETIRED
            elif c.kind == XOS_CMD_VENUE_FEES:
                if maker < -1000 or taker > 1000 or maker > taker or maker + taker < 0 or op_bps + ins_bps > 10000:
                    code = XOS_INVALID_VENUE_FEES
            elif c.side < 1 or c.side > 4 or t > v.n_tiers or c.price < 0 or (c.price > 0 and (
                    c.qty <= 0 or (t > 0 and c.price <= v.tiers[t - 1].min_volume)
                    or (t + 1 < v.n_tiers and c.price >= v.tiers[t + 1].min_volume))):
                code = XOS_INVALID_FEE_TIER
            elif c.price > 0 and (c.market < 1 or c.market > <uint32_t>self.max_assets
                                  or not self.asset_table[c.market].exists):
                code = XOS_UNKNOWN_ASSET
            elif c.price > 0 and (maker < -1000 or taker > 1000 or maker > taker or maker + taker < 0):
                code = XOS_INVALID_VENUE_FEES
        if code:
            self.reject(c, code)
            return
        if c.kind == XOS_CMD_VENUE_FEES:
            v.maker_bps = maker
            v.taker_bps = taker
            v.operator_bps = op_bps
            v.insurance_bps = ins_bps
        elif c.price == 0:  # removes this tier and those above it
            v.n_tiers = t
        else:
            v.tiers[t].min_volume = c.price
            v.tiers[t].maker_bps = maker
            v.tiers[t].taker_bps = taker
            v.tier_asset = c.market
            v.tier_epoch = c.qty
            if t == v.n_tiers:
                v.n_tiers += 1
        self.emit_venue(c)

    cdef void cmd_sweep_fees(self, const xos_command *c) noexcept nogil:
        """Pay a venue's collected fees in one asset out by its split: operator, insurance fund,
        and the protocol (which also gets the rounding remainder)."""
        cdef uint16_t code = self.check_operator(c)
        cdef Venue *v = &self.venue_table[c.venue]
        cdef int64_t i = -1, pool, to_operator, to_insurance
        if code == XOS_OK:
            if c.venue == 0:
                code = XOS_PROTOCOL_VENUE
            elif c.market < 1 or c.market > <uint32_t>self.max_assets or not self.asset_table[c.market].exists:
                code = XOS_UNKNOWN_ASSET
            else:
                i = xos_hmap_get(&self.fee_index, c.venue, c.market)
                if i < 0 or self.venue_pool[i] == 0:
                    code = XOS_NOTHING_TO_SWEEP
        if code:
            self.reject(c, code)
            return
        pool = self.venue_pool[i]
        to_operator = (pool // 10000) * v.operator_bps + (pool % 10000) * v.operator_bps // 10000
        to_insurance = (pool // 10000) * v.insurance_bps + (pool % 10000) * v.insurance_bps // 10000
        self.venue_pool[i] = 0
        self.emit_venue(c)
        pool -= to_operator
        if to_operator:
            self.transfer(XOS_XFER_FEE_OPERATOR, c.venue, v.operator, c.market, to_operator, pool)
        pool -= to_insurance
        if to_insurance:
            self.transfer(XOS_XFER_FEE_INSURANCE, c.venue, v.insurance, c.market, to_insurance, pool)
        if pool:
            self.transfer(XOS_XFER_FEE_PROTOCOL, c.venue, self.protocol_account, c.market, pool, 0)

    cdef void cmd_venue_params(self, const xos_command *c) noexcept nogil:
        cdef uint16_t code = XOS_OK
        cdef int32_t i
        if c.account <= 0:
            code = XOS_INVALID_ACCOUNT_ID
        elif self.admin != 0 and c.account != self.admin:
            code = XOS_NOT_ADMIN  # before any admin exists the first one is set (the bootstrap)
        elif c.market < 1 or c.market > <uint32_t>self.max_assets or not self.asset_table[c.market].exists:
            code = XOS_UNKNOWN_ASSET
        elif c.qty <= 0 or c.price < 0 or c.id <= 0 or c.aux <= 0:
            code = XOS_INVALID_STAKING_PARAMS
        elif self.account_index_of(c.id) < 0 and self.n_accounts >= self.max_accounts:
            code = XOS_ACCOUNT_CAPACITY
        elif self.stake_asset != 0 and c.market != self.stake_asset:
            for i in range(1, self.max_venues):
                if self.venue_table[i].stake or self.venue_table[i].unbonding:
                    code = XOS_STAKE_ASSET_LOCKED
                    break
        if code:
            self.reject(c, code)
            return
        self.stake_asset = c.market
        self.min_stake = c.qty
        self.unbond_period = c.price
        self.protocol_account = c.id
        self.admin = c.aux
        if self.account_index_of(c.id) < 0:
            self.new_account(c.id)
        self.emit_venue(c)

    cdef void cmd_launch_venue(self, const xos_command *c) noexcept nogil:
        cdef uint16_t code = XOS_OK
        cdef int64_t acct_idx = -1
        cdef int32_t i
        cdef Venue *v
        if self.admin == 0:
            code = XOS_STAKING_NOT_CONFIGURED
        else:
            code = self.check_account(c.account, &acct_idx)
        if code == XOS_OK:
            if c.venue < 1 or c.venue >= <uint32_t>self.max_venues:
                code = XOS_INVALID_VENUE_ID
            elif self.venue_table[c.venue].exists:
                code = XOS_VENUE_EXISTS
            elif c.side > XOS_ACCESS_ALLOW_LIST:
                code = XOS_INVALID_VENUE_POLICY
            elif c.id <= 0 or c.id == c.account or c.id == self.protocol_account:
                code = XOS_INVALID_INSURANCE_ACCOUNT
            elif c.qty < self.min_stake:
                code = XOS_STAKE_BELOW_MINIMUM
            elif c.qty > self.free_of(acct_idx, self.stake_asset):
                code = XOS_INSUFFICIENT_STAKE_BALANCE
            elif self.account_index_of(c.id) < 0 and self.n_accounts >= self.max_accounts:
                code = XOS_ACCOUNT_CAPACITY
            else:
                for i in range(1, self.max_venues):
                    if self.venue_table[i].exists and self.venue_table[i].insurance == c.id:
                        code = XOS_INVALID_INSURANCE_ACCOUNT
                        break
        if code:
            self.reject(c, code)
            return
        v = &self.venue_table[c.venue]
        v.exists = True
        v.access = c.side
        v.pool = c.side  # permissionless venues share pool 0, allow-list venues start in pool 1
        v.accepts = ALL_POOLS
        v.blocked_regions = 0
        v.operator = c.account
        v.insurance = c.id
        v.stake = c.qty
        v.unbonding = 0
        v.unbond_at = 0
        v.open_orders = 0
        v.maker_bps = 0
        v.taker_bps = 0
        v.operator_bps = 0
        v.insurance_bps = 0
        v.tier_asset = 0
        v.n_tiers = 0
        v.tier_epoch = 0
        self.set_status(v, XOS_VSTATUS_LIVE)
        if self.account_index_of(c.id) < 0:
            self.new_account(c.id)
        self.emit_venue(c)
        self.transfer(XOS_XFER_STAKE_LOCK, c.venue, c.account, self.stake_asset, -c.qty, v.stake)

    cdef void cmd_stake(self, const xos_command *c) noexcept nogil:
        """AddStake (from the operator's free balance) and Unbond (a release after the period)."""
        cdef uint16_t code = self.check_operator(c)
        cdef Venue *v = &self.venue_table[c.venue]
        if code == XOS_OK:
            if c.venue == 0:
                code = XOS_PROTOCOL_VENUE
            elif c.qty <= 0:
                code = XOS_AMOUNT_NOT_POSITIVE
            elif c.kind == XOS_CMD_ADD_STAKE:
                if v.status == XOS_VSTATUS_RETIRED:
                    code = XOS_VENUE_RETIRED
                elif c.qty > self.free_of(self.account_index_of(v.operator), self.stake_asset):
                    code = XOS_INSUFFICIENT_STAKE_BALANCE
            elif v.unbonding > 0:
                code = XOS_UNBOND_PENDING
            elif c.qty > v.stake:
                code = XOS_UNBOND_EXCEEDS_STAKE
            elif v.status != XOS_VSTATUS_RETIRED and v.stake - c.qty < self.min_stake:
                code = XOS_UNBOND_BELOW_MINIMUM
        if code:
            self.reject(c, code)
            return
        self.emit_venue(c)
        if c.kind == XOS_CMD_ADD_STAKE:
            v.stake += c.qty
            self.transfer(XOS_XFER_STAKE_LOCK, c.venue, v.operator, self.stake_asset, -c.qty, v.stake + v.unbonding)
            return
        v.stake -= c.qty
        v.unbonding = c.qty
        v.unbond_at = self._now + self.unbond_period if self.unbond_period < INT64_MAX - self._now else INT64_MAX
        if v.unbond_at < self.next_release:
            self.next_release = v.unbond_at

    cdef void cmd_venue_status(self, const xos_command *c) noexcept nogil:
        cdef uint16_t code = self.check_operator(c)
        cdef Venue *v = &self.venue_table[c.venue]
        if code == XOS_OK:
            if c.side < XOS_VSTATUS_LIVE or c.side > XOS_VSTATUS_RETIRED:
                code = XOS_INVALID_VENUE_STATUS
            elif v.status == XOS_VSTATUS_RETIRED:
                code = XOS_VENUE_RETIRED
            elif c.side == v.status:
                code = XOS_VENUE_STATUS_UNCHANGED
            elif c.venue == 0 and c.side >= XOS_VSTATUS_WINDING_DOWN:
                code = XOS_PROTOCOL_VENUE
            elif c.side == XOS_VSTATUS_RETIRED and v.open_orders > 0:
                code = XOS_VENUE_HAS_OPEN_ORDERS
        if code:
            self.reject(c, code)
            return
        self.set_status(v, c.side)
        self.emit_venue(c)

    cdef void cmd_venue_config(self, const xos_command *c) noexcept nogil:
        """VenueAccess, VenuePolicy, OfferMarket / WithdrawMarket, Allow / Deny."""
        cdef uint16_t code = self.check_operator(c)
        cdef Venue *v = &self.venue_table[c.venue]
        cdef bint listed
        if code == XOS_OK and v.status == XOS_VSTATUS_RETIRED:
            code = XOS_VENUE_RETIRED
        if code == XOS_OK:
            if c.kind == XOS_CMD_VENUE_ACCESS:
                if c.side > XOS_ACCESS_ALLOW_LIST:
                    code = XOS_INVALID_VENUE_POLICY
            elif c.kind == XOS_CMD_VENUE_POLICY:
                if c.side > 63 or not ((<uint64_t>c.aux >> c.side) & 1):
                    code = XOS_INVALID_VENUE_POLICY
            elif c.kind == XOS_CMD_OFFER_MARKET or c.kind == XOS_CMD_WITHDRAW_MARKET:
                if c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists:
                    code = XOS_UNKNOWN_MARKET
                elif self.offered(c.venue, c.market) == (c.kind == XOS_CMD_OFFER_MARKET):
                    code = XOS_VENUE_OFFER_UNCHANGED
            else:
                listed = xos_hmap_get(&self.allow_index, c.id, c.venue) >= 0
                if c.id <= 0:
                    code = XOS_INVALID_ACCOUNT_ID
                elif listed == (c.kind == XOS_CMD_ALLOW):
                    code = XOS_ACCESS_UNCHANGED
        if code:
            self.reject(c, code)
            return
        if c.kind == XOS_CMD_VENUE_ACCESS:
            v.access = c.side
            v.blocked_regions = <uint64_t>c.qty
        elif c.kind == XOS_CMD_VENUE_POLICY:
            v.pool = c.side
            v.accepts = <uint64_t>c.aux
            self.set_status(v, v.status)
        elif c.kind == XOS_CMD_OFFER_MARKET or c.kind == XOS_CMD_WITHDRAW_MARKET:
            self.set_offer(c.venue, c.market, c.kind == XOS_CMD_OFFER_MARKET)
        elif c.kind == XOS_CMD_ALLOW:
            if xos_hmap_put(&self.allow_index, c.id, c.venue, 1):
                die(b"allow-list")
        else:
            xos_hmap_del(&self.allow_index, c.id, c.venue)
        self.emit_venue(c)

    cdef void cmd_set_region(self, const xos_command *c) noexcept nogil:
        cdef uint16_t code = XOS_OK
        cdef int64_t acct_idx = -1
        if c.account <= 0:
            code = XOS_INVALID_ACCOUNT_ID
        elif c.account != self.admin:
            code = XOS_NOT_ADMIN
        else:
            code = self.check_account(c.id, &acct_idx)
        if code == XOS_OK and c.side > 63:
            code = XOS_INVALID_REGION
        if code:
            self.reject(c, code)
            return
        self.accts[acct_idx].region = c.side
        self.emit_venue(c)

    cdef void cmd_slash(self, const xos_command *c) noexcept nogil:
        """Admin: ``qty`` of a venue's locked stake (bonded first, then unbonding) pays its
        insurance fund up to the shortfall in ``price`` first, the rest goes to the protocol."""
        cdef uint16_t code = XOS_OK
        cdef Venue *v
        cdef int64_t from_bonded, to_insurance
        if c.account <= 0:
            code = XOS_INVALID_ACCOUNT_ID
        elif c.account != self.admin:
            code = XOS_NOT_ADMIN
        elif c.venue >= <uint32_t>self.max_venues or not self.venue_table[c.venue].exists:
            code = XOS_UNKNOWN_VENUE
        elif c.venue == 0:
            code = XOS_PROTOCOL_VENUE
        elif c.qty <= 0 or c.price < 0:
            code = XOS_AMOUNT_NOT_POSITIVE
        elif c.qty > self.venue_table[c.venue].stake + self.venue_table[c.venue].unbonding:
            code = XOS_SLASH_EXCEEDS_STAKE
        if code:
            self.reject(c, code)
            return
        v = &self.venue_table[c.venue]
        from_bonded = c.qty if c.qty < v.stake else v.stake
        v.stake -= from_bonded
        v.unbonding -= c.qty - from_bonded
        if v.unbonding == 0:
            v.unbond_at = 0
        to_insurance = c.qty if c.qty < c.price else c.price
        self.emit_venue(c)
        if to_insurance > 0:
            self.transfer(XOS_XFER_SLASH_INSURANCE, c.venue, v.insurance, self.stake_asset, to_insurance,
                          v.stake + v.unbonding)
        if c.qty > to_insurance:
            self.transfer(XOS_XFER_SLASH_PROTOCOL, c.venue, self.protocol_account, self.stake_asset,
                          c.qty - to_insurance, v.stake + v.unbonding)

    # ------------------------------------------------------------- oracles

    cdef Oracle *oracle_of(self, uint32_t venue, uint32_t market) noexcept nogil:
        cdef int64_t i = xos_hmap_get(&self.oracle_index, venue, market)
        return &self.oracle_rows[i] if i >= 0 else NULL

    cdef bint oracle_stale(self, uint32_t venue, uint32_t market) noexcept nogil:
        """The venue's oracle for the market is stale (called only when some venue's is)."""
        cdef Oracle *o = self.oracle_of(venue, market)
        return o != NULL and o.stale

    cdef void emit_oracle_status(self, Oracle *o) noexcept nogil:
        cdef xos_event *e = self.emit(XOS_EV_ORACLE_STATUS)
        e.venue = o.venue
        e.market = o.market
        e.qty = o.stale
        e.price = o.price
        e.client_id = o.feed_id
        e.account = o.feed_account
        e.remaining = o.updated_at

    cdef void mark_stale_oracles(self) noexcept nogil:
        """Step 2 of every command once the clock reaches ``next_stale_at``: every fresh oracle
        whose timeout has passed without a price goes stale (configuration order)."""
        cdef int64_t i, at, next_at = INT64_MAX
        cdef Oracle *o
        for i in range(self.n_oracles):
            o = &self.oracle_rows[i]
            if o.stale:
                continue
            at = stale_deadline(o)
            if at <= self._now:
                o.stale = True
                self.market_table[o.market].stale_oracles += 1
                self.emit_oracle_status(o)
                self.dirty_mark(o.market)
            elif at < next_at:
                next_at = at
        self.next_stale_at = next_at

    # ------------------------------------------------------------- margin

    cdef void dirty_mark(self, uint32_t market) noexcept nogil:
        """Recompute a perpetual market's mark at the end of this command (others are ignored)."""
        cdef Market *m = &self.market_table[market]
        if m.kind != XOS_MARKET_PERPETUAL or m.mark_dirty:
            return
        if self.n_dirty == self.cap_dirty:
            self.dirty_marks = <uint32_t *>grow(self.dirty_marks, &self.cap_dirty, self.n_dirty + 1, sizeof(uint32_t),
                                                b"dirty marks")
        m.mark_dirty = True
        self.dirty_marks[self.n_dirty] = market
        self.n_dirty += 1

    cdef int64_t impact_price(self, Market *m, uint8_t side) noexcept nogil:
        """The price of the last level a taker of the impact size reaches on ``side`` of the whole book
        (reference ``_impact_price``): 0 when that side holds less."""
        cdef BookSide *bs = &m.sides[side]
        cdef int64_t need = xos_mul_capped(m.impact_lots, m.lot_size)
        cdef int32_t i = bs.n - 1
        while i >= 0:
            need -= bs.levels[i].qty  # tombstone levels hold 0
            if need <= 0:
                return bs.levels[i].price
            i -= 1
        return 0

    cdef void update_marks(self) noexcept nogil:
        """Step 5 of a command: the marks of the perpetual markets it may have moved, in market order
        (reference ``_update_mark``); each change is published as a Mark event."""
        cdef int64_t i, j, mark
        cdef int64_t inputs[4]
        cdef uint32_t market
        cdef Market *m
        cdef xos_event *e
        for i in range(1, self.n_dirty):  # insertion sort: a command dirties a handful of markets
            market = self.dirty_marks[i]
            j = i - 1
            while j >= 0 and self.dirty_marks[j] > market:
                self.dirty_marks[j + 1] = self.dirty_marks[j]
                j -= 1
            self.dirty_marks[j + 1] = market
        for i in range(self.n_dirty):
            market = self.dirty_marks[i]
            m = &self.market_table[market]
            m.mark_dirty = False
            mark = self.compute_mark(market, inputs)
            if mark != m.mark:
                m.mark = mark
                e = self.emit(XOS_EV_MARK)
                e.market = market
                e.venue = m.venue
                e.price = mark
                e.qty = inputs[0]
                e.remaining = inputs[1]
                e.client_id = m.last_price
                e.maker_order = inputs[2]
                e.maker_account = inputs[3]
        self.n_dirty = 0

    cdef int64_t compute_mark(self, uint32_t market, int64_t *inputs) noexcept nogil:
        """The mark from its inputs now; ``inputs`` gets the oracle price, impact mid, impact bid and ask
        (0: missing)."""
        cdef Market *m = &self.market_table[market]
        cdef Oracle *o = self.oracle_of(m.venue, market)
        cdef int64_t oracle = o.price if o != NULL and not o.stale else 0
        cdef int64_t bid = self.impact_price(m, BID)
        cdef int64_t ask = self.impact_price(m, ASK)
        cdef int64_t impact = 0, lo, hi, last = m.last_price
        if bid and ask:
            lo = bid if bid < ask else ask
            hi = ask if bid < ask else bid
            impact = lo + (hi - lo) // 2  # floor((bid + ask) / 2) without overflow
            impact -= impact % m.tick_size
        inputs[0] = oracle
        inputs[1] = impact
        inputs[2] = bid
        inputs[3] = ask
        if oracle and impact and last:  # the median of three
            lo = oracle if oracle < impact else impact
            hi = impact if oracle < impact else oracle
            return lo if last < lo else (hi if last > hi else last)
        return oracle if oracle else (last if last else impact)

    cdef bint margin_short(self, int64_t acct_idx, uint32_t asset, int64_t amount) noexcept nogil:
        """Taking ``amount`` more of ``asset`` from free would leave less than the initial margin at mark of
        the account's positions quoted in it: free - amount + sum(margin + unrealised - initial) < 0.
        Walks only the account's own positions (reference ``_margin_short``)."""
        if self.accts[acct_idx].position_head == NONE:
            return False
        return self.margin_excess(acct_idx, asset) - amount < 0

    cdef int64_t margin_excess(self, int64_t acct_idx, uint32_t asset) noexcept nogil:
        """free + sum(margin + unrealised - initial margin) at mark over the account's cross positions quoted in asset
        (an isolated position's margin and PnL count only for itself)."""
        cdef int64_t i = self.accts[acct_idx].position_head
        cdef int64_t excess = self.free_of(acct_idx, asset), value, lots
        cdef Position *p
        cdef Market *m
        while i != NONE:
            p = &self.position_rows[i]
            i = p.next_of_account
            m = &self.market_table[p.market]
            if m.kind != XOS_MARKET_PERPETUAL or m.quote != asset or p.size == 0 or p.isolated:
                continue
            lots = (p.size if p.size > 0 else -p.size) // m.lot_size
            value = xos_mul_capped(m.mark, lots)
            excess += p.margin + (value - p.entry_value if p.size > 0 else p.entry_value - value)
            excess -= initial_margin(m, value)
        return excess

    # ---------------------------------------------------------- liquidation

    cdef int64_t fund_of(self, uint32_t venue) noexcept nogil:
        """A venue's insurance fund account: its own; venue 0's is the protocol account (0 until VenueParams)."""
        return self.venue_table[venue].insurance if venue else self.protocol_account

    cdef int64_t equity_of(self, int64_t acct_idx, uint32_t asset, int64_t *maintenance) noexcept nogil:
        """The account's equity in ``asset`` (free + margin + unrealised at mark of its cross perpetual positions
        quoted in it) and its maintenance requirement (reference ``_equity``)."""
        cdef int64_t i = self.accts[acct_idx].position_head
        cdef int64_t equity = self.free_of(acct_idx, asset), own_maintenance
        cdef Position *p
        cdef Market *m
        maintenance[0] = 0
        while i != NONE:
            p = &self.position_rows[i]
            i = p.next_of_account
            m = &self.market_table[p.market]
            if m.kind != XOS_MARKET_PERPETUAL or m.quote != asset or p.isolated:
                continue
            equity += self.position_equity(p, &own_maintenance)
            maintenance[0] += own_maintenance
        return equity

    cdef int64_t position_equity(self, Position *p, int64_t *maintenance) noexcept nogil:
        """A perpetual position's own margin + unrealised PnL at mark and its maintenance requirement (0, 0 when flat):
        an isolated position's equity (reference ``_position_equity``)."""
        cdef Market *m = &self.market_table[p.market]
        cdef int64_t value
        maintenance[0] = 0
        if p.size == 0:
            return 0
        value = xos_mul_capped(m.mark, (p.size if p.size > 0 else -p.size) // m.lot_size)
        maintenance[0] = xos_fee(initial_margin(m, value), m.maintenance_bps)
        return p.margin + (value - p.entry_value if p.size > 0 else p.entry_value - value)

    cdef int64_t liquidation_equity_now(self, int64_t acct_idx, uint32_t venue, uint32_t asset, int64_t isolated_row,
                                        int64_t base_free) noexcept nogil:
        """The equity a bankruptcy price brings to 0 (reference ``equity_now`` in ``_liquidate``): the cross one
        (``isolated_row`` < 0: ``liquidation_equity``), or the isolated position's own plus what its closed parts
        realised into free since the liquidation began (free was ``base_free``)."""
        cdef int64_t maintenance
        if isolated_row < 0:
            return self.liquidation_equity(acct_idx, venue, asset)
        return (self.position_equity(&self.position_rows[isolated_row], &maintenance)
                + self.free_of(acct_idx, asset) - base_free)

    cdef void pseudo_order(self, Order *o, int64_t account, Market *m, uint32_t venue, uint8_t side,
                           int64_t hold_per_lot) noexcept nogil:
        """An order that is never in the book (reference ``_pseudo_order``): one side of a position transfer, or
        (in a pool slot) a liquidation's IOC order. It pays no fee; it holds ``hold_per_lot`` per lot."""
        memset(o, 0, sizeof(Order))
        o.account = account
        o.acct_idx = <int32_t>self.account_index_of(account)
        o.bal_quote = <int32_t>self.ensure_balance(o.acct_idx, m.quote)
        o.bal_base = o.bal_quote  # a perpetual order never touches its base balance
        o.market = <uint32_t>(m - self.market_table)
        o.venue = venue
        o.side = side
        o.hold_per_lot = hold_per_lot
        o.prev = NONE
        o.next = NONE
        o.tif = XOS_TIF_IOC

    cdef void transfer_position(self, uint8_t reason, Market *m, uint32_t venue, int64_t target, uint8_t side,
                                int64_t counterparty, int64_t q, int64_t price, bint holds) noexcept nogil:
        """``q`` of the target's position (closed on ``side``) to the counterparty at ``price``, without fees: a
        Deleverage event, then both Position events (reference ``_transfer_position``)."""
        cdef Order t, k
        cdef int64_t pnl_t = 0, pnl_k = 0, row_t, row_k, amount
        self.pseudo_order(&t, target, m, venue, side, 0)
        self.pseudo_order(&k, counterparty, m, venue, 1 - side, order_hold_per_lot(m, price, 0) if holds else 0)
        if holds:  # the fund takes over like a placed order: its hold becomes the new position's margin
            amount = (q // m.lot_size) * k.hold_per_lot
            self.bals[k.bal_quote].free -= amount
            self.bals[k.bal_quote].held += amount
        row_t = self.perp_fill(m, &t, q, price, 0, &pnl_t)
        row_k = self.perp_fill(m, &k, q, price, 0, &pnl_k)
        cdef xos_event *e = self.emit(XOS_EV_DELEVERAGE)
        e.side = side
        e.reason = reason
        e.market = t.market
        e.venue = venue
        e.account = target
        e.price = price
        e.qty = q
        e.maker_account = counterparty
        self.emit_position(m, &t, &self.position_rows[row_t], price, pnl_t)
        self.emit_position(m, &k, &self.position_rows[row_k], price, pnl_k)

    cdef int64_t adl_ranking(self, uint32_t market, uint32_t venue, uint32_t asset, int64_t target, int sign,
                             AdlEntry **out) noexcept nogil:
        """The positions of ``market`` (0: every perpetual market listed by ``venue`` quoted in ``asset``) of sign
        ``sign`` (0: either), the target's left out, best first (reference ``_adl_ranking``): unrealised PnL at
        mark per unit of margin (at least 1) descending, then account, then market. Returns how many, in a
        malloc'd array the caller frees."""
        cdef int64_t n = 0, cap = 0, i, value
        cdef AdlEntry *rows = NULL
        cdef uint32_t mk = market if market else 1
        cdef uint32_t last = market if market else <uint32_t>self.max_markets
        cdef Market *m
        cdef Position *p
        while mk <= last:
            m = &self.market_table[mk]
            if m.exists and m.kind == XOS_MARKET_PERPETUAL and (market or (m.venue == venue and m.quote == asset)):
                i = m.position_head
                while i != NONE:
                    p = &self.position_rows[i]
                    if p.account != target and p.size != 0 and (sign == 0 or (p.size > 0) == (sign > 0)):
                        if n == cap:
                            rows = <AdlEntry *>grow(rows, &cap, n + 1, sizeof(AdlEntry), b"ADL ranking")
                        value = xos_mul_capped(m.mark, (p.size if p.size > 0 else -p.size) // m.lot_size)
                        rows[n].row = i
                        rows[n].profit = value - p.entry_value if p.size > 0 else p.entry_value - value
                        rows[n].margin = p.margin if p.margin > 0 else 1
                        rows[n].account = p.account
                        rows[n].market = mk
                        n += 1
                    i = p.next_of_market
            mk += 1
        sort_adl(rows, n)
        out[0] = rows
        return n

    cdef void cmd_liquidate(self, const xos_command *c) noexcept nogil:
        """A keeper's Liquidate (ARCHITECTURE, "Liquidation, insurance and ADL"; reference ``_liquidate``)."""
        cdef uint16_t code = XOS_OK
        cdef int64_t acct_idx = -1, fund = 0, equity = 0, maintenance = 0, i, n, size, qty, price, paid = 0
        cdef int64_t covered = 0, cut, value, row, fund_idx, isolated_row = -1, base_free = 0, sold, backed
        cdef int32_t k, nxt, t
        cdef uint32_t mk
        cdef uint8_t side
        cdef bint found = False, fund_short
        cdef int unified
        cdef Market *m
        cdef Position *p
        cdef Order *o
        cdef AdlEntry *ranking
        cdef Order pseudo
        cdef xos_event *e
        if c.account <= 0:
            code = XOS_INVALID_ACCOUNT_ID
        elif c.venue >= <uint32_t>self.max_venues or not self.venue_table[c.venue].exists:
            code = XOS_UNKNOWN_VENUE
        elif c.market < 1 or c.market > <uint32_t>self.max_assets or not self.asset_table[c.market].exists:
            code = XOS_UNKNOWN_ASSET
        else:
            code = self.check_account(c.id, &acct_idx)
        if code == XOS_OK:
            fund = self.fund_of(c.venue)
            if c.id == fund:
                code = XOS_INSURANCE_FUND_ACCOUNT
        if code == XOS_OK and c.aux != 0:  # only that isolated position, if open in the venue's group in the asset
            if 1 <= c.aux <= self.max_markets:
                row = xos_hmap_get(&self.position_index, c.id, <uint32_t>c.aux)
                m = &self.market_table[c.aux]
                if (row >= 0 and self.position_rows[row].isolated and self.position_rows[row].size != 0
                        and m.venue == c.venue and m.quote == c.market):
                    isolated_row = row
            if isolated_row < 0:
                code = XOS_NOTHING_TO_LIQUIDATE
            else:
                equity = self.position_equity(&self.position_rows[isolated_row], &maintenance)
                if equity >= maintenance:
                    code = XOS_NOT_LIQUIDATABLE
        elif code == XOS_OK:
            i = self.accts[acct_idx].position_head
            while i != NONE and not found:
                p = &self.position_rows[i]
                m = &self.market_table[p.market]
                found = (p.size != 0 and not p.isolated and m.kind == XOS_MARKET_PERPETUAL and m.venue == c.venue
                         and m.quote == c.market)
                i = p.next_of_account
            # a loan with no position left (a closed loss, a debt the fund could not buy out) is liquidated too: its
            # collateral is what stands behind it
            if not found and not (self.valuation_asset != 0 and c.market == self.valuation_asset
                                  and self.free_of(acct_idx, c.market) < 0):
                code = XOS_NOTHING_TO_LIQUIDATE
            elif self.valuation_asset:  # the unified equity at the group's weights against the unified maintenance
                unified = self.unified(acct_idx, c.venue, NULL, NULL, 0, True, &equity, &maintenance)
                if unified < 0:
                    code = XOS_COLLATERAL_PRICE_MISSING
                elif unified == 0:
                    code = XOS_NOT_LIQUIDATABLE
            else:
                equity = self.equity_of(acct_idx, c.market, &maintenance)
                if equity >= maintenance:
                    code = XOS_NOT_LIQUIDATABLE
        if code:
            self.reject(c, code)
            return
        e = self.emit(XOS_EV_LIQUIDATION)
        e.market = c.market
        e.venue = c.venue
        e.account = c.id
        e.client_id = c.account
        e.price = equity
        e.qty = maintenance
        e.maker_order = c.aux
        k = self.accts[acct_idx].order_head  # its orders in the venue's markets (isolated: in that market), oldest first
        while k != NONE:
            nxt = self.orders[k].acct_next
            if (self.orders[k].market == c.aux if isolated_row >= 0
                    else self.market_table[self.orders[k].market].venue == c.venue):
                self.cancel_order(k, True, XOS_CANCEL_LIQUIDATION, 0, self.orders[k].remaining)
            k = nxt
        if isolated_row >= 0:  # its equity from here on: its own plus what its closed parts realise into free
            base_free = self.free_of(acct_idx, c.market)
        for mk in range(1, <uint32_t>self.max_markets + 1):
            m = &self.market_table[mk]
            if not (m.exists and m.kind == XOS_MARKET_PERPETUAL and m.venue == c.venue and m.quote == c.market):
                continue
            if isolated_row >= 0 and mk != c.aux:
                continue
            row = xos_hmap_get(&self.position_index, c.id, mk)
            if row < 0 or self.position_rows[row].size == 0 or (isolated_row < 0 and self.position_rows[row].isolated):
                continue
            side = ASK if self.position_rows[row].size > 0 else BID
            # the book, in slices, never past the bankruptcy price
            while self.position_rows[row].size != 0 and not m.halted and self.n_open < self.max_orders:
                size = self.position_rows[row].size
                size = size if size > 0 else -size
                qty = size if m.slice_lots == 0 or xos_mul_capped(m.slice_lots, m.lot_size) >= size else \
                    m.slice_lots * m.lot_size
                price = xos_bankruptcy_price(m.mark, size // m.lot_size,
                                             self.liquidation_equity_now(acct_idx, c.venue, c.market, isolated_row,
                                                                         base_free),
                                             m.tick_size, side == ASK)
                t = self.free_slot
                o = &self.orders[t]
                self.free_slot = o.next
                self.pseudo_order(o, c.id, m, c.venue, side, 0)
                self._last_order_id += 1
                o.id = self._last_order_id
                o.price = price
                o.qty = qty
                o.remaining = qty
                e = self.emit_order(XOS_EV_ACCEPTED, o)
                e.flags = XOS_EF_LIQUIDATION
                e.qty = qty
                e.remaining = qty
                self.take_and_rest(m, t)
                size -= qty
                if self.position_rows[row].size != size and self.position_rows[row].size != -size:
                    break  # the book took less than the slice
            if self.position_rows[row].size == 0:
                continue
            size = self.position_rows[row].size
            size = size if size > 0 else -size
            price = xos_bankruptcy_price(m.mark, size // m.lot_size,
                                         self.liquidation_equity_now(acct_idx, c.venue, c.market, isolated_row,
                                                                     base_free),
                                         m.tick_size, side == ASK)
            if fund:
                fund_idx = self.account_index_of(fund)
                value = (size // m.lot_size) * order_hold_per_lot(m, price, 0)
                if self.valuation_asset:  # the fund's pre-trade check: unified at the group's weights
                    fund_short = self.unified_code(fund_idx, c.venue, &c.market, &value, 1) != XOS_OK
                else:
                    fund_short = self.margin_short(fund_idx, c.market, value)
                if self.free_of(fund_idx, c.market) >= value and not fund_short:
                    self.transfer_position(XOS_DELEV_INSURANCE, m, c.venue, c.id, side, fund, size, price, True)
                    continue
            n = self.adl_ranking(mk, c.venue, c.market, c.id, -1 if side == ASK else 1, &ranking)
            for i in range(n):
                size = self.position_rows[row].size
                if size == 0:
                    break
                size = size if size > 0 else -size
                qty = self.position_rows[ranking[i].row].size
                qty = qty if qty > 0 else -qty
                self.transfer_position(XOS_DELEV_ADL, m, c.venue, c.id, side, ranking[i].account,
                                       qty if qty < size else size, price, False)
            free(ranking)
        sold = (self.sell_collateral(acct_idx, fund, c.venue, c.market)
                if self.valuation_asset and fund and isolated_row < 0 else 0)
        equity = (self.liquidation_equity_now(acct_idx, c.venue, c.market, isolated_row, base_free)
                  if isolated_row >= 0 else self.equity_of(acct_idx, c.market, &value))
        if equity < 0 and isolated_row < 0 and self.valuation_asset == c.market:
            # a debt the account's other collateral still backs stays a loan: only what it cannot back is a shortfall
            backed = self.liquidation_equity(acct_idx, c.venue, c.market)
            equity = backed if backed > equity else equity
        if equity < 0 and fund:  # the fund pays what its own margin leaves free
            fund_idx = self.account_index_of(fund)
            paid = self.free_of(fund_idx, c.market)
            value = self.margin_excess(fund_idx, c.market)
            paid = value if value < paid else paid
            paid = 0 if paid < 0 else (-equity if -equity < paid else paid)
            if paid:
                self.transfer(XOS_XFER_INSURANCE_SHORTFALL, c.venue, fund, c.market, -paid, 0)
                self.transfer(XOS_XFER_INSURANCE_SHORTFALL, c.venue, c.id, c.market, paid, 0)
        if equity + paid < 0:  # then ADL: the most profitable (per margin) positions' profits are haircut
            n = self.adl_ranking(0, c.venue, c.market, c.id, 0, &ranking)
            for i in range(n):
                cut = -(equity + paid + covered)
                if ranking[i].profit < cut:
                    cut = ranking[i].profit
                if cut <= 0:
                    break
                p = &self.position_rows[ranking[i].row]
                m = &self.market_table[p.market]
                p.entry_value += cut if p.size > 0 else -cut
                covered += cut
                e = self.emit(XOS_EV_DELEVERAGE)
                e.reason = XOS_DELEV_SHORTFALL
                e.market = p.market
                e.venue = c.venue
                e.account = c.id
                e.maker_account = p.account
                e.maker_fee = cut
                self.pseudo_order(&pseudo, p.account, m, c.venue, BID if p.size > 0 else ASK, 0)
                self.emit_position(m, &pseudo, p, 0, 0)
                if equity + paid + covered >= 0:
                    break
            free(ranking)
            if covered:
                self.transfer(XOS_XFER_ADL_SHORTFALL, c.venue, c.id, c.market, covered, 0)
        e = self.emit(XOS_EV_LIQUIDATED)
        e.market = c.market
        e.venue = c.venue
        e.account = c.id
        e.price = equity + paid + covered
        e.qty = paid
        e.remaining = covered
        e.client_id = -(equity + paid + covered) if equity + paid + covered < 0 else 0
        e.maker_order = c.aux
        e.maker_fee = sold

    # ---------------------------------------------------------- isolated margin

    cdef uint16_t check_perp_account(self, const xos_command *c, int64_t *acct_idx) noexcept nogil:
        """MarginMode's and IsolatedMargin's first checks: a known account, a perpetual market."""
        cdef uint16_t code = self.check_account(c.account, acct_idx)
        return code if code else self.check_market_kind(c, XOS_MARKET_PERPETUAL)

    cdef void cmd_margin_mode(self, const xos_command *c) noexcept nogil:
        """The account's position in a perpetual market becomes isolated (``qty`` 1) or cross (0), only without
        exposure there (reference ``_margin_mode``); an isolated mode creates the flat position that carries it."""
        cdef int64_t acct_idx = -1, row = -1
        cdef int32_t k
        cdef uint16_t code = self.check_perp_account(c, &acct_idx)
        if code == XOS_OK and c.qty != 0 and c.qty != 1:
            code = XOS_INVALID_MARGIN_MODE
        if code == XOS_OK:
            row = xos_hmap_get(&self.position_index, c.account, c.market)
            if (row >= 0 and self.position_rows[row].isolated) == (c.qty == 1):
                code = XOS_MARGIN_MODE_UNCHANGED
            elif row >= 0 and self.position_rows[row].size != 0:
                code = XOS_POSITION_OPEN
            else:
                k = self.accts[acct_idx].order_head
                while k != NONE and code == XOS_OK:
                    if self.orders[k].market == c.market:
                        code = XOS_ORDERS_OPEN
                    k = self.orders[k].acct_next
        if code:
            self.reject(c, code)
            return
        if c.qty:
            self.position_of(c.account, c.market).isolated = True
        else:
            self.position_rows[row].isolated = False
        self.echo(XOS_EV_VENUE, c)

    cdef void cmd_isolated_margin(self, const xos_command *c) noexcept nogil:
        """Move ``qty`` (signed) of quote between free and an open isolated position's margin (reference
        ``_isolated_margin``); a Position event (flags ISOLATED_MARGIN) carries the margin and free / held after."""
        cdef int64_t acct_idx = -1, row = -1, b = -1, maintenance, equity
        cdef Position *p
        cdef Market *m
        cdef xos_event *e
        cdef uint16_t code = self.check_perp_account(c, &acct_idx)
        if code == XOS_OK and (c.qty == 0 or c.qty > XOS_MAX_MONEY or c.qty < -XOS_MAX_MONEY):
            code = XOS_INVALID_MARGIN_AMOUNT
        if code == XOS_OK:
            row = xos_hmap_get(&self.position_index, c.account, c.market)
            if row < 0 or not self.position_rows[row].isolated or self.position_rows[row].size == 0:
                code = XOS_NO_ISOLATED_POSITION
        if code == XOS_OK:
            p = &self.position_rows[row]
            m = &self.market_table[c.market]
            b = self.balance_of(acct_idx, m.quote)
            if c.qty > (self.bals[b].free if b >= 0 else 0):
                code = XOS_INSUFFICIENT_FREE_BALANCE
            elif c.qty < 0:
                equity = self.position_equity(p, &maintenance)
                if p.margin + c.qty < 0 or equity + c.qty < initial_margin(
                        m, xos_mul_capped(m.mark, (p.size if p.size > 0 else -p.size) // m.lot_size)):
                    code = XOS_ISOLATED_MARGIN_SHORT
        if code:
            self.reject(c, code)
            return
        b = self.ensure_balance(acct_idx, m.quote)
        p.margin += c.qty
        self.bals[b].free -= c.qty
        self.bals[b].held += c.qty
        self.emit_margin_position(p, m, b, XOS_CMD_ISOLATED_MARGIN)

    cdef void emit_margin_position(self, Position *p, Market *m, int64_t b, uint16_t flags) noexcept nogil:
        """The Position event of an isolated position whose margin moved without a fill (``flags``: the command that
        moved it, IsolatedMargin or ApplyFunding); ``b`` its quote balance (reference ``_margin_position_event``)."""
        cdef xos_event *e = self.emit(XOS_EV_POSITION)
        e.flags = flags
        e.market = p.market
        e.venue = m.venue
        e.account = p.account
        e.client_id = p.margin
        e.qty = p.size
        e.remaining = p.entry_value
        e.maker_order = self.bals[b].free
        e.maker_account = self.bals[b].held
        e.taker_fee = p.realised

    cdef bint over_cap(self, int64_t acct_idx, Market *m, int64_t amount) noexcept nogil:
        """Would ``amount`` more of held quote in perpetual market ``m`` take the margin the account uses in m's risk
        group (its listing venue) past the account's cap there?  Used: the initial margin at mark of its positions
        in the group's perpetual markets quoted in the same asset, plus the holds of its open orders there, plus
        ``amount``; refused when used x 10000 > cap x equity, equity = free + held of the asset + the unrealised PnL
        at mark of all its positions quoted in it (cross margin: any venue).  Walks the account's own positions
        and orders (reference ``_over_cap``)."""
        cdef Account *a = &self.accts[acct_idx]
        cdef int64_t cap = xos_hmap_get(&self.cap_index, a.id, m.venue)
        cdef int64_t used = amount, equity = 0, i = a.position_head, value, b, requirement, price, lot
        cdef int32_t k = a.order_head
        cdef Position *p
        cdef Market *pm
        cdef Order *o
        cdef int128_t used_value, limit
        if cap < 0:
            return False
        b = self.balance_of(acct_idx, m.quote)
        if b >= 0:
            equity = self.bals[b].free + self.bals[b].held
        while i != NONE:
            p = &self.position_rows[i]
            i = p.next_of_account
            pm = &self.market_table[p.market]
            if pm.kind != XOS_MARKET_PERPETUAL or pm.quote != m.quote or p.size == 0:
                continue  # outcome positions are fully paid: no margin, no mark
            if p.isolated:  # outside the cap: its margin leaves the equity, its PnL and margin use do not count
                equity -= p.margin
                continue
            value = xos_mul_capped(pm.mark, (p.size if p.size > 0 else -p.size) // pm.lot_size)
            equity += value - p.entry_value if p.size > 0 else p.entry_value - value
            if pm.venue == m.venue:
                used += initial_margin(pm, value)
        while k != NONE:
            o = &self.orders[k]
            k = o.acct_next
            pm = &self.market_table[o.market]
            if pm.kind == XOS_MARKET_PERPETUAL and pm.venue == m.venue and pm.quote == m.quote:
                used += (o.remaining // pm.lot_size) * o.hold_per_lot
        if self.valuation_asset:  # the unified account: against its unified equity, holds included, in valuation units
            if (self.unified(acct_idx, m.venue, NULL, NULL, 0, False, &equity, &requirement, True) < 0
                    or not self.collateral_price(m.quote, &price, &lot)):
                return True  # a price is missing: nothing can show the cap holds
            used_value = (<int128_t>used * price + lot - 1) // lot
            limit = <int128_t>cap * equity
            limit = limit // 10000 if limit >= 0 else -((-limit + 9999) // 10000)  # floor: used x 10000 > cap x equity
            return used_value > limit
        return used > xos_mul_div(equity, cap, 10000)  # used > cap x equity / 10000, exactly (truncation: see docs)

    cdef void cmd_set_exposure_cap(self, const xos_command *c) noexcept nogil:
        """An account caps the margin its positions and orders in a venue's risk group may use, in bps of its
        equity (``qty``; 0 removes the cap).  It limits new orders only: a cap below what is used already stops
        everything but reduce-only orders and hold-lowering amends there."""
        cdef int64_t acct_idx = -1
        cdef uint16_t code = self.check_account(c.account, &acct_idx)
        if code == XOS_OK and (c.venue >= <uint32_t>self.max_venues or not self.venue_table[c.venue].exists):
            code = XOS_UNKNOWN_VENUE
        elif code == XOS_OK and (c.qty < 0 or c.qty > 10000):
            code = XOS_INVALID_EXPOSURE_CAP
        if code:
            self.reject(c, code)
            return
        if c.qty:
            if xos_hmap_put(&self.cap_index, c.account, c.venue, c.qty):
                die(b"exposure caps")
        else:
            xos_hmap_del(&self.cap_index, c.account, c.venue)
        self.echo(XOS_EV_VENUE, c)

    # ------------------------------------------------------ unified account (collateral)

    cdef void cmd_collateral_asset(self, const xos_command *c) noexcept nogil:
        """Admin: an asset's price market (``id``) and protocol bound (``qty``, max weight bps); price market 0
        declares the valuation asset (only one), which turns the unified account on (reference
        ``_collateral_asset``).  Echoed as a Venue event (flags 130)."""
        cdef uint16_t code = XOS_OK
        cdef uint32_t asset = c.market
        cdef Market *m
        if c.account <= 0:
            code = XOS_INVALID_ACCOUNT_ID
        elif c.account != self.admin:
            code = XOS_NOT_ADMIN
        elif asset < 1 or asset > <uint32_t>self.max_assets or not self.asset_table[asset].exists:
            code = XOS_UNKNOWN_ASSET
        elif c.qty < 0 or c.qty > 10000:
            code = XOS_INVALID_COLLATERAL_WEIGHT
        elif c.id == 0:
            if self.valuation_asset and self.valuation_asset != asset:
                code = XOS_VALUATION_ASSET_EXISTS
        elif not self.valuation_asset:
            code = XOS_NO_VALUATION_ASSET
        elif c.id < 1 or c.id > self.max_markets or not self.market_table[c.id].exists:
            code = XOS_INVALID_PRICE_MARKET
        else:
            m = &self.market_table[c.id]
            if (m.kind == XOS_MARKET_OUTCOME or asset == self.valuation_asset or m.base != asset
                    or m.quote != self.valuation_asset):
                code = XOS_INVALID_PRICE_MARKET
        if code:
            self.reject(c, code)
            return
        if c.id == 0:
            self.valuation_asset = asset
        self.coll_market[asset] = <uint32_t>c.id
        self.coll_bound[asset] = <int32_t>c.qty
        self.echo(XOS_EV_VENUE, c)

    cdef void cmd_venue_collateral(self, const xos_command *c) noexcept nogil:
        """A venue's operator or the admin: the venue's weight (``qty`` bps) for a collateral asset, at most the
        protocol bound (reference ``_venue_collateral``).  Echoed as a Venue event (flags 131)."""
        cdef uint16_t code = self.check_operator(c)
        if code == XOS_OK:
            if c.market < 1 or c.market > <uint32_t>self.max_assets or not self.asset_table[c.market].exists:
                code = XOS_UNKNOWN_ASSET
            elif self.coll_bound[c.market] < 0:
                code = XOS_COLLATERAL_NOT_DECLARED
            elif c.qty < 0 or c.qty > 10000:
                code = XOS_INVALID_COLLATERAL_WEIGHT
            elif c.qty > self.coll_bound[c.market]:
                code = XOS_COLLATERAL_WEIGHT_ABOVE_BOUND
        if code:
            self.reject(c, code)
            return
        if xos_hmap_put(&self.venue_coll_index, c.venue, c.market, c.qty):
            die(b"venue collateral")
        self.echo(XOS_EV_VENUE, c)

    cdef bint collateral_price(self, uint32_t asset, int64_t *price, int64_t *lot) noexcept nogil:
        """The asset's price in valuation units: x base units are worth x x price / lot.  The valuation asset's is
        1 / 1; another collateral asset's its price market's mark if perpetual, else the market's listing venue's
        fresh oracle price.  False when there is none (reference ``_collateral_price``)."""
        cdef Market *m
        cdef Oracle *o
        if asset == self.valuation_asset:
            price[0] = 1
            lot[0] = 1
            return True
        if self.coll_bound[asset] < 0:
            return False
        m = &self.market_table[self.coll_market[asset]]
        if m.kind == XOS_MARKET_PERPETUAL:
            price[0] = m.mark
        else:
            o = self.oracle_of(m.venue, self.coll_market[asset])
            price[0] = o.price if o != NULL and not o.stale else 0
        lot[0] = m.lot_size
        return price[0] > 0

    cdef int64_t collateral_weight(self, uint32_t asset, uint32_t venue) noexcept nogil:
        """The venue's weight for the asset: its own, else the protocol bound, never above the bound; 0 for an asset
        that is no collateral (reference ``_collateral_weight``)."""
        cdef int64_t bound = self.coll_bound[asset], weight
        if bound < 0:
            return 0
        weight = xos_hmap_get(&self.venue_coll_index, venue, asset)
        return bound if weight < 0 or weight > bound else weight

    cdef int64_t outcome_mark(self, Market *m) noexcept nogil:
        """An outcome market's mark (YES price): the median of its best bid, best ask and last trade when all three
        exist, else 0 (reference ``_outcome_mark``)."""
        cdef BookSide *bids = &m.sides[BID]
        cdef BookSide *asks = &m.sides[ASK]
        cdef int64_t bid, ask, last = m.last_price, lo, hi
        if bids.n == 0 or asks.n == 0 or last == 0:
            return 0
        bid = bids.levels[bids.n - 1].price
        ask = asks.levels[asks.n - 1].price
        lo = bid if bid < ask else ask
        hi = ask if bid < ask else bid
        return lo if last < lo else (hi if last > hi else last)

    cdef bint may_owe(self, int64_t acct_idx) noexcept nogil:
        """Only an account with a position (even flat) or a resting perpetual order can have a negative balance: the
        unified check of any other one passes while the command takes no more than its free balance."""
        return self.accts[acct_idx].position_head != NONE or self.accts[acct_idx].perp_orders > 0

    cdef inline void coll_entry(self, uint32_t asset, int64_t *n) noexcept nogil:
        """List the asset in this unified walk (``coll_stamp``) at eq 0 and requirement 0, once."""
        if self.coll_seen[asset] != self.coll_stamp:
            self.coll_seen[asset] = self.coll_stamp
            self.coll_eq[asset] = 0
            self.coll_req[asset] = 0
            self.coll_list[n[0]] = asset
            n[0] += 1

    cdef int unified(self, int64_t acct_idx, int64_t venue, const uint32_t *assets, const int64_t *amounts,
                     int64_t n_takes, bint maintenance, int64_t *equity_out, int64_t *requirement_out,
                     bint with_holds=False) noexcept nogil:
        """The account's unified equity and initial (or maintenance) requirement in valuation units with
        ``amounts[i]`` of ``assets[i]`` taken from its free balances first, at ``venue``'s weights (WITHDRAW_WEIGHTS:
        per asset the lowest weight of the risk groups it has open perpetual positions in); both clamped into
        ``equity_out`` / ``requirement_out``.  Returns -1 when an asset it owes or must margin in has no price, 1 when
        the equity is below the requirement, else 0.  One walk of its balances and one of its positions (a Withdraw:
        one more per priced asset); reference ``_unified``."""
        cdef Account *a = &self.accts[acct_idx]
        cdef int64_t n = 0, i, j, b, value, lots, initial, mark, e, r, price = 0, lot = 1, weight, w
        cdef int32_t k
        cdef uint32_t asset
        cdef Order *o
        cdef Position *p
        cdef Market *m
        cdef int128_t equity = 0, requirement = 0
        cdef bint missing = False
        self.coll_stamp += 1
        b = a.balance_head
        while b >= 0:
            self.coll_entry(self.bals[b].asset, &n)
            self.coll_eq[self.bals[b].asset] += self.bals[b].free
            b = self.bals[b].next
        for i in range(n_takes):
            self.coll_entry(assets[i], &n)
            self.coll_eq[assets[i]] -= amounts[i]
        if with_holds:  # the open orders' holds count as the account's own (an exposure cap's equity)
            k = a.order_head
            while k != NONE:
                o = &self.orders[k]
                k = o.acct_next
                m = &self.market_table[o.market]
                asset = m.quote if o.side == BID or m.kind != XOS_MARKET_SPOT else m.base
                self.coll_entry(asset, &n)
                self.coll_eq[asset] += ((o.remaining // m.lot_size) * o.hold_per_lot
                                        if o.side == BID or m.kind != XOS_MARKET_SPOT else o.remaining)
        j = a.position_head
        while j != NONE:
            p = &self.position_rows[j]
            j = p.next_of_account
            m = &self.market_table[p.market]
            if p.size == 0 or m.kind == XOS_MARKET_SPOT or p.isolated:  # an isolated position counts only for itself
                continue
            self.coll_entry(m.quote, &n)
            lots = (p.size if p.size > 0 else -p.size) // m.lot_size
            if m.kind == XOS_MARKET_PERPETUAL:
                value = xos_mul_capped(m.mark, lots)
                self.coll_eq[m.quote] += p.margin + (value - p.entry_value if p.size > 0 else p.entry_value - value)
                initial = initial_margin(m, value)
                self.coll_req[m.quote] += xos_fee(initial, m.maintenance_bps) if maintenance else initial
            else:
                mark = self.outcome_mark(m)
                if mark:
                    self.coll_eq[m.quote] += xos_mul_capped(
                        lots, mark if p.size > 0 else self.outcome_table[p.market].payout - mark)
        for i in range(n):
            asset = self.coll_list[i]
            e = self.coll_eq[asset]
            r = self.coll_req[asset]
            if e == 0 and r == 0:
                continue
            if not self.collateral_price(asset, &price, &lot):
                if e < 0 or r > 0:
                    missing = True
                continue
            if e > 0:
                if venue == WITHDRAW_WEIGHTS:  # a priced asset is a collateral asset
                    weight = self.coll_bound[asset]
                    j = a.position_head
                    while j != NONE:
                        p = &self.position_rows[j]
                        j = p.next_of_account
                        m = &self.market_table[p.market]
                        if p.size != 0 and m.kind == XOS_MARKET_PERPETUAL and not p.isolated:
                            w = self.collateral_weight(asset, m.venue)
                            weight = w if w < weight else weight
                else:
                    weight = self.collateral_weight(asset, <uint32_t>venue)
                equity += <int128_t>e * price / lot * weight / 10000
            else:
                equity -= (-(<int128_t>e) * price + lot - 1) / lot  # a debt rounds away from zero
            requirement += (<int128_t>r * price + lot - 1) / lot
        equity_out[0] = clamp64(equity)
        requirement_out[0] = clamp64(requirement)
        if missing:
            return -1
        return 1 if equity < requirement else 0

    cdef int64_t liquidation_equity(self, int64_t acct_idx, uint32_t venue, uint32_t asset) noexcept nogil:
        """The equity a bankruptcy price brings to 0 (reference ``_liquidation_equity``): the unified equity at the
        group's weights when the valuation asset is liquidated, else the equity in the asset."""
        cdef int64_t equity, requirement
        if self.valuation_asset and asset == self.valuation_asset:
            self.unified(acct_idx, venue, NULL, NULL, 0, False, &equity, &requirement)
            return equity
        return self.equity_of(acct_idx, asset, &requirement)

    cdef int64_t sell_collateral(self, int64_t acct_idx, int64_t fund, uint32_t venue, uint32_t asset) noexcept nogil:
        """Liquidate's collateral step (reference ``_sell_collateral``): while the target's equity in the valuation
        asset ``asset`` is below 0, the venue's fund buys its other collateral (free balances of priced assets with a
        weight > 0 at the venue, in asset id order) at the weighted price, as far as the fund's free ``asset`` goes.
        Returns the total paid."""
        cdef int64_t n = 0, i, j, b, shortfall, fund_free, have, want, weight, price = 0, lot = 1, x, pay, total = 0
        cdef int64_t fund_idx = self.account_index_of(fund), unused
        cdef uint32_t a
        cdef int128_t units, whole, rest, value
        if asset != self.valuation_asset:
            return 0  # prices are in valuation units: another liquidated asset would need a cross rate
        b = self.accts[acct_idx].balance_head
        while b >= 0:  # its assets in id order (insertion sort: an account holds a handful)
            a = self.bals[b].asset
            j = n
            while j > 0 and self.coll_list[j - 1] > a:
                self.coll_list[j] = self.coll_list[j - 1]
                j -= 1
            self.coll_list[j] = a
            n += 1
            b = self.bals[b].next
        for i in range(n):
            a = self.coll_list[i]
            shortfall = -self.equity_of(acct_idx, asset, &unused)
            fund_free = self.free_of(fund_idx, asset)
            if shortfall <= 0 or fund_free <= 0:
                break
            weight = self.collateral_weight(a, venue)
            have = self.free_of(acct_idx, a)
            if a == asset or weight == 0 or have <= 0 or not self.collateral_price(a, &price, &lot):
                continue
            want = shortfall if shortfall < fund_free else fund_free
            # the fewest units worth ``want``: ceil(ceil(want x 10000 / weight) x lot / price), at most ``have``
            units = (<int128_t>want * 10000 + weight - 1) // weight
            whole = units // price
            rest = units % price
            if whole > have // lot:
                x = have
            else:
                x = <int64_t>(whole * lot + (rest * lot + price - 1) // price)
                x = have if x > have else x
            value = <int128_t>x * price // lot
            if value >= (<int128_t>1 << 77):  # worth more than any int64 even at 1 bps
                pay = want
            else:
                value = value * weight // 10000
                pay = want if value > want else <int64_t>value
            if pay <= 0:
                continue
            self.transfer(XOS_XFER_COLLATERAL_SOLD, venue, self.accts[acct_idx].id, a, -x, pay)
            self.transfer(XOS_XFER_COLLATERAL_SOLD, venue, fund, a, x, pay)
            self.transfer(XOS_XFER_COLLATERAL_PAID, venue, fund, asset, -pay, x)
            self.transfer(XOS_XFER_COLLATERAL_PAID, venue, self.accts[acct_idx].id, asset, pay, x)
            total += pay
        return total + self.sell_outcome_shares(acct_idx, fund, venue, asset)

    cdef int64_t sell_outcome_shares(self, int64_t acct_idx, int64_t fund, uint32_t venue,
                                     uint32_t asset) noexcept nogil:
        """Then its outcome shares quoted in ``asset`` (open markets with an outcome mark, market id order) go to the
        fund at the weighted leg per lot, the fewest whole lots covering the shortfall as far as the fund's free
        balance goes, moved like a fill (reference ``_sell_outcome_shares``); returns what the fund paid."""
        cdef int64_t weight = self.collateral_weight(asset, venue), total = 0, n = 0, cap = 0, i, j, row, unused
        cdef int64_t shortfall, fund_free, size, mark, per_lot, lots, need, price, sign, cash, q, t_bal, f_bal
        cdef int64_t fund_idx = self.account_index_of(fund), target = self.accts[acct_idx].id
        cdef int64_t *rows = NULL
        cdef Market *m
        cdef OutcomeMarket *oc
        cdef Position *p
        f_bal = self.balance_of(fund_idx, asset) if fund_idx >= 0 else -1
        if f_bal < 0:
            return 0  # a fund without the asset buys nothing
        j = self.accts[acct_idx].position_head
        while j != NONE:  # its outcome positions in the asset, by market id (insertion sort: an account holds few)
            p = &self.position_rows[j]
            if self.market_table[p.market].kind == XOS_MARKET_OUTCOME and self.market_table[p.market].quote == asset:
                if n == cap:
                    rows = <int64_t *>grow(rows, &cap, n + 1, sizeof(int64_t), b"outcome collateral")
                i = n
                while i > 0 and self.position_rows[rows[i - 1]].market > p.market:
                    rows[i] = rows[i - 1]
                    i -= 1
                rows[i] = j
                n += 1
            j = p.next_of_account
        t_bal = self.balance_of(acct_idx, asset)
        for i in range(n):
            shortfall = -self.equity_of(acct_idx, asset, &unused)
            fund_free = self.bals[f_bal].free
            if shortfall <= 0 or fund_free <= 0:
                break
            row = rows[i]
            m = &self.market_table[self.position_rows[row].market]
            oc = &self.outcome_table[self.position_rows[row].market]
            size = self.position_rows[row].size
            mark = self.outcome_mark(m)
            if oc.state != XOS_OS_OPEN or size == 0 or mark == 0:
                continue
            per_lot = xos_mul_div(mark if size > 0 else oc.payout - mark, weight, 10000)
            if per_lot <= 0:
                continue
            lots = (size if size > 0 else -size) // m.lot_size
            need = (shortfall + per_lot - 1) // per_lot
            lots = need if need < lots else lots
            lots = fund_free // per_lot if fund_free // per_lot < lots else lots
            if lots <= 0:
                continue
            sign = 1 if size > 0 else -1  # the target gives up its side, the fund takes it
            price = per_lot if size > 0 else oc.payout - per_lot
            q = lots * m.lot_size
            p = self.outcome_move(m, self.position_rows[row].market, target, t_bal, -sign * q, price, &cash)
            self.emit_outcome_position(p, t_bal, 0, XOS_OC_COLLATERAL, m.venue, 0, price, cash)
            p = self.outcome_move(m, self.position_rows[row].market, fund, f_bal, sign * q, price, &cash)
            self.emit_outcome_position(p, f_bal, 0, XOS_OC_COLLATERAL, m.venue, 0, price, cash)
            total += lots * per_lot
        free(rows)
        return total

    cdef uint16_t unified_code(self, int64_t acct_idx, int64_t venue, const uint32_t *assets, const int64_t *amounts,
                               int64_t n_takes) noexcept nogil:
        """The unified pre-trade check: COLLATERAL_PRICE_MISSING, INSUFFICIENT_MARGIN or OK."""
        cdef int64_t equity, requirement
        cdef int result = self.unified(acct_idx, venue, assets, amounts, n_takes, False, &equity, &requirement)
        if result < 0:
            return XOS_COLLATERAL_PRICE_MISSING
        return XOS_INSUFFICIENT_MARGIN if result else XOS_OK

    cdef uint16_t check_market_kind(self, const xos_command *c, uint8_t kind) noexcept nogil:
        """A market command's first checks, in order: a sender, the market, its kind (reference
        ``_market_kind_code``)."""
        if c.account <= 0:
            return XOS_INVALID_ACCOUNT_ID
        if c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists:
            return XOS_UNKNOWN_MARKET
        if self.market_table[c.market].kind != kind:
            return XOS_INVALID_MARKET_KIND
        return XOS_OK

    cdef uint16_t check_market_operator(self, const xos_command *c, uint8_t kind) noexcept nogil:
        """The first checks of a market's configuration (MarketRisk, FundingConfig, MarginTiers, OutcomeConfig):
        ``check_market_kind``, then the sender the admin or the listing venue's operator."""
        cdef uint16_t code = self.check_market_kind(c, kind)
        if code:
            return code
        if c.account != self.admin and c.account != self.venue_table[self.market_table[c.market].venue].operator:
            return XOS_NOT_VENUE_OPERATOR
        return XOS_OK

    cdef void cmd_market_risk(self, const xos_command *c) noexcept nogil:
        """Admin or the listing venue's operator: a perpetual market's max leverage and maintenance margin.
        Refused while the market has open orders: their holds were computed with the old leverage."""
        cdef uint16_t code = XOS_OK
        cdef Market *m
        code = self.check_market_operator(c, XOS_MARKET_PERPETUAL)
        if code == XOS_OK:
            m = &self.market_table[c.market]
            if c.price < 1 or c.price > MAX_LEVERAGE:
                code = XOS_INVALID_LEVERAGE
            elif c.qty < 1 or c.qty > 10000:
                code = XOS_INVALID_MAINTENANCE_MARGIN
            elif c.id < 0 or c.aux < 0:
                code = XOS_INVALID_RISK_SIZE
            elif book_has_orders(&m.sides[0]) or book_has_orders(&m.sides[1]):
                code = XOS_MARKET_HAS_OPEN_ORDERS
        if code:
            self.reject(c, code)
            return
        m.max_leverage = <int32_t>c.price
        m.maintenance_bps = <int32_t>c.qty
        m.impact_lots = c.id if c.id > 0 else DEFAULT_IMPACT_LOTS
        m.slice_lots = c.aux
        self.echo(XOS_EV_VENUE, c)
        self.dirty_mark(c.market)

    # ------------------------------------------------------------- venue risk

    cdef VenueRisk *venue_risk_of(self, uint32_t venue, uint32_t market, bint create) noexcept nogil:
        """The venue's risk row for the market (NULL when it has none and ``create`` is false)."""
        cdef int64_t i = xos_hmap_get(&self.venue_risk_index, venue, market)
        cdef VenueRisk *r
        if i >= 0:
            return &self.venue_risk_rows[i]
        if not create:
            return NULL
        if self.n_venue_risks == self.cap_venue_risks:
            self.venue_risk_rows = <VenueRisk *>grow(self.venue_risk_rows, &self.cap_venue_risks,
                                                     self.n_venue_risks + 1, sizeof(VenueRisk), b"venue risks")
        if xos_hmap_put(&self.venue_risk_index, venue, market, self.n_venue_risks):
            die(b"venue risk index")
        r = &self.venue_risk_rows[self.n_venue_risks]
        self.n_venue_risks += 1
        memset(r, 0, sizeof(VenueRisk))
        r.venue = venue
        r.market = market
        return r

    cdef void venue_open(self, Order *o, int64_t delta) noexcept nogil:
        """A perpetual order's remaining changed by ``delta``: its venue's open size on that side follows."""
        cdef VenueRisk *r = self.venue_risk_of(o.venue, o.market, True)
        if o.side == BID:
            r.open_buy += delta
        else:
            r.open_sell += delta

    cdef uint16_t check_venue_risk(self, VenueRisk *r, Market *m, uint8_t side, int64_t price, bint new_price,
                                   int64_t added, bint reduce_only) noexcept nogil:
        """An order's (or amend's) venue gates in its market (``r`` NULL: the venue has none there): the
        venue's halt stops anything but reduce-only orders and pure size reductions; the venue's band (else the
        market's) bounds a new price around the last trade (a perpetual not yet traded: its mark, so that its first
        trade is bounded too); the open-interest cap bounds the side's open interest plus the venue's open orders
        there plus ``added`` (reference ``_check_venue_risk``)."""
        cdef int32_t band = m.band_bps
        cdef int64_t ref = m.last_price
        cdef bint exceeds
        if r != NULL:
            if r.halted and not reduce_only and (new_price or added > 0):
                return XOS_VENUE_MARKET_HALTED
            if r.band_bps > 0:
                band = r.band_bps
        if ref == 0 and m.kind == XOS_MARKET_PERPETUAL:
            ref = m.mark
        if new_price and band > 0 and ref > 0 and xos_outside_band(price, ref, band):
            return XOS_PRICE_OUTSIDE_BAND
        if r != NULL and r.oi_cap > 0 and not reduce_only and added > 0:
            if side == BID:
                exceeds = xos_sum_exceeds(r.long_oi, r.open_buy, added, r.oi_cap)
            else:
                exceeds = xos_sum_exceeds(r.short_oi, r.open_sell, added, r.oi_cap)
            if exceeds:
                return XOS_VENUE_OI_CAP_REACHED
        return XOS_OK

    cdef void cmd_venue_market_risk(self, const xos_command *c) noexcept nogil:
        """The venue's operator or the admin: its band, open-interest cap and breaker settings in a market it
        offers (``price`` band bps, ``qty`` cap, ``id`` breaker move bps, ``aux`` window ms | cool-down ms << 32)."""
        cdef uint16_t code = self.check_operator(c)
        cdef uint64_t windows = <uint64_t>c.aux
        cdef VenueRisk *r
        cdef bint gated
        if code == XOS_OK:
            if self.venue_table[c.venue].status == XOS_VSTATUS_RETIRED:
                code = XOS_VENUE_RETIRED
            elif c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists:
                code = XOS_UNKNOWN_MARKET
            elif not self.offered(c.venue, c.market):
                code = XOS_MARKET_NOT_OFFERED
            elif c.price < 0 or c.price > 10000:
                code = XOS_INVALID_VENUE_BAND
            elif c.qty < 0 or (c.qty > 0 and self.market_table[c.market].kind != XOS_MARKET_PERPETUAL):
                code = XOS_INVALID_OI_CAP
            elif c.id < 0 or c.id > 10000 or (c.id == 0 and c.aux != 0) or (c.id > 0 and (windows & 0xFFFFFFFFu) == 0):
                code = XOS_INVALID_BREAKER
        if code:
            self.reject(c, code)
            return
        r = self.venue_risk_of(c.venue, c.market, True)
        gated = venue_gates(r)
        r.band_bps = <int32_t>c.price
        r.oi_cap = c.qty
        r.move_bps = <int32_t>c.id
        r.window_ms = <int64_t>(windows & 0xFFFFFFFFu)
        r.cooldown_ms = <int64_t>(windows >> 32)
        self.market_table[c.market].venue_gates += <int32_t>venue_gates(r) - <int32_t>gated
        self.echo(XOS_EV_VENUE, c)

    cdef void cmd_venue_market_status(self, const xos_command *c) noexcept nogil:
        """VenueMarketHalt / Resume: one venue's new orders in one market stop (or go on). From the venue's
        operator, the admin, or an internal worker (a negative account: the risk worker, trusted input only;
        the gateway sends as a positive authenticated account)."""
        cdef bint halt = c.kind == XOS_CMD_VENUE_MARKET_HALT
        cdef uint16_t code = XOS_OK
        cdef VenueRisk *r = NULL
        cdef bint gated
        cdef xos_event *e
        if c.account == 0:
            code = XOS_INVALID_ACCOUNT_ID
        elif c.venue >= <uint32_t>self.max_venues or not self.venue_table[c.venue].exists:
            code = XOS_UNKNOWN_VENUE
        elif c.account > 0 and c.account != self.venue_table[c.venue].operator and c.account != self.admin:
            code = XOS_NOT_VENUE_OPERATOR
        elif c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists:
            code = XOS_UNKNOWN_MARKET
        elif not self.offered(c.venue, c.market):
            code = XOS_MARKET_NOT_OFFERED
        else:
            r = self.venue_risk_of(c.venue, c.market, False)
            if (r != NULL and r.halted) == halt:
                code = XOS_MARKET_STATUS_UNCHANGED
        if code:
            self.reject(c, code)
            return
        if r == NULL:
            r = self.venue_risk_of(c.venue, c.market, True)
        gated = venue_gates(r)
        r.halted = halt
        self.market_table[c.market].venue_gates += <int32_t>venue_gates(r) - <int32_t>gated
        e = self.emit(XOS_EV_MARKET_STATUS)
        e.flags = c.kind
        e.market = c.market
        e.venue = c.venue
        e.account = c.account
        e.qty = halt

    # ---------------------------------------------------------- funding

    cdef void schedule_funding(self, Market *m) noexcept nogil:
        """The next sample and funding times: the first multiples of their intervals after now; no samples yet
        (reference ``_schedule_funding``)."""
        m.next_sample = (self._now // m.sample_interval + 1) * m.sample_interval
        m.next_funding = (self._now // m.funding_interval + 1) * m.funding_interval
        m.premium_sum = 0
        m.samples = 0
        if m.kind == XOS_MARKET_PERPETUAL and m.next_sample < self.next_sample_at:
            self.next_sample_at = m.next_sample

    cdef void find_next_sample(self) noexcept nogil:
        """The earliest next sample time of any perpetual market (a walk of the market table, once per sample)."""
        cdef uint32_t mk
        self.next_sample_at = INT64_MAX
        for mk in range(1, <uint32_t>self.max_markets + 1):
            if (self.market_table[mk].exists and self.market_table[mk].kind == XOS_MARKET_PERPETUAL
                    and self.market_table[mk].next_sample < self.next_sample_at):
                self.next_sample_at = self.market_table[mk].next_sample

    cdef void sample_premiums(self) noexcept nogil:
        """Step 2e: each perpetual market whose next sample time has come samples its premium (impact mid - oracle)
        / oracle in 1e-8 (at most +1e8), the book before this command, the oracle after step 2c; none when either is
        missing; the next sample is the first multiple of its interval after now (reference ``_sample_premium``)."""
        cdef uint32_t mk
        cdef Market *m
        cdef int64_t inputs[4]
        for mk in range(1, <uint32_t>self.max_markets + 1):
            m = &self.market_table[mk]
            if not (m.exists and m.kind == XOS_MARKET_PERPETUAL and m.next_sample <= self._now):
                continue
            self.compute_mark(mk, inputs)
            if inputs[0] and inputs[1]:
                m.premium_sum += xos_premium(inputs[1], inputs[0])
                m.samples += 1
            m.next_sample = (self._now // m.sample_interval + 1) * m.sample_interval
        self.find_next_sample()

    cdef int64_t funding_rate(self, Market *m, int64_t *premium) noexcept nogil:
        """The rate in 1e-8: premium + clamp(interest - premium, +-clamp), capped at +-cap; 0 without a sample
        (reference ``_funding_rate``). ``premium`` gets the average premium (floored)."""
        cdef int64_t p, term, rate
        premium[0] = 0
        if m.samples == 0:
            return 0
        p = m.premium_sum // m.samples  # cdivision: truncated towards 0, so floor it as the reference does
        if m.premium_sum < 0 and m.premium_sum % m.samples != 0:
            p -= 1
        premium[0] = p
        term = m.interest - p
        term = m.clamp if term > m.clamp else (-m.clamp if term < -m.clamp else term)
        rate = p + term
        return m.cap if rate > m.cap else (-m.cap if rate < -m.cap else rate)

    cdef void cmd_apply_funding(self, const xos_command *c) noexcept nogil:
        """Any account (a scheduler): the due funding of a perpetual market (ARCHITECTURE, "Funding"; reference
        ``_apply_funding``): payers pay ceil(notional at mark x |rate|), receivers get its floor, the remainder goes to
        the listing venue's insurance fund, so the transfers sum to exactly zero."""
        cdef uint16_t code = self.check_market_kind(c, XOS_MARKET_PERPETUAL)
        cdef Market *m = NULL
        cdef int64_t fund = 0, rate, premium, paid = 0, received = 0, amount, size, due, i, n = 0, cap = 0, margin
        cdef int64_t *rows = NULL
        cdef Position *p
        cdef xos_event *e
        if code == XOS_OK:
            m = &self.market_table[c.market]
            if self._now < m.next_funding:
                code = XOS_FUNDING_NOT_DUE
            else:
                fund = self.fund_of(m.venue)
                if fund == 0:
                    code = XOS_NO_FUNDING_ACCOUNT
        if code:
            self.reject(c, code)
            return
        rate = self.funding_rate(m, &premium)
        if rate != 0 and m.mark != 0:
            i = m.position_head  # newest first: collected, then walked back in order of first fill
            while i != NONE:
                if n == cap:
                    rows = <int64_t *>grow(rows, &cap, n + 1, sizeof(int64_t), b"funding positions")
                rows[n] = i
                n += 1
                i = self.position_rows[i].next_of_market
            while n > 0:
                n -= 1
                p = &self.position_rows[rows[n]]
                if p.size == 0:
                    continue
                size = p.size if p.size > 0 else -p.size
                if (p.size > 0) == (rate > 0):
                    amount = xos_funding_amount(xos_mul_capped(m.mark, size // m.lot_size), rate if rate > 0 else -rate,
                                                True)
                    paid += amount
                    amount = -amount
                else:
                    amount = xos_funding_amount(xos_mul_capped(m.mark, size // m.lot_size), rate if rate > 0 else -rate,
                                                False)
                    received += amount
                if amount and p.isolated:  # into or out of the position's own margin; free only past it
                    margin = amount if amount > 0 else -(p.margin if p.margin < -amount else -amount)
                    p.margin += margin
                    self.transfer(XOS_XFER_FUNDING, m.venue, p.account, m.quote, amount, c.market, margin)
                    self.emit_margin_position(p, m, self.balance_of(self.account_index_of(p.account), m.quote),
                                              XOS_CMD_APPLY_FUNDING)
                elif amount:
                    self.transfer(XOS_XFER_FUNDING, m.venue, p.account, m.quote, amount, c.market)
            free(rows)
            if paid != received:
                self.transfer(XOS_XFER_FUNDING_REMAINDER, m.venue, fund, m.quote, paid - received, c.market)
        due = m.next_funding
        m.next_funding = (self._now // m.funding_interval + 1) * m.funding_interval
        e = self.emit(XOS_EV_FUNDING)
        e.market = c.market
        e.venue = m.venue
        e.order_id = due
        e.account = fund
        e.client_id = m.mark
        e.price = rate
        e.qty = premium
        e.remaining = m.samples
        e.maker_order = paid
        e.maker_account = m.next_funding
        e.maker_fee = received
        e.taker_fee = paid - received
        m.premium_sum = 0
        m.samples = 0

    cdef void cmd_funding_config(self, const xos_command *c) noexcept nogil:
        """Admin or the listing venue's operator: a perpetual market's funding intervals, interest, clamp and cap; the
        schedule restarts from now (reference ``_funding_config``)."""
        cdef uint16_t code = XOS_OK
        cdef Market *m = NULL
        cdef int64_t clamp = <int64_t>((<uint64_t>c.aux) & 0xFFFFFFFFu)
        cdef int64_t cap = <int64_t>((<uint64_t>c.aux) >> 32)
        code = self.check_market_operator(c, XOS_MARKET_PERPETUAL)
        if code == XOS_OK:
            m = &self.market_table[c.market]
            if c.price <= 0 or c.qty <= 0 or c.qty > c.price:
                code = XOS_INVALID_FUNDING_INTERVAL
            elif (c.id < -XOS_RATE_SCALE or c.id > XOS_RATE_SCALE or clamp > XOS_RATE_SCALE or cap < 1
                  or cap > XOS_RATE_SCALE):
                code = XOS_INVALID_FUNDING_RATE
        if code:
            self.reject(c, code)
            return
        m.funding_interval = c.price
        m.sample_interval = c.qty
        m.interest = c.id
        m.clamp = clamp
        m.cap = cap
        self.schedule_funding(m)
        self.find_next_sample()
        self.echo(XOS_EV_VENUE, c)

    cdef void cmd_margin_tiers(self, const xos_command *c) noexcept nogil:
        """Admin or the listing venue's operator: a perpetual market's notional brackets 1..3 above the first
        (``price``, ``qty``, ``id``: floors; ``aux`` bytes 0..2: leverages; (0, 0) unused, only after the used ones);
        floors increasing, leverage 1..100 and non-increasing (reference ``_margin_tiers``)."""
        cdef uint16_t code = XOS_OK
        cdef Market *m = NULL
        cdef int64_t floors[3]
        cdef int64_t floor = 0, next_floor
        cdef int32_t leverage = MAX_LEVERAGE, next_leverage, k, n = 0
        code = self.check_market_operator(c, XOS_MARKET_PERPETUAL)
        if code == XOS_OK:
            m = &self.market_table[c.market]
            if c.aux < 0 or (c.aux >> 24) != 0:
                code = XOS_INVALID_MARGIN_TIER
        floors[0] = c.price
        floors[1] = c.qty
        floors[2] = c.id
        k = 0
        while code == XOS_OK and k < 3:
            next_floor = floors[k]
            next_leverage = <int32_t>((c.aux >> (8 * k)) & 0xFF)
            if next_floor == 0 and next_leverage == 0:
                floor = XOS_MAX_MONEY  # nothing may follow an unused bracket
            elif not (floor < next_floor <= XOS_MAX_MONEY and 1 <= next_leverage <= leverage):
                code = XOS_INVALID_MARGIN_TIER
            else:
                floor = next_floor
                leverage = next_leverage
                n += 1
            k += 1
        if code:
            self.reject(c, code)
            return
        for k in range(n):
            m.tier_floor[k] = floors[k]
            m.tier_leverage[k] = <int32_t>((c.aux >> (8 * k)) & 0xFF)
        m.n_tiers = n
        self.echo(XOS_EV_VENUE, c)

    cdef void cmd_oracle_config(self, const xos_command *c) noexcept nogil:
        """Set (or change) which feed updates the venue's oracle for a market, and its timeout.
        A new oracle counts as updated now (it has ``timeout`` to get its first price); a changed
        one keeps its price, source time and status."""
        cdef uint16_t code = self.check_operator(c)
        cdef int64_t i
        cdef Oracle *o
        if code == XOS_OK:
            if self.venue_table[c.venue].status == XOS_VSTATUS_RETIRED:
                code = XOS_VENUE_RETIRED
            elif c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists:
                code = XOS_UNKNOWN_MARKET
            elif not self.offered(c.venue, c.market):
                code = XOS_MARKET_NOT_OFFERED
            elif c.id <= 0:
                code = XOS_INVALID_FEED_ID
            elif c.aux <= 0:
                code = XOS_INVALID_FEED_ACCOUNT
            elif c.qty <= 0:
                code = XOS_INVALID_ORACLE_TIMEOUT
        if code:
            self.reject(c, code)
            return
        o = self.oracle_of(c.venue, c.market)
        if o == NULL:
            if self.n_oracles == self.cap_oracles:
                self.oracle_rows = <Oracle *>grow(self.oracle_rows, &self.cap_oracles, self.n_oracles + 1,
                                                  sizeof(Oracle), b"oracles")
            i = self.n_oracles
            if xos_hmap_put(&self.oracle_index, c.venue, c.market, i):
                die(b"oracle index")
            self.n_oracles += 1
            o = &self.oracle_rows[i]
            memset(o, 0, sizeof(Oracle))
            o.venue = c.venue
            o.market = c.market
            o.updated_at = self._now
        o.feed_id = c.id
        o.feed_account = c.aux
        o.timeout = c.qty
        if not o.stale and stale_deadline(o) < self.next_stale_at:
            self.next_stale_at = stale_deadline(o)
        self.echo(XOS_EV_ORACLE_CONFIG, c)

    cdef void cmd_oracle_price(self, const xos_command *c) noexcept nogil:
        """The configured feed's price for a venue's market: kept with its source time; a stale
        oracle is fresh again."""
        cdef uint16_t code = XOS_OK
        cdef Oracle *o = NULL
        cdef Market *m
        if c.venue >= <uint32_t>self.max_venues or not self.venue_table[c.venue].exists:
            code = XOS_UNKNOWN_VENUE
        elif c.market < 1 or c.market > <uint32_t>self.max_markets or not self.market_table[c.market].exists:
            code = XOS_UNKNOWN_MARKET
        else:
            o = self.oracle_of(c.venue, c.market)
            m = &self.market_table[c.market]
            if o == NULL:
                code = XOS_ORACLE_NOT_CONFIGURED
            elif c.id != o.feed_id:
                code = XOS_WRONG_FEED
            elif c.account != o.feed_account:
                code = XOS_WRONG_FEED_ACCOUNT
            elif c.price <= 0:
                code = XOS_PRICE_NOT_POSITIVE
            elif c.price % m.tick_size:
                code = XOS_PRICE_OFF_TICK
            elif c.price > XOS_MAX_MONEY:
                code = XOS_PRICE_TOO_LARGE
            elif c.qty <= 0:
                code = XOS_INVALID_SOURCE_COUNT
            elif c.aux <= o.source_ts:
                code = XOS_ORACLE_TIME_NOT_NEWER
        if code:
            self.reject(c, code)
            return
        o.price = c.price
        o.source_ts = c.aux
        o.sources = c.qty
        o.updated_at = self._now
        self.echo(XOS_EV_ORACLE, c)
        self.dirty_mark(c.market)
        if o.stale:
            o.stale = False
            m.stale_oracles -= 1
            self.emit_oracle_status(o)
        if stale_deadline(o) < self.next_stale_at:
            self.next_stale_at = stale_deadline(o)

    # ------------------------------------------------------ outcome markets

    cdef int64_t outcome_leg(self, Market *m, uint8_t side, int64_t price) noexcept nogil:
        """What an outcome order pays per lot at ``price``: a buy YES at the price, a sell NO at payout - price."""
        return self.outcome_table[<uint32_t>(m - self.market_table)].payout - price if side == ASK else price

    cdef uint16_t outcome_order_code(self, uint32_t market) noexcept nogil:
        if self.outcome_table[market].state == XOS_OS_PROPOSED:
            return XOS_OUTCOME_RESOLVING
        return XOS_OUTCOME_RESOLVED

    cdef Position *outcome_move(self, Market *m, uint32_t market, int64_t account, int64_t bal, int64_t delta,
                                int64_t price, int64_t *cash) noexcept nogil:
        """Move the account's YES position by ``delta`` at the YES price ``price`` (reference ``_outcome_move``):
        the side's leg is the price for a buy, payout - price for a sell; the opened part pays its leg per lot
        into the collateral, the closed part is paid payout - leg per lot out of it."""
        cdef OutcomeMarket *oc = &self.outcome_table[market]
        cdef Position *p = self.position_of(account, market)
        cdef int64_t lot = m.lot_size
        cdef int64_t leg = price if delta > 0 else oc.payout - price
        cdef int64_t amount = delta if delta > 0 else -delta
        cdef int64_t open_size = p.size if p.size >= 0 else -p.size
        cdef int64_t closed = 0, closed_entry, proceeds, cost
        cash[0] = 0
        if (p.size < 0 and delta > 0) or (p.size > 0 and delta < 0):
            closed = amount if amount < open_size else open_size
            closed_entry = xos_mul_div(p.entry_value, closed, open_size)
            proceeds = (oc.payout - leg) * (closed // lot)
            p.realised += proceeds - closed_entry
            p.entry_value -= closed_entry
            cash[0] += proceeds
        if amount > closed:
            cost = leg * ((amount - closed) // lot)
            p.entry_value += cost
            cash[0] -= cost
        p.size += delta
        self.bals[bal].free += cash[0]
        oc.collateral -= cash[0]
        return p

    cdef void emit_outcome_position(self, Position *p, int64_t bal, uint8_t side, uint8_t reason, uint32_t venue,
                                    int64_t order_id, int64_t price, int64_t cash) noexcept nogil:
        cdef xos_event *e = self.emit(XOS_EV_OUTCOME_POSITION)
        e.side = side
        e.reason = reason
        e.market = p.market
        e.venue = venue
        e.order_id = order_id
        e.account = p.account
        e.client_id = p.realised
        e.price = price
        e.qty = p.size
        e.remaining = p.entry_value
        e.maker_order = self.bals[bal].free
        e.maker_account = self.bals[bal].held
        e.maker_fee = cash
        e.taker_fee = self.outcome_table[p.market].collateral

    cdef void emit_outcome_status(self, uint32_t market, uint8_t reason, int64_t account) noexcept nogil:
        cdef OutcomeMarket *oc = &self.outcome_table[market]
        cdef xos_event *e = self.emit(XOS_EV_OUTCOME_STATUS)
        e.reason = reason
        e.market = market
        e.venue = self.market_table[market].venue
        e.order_id = oc.resolver
        e.account = account
        e.client_id = oc.event
        e.price = oc.payout
        e.qty = oc.outcome
        e.remaining = oc.finalize_at
        e.maker_order = oc.window
        e.taker_fee = oc.collateral

    cdef uint16_t outcome_code(self, uint32_t market) noexcept nogil:
        """0 for a configured outcome market, else why not."""
        if market < 1 or market > <uint32_t>self.max_markets or not self.market_table[market].exists:
            return XOS_UNKNOWN_MARKET
        if self.market_table[market].kind != XOS_MARKET_OUTCOME:
            return XOS_INVALID_MARKET_KIND
        if self.outcome_table[market].state == 0:
            return XOS_OUTCOME_NOT_CONFIGURED
        return XOS_OK

    cdef OutcomeEvent *outcome_event_of(self, int64_t event) noexcept nogil:
        cdef int64_t i = xos_hmap_get(&self.outcome_event_index, event, 0)
        return &self.outcome_event_rows[i] if i >= 0 else NULL

    cdef void cmd_outcome_config(self, const xos_command *c) noexcept nogil:
        """Admin or the listing venue's operator: payout, resolver, dispute window and event of an outcome market."""
        cdef uint16_t code = XOS_OK
        cdef Market *m = NULL
        cdef OutcomeEvent *ev = NULL
        cdef OutcomeMarket *first
        code = self.check_market_operator(c, XOS_MARKET_OUTCOME)
        if code == XOS_OK:
            m = &self.market_table[c.market]
            if self.outcome_table[c.market].state != 0:
                code = XOS_OUTCOME_CONFIGURED
            elif c.price <= 0 or c.price % m.tick_size or c.price // 2 < m.tick_size or c.price > XOS_MAX_MONEY:
                code = XOS_INVALID_PAYOUT
            elif c.id <= 0:
                code = XOS_INVALID_RESOLVER
            elif c.qty < 0:
                code = XOS_INVALID_DISPUTE_WINDOW
            elif c.aux < 0:
                code = XOS_INVALID_EVENT
            elif c.aux > 0:
                ev = self.outcome_event_of(c.aux)
                if ev != NULL:
                    first = &self.outcome_table[ev.first]
                    if (ev.converted or first.state != XOS_OS_OPEN or self.market_table[ev.first].quote != m.quote
                            or first.payout != c.price or first.resolver != c.id or first.window != c.qty):
                        code = XOS_INVALID_EVENT
        if code:
            self.reject(c, code)
            return
        cdef OutcomeMarket *oc = &self.outcome_table[c.market]
        oc.state = XOS_OS_OPEN
        oc.outcome = 0
        oc.payout = c.price
        oc.resolver = c.id
        oc.window = c.qty
        oc.event = c.aux
        oc.finalize_at = 0
        oc.collateral = 0
        oc.event_no = 0
        self.outcome_order[self.n_outcomes] = c.market
        self.n_outcomes += 1
        if c.aux > 0:
            if ev == NULL:
                if self.n_outcome_events == self.cap_outcome_events:
                    self.outcome_event_rows = <OutcomeEvent *>grow(self.outcome_event_rows, &self.cap_outcome_events,
                                                                   self.n_outcome_events + 1, sizeof(OutcomeEvent),
                                                                   b"outcome events")
                if xos_hmap_put(&self.outcome_event_index, c.aux, 0, self.n_outcome_events):
                    die(b"outcome event index")
                ev = &self.outcome_event_rows[self.n_outcome_events]
                self.n_outcome_events += 1
                memset(ev, 0, sizeof(OutcomeEvent))
                ev.id = c.aux
                ev.first = c.market
            ev.n_markets += 1
        self.emit_outcome_status(c.market, XOS_OS_OPEN, c.account)

    cdef void cmd_convert(self, const xos_command *c) noexcept nogil:
        """NO shares of one market of an event into as many YES shares of each of the others (ARCHITECTURE,
        "Outcome markets"): the NO goes to the event, each other market mints pairs (YES to the account, NO to
        the event) with collateral the event advances."""
        cdef int64_t acct_idx = -1, size = 0, mint = 0, i, cash, bal
        cdef uint16_t code = self.check_account(c.account, &acct_idx)
        cdef OutcomeMarket *oc = NULL
        cdef OutcomeEvent *ev = NULL
        cdef Market *m = NULL
        cdef uint32_t other
        if code == XOS_OK:
            code = self.outcome_code(c.market)
        if code == XOS_OK:
            oc = &self.outcome_table[c.market]
            m = &self.market_table[c.market]
            ev = self.outcome_event_of(oc.event) if oc.event else NULL
            if ev == NULL or ev.n_markets < 2:
                code = XOS_NOT_IN_EVENT
            elif oc.state != XOS_OS_OPEN:
                code = self.outcome_order_code(c.market)
            elif c.qty <= 0:
                code = XOS_QTY_NOT_POSITIVE
            elif c.qty % m.lot_size:
                code = XOS_QTY_OFF_LOT
            else:
                i = xos_hmap_get(&self.position_index, c.account, c.market)
                size = self.position_rows[i].size if i >= 0 else 0
                mint = xos_mul_capped(oc.payout, c.qty // m.lot_size)
                if -size < c.qty:
                    code = XOS_NO_SHARES_TO_CONVERT
                elif xos_mul_capped(mint, ev.n_markets - 1) > XOS_MAX_MONEY - ev.advance:
                    code = XOS_BALANCE_OVERFLOW
                else:
                    for i in range(self.n_outcomes):
                        other = self.outcome_order[i]
                        if (other != c.market and self.outcome_table[other].event == oc.event
                                and self.outcome_table[other].collateral + mint > XOS_MAX_MONEY):
                            code = XOS_BALANCE_OVERFLOW
        if code:
            self.reject(c, code)
            return
        ev.converted += c.qty
        ev.advance += mint * (ev.n_markets - 1)
        cdef xos_event *e = self.emit(XOS_EV_OUTCOME_CONVERT)
        e.market = c.market
        e.venue = m.venue
        e.account = c.account
        e.client_id = oc.event
        e.price = oc.payout
        e.qty = c.qty
        e.remaining = ev.converted
        e.taker_fee = ev.advance
        cdef Position *p
        bal = self.ensure_balance(acct_idx, m.quote)
        p = self.outcome_move(m, c.market, c.account, bal, c.qty, oc.payout, &cash)  # the NO goes, unpaid
        oc.event_no += c.qty
        self.emit_outcome_position(p, bal, BID, XOS_OC_CONVERT, 0, 0, 0, cash)
        for i in range(self.n_outcomes):
            other = self.outcome_order[i]
            if other == c.market or self.outcome_table[other].event != oc.event:
                continue
            bal = self.ensure_balance(acct_idx, self.market_table[other].quote)
            self.outcome_table[other].collateral += mint
            self.outcome_table[other].event_no += c.qty
            p = self.outcome_move(&self.market_table[other], other, c.account, bal, c.qty, 0, &cash)
            self.emit_outcome_position(p, bal, BID, XOS_OC_CONVERT, 0, 0, 0, cash)

    cdef void cmd_resolve(self, const xos_command *c) noexcept nogil:
        """The resolver proposes an outcome (final at once without a dispute window); during the window the
        admin overturns (or confirms) it, final at once. A market of an event resolves the whole event."""
        cdef uint16_t code = XOS_OK
        cdef OutcomeMarket *oc = NULL
        cdef OutcomeMarket *member
        cdef int64_t i
        cdef uint32_t mk
        if c.account <= 0:
            code = XOS_INVALID_ACCOUNT_ID
        else:
            code = self.outcome_code(c.market)
        if code == XOS_OK:
            oc = &self.outcome_table[c.market]
            if oc.state == XOS_OS_FINAL:
                code = XOS_OUTCOME_RESOLVED
            elif (c.qty != 0 and c.qty != 1) or (oc.event and c.qty != 1):
                code = XOS_INVALID_OUTCOME
            elif oc.state == XOS_OS_OPEN:
                if c.account != oc.resolver:
                    code = XOS_NOT_RESOLVER
            elif c.account != self.admin:
                code = XOS_RESOLUTION_PENDING if c.account == oc.resolver else XOS_NOT_RESOLVER
        if code:
            self.reject(c, code)
            return
        cdef bint overturn = oc.state == XOS_OS_PROPOSED
        cdef int64_t event = oc.event
        cdef int64_t deadline = INT64_MAX if oc.window > INT64_MAX - self._now else self._now + oc.window
        for i in range(self.n_outcomes):
            mk = self.outcome_order[i]
            if mk != c.market and (event == 0 or self.outcome_table[mk].event != event):
                continue
            member = &self.outcome_table[mk]
            member.outcome = <uint8_t>c.qty if mk == c.market else 0
            if overturn:
                self.finalize(mk, XOS_OS_OVERTURNED, c.account)
            elif member.window == 0:
                self.finalize(mk, XOS_OS_FINAL, c.account)
            else:
                member.state = XOS_OS_PROPOSED
                member.finalize_at = deadline
                if deadline < self.next_finalize_at:
                    self.next_finalize_at = deadline
                self.emit_outcome_status(mk, XOS_OS_PROPOSED, c.account)

    cdef void finalize(self, uint32_t market, uint8_t reason, int64_t account) noexcept nogil:
        """Final resolution (reference ``_finalize``): cancel the market's open orders in order id order, pay
        payout per winning share (positions in order of first fill), repay the event's advance from the NO it
        holds, close the market."""
        cdef Market *m = &self.market_table[market]
        cdef OutcomeMarket *oc = &self.outcome_table[market]
        cdef BookSide *bs
        cdef int64_t n = 0, i, cash, bal, repaid
        cdef int32_t k, side
        cdef int32_t *slots
        cdef int64_t *ids
        cdef Position *p
        cdef bint wins
        for side in range(2):
            bs = &m.sides[side]
            for k in range(bs.n):
                n += bs.levels[k].count
        if n:
            slots = <int32_t *>malloc(<size_t>n * sizeof(int32_t))
            ids = <int64_t *>malloc(<size_t>n * sizeof(int64_t))
            if slots == NULL or ids == NULL:
                die(b"resolution cancels")
            n = 0
            for side in range(2):
                bs = &m.sides[side]
                for i in range(bs.n):
                    k = bs.levels[i].head
                    while k != NONE:
                        slots[n] = k
                        ids[n] = self.orders[k].id
                        n += 1
                        k = self.orders[k].next
            sort_slots_by_id(slots, ids, n)
            for i in range(n):
                self.cancel_order(slots[i], True, XOS_CANCEL_MASS, XOS_OUTCOME_RESOLVED, self.orders[slots[i]].remaining)
            free(slots)
            free(ids)
        for i in range(self.n_positions):
            p = &self.position_rows[i]
            if p.market != market or p.size == 0:
                continue
            wins = (p.size > 0) == (oc.outcome == 1)
            cash = oc.payout * ((p.size if p.size > 0 else -p.size) // m.lot_size) if wins else 0
            bal = self.balance_of(self.account_index_of(p.account), m.quote)
            self.bals[bal].free += cash
            oc.collateral -= cash
            p.realised += cash - p.entry_value
            p.size = 0
            p.entry_value = 0
            self.emit_outcome_position(p, bal, BID, XOS_OC_SETTLE, m.venue, 0, oc.payout if wins else 0, cash)
        if oc.event_no:
            if oc.outcome == 0:
                repaid = oc.payout * (oc.event_no // m.lot_size)
                oc.collateral -= repaid
                self.outcome_event_of(oc.event).advance -= repaid
            oc.event_no = 0
        oc.state = XOS_OS_FINAL
        oc.finalize_at = 0
        self.emit_outcome_status(market, reason, account)

    cdef void finalize_due(self) noexcept nogil:
        """Proposed resolutions whose dispute window is over become final (configuration order)."""
        cdef int64_t i, next_at = INT64_MAX
        cdef uint32_t mk
        cdef OutcomeMarket *oc
        for i in range(self.n_outcomes):
            mk = self.outcome_order[i]
            oc = &self.outcome_table[mk]
            if oc.state != XOS_OS_PROPOSED:
                continue
            if oc.finalize_at <= self._now:
                self.finalize(mk, XOS_OS_FINAL, 0)
            elif oc.finalize_at < next_at:
                next_at = oc.finalize_at
        self.next_finalize_at = next_at

    cdef xos_event *emit_listing(self, const xos_command *c) noexcept nogil:
        """Accepted for a listing echoes its whole definition, so event consumers need no other source."""
        cdef xos_event *e = self.emit(XOS_EV_ACCEPTED)
        e.market = c.market
        e.venue = c.venue
        e.side = c.side
        e.account = c.account
        e.price = c.price
        e.qty = c.qty
        e.client_id = c.id
        e.remaining = c.aux
        e.flags = XOS_EF_ASSET_LISTING if c.kind == XOS_CMD_ADD_ASSET else XOS_EF_MARKET_LISTING
        return e

    cdef int64_t execute(self, const xos_command *c, int64_t available) noexcept nogil:
        """Run the command at ``c`` (``available`` records from it on in the batch); returns the records it
        used: 1, or a multi-leg order's header and legs, whose sequence numbers it takes after its events."""
        cdef int64_t used = 1
        self._cmd_seq += 1
        if c.ts > self._now:
            self._now = c.ts
        if self.n_heap > 0 and self.heap[0].expire_at <= self._now:
            self.expire_orders()
        if self.next_release <= self._now:
            self.release_unbonds()
        if self.next_stale_at <= self._now:
            self.mark_stale_oracles()
        if self.next_finalize_at <= self._now:
            self.finalize_due()
        if self.next_sample_at <= self._now:
            self.sample_premiums()
        if c.kind == XOS_CMD_PLACE:
            self.cmd_place(c)
        elif c.kind == XOS_CMD_CANCEL:
            self.cmd_cancel(c)
        elif c.kind == XOS_CMD_AMEND:
            self.cmd_amend(c)
        elif c.kind == XOS_CMD_MASS_CANCEL:
            self.cmd_mass_cancel(c)
        elif c.kind == XOS_CMD_DEPOSIT or c.kind == XOS_CMD_WITHDRAW:
            self.cmd_balance(c)
        elif c.kind == XOS_CMD_ADD_ASSET:
            self.cmd_add_asset(c)
        elif c.kind == XOS_CMD_ADD_MARKET:
            self.cmd_add_market(c)
        elif c.kind == XOS_CMD_HALT or c.kind == XOS_CMD_RESUME:
            self.cmd_market_status(c)
        elif c.kind == XOS_CMD_LAUNCH_VENUE:
            self.cmd_launch_venue(c)
        elif c.kind == XOS_CMD_ADD_STAKE or c.kind == XOS_CMD_UNBOND:
            self.cmd_stake(c)
        elif c.kind == XOS_CMD_VENUE_STATUS:
            self.cmd_venue_status(c)
        elif (c.kind == XOS_CMD_VENUE_ACCESS or c.kind == XOS_CMD_VENUE_POLICY or c.kind == XOS_CMD_OFFER_MARKET
              or c.kind == XOS_CMD_WITHDRAW_MARKET or c.kind == XOS_CMD_ALLOW or c.kind == XOS_CMD_DENY):
            self.cmd_venue_config(c)
        elif c.kind == XOS_CMD_SET_REGION:
            self.cmd_set_region(c)
        elif c.kind == XOS_CMD_SLASH:
            self.cmd_slash(c)
        elif c.kind == XOS_CMD_VENUE_PARAMS:
            self.cmd_venue_params(c)
        elif c.kind == XOS_CMD_VENUE_FEES or c.kind == XOS_CMD_VENUE_FEE_TIER:
            self.cmd_venue_fees(c)
        elif c.kind == XOS_CMD_SWEEP_FEES:
            self.cmd_sweep_fees(c)
        elif c.kind == XOS_CMD_ORACLE_PRICE:
            self.cmd_oracle_price(c)
        elif c.kind == XOS_CMD_ORACLE_CONFIG:
            self.cmd_oracle_config(c)
        elif c.kind == XOS_CMD_MARKET_RISK:
            self.cmd_market_risk(c)
        elif c.kind == XOS_CMD_LIQUIDATE:
            self.cmd_liquidate(c)
        elif c.kind == XOS_CMD_APPLY_FUNDING:
            self.cmd_apply_funding(c)
        elif c.kind == XOS_CMD_FUNDING_CONFIG:
            self.cmd_funding_config(c)
        elif c.kind == XOS_CMD_OUTCOME_CONFIG:
            self.cmd_outcome_config(c)
        elif c.kind == XOS_CMD_CONVERT:
            self.cmd_convert(c)
        elif c.kind == XOS_CMD_RESOLVE:
            self.cmd_resolve(c)
        elif c.kind == XOS_CMD_VENUE_MARKET_RISK:
            self.cmd_venue_market_risk(c)
        elif c.kind == XOS_CMD_VENUE_MARKET_HALT or c.kind == XOS_CMD_VENUE_MARKET_RESUME:
            self.cmd_venue_market_status(c)
        elif c.kind == XOS_CMD_MULTI_LEG:
            used = self.cmd_multi_leg(c, available)
        elif c.kind == XOS_CMD_LEG:
            self.reject(c, XOS_LEG_WITHOUT_HEADER)
        elif c.kind == XOS_CMD_SET_EXPOSURE_CAP:
            self.cmd_set_exposure_cap(c)
        elif c.kind == XOS_CMD_COLLATERAL_ASSET:
            self.cmd_collateral_asset(c)
        elif c.kind == XOS_CMD_VENUE_COLLATERAL:
            self.cmd_venue_collateral(c)
        elif c.kind == XOS_CMD_MARGIN_TIERS:
            self.cmd_margin_tiers(c)
        elif c.kind == XOS_CMD_MARGIN_MODE:
            self.cmd_margin_mode(c)
        elif c.kind == XOS_CMD_ISOLATED_MARGIN:
            self.cmd_isolated_margin(c)
        elif c.kind == XOS_CMD_LIST_MARKET:
            self.cmd_list_market(c)
        else:
            self.reject(c, XOS_UNKNOWN_COMMAND)
        if self.n_dirty:
            self.update_marks()
        self.unit_seq = self._cmd_seq
        self._cmd_seq += used - 1
        return used

    cdef int64_t run_batch(self, const xos_command *cmds, int64_t n, int64_t *durations) noexcept nogil:
        """Run ``n`` commands; events go to the engine's buffer (reset per batch).

        With ``durations`` set, each command's in-engine time (ns) is written there.
        """
        cdef int64_t i = 0, used
        cdef timespec t0, t1
        # the last batch's events stay readable until now: a buffer that a burst grew far past what the last batch
        # made (a mass cancel of 1 M orders: 128 MiB) shrinks back, from the second batch after the burst, and its
        # pages go back to the system
        if self.cap_events > EVENTS_KEPT and 16 * self.n_events < self.cap_events:
            self.fit_events()
        self.n_events = 0
        if durations == NULL:
            while i < n:
                i += self.execute(&cmds[i], n - i)
        else:
            while i < n:
                clock_gettime(CLOCK_MONOTONIC, &t0)
                used = self.execute(&cmds[i], n - i)
                clock_gettime(CLOCK_MONOTONIC, &t1)
                durations[i] = (t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec)
                memset(&durations[i + 1], 0, <size_t>(used - 1) * sizeof(int64_t))  # a multi-leg's legs: in its time
                i += used
        if self.n_touched:  # one BookLevel per level the batch changed: consumers want its L2 increment
            self.emit_touched_levels()
        # after a burst of open orders, their indexes shrink back to the orders left (between batches: a
        # shrink never lands in a command's time)
        xos_hmap_fit(&self.order_index, INDEX_KEYS)
        xos_hmap_fit(&self.client_index, INDEX_KEYS)
        return self.n_events

    cdef void fit_events(self) noexcept nogil:
        """Room for four times the last batch's events, at least EVENTS_KEPT; out of memory it stays as it is."""
        cdef int64_t cap = EVENTS_KEPT
        while cap < 4 * self.n_events:
            cap *= 2
        cdef void *p = realloc(self.events, <size_t>cap * sizeof(xos_event))
        if p != NULL:
            self.events, self.cap_events = <xos_event *>p, cap

    # ----------------------------------------------------- Python batch edge

    cdef const xos_command *command_pointer(self, cnp.ndarray commands) except NULL:
        if commands.dtype != COMMAND_DTYPE:
            raise TypeError(f"commands must be a numpy array of COMMAND_DTYPE, not {commands.dtype}")
        if commands.ndim != 1 or not commands.flags.c_contiguous:
            raise ValueError("commands must be a 1-d C-contiguous array")
        return <const xos_command *>cnp.PyArray_DATA(commands)

    def process(self, cnp.ndarray commands):
        """Run a batch of commands; returns all their events (a new EVENT_DTYPE array)."""
        cdef const xos_command *cmds = self.command_pointer(commands)
        cdef int64_t n = commands.shape[0], n_events
        with nogil:
            n_events = self.run_batch(cmds, n, NULL)
        out = np.empty(n_events, dtype=EVENT_DTYPE)
        if n_events:
            memcpy(cnp.PyArray_DATA(out), self.events, <size_t>n_events * sizeof(xos_event))
        return out

    def process_into(self, cnp.ndarray commands, cnp.ndarray out):
        """Run a batch and write its events into the caller's ``out`` (EVENT_DTYPE, C-contiguous);
        returns how many.  If ``out`` is too small the commands still ran: the error says how
        many events there are, and ``last_events()`` holds them all."""
        if out.dtype != EVENT_DTYPE or out.ndim != 1 or not out.flags.c_contiguous or not out.flags.writeable:
            raise TypeError("out must be a writeable 1-d C-contiguous EVENT_DTYPE array")
        cdef int64_t n_events = self.process_count(commands)
        if n_events > out.shape[0]:
            raise ValueError(f"the batch produced {n_events} events and out holds {out.shape[0]}; "
                             "they are in last_events()")
        if n_events:
            memcpy(cnp.PyArray_DATA(out), self.events, <size_t>n_events * sizeof(xos_event))
        return n_events

    def process_count(self, cnp.ndarray commands):
        """Run a batch and return how many events it produced, leaving them in the
        engine's buffer (see ``last_events``): the benchmark's entry point."""
        cdef const xos_command *cmds = self.command_pointer(commands)
        cdef int64_t n = commands.shape[0], n_events
        with nogil:
            n_events = self.run_batch(cmds, n, NULL)
        return n_events

    def process_timed(self, cnp.ndarray commands):
        """Like ``process``, plus each command's in-engine time in ns (int64 array)."""
        cdef const xos_command *cmds = self.command_pointer(commands)
        cdef int64_t n = commands.shape[0], n_events
        durations = np.empty(n, dtype=np.int64)
        cdef int64_t *d = <int64_t *>cnp.PyArray_DATA(durations)
        with nogil:
            n_events = self.run_batch(cmds, n, d)
        out = np.empty(n_events, dtype=EVENT_DTYPE)
        if n_events:
            memcpy(cnp.PyArray_DATA(out), self.events, <size_t>n_events * sizeof(xos_event))
        return out, durations

    def publish_to(self, EventRing ring, int64_t durable_seq):
        """Publish the last batch's events to the ring straight from the engine's buffer
        (one copy, one cursor store), stamping how far the journal is durable."""
        cdef int64_t i
        for i in range(self.n_events):
            self.events[i].durable_seq = durable_seq
        with nogil:
            ring.publish(self.events, self.n_events)
        return self.n_events

    def last_events(self):
        """A copy of the events of the last batch."""
        out = np.empty(self.n_events, dtype=EVENT_DTYPE)
        if self.n_events:
            memcpy(cnp.PyArray_DATA(out), self.events, <size_t>self.n_events * sizeof(xos_event))
        return out

    # ------------------------------------------------------------ snapshots

    def export_state(self, bint reuse_buffers=False):
        """The engine's whole state as numpy arrays: counters, assets (with fees and outstanding
        totals), markets (with last price and halt), account ids in index order, every balance
        entry, and every open order with its time priority (``rest_seq``).  Pool slots, hash tables,
        tombstone levels and the expiry heap are not state: ``import_state`` rebuilds them.

        With ``reuse_buffers`` the big balance and order arrays are views into buffers kept from
        the previous call (fresh pages cost as much as the copy): only for a caller that is done
        with every earlier export, like the matcher stage once its snapshot writer is idle."""
        cdef int64_t i, n, k
        cdef int32_t m
        cdef Market *mk
        counters = np.array([STATE_VERSION, self._cmd_seq, self._event_seq, self._last_order_id, self._now,
                             self._rest_seq], dtype=np.int64)
        assets = np.zeros(sum(1 for i in range(1, self.max_assets + 1) if self.asset_table[i].exists), ASSET_STATE)
        k = 0
        for i in range(1, self.max_assets + 1):
            if self.asset_table[i].exists:
                a = self.asset_table[i]
                assets[k] = (i, a.decimals, a.symbol_lo, a.symbol_hi, a.outstanding, self.fee_pool[i])
                k += 1
        markets = np.zeros(sum(1 for m in range(1, self.max_markets + 1) if self.market_table[m].exists), MARKET_STATE)
        k = 0
        for m in range(1, self.max_markets + 1):
            mk = &self.market_table[m]
            if mk.exists:
                markets[k] = (m, mk.venue, mk.base, mk.quote, mk.tick_size, mk.lot_size, mk.min_size, mk.maker_bps,
                              mk.taker_bps, mk.band_bps, mk.kind, mk.halted, 0, mk.last_price)
                k += 1
        accounts = np.empty(self.n_accounts, dtype=np.int64)
        cdef int64_t *acct_ids = <int64_t *>cnp.PyArray_DATA(accounts)
        n = 0
        for i in range(self.n_accounts):
            acct_ids[i] = self.accts[i].id
            n += self.accts[i].n_balances
        cdef cnp.ndarray balances = self.export_buffer(0, n, BALANCE_STATE, reuse_buffers)
        cdef cnp.ndarray orders = self.export_buffer(1, self.n_open, ORDER_STATE, reuse_buffers)
        cdef BalanceState *balance_rows = <BalanceState *>cnp.PyArray_DATA(balances)
        cdef OrderState *order_rows = <OrderState *>cnp.PyArray_DATA(orders)
        with nogil:  # the part that holds matching up: plain copies out of the C structs
            self.copy_balances(balance_rows, n)
            self.copy_orders(order_rows)
        state = {"counters": counters, "assets": assets, "markets": markets, "accounts": accounts,
                 "balances": balances, "orders": orders}
        state.update(self.export_venues())
        state["oracles"] = np.array(self.oracles(), dtype=ORACLE_STATE).reshape(-1)
        positions = np.zeros(self.n_positions, POSITION_STATE)
        for i in range(self.n_positions):
            p = self.position_rows[i]
            positions[i] = (p.account, p.market, 0, p.size, p.entry_value, p.margin, p.realised)
        state["positions"] = positions
        risk = [(m, self.market_table[m].max_leverage, self.market_table[m].maintenance_bps,
                 self.market_table[m].impact_lots, self.market_table[m].slice_lots)
                for m in range(1, self.max_markets + 1)
                if self.market_table[m].exists and self.market_table[m].kind == XOS_MARKET_PERPETUAL]
        state["market_risk"] = np.array(risk, MARKET_RISK_STATE)
        outcomes = np.zeros(self.n_outcomes, OUTCOME_STATE)
        for i in range(self.n_outcomes):
            oc = self.outcome_table[self.outcome_order[i]]
            outcomes[i] = (self.outcome_order[i], oc.state, oc.outcome, 0, oc.payout, oc.resolver, oc.window, oc.event,
                           oc.finalize_at, oc.collateral, oc.event_no)
        state["outcomes"] = outcomes
        state["outcome_events"] = np.array([(self.outcome_event_rows[i].id, self.outcome_event_rows[i].converted,
                                             self.outcome_event_rows[i].advance)
                                            for i in range(self.n_outcome_events)], OUTCOME_EVENT_STATE).reshape(-1)
        venue_risks = np.zeros(self.n_venue_risks, VENUE_RISK_STATE)
        for i in range(self.n_venue_risks):
            r = self.venue_risk_rows[i]
            venue_risks[i] = (r.venue, r.market, r.band_bps, r.move_bps, r.oi_cap, r.window_ms, r.cooldown_ms,
                              r.long_oi, r.short_oi, r.halted)
        state["venue_market_risk"] = venue_risks
        state["exposure_caps"] = np.array(self.exposure_caps(), EXPOSURE_CAP_STATE)
        state["collateral_assets"] = np.array([tuple(c) for c in self.collateral_assets()], COLLATERAL_ASSET_STATE)
        state["venue_collateral"] = np.array([tuple(c) for c in self.venue_collaterals()], VENUE_COLLATERAL_STATE)
        state["funding"] = np.array([(f.market_id, 0) + tuple(f[1:]) for f in self.fundings()], FUNDING_STATE)
        state["margin_tiers"] = np.array([(t.market_id, k, floor, leverage) for t in self.margin_tiers()
                                          for k, (floor, leverage) in enumerate(t.brackets) if k], MARGIN_TIER_STATE)
        state["margin_modes"] = np.array(self.margin_modes(), MARGIN_MODE_STATE).reshape(-1)
        return state

    def export_venues(self):
        """Venue state: staking parameters, the venue table, offers, allow-lists and region tags.
        A venue's open-order count is not state: registering the orders rebuilds it."""
        cdef int32_t i, m
        cdef int64_t h
        cdef Venue *v
        params = np.array([self.admin, self.protocol_account, self.stake_asset, self.min_stake, self.unbond_period,
                           self.next_release], dtype=np.int64)
        cdef int64_t k
        rows, offers, tiers = [], [], []
        for i in range(self.max_venues):
            v = &self.venue_table[i]
            if not v.exists:
                continue
            rows.append((i, v.status, v.access, v.pool, 0, v.accepts, v.blocked_regions, v.operator, v.insurance,
                         v.stake, v.unbonding, v.unbond_at, v.maker_bps, v.taker_bps, v.operator_bps,
                         v.insurance_bps, v.tier_asset, v.n_tiers, v.tier_epoch))
            tiers += [(i, t, v.tiers[t].min_volume, v.tiers[t].maker_bps, v.tiers[t].taker_bps)
                      for t in range(v.n_tiers)]
            offers += [(i, m) for m in range(1, self.max_markets + 1) if self.offered(i, m)]
        allowed = sorted((self.allow_index.slots[h].k2, self.allow_index.slots[h].k1)
                         for h in range(<int64_t>self.allow_index.mask + 1) if self.allow_index.slots[h].val >= 0)
        regions = [(h, self.accts[h].region) for h in range(self.n_accounts) if self.accts[h].region]
        fees = sorted((self.fee_index.slots[h].k1, self.fee_index.slots[h].k2, self.venue_pool[k])
                      for h in range(<int64_t>self.fee_index.mask + 1) if (k := self.fee_index.slots[h].val) >= 0)
        return {"venue_params": params, "venues": np.array(rows, dtype=VENUE_STATE),
                "venue_offers": np.array(offers, dtype=PAIR_STATE).reshape(-1),
                "venue_allowed": np.array(allowed, dtype=PAIR_STATE).reshape(-1),
                "account_regions": np.array(regions, dtype=PAIR_STATE).reshape(-1),
                "venue_tiers": np.array(tiers, dtype=TIER_STATE).reshape(-1),
                "venue_fees": np.array(fees, dtype=VENUE_FEE_STATE).reshape(-1),
                "venue_volumes": np.array(self.volumes(), dtype=VOLUME_STATE).reshape(-1)}

    def import_venues(self, state):
        """Load ``export_venues``'s arrays (before the orders, whose venues must exist)."""
        cdef Venue *v
        params = state["venue_params"]
        self.admin, self.protocol_account, self.stake_asset = params[0], params[1], params[2]
        self.min_stake, self.unbond_period, self.next_release = params[3], params[4], params[5]
        for row in state["venues"]:
            if not 0 <= row["venue"] < self.max_venues:
                raise ValueError(f"venue {row['venue']} is beyond max_venues {self.max_venues}")
            v = &self.venue_table[<int32_t>row["venue"]]
            v.exists = True
            v.access = row["access"]
            v.pool = row["pool"]
            v.accepts = row["accepts"]
            v.blocked_regions = row["blocked_regions"]
            v.operator = row["operator"]
            v.insurance = row["insurance"]
            v.stake = row["stake"]
            v.unbonding = row["unbonding"]
            v.unbond_at = row["unbond_at"]
            v.open_orders = 0
            v.maker_bps = row["maker_bps"]
            v.taker_bps = row["taker_bps"]
            v.operator_bps = row["operator_bps"]
            v.insurance_bps = row["insurance_bps"]
            v.tier_asset = row["tier_asset"]
            v.n_tiers = row["n_tiers"]
            v.tier_epoch = row["tier_epoch"]
            self.set_status(v, row["status"])
        for row in state["venue_tiers"]:
            if not (0 <= row["venue"] < self.max_venues and 0 <= row["tier"] < 4):
                raise ValueError(f"fee tier {row['tier']} of venue {row['venue']} is out of range")
            v = &self.venue_table[<int32_t>row["venue"]]
            v.tiers[row["tier"]].min_volume = row["min_volume"]
            v.tiers[row["tier"]].maker_bps = row["maker_bps"]
            v.tiers[row["tier"]].taker_bps = row["taker_bps"]
        for row in state["venue_fees"]:
            self.fee_slot(<uint32_t>row["venue"], <uint32_t>row["asset"])[0] = row["amount"]
        cdef Volume *vol
        for row in state["venue_volumes"]:
            vol = self.volume_of(row["account"], <uint32_t>row["venue"], True)
            vol.epoch = row["epoch"]
            vol.current = row["current"]
            vol.previous = row["previous"]
        memset(self.offers, 0, <size_t>(self.max_venues * self.offer_words) * sizeof(uint64_t))
        for row in state["venue_offers"]:
            if not (0 <= row["a"] < self.max_venues and self.venue_table[<int32_t>row["a"]].exists
                    and 1 <= row["b"] <= self.max_markets):
                raise ValueError(f"offer of market {row['b']} by venue {row['a']}: no such venue or market")
            self.set_offer(<uint32_t>row["a"], <uint32_t>row["b"], True)
        for row in state["venue_allowed"]:
            if xos_hmap_put(&self.allow_index, row["b"], row["a"], 1):
                raise MemoryError()

    cdef cnp.ndarray export_buffer(self, int which, int64_t n, dtype, bint reuse):
        """``n`` rows for an export (every byte is written by the copy), from the kept buffer
        when allowed and large enough, else a new one kept with 25% room to grow."""
        if self.export_buffers is None:
            self.export_buffers = [None, None]
        kept = self.export_buffers[which]
        if not reuse or kept is None or len(kept) < n:
            kept = np.empty(n + n // 4 + 16, dtype)
            self.export_buffers[which] = kept
        return kept[:n]

    cdef void copy_balances(self, BalanceState *out, int64_t n) noexcept nogil:
        """Every balance entry, in one sequential pass over the balance table (each account's
        entries keep their creation order, which is all ``import_state`` needs)."""
        cdef int64_t b, k = 0
        for b in range(self.n_bals):
            if self.bals[b].asset == 0:
                continue
            out[k].account_index = self.bals[b].owner
            out[k].asset = self.bals[b].asset
            out[k].pad = 0
            out[k].free = self.bals[b].free
            out[k].held = self.bals[b].held
            k += 1

    cdef void copy_orders(self, OrderState *out) noexcept nogil:
        """Every open order, in the order-id index's slot order: a sequential scan with
        independent reads of the orders, instead of chasing each level's FIFO links (one
        dependent cache miss per order).  ``rest_seq`` carries the time priority."""
        cdef int64_t k = 0, h, slot
        cdef Order *o
        for h in range(<int64_t>self.order_index.mask + 1):
            slot = self.order_index.slots[h].val
            if slot < 0:
                continue
            o = &self.orders[slot]
            out[k].order_id = o.id
            out[k].account = o.account
            out[k].client_id = o.client_id
            out[k].price = o.price
            out[k].qty = o.qty
            out[k].filled = o.filled
            out[k].remaining = o.remaining
            out[k].expire_at = o.expire_at
            out[k].rest_seq = o.rest_seq
            out[k].market = o.market
            out[k].venue = o.venue
            out[k].side = o.side
            out[k].stp = o.stp
            out[k].post_only = o.post_only
            out[k].tif = o.tif
            out[k].maker_bps = o.maker_bps
            out[k].taker_bps = o.taker_bps
            k += 1

    cdef int64_t load_books(self, const int64_t *accounts, int64_t n_accounts, const BalanceState *balances,
                            int64_t n_balances, const OrderState *orders, int64_t n_orders) noexcept nogil:
        """Accounts, balances, then orders (sorted by ``rest_seq``, so ``rest`` appending them
        rebuilds each level's time priority) registered in order id order.  Returns the index
        of an order that names something unknown, else -1."""
        cdef int64_t i, b, acct_idx
        cdef int32_t slot
        cdef int32_t *slots
        cdef int64_t *by_id
        cdef Market *mk
        cdef Order *o
        for i in range(n_accounts):
            self.new_account(accounts[i])
        for i in range(n_balances):
            b = self.ensure_balance(balances[i].account_index, balances[i].asset)
            self.bals[b].free = balances[i].free
            self.bals[b].held = balances[i].held
        for i in range(n_orders):
            acct_idx = self.account_index_of(orders[i].account)
            if (acct_idx < 0 or orders[i].market < 1 or orders[i].market > <uint32_t>self.max_markets
                    or not self.market_table[orders[i].market].exists or orders[i].side > 1
                    or orders[i].venue >= <uint32_t>self.max_venues or not self.venue_table[orders[i].venue].exists):
                return i
        slots = <int32_t *>malloc(<size_t>(n_orders + 1) * sizeof(int32_t))
        by_id = <int64_t *>malloc(<size_t>(n_orders + 1) * sizeof(int64_t))
        if slots == NULL or by_id == NULL:
            die(b"snapshot load")
        for i in range(n_orders):
            acct_idx = self.account_index_of(orders[i].account)
            slot = self.free_slot
            o = &self.orders[slot]
            self.free_slot = o.next
            mk = &self.market_table[orders[i].market]
            o.id = orders[i].order_id
            o.account = orders[i].account
            o.client_id = orders[i].client_id
            o.price = orders[i].price
            o.qty = orders[i].qty
            o.filled = orders[i].filled
            o.remaining = orders[i].remaining
            o.expire_at = orders[i].expire_at
            o.maker_bps = orders[i].maker_bps
            o.taker_bps = orders[i].taker_bps
            o.hold_per_lot = order_hold_per_lot(
                mk, self.outcome_leg(mk, orders[i].side, o.price) if mk.kind == XOS_MARKET_OUTCOME else o.price,
                o.taker_bps)
            o.acct_idx = <int32_t>acct_idx
            o.bal_base = self.ensure_balance(acct_idx, mk.base)
            o.bal_quote = self.ensure_balance(acct_idx, mk.quote)
            o.market = orders[i].market
            o.venue = orders[i].venue
            o.side = orders[i].side
            o.stp = orders[i].stp
            o.post_only = orders[i].post_only
            o.tif = orders[i].tif
            o.registered = False
            self.rest(mk, slot)
            o.rest_seq = orders[i].rest_seq
            slots[i] = slot
            by_id[i] = o.id
        sort_slots_by_id(slots, by_id, n_orders)
        for i in range(n_orders):  # account lists in order id order
            self.register(slots[i])
        free(slots)
        free(by_id)
        return -1

    def import_state(self, state):
        """Load an exported state into this (fresh) matcher."""
        cdef Market *mk
        cdef Asset *a
        if self._cmd_seq or self.n_accounts or self.n_open:
            raise ValueError("import_state needs a fresh engine")
        counters = state["counters"]
        if int(counters[0]) not in READABLE_STATE_VERSIONS:
            raise ValueError(f"state version {int(counters[0])}, this engine reads {READABLE_STATE_VERSIONS}")
        assets, markets, accounts = state["assets"], state["markets"], state["accounts"]
        balances, orders = state["balances"], state["orders"]
        if len(accounts) > self.max_accounts or len(orders) > self.max_orders:
            raise ValueError(f"state has {len(accounts)} accounts and {len(orders)} orders; this engine holds "
                             f"{self.max_accounts} and {self.max_orders}")
        for row in assets:
            if not 1 <= row["asset"] <= self.max_assets:
                raise ValueError(f"asset {row['asset']} is beyond max_assets {self.max_assets}")
            a = &self.asset_table[row["asset"]]
            a.exists = True
            a.decimals = row["decimals"]
            a.symbol_lo = row["symbol_lo"]
            a.symbol_hi = row["symbol_hi"]
            a.outstanding = row["outstanding"]
            self.fee_pool[row["asset"]] = row["fees"]
        for row in markets:
            if not 1 <= row["market"] <= self.max_markets:
                raise ValueError(f"market {row['market']} is beyond max_markets {self.max_markets}")
            mk = &self.market_table[row["market"]]
            mk.exists = True
            mk.kind = row["kind"]
            mk.venue = row["venue"]
            mk.base = row["base"]
            mk.quote = row["quote"]
            mk.tick_size = row["tick_size"]
            mk.lot_size = row["lot_size"]
            mk.min_size = row["min_size"]
            mk.maker_bps = row["maker_bps"]
            mk.taker_bps = row["taker_bps"]
            mk.band_bps = row["band_bps"]
            mk.halted = row["halted"]
            mk.last_price = row["last_price"]
            mk.max_leverage = 1
            mk.maintenance_bps = DEFAULT_MAINTENANCE_BPS
            mk.impact_lots = DEFAULT_IMPACT_LOTS
            mk.slice_lots = 0
            mk.position_head = NONE
        for row in state.get("market_risk", ()):  # before the orders: their holds depend on it (not in versions 3-5)
            if not (1 <= row["market"] <= self.max_markets and self.market_table[<int32_t>row["market"]].exists
                    and self.market_table[<int32_t>row["market"]].kind == XOS_MARKET_PERPETUAL):
                raise ValueError(f"market risk of market {row['market']}: no such perpetual market")
            if not (1 <= row["max_leverage"] <= MAX_LEVERAGE and 1 <= row["maintenance_bps"] <= 10000):
                raise ValueError(f"market risk of market {row['market']}: leverage {row['max_leverage']} or "
                                 f"maintenance {row['maintenance_bps']} bps out of range")
            mk = &self.market_table[<int32_t>row["market"]]
            mk.max_leverage = row["max_leverage"]
            mk.maintenance_bps = row["maintenance_bps"]
            if "impact_lots" in row.dtype.names:  # version 7
                if row["impact_lots"] < 1 or row["slice_lots"] < 0:
                    raise ValueError(f"market risk of market {row['market']}: impact size {row['impact_lots']} or "
                                     f"liquidation slice {row['slice_lots']} lots out of range")
                mk.impact_lots = row["impact_lots"]
                mk.slice_lots = row["slice_lots"]
        self.import_outcomes(state.get("outcomes", ()), state.get("outcome_events", ()))  # before the orders too
        self.import_funding(state.get("funding"), counters[4])
        self.import_margin_tiers(state.get("margin_tiers", ()))
        self.import_venues(state)
        cdef cnp.ndarray account_ids = np.ascontiguousarray(accounts, dtype=np.int64)
        cdef cnp.ndarray balance_rows = np.ascontiguousarray(balances, dtype=BALANCE_STATE)
        cdef cnp.ndarray order_rows = np.ascontiguousarray(orders[np.argsort(orders["rest_seq"], kind="stable")],
                                                           dtype=ORDER_STATE)
        cdef int64_t bad
        with nogil:
            bad = self.load_books(<int64_t *>cnp.PyArray_DATA(account_ids), account_ids.shape[0],
                                  <BalanceState *>cnp.PyArray_DATA(balance_rows), balance_rows.shape[0],
                                  <OrderState *>cnp.PyArray_DATA(order_rows), order_rows.shape[0])
        if bad >= 0:
            raise ValueError(f"order {order_rows[bad]['order_id']} names an unknown account, market, venue or side")
        for row in state["account_regions"]:
            if not 0 <= row["a"] < self.n_accounts or not 0 <= row["b"] < 64:
                raise ValueError(f"region tag {row['b']} of account index {row['a']} is out of range")
            self.accts[row["a"]].region = row["b"]
        self.import_oracles(state.get("oracles", ()))  # version 3 states have none
        self.import_positions(state.get("positions", ()))  # nor versions 3 and 4
        self.import_margin_modes(state.get("margin_modes", ()))  # nor versions 3-11: every position cross
        for row in state.get("exposure_caps", ()):  # nor versions 3-9
            if (row["account"] <= 0 or self.account_index_of(row["account"]) < 0 or row["venue"] >= self.max_venues
                    or not self.venue_table[<int32_t>row["venue"]].exists or not 1 <= row["cap_bps"] <= 10000):
                raise ValueError(f"exposure cap {tuple(row.tolist())}: no such account or venue, or cap out of range")
            if xos_hmap_put(&self.cap_index, row["account"], row["venue"], row["cap_bps"]):
                raise MemoryError()
        self.import_collateral(state.get("collateral_assets", ()), state.get("venue_collateral", ()))  # nor 3-12
        cdef int64_t inputs[4]
        for m in range(1, self.max_markets + 1):  # a mark is its inputs' rule after every command: not stored
            if self.market_table[m].exists and self.market_table[m].kind == XOS_MARKET_PERPETUAL:
                self.market_table[m].mark = self.compute_mark(m, inputs)
        self.import_venue_risks(state.get("venue_market_risk", ()), order_rows)  # nor versions 3-8
        self.forget_touched()
        self._cmd_seq = counters[1]
        self._event_seq = counters[2]
        self._last_order_id = counters[3]
        self._now = counters[4]
        self._rest_seq = counters[5]

    def import_funding(self, rows, int64_t now):
        """Load exported funding rows; a state before version 11 has none: the defaults, scheduled from ``now``."""
        cdef Market *mk
        cdef int32_t m
        if rows is None:
            self._now = now
            for m in range(1, self.max_markets + 1):
                mk = &self.market_table[m]
                if mk.exists and mk.kind == XOS_MARKET_PERPETUAL:
                    mk.funding_interval = DEFAULT_FUNDING_INTERVAL
                    mk.sample_interval = DEFAULT_SAMPLE_INTERVAL
                    mk.interest = 0
                    mk.clamp = 0
                    mk.cap = DEFAULT_FUNDING_CAP
                    self.schedule_funding(mk)
        else:
            for row in rows:
                if not (1 <= row["market"] <= self.max_markets and self.market_table[<int32_t>row["market"]].exists
                        and self.market_table[<int32_t>row["market"]].kind == XOS_MARKET_PERPETUAL):
                    raise ValueError(f"funding of market {row['market']}: no such perpetual market")
                if not (0 < row["sample_interval"] <= row["interval"] and abs(row["interest"]) <= XOS_RATE_SCALE
                        and 0 <= row["clamp"] <= XOS_RATE_SCALE and 1 <= row["cap"] <= XOS_RATE_SCALE
                        and row["samples"] >= 0):
                    raise ValueError(f"funding of market {row['market']}: intervals, rates or samples out of range")
                mk = &self.market_table[<int32_t>row["market"]]
                mk.funding_interval, mk.sample_interval = row["interval"], row["sample_interval"]
                mk.interest, mk.clamp, mk.cap = row["interest"], row["clamp"], row["cap"]
                mk.next_sample, mk.next_funding = row["next_sample"], row["next_funding"]
                mk.premium_sum, mk.samples = row["premium_sum"], row["samples"]
        self.find_next_sample()

    def import_margin_tiers(self, rows):
        """Load exported margin tier rows (brackets 1..3 of a perpetual market, in order; none before version 11)."""
        cdef Market *mk
        cdef int64_t floor
        cdef int32_t leverage
        for row in rows:
            if not (1 <= row["market"] <= self.max_markets and self.market_table[<int32_t>row["market"]].exists
                    and self.market_table[<int32_t>row["market"]].kind == XOS_MARKET_PERPETUAL):
                raise ValueError(f"margin tier of market {row['market']}: no such perpetual market")
            mk = &self.market_table[<int32_t>row["market"]]
            floor = mk.tier_floor[mk.n_tiers - 1] if mk.n_tiers else 0
            leverage = mk.tier_leverage[mk.n_tiers - 1] if mk.n_tiers else MAX_LEVERAGE
            if not (row["tier"] == mk.n_tiers + 1 <= 3 and floor < row["floor"] <= XOS_MAX_MONEY
                    and 1 <= row["leverage"] <= leverage):
                raise ValueError(f"margin tier {row['tier']} of market {row['market']}: out of order or range")
            mk.tier_floor[mk.n_tiers] = row["floor"]
            mk.tier_leverage[mk.n_tiers] = row["leverage"]
            mk.n_tiers += 1

    def import_oracles(self, rows):
        """Load exported oracle rows (in configuration order) after the markets and venues."""
        cdef Oracle *o
        self.next_stale_at = INT64_MAX
        for row in rows:
            if not (0 <= row["venue"] < self.max_venues and self.venue_table[<int32_t>row["venue"]].exists
                    and 1 <= row["market"] <= self.max_markets and self.market_table[<int32_t>row["market"]].exists):
                raise ValueError(f"oracle of venue {row['venue']} for market {row['market']}: no such venue or market")
            if self.n_oracles == self.cap_oracles:
                self.oracle_rows = <Oracle *>grow(self.oracle_rows, &self.cap_oracles, self.n_oracles + 1,
                                                  sizeof(Oracle), b"oracles")
            if xos_hmap_put(&self.oracle_index, row["venue"], row["market"], self.n_oracles):
                raise MemoryError()
            o = &self.oracle_rows[self.n_oracles]
            self.n_oracles += 1
            o.venue, o.market = row["venue"], row["market"]
            o.feed_id, o.feed_account, o.timeout = row["feed_id"], row["feed_account"], row["timeout"]
            o.price, o.source_ts, o.sources = row["price"], row["source_ts"], row["sources"]
            o.updated_at, o.stale = row["updated_at"], row["stale"]
            if o.stale:
                self.market_table[o.market].stale_oracles += 1
            elif stale_deadline(o) < self.next_stale_at:
                self.next_stale_at = stale_deadline(o)

    def import_outcomes(self, rows, event_rows):
        """Load exported outcome rows (in configuration order) and their events (not in versions 3-6)."""
        cdef OutcomeMarket *oc
        cdef OutcomeEvent *ev
        events = {int(row["event"]): row for row in event_rows}
        self.next_finalize_at = INT64_MAX
        for row in rows:
            market = int(row["market"])
            if not (1 <= market <= self.max_markets and self.market_table[market].exists
                    and self.market_table[market].kind == XOS_MARKET_OUTCOME and self.outcome_table[market].state == 0):
                raise ValueError(f"outcome state of market {market}: no such outcome market, or listed twice")
            if not (XOS_OS_OPEN <= row["state"] <= XOS_OS_FINAL and row["payout"] > 0 and row["event"] >= 0):
                raise ValueError(f"outcome state of market {market}: state {row['state']}, payout {row['payout']} "
                                 f"or event {row['event']} out of range")
            oc = &self.outcome_table[market]
            oc.state, oc.outcome, oc.payout, oc.resolver = row["state"], row["outcome"], row["payout"], row["resolver"]
            oc.window, oc.event, oc.finalize_at = row["window"], row["event"], row["finalize_at"]
            oc.collateral, oc.event_no = row["collateral"], row["event_no"]
            self.outcome_order[self.n_outcomes] = market
            self.n_outcomes += 1
            if oc.state == XOS_OS_PROPOSED and oc.finalize_at < self.next_finalize_at:
                self.next_finalize_at = oc.finalize_at
            if oc.event:
                ev = self.outcome_event_of(oc.event)
                if ev == NULL:
                    if oc.event not in events:
                        raise ValueError(f"outcome market {market} names event {oc.event}, which the state lacks")
                    if self.n_outcome_events == self.cap_outcome_events:
                        self.outcome_event_rows = <OutcomeEvent *>grow(
                            self.outcome_event_rows, &self.cap_outcome_events, self.n_outcome_events + 1,
                            sizeof(OutcomeEvent), b"outcome events")
                    if xos_hmap_put(&self.outcome_event_index, oc.event, 0, self.n_outcome_events):
                        raise MemoryError()
                    ev = &self.outcome_event_rows[self.n_outcome_events]
                    self.n_outcome_events += 1
                    ev.id, ev.first, ev.n_markets = oc.event, market, 0
                    ev.converted, ev.advance = events[oc.event]["converted"], events[oc.event]["advance"]
                ev.n_markets += 1
        if self.n_outcome_events != len(events):
            raise ValueError("outcome event rows without markets")

    def import_positions(self, rows):
        """Load exported position rows (their margins are already in the balances' held amounts)."""
        cdef Position *p
        for row in rows:
            if not (1 <= row["market"] <= self.max_markets
                    and (self.market_table[<int32_t>row["market"]].kind == XOS_MARKET_PERPETUAL
                         or self.outcome_table[<int32_t>row["market"]].state != 0)
                    and self.market_table[<int32_t>row["market"]].exists):
                raise ValueError(f"position of account {row['account']} in market {row['market']}: "
                                 "no such perpetual market or configured outcome market")
            if xos_hmap_get(&self.position_index, row["account"], row["market"]) >= 0:
                raise ValueError(f"position of account {row['account']} in market {row['market']} listed twice")
            if self.account_index_of(row["account"]) < 0:
                raise ValueError(f"position of unknown account {row['account']} in market {row['market']}")
            p = self.position_of(row["account"], row["market"])
            p.size, p.entry_value, p.margin, p.realised = row["size"], row["entry_value"], row["margin"], row["realised"]

    def import_margin_modes(self, rows):
        """Mark the exported isolated positions (each must be a position of the state, in a perpetual market)."""
        cdef int64_t i
        for row in rows:
            i = (xos_hmap_get(&self.position_index, row["account"], row["market"])
                 if 1 <= row["market"] <= self.max_markets else -1)
            if i < 0 or self.market_table[self.position_rows[i].market].kind != XOS_MARKET_PERPETUAL:
                raise ValueError(f"isolated margin mode of account {row['account']} in market {row['market']}: "
                                 "no such position in a perpetual market")
            if self.position_rows[i].isolated:
                raise ValueError(f"isolated margin mode of account {row['account']} in market {row['market']} "
                                 "listed twice")
            self.position_rows[i].isolated = True

    def import_venue_risks(self, rows, orders):
        """Load exported venue risk rows, then add the open perpetual orders' remaining to their venues' open
        sizes (not state: the orders rebuild it; a row missing from an older state is made here)."""
        cdef VenueRisk *r
        for row in rows:
            if not (0 <= row["venue"] < self.max_venues and self.venue_table[<int32_t>row["venue"]].exists
                    and 1 <= row["market"] <= self.max_markets and self.market_table[<int32_t>row["market"]].exists):
                raise ValueError(f"venue risk of venue {row['venue']} in market {row['market']}: no such venue or market")
            if self.venue_risk_of(row["venue"], row["market"], False) != NULL:
                raise ValueError(f"venue risk of venue {row['venue']} in market {row['market']} listed twice")
            r = self.venue_risk_of(row["venue"], row["market"], True)
            r.band_bps, r.move_bps, r.oi_cap = row["band_bps"], row["move_bps"], row["oi_cap"]
            r.window_ms, r.cooldown_ms = row["window_ms"], row["cooldown_ms"]
            r.long_oi, r.short_oi, r.halted = row["long_oi"], row["short_oi"], row["halted"]
            self.market_table[r.market].venue_gates += venue_gates(r)
        perpetual = [m for m in range(1, self.max_markets + 1)
                     if self.market_table[m].exists and self.market_table[m].kind == XOS_MARKET_PERPETUAL]
        for row in orders[np.isin(orders["market"], perpetual)] if perpetual else ():
            r = self.venue_risk_of(row["venue"], row["market"], True)
            if row["side"] == BID:
                r.open_buy += row["remaining"]
            else:
                r.open_sell += row["remaining"]

    # ------------------------------------------------------------- queries

    cdef object view_venue_risk(self, VenueRisk *r):
        return VenueMarketRiskView(r.venue, r.market, r.band_bps, r.oi_cap, r.move_bps, r.window_ms, r.cooldown_ms,
                                   bool(r.halted), r.long_oi, r.short_oi, r.open_buy, r.open_sell)

    def venue_market_risks(self):
        """Every venue's risk row (settings, halt, open interest), in (venue, market) order."""
        return sorted(self.view_venue_risk(&self.venue_risk_rows[i]) for i in range(self.n_venue_risks))

    def venue_market_risk(self, int venue, int market):
        """The venue's risk row in the market, or None when it has none."""
        cdef VenueRisk *r = self.venue_risk_of(venue, market, False)
        return self.view_venue_risk(r) if r != NULL else None

    cdef object view_position(self, Position *p):
        return PositionView(p.account, p.market, p.size, p.entry_value, p.margin, p.realised)

    cdef object view_outcome(self, uint32_t market):
        cdef OutcomeMarket *oc = &self.outcome_table[market]
        return OutcomeView(market, oc.state, oc.outcome, oc.payout, oc.resolver, oc.window, oc.event, oc.finalize_at,
                           oc.collateral, oc.event_no)

    def outcomes(self):
        """Configured outcome markets in market id order."""
        return sorted(self.view_outcome(self.outcome_order[i]) for i in range(self.n_outcomes))

    def outcome(self, int market):
        if not 1 <= market <= self.max_markets or self.outcome_table[market].state == 0:
            return None
        return self.view_outcome(market)

    def outcome_events(self):
        return sorted(OutcomeEventView(self.outcome_event_rows[i].id, self.outcome_event_rows[i].n_markets,
                                       self.outcome_event_rows[i].converted, self.outcome_event_rows[i].advance)
                      for i in range(self.n_outcome_events))
    def margin_tiers(self):
        """Every perpetual market's notional brackets ((floor, max leverage), ...), the first (0, MarketRisk's), in
        market order."""
        cdef Market *m
        out = []
        for i in range(1, self.max_markets + 1):
            m = &self.market_table[i]
            if m.exists and m.kind == XOS_MARKET_PERPETUAL:
                out.append(MarginTiersView(i, ((0, m.max_leverage),) + tuple(
                    (m.tier_floor[k], m.tier_leverage[k]) for k in range(m.n_tiers))))
        return out

    def fundings(self):
        """Every perpetual market's funding configuration and schedule, in market order."""
        cdef Market *m
        out = []
        for i in range(1, self.max_markets + 1):
            m = &self.market_table[i]
            if m.exists and m.kind == XOS_MARKET_PERPETUAL:
                out.append(FundingView(i, m.funding_interval, m.sample_interval, m.interest, m.clamp, m.cap,
                                       m.next_sample, m.next_funding, m.premium_sum, m.samples))
        return out

    def market_risks(self):
        """Every perpetual market's risk parameters, in market order."""
        return [MarketRiskView(i, self.market_table[i].max_leverage, self.market_table[i].maintenance_bps,
                               self.market_table[i].impact_lots, self.market_table[i].slice_lots,
                               self.market_table[i].mark)
                for i in range(1, self.max_markets + 1)
                if self.market_table[i].exists and self.market_table[i].kind == XOS_MARKET_PERPETUAL]

    def collateral_assets(self):
        """The collateral assets (the valuation asset with price market 0), in asset order."""
        return [CollateralAssetView(a, self.coll_market[a], self.coll_bound[a])
                for a in range(1, self.max_assets + 1) if self.coll_bound[a] >= 0]

    def venue_collaterals(self):
        """Every venue's own collateral weights, in (venue, asset) order."""
        cdef int64_t h
        return sorted(VenueCollateralView(self.venue_coll_index.slots[h].k1, self.venue_coll_index.slots[h].k2,
                                          self.venue_coll_index.slots[h].val)
                      for h in range(<int64_t>self.venue_coll_index.mask + 1) if self.venue_coll_index.slots[h].val >= 0)

    def import_collateral(self, assets, venues):
        """Load exported collateral rows (none before version 13): the valuation asset first, each row checked like
        its command."""
        cdef Market *m
        for row in sorted(assets, key=lambda r: r["price_market"] != 0):
            asset, price_market, weight = int(row["asset"]), int(row["price_market"]), int(row["max_weight_bps"])
            if not (1 <= asset <= self.max_assets and self.asset_table[asset].exists and 0 <= weight <= 10000):
                raise ValueError(f"collateral asset {(asset, price_market, weight)}: no such asset or weight out of range")
            if price_market == 0:
                if self.valuation_asset:
                    raise ValueError(f"collateral asset {asset}: a second valuation asset")
                self.valuation_asset = asset
            else:
                if not 1 <= price_market <= self.max_markets or not self.market_table[price_market].exists:
                    raise ValueError(f"collateral asset {asset}: no price market {price_market}")
                m = &self.market_table[price_market]
                if (not self.valuation_asset or asset == self.valuation_asset or m.kind == XOS_MARKET_OUTCOME
                        or m.base != asset or m.quote != self.valuation_asset):
                    raise ValueError(f"collateral asset {asset}: price market {price_market} does not price it in "
                                     f"the valuation asset")
            self.coll_market[asset] = price_market
            self.coll_bound[asset] = weight
        for row in venues:
            venue, asset, weight = int(row["venue"]), int(row["asset"]), int(row["weight_bps"])
            if not (0 <= venue < self.max_venues and self.venue_table[venue].exists and 1 <= asset <= self.max_assets
                    and 0 <= weight <= self.coll_bound[asset]):
                raise ValueError(f"venue collateral {(venue, asset, weight)}: no such venue or collateral asset, or "
                                 f"weight out of 0..its bound")
            if xos_hmap_put(&self.venue_coll_index, venue, asset, weight):
                raise MemoryError()

    def exposure_caps(self):
        """Every account's exposure caps: sorted ``(account, venue, cap_bps)``."""
        cdef int64_t h
        return sorted((self.cap_index.slots[h].k1, self.cap_index.slots[h].k2, self.cap_index.slots[h].val)
                      for h in range(<int64_t>self.cap_index.mask + 1) if self.cap_index.slots[h].val >= 0)

    def margin_modes(self):
        """Every isolated position's (account, market), sorted; every other position is cross margin."""
        return sorted((self.position_rows[i].account, self.position_rows[i].market) for i in range(self.n_positions)
                      if self.position_rows[i].isolated)

    def positions(self):
        """Every (account, perpetual market) that has traded or was set isolated, flat ones included, in (account,
        market) order."""
        return sorted(self.view_position(&self.position_rows[i]) for i in range(self.n_positions))

    def position(self, int64_t account, int market):
        """The account's position in the market, or None if it never traded there."""
        cdef int64_t i = xos_hmap_get(&self.position_index, account, market)
        return self.view_position(&self.position_rows[i]) if i >= 0 else None

    cdef object view_oracle(self, int64_t i):
        cdef Oracle *o = &self.oracle_rows[i]
        return OracleView(o.venue, o.market, o.feed_id, o.feed_account, o.timeout, o.price, o.source_ts, o.sources,
                          o.updated_at, bool(o.stale))

    def oracles(self):
        """Every venue's market oracle, in configuration order."""
        return [self.view_oracle(i) for i in range(self.n_oracles)]

    def oracle(self, int venue, int market):
        """The venue's oracle for the market, or None."""
        cdef int64_t i = xos_hmap_get(&self.oracle_index, venue, market)
        return self.view_oracle(i) if i >= 0 else None

    @property
    def cmd_seq(self):
        return self._cmd_seq

    @property
    def event_seq(self):
        return self._event_seq

    @property
    def last_order_id(self):
        return self._last_order_id

    @property
    def now(self):
        return self._now

    @property
    def open_orders(self):
        return self.n_open

    @property
    def event_capacity(self):
        """The events the batch buffer has room for: it grows with a batch and shrinks back after a burst."""
        return int(self.cap_events)

    @property
    def index_slots(self):
        """The slots of the order-id and the client-id index: they follow the open orders, up after a
        burst and down after it (``xos_hmap_fit``)."""
        return int(self.order_index.mask + 1), int(self.client_index.mask + 1)

    cdef Market *market_ptr(self, market) except NULL:
        if not isinstance(market, int) or market < 1 or market > self.max_markets or not self.market_table[market].exists:
            raise KeyError(f"unknown market {market!r}")
        return &self.market_table[<uint32_t>market]

    cdef object view_order(self, int32_t slot):
        cdef Order *o = &self.orders[slot]
        return OrderView(o.id, o.account, o.client_id, o.market, o.venue, o.side, o.price, o.qty,
                         o.filled, o.remaining, o.expire_at, o.stp, bool(o.post_only))

    def l2(self, market, int depth=10, venue=None):
        """Aggregated levels, best first: ``(bids, asks)`` of ``(price, qty, count)``.  With
        ``venue``, only the orders a taker of that venue may trade with (see "crossed" in
        docs/ARCHITECTURE.md)."""
        cdef Market *m = self.market_ptr(market)
        cdef BookSide *bs
        cdef int32_t i, k, count
        cdef int64_t qty
        cdef uint32_t v = 0
        if venue is not None:
            if not isinstance(venue, int) or not 0 <= venue < self.max_venues or not self.venue_table[<uint32_t>venue].exists:
                raise KeyError(f"unknown venue {venue!r}")
            v = venue
        out = []
        for side in (BID, ASK):
            bs = &m.sides[side]
            levels = []
            i = bs.n - 1
            while i >= 0 and len(levels) < depth:
                if venue is None:
                    qty, count = bs.levels[i].qty, bs.levels[i].count
                else:
                    qty, count = 0, 0
                    k = bs.levels[i].head
                    while k != NONE:
                        if self.eligible(v, self.orders[k].venue):
                            qty += self.orders[k].remaining
                            count += 1
                        k = self.orders[k].next
                if count:
                    levels.append((bs.levels[i].price, qty, count))
                i -= 1
            out.append(levels)
        return out[0], out[1]

    def l3(self, market):
        """Every open order: bids best first in time priority, then asks likewise."""
        cdef Market *m = self.market_ptr(market)
        cdef BookSide *bs
        cdef int32_t i, k
        out = []
        for side in (BID, ASK):
            bs = &m.sides[side]
            for i in range(bs.n - 1, -1, -1):
                k = bs.levels[i].head
                while k != NONE:
                    out.append(self.view_order(k))
                    k = self.orders[k].next
        return out

    def order(self, int64_t order_id):
        cdef int64_t slot = xos_hmap_get(&self.order_index, order_id, 0)
        return None if slot < 0 else self.view_order(<int32_t>slot)

    def balance(self, int64_t account, int asset):
        cdef int64_t a = self.account_index_of(account)
        cdef int64_t b = self.balance_of(a, asset) if a >= 0 else -1
        if b < 0:
            return (0, 0)
        return (self.bals[b].free, self.bals[b].held)

    def balances(self, int64_t account):
        cdef int64_t a = self.account_index_of(account)
        cdef int64_t b = self.accts[a].balance_head if a >= 0 else -1
        out = {}
        while b >= 0:
            out[self.bals[b].asset] = (self.bals[b].free, self.bals[b].held)
            b = self.bals[b].next
        return dict(sorted(out.items()))

    def accounts(self):
        cdef int64_t i
        return sorted(self.accts[i].id for i in range(self.n_accounts))

    def fees(self, int asset):
        if asset < 1 or asset > self.max_assets:
            raise KeyError(f"unknown asset {asset!r}")
        return self.fee_pool[asset]

    def best_bid(self, market):
        cdef BookSide *bs = &self.market_ptr(market).sides[BID]
        return bs.levels[bs.n - 1].price if bs.n else 0

    def best_ask(self, market):
        cdef BookSide *bs = &self.market_ptr(market).sides[ASK]
        return bs.levels[bs.n - 1].price if bs.n else 0

    def last_price(self, market):
        return self.market_ptr(market).last_price

    def markets(self):
        cdef int32_t i
        cdef Market *m
        out = []
        for i in range(1, self.max_markets + 1):
            m = &self.market_table[i]
            if m.exists:
                out.append(MarketView(i, m.venue, m.kind, m.base, m.quote, m.tick_size, m.lot_size,
                                      m.min_size, m.maker_bps, m.taker_bps, m.band_bps, bool(m.halted)))
        return out

    cdef object view_venue(self, int32_t i):
        cdef Venue *v = &self.venue_table[i]
        return VenueView(i, v.operator, v.insurance, v.status, v.access, v.pool, v.accepts, v.blocked_regions,
                         v.stake, v.unbonding, v.unbond_at, v.open_orders)

    def venues(self):
        """Every venue, by id (venue 0, the protocol's, first)."""
        cdef int32_t i
        return [self.view_venue(i) for i in range(self.max_venues) if self.venue_table[i].exists]

    def venue(self, venue_id):
        if not isinstance(venue_id, int) or not 0 <= venue_id < self.max_venues or not self.venue_table[<int32_t>venue_id].exists:
            return None
        return self.view_venue(venue_id)

    def venue_markets(self, int venue_id):
        """The market ids the venue offers, ascending."""
        cdef int32_t m
        if not 0 <= venue_id < self.max_venues or not self.venue_table[venue_id].exists:
            raise KeyError(f"unknown venue {venue_id!r}")
        return [m for m in range(1, self.max_markets + 1) if self.offered(venue_id, m)]

    def allowed(self, int venue_id):
        """The accounts on the venue's allow-list, ascending."""
        cdef int64_t h
        return sorted(self.allow_index.slots[h].k1 for h in range(<int64_t>self.allow_index.mask + 1)
                      if self.allow_index.slots[h].val >= 0 and self.allow_index.slots[h].k2 == venue_id)

    def region(self, int64_t account):
        cdef int64_t a = self.account_index_of(account)
        return self.accts[a].region if a >= 0 else 0

    def venue_fee_schedule(self, int venue_id):
        """The fees of orders placed through the venue (venue 0: each market's own) and its split."""
        cdef Venue *v
        cdef int32_t i
        if not 0 <= venue_id < self.max_venues or not self.venue_table[venue_id].exists:
            raise KeyError(f"unknown venue {venue_id!r}")
        v = &self.venue_table[venue_id]
        return VenueFeesView(v.maker_bps, v.taker_bps, v.operator_bps, v.insurance_bps, v.tier_asset, v.tier_epoch,
                             tuple((v.tiers[i].min_volume, v.tiers[i].maker_bps, v.tiers[i].taker_bps)
                                   for i in range(v.n_tiers)))

    def venue_fees(self, int venue_id):
        """Fees the venue collected and has not swept yet: ``{asset: amount}`` (venue 0's are
        ``fees(asset)``, the protocol's pool)."""
        cdef int64_t h, i
        out = {}
        for h in range(<int64_t>self.fee_index.mask + 1):
            i = self.fee_index.slots[h].val
            if i >= 0 and self.fee_index.slots[h].k1 == venue_id and self.venue_pool[i]:
                out[self.fee_index.slots[h].k2] = self.venue_pool[i]
        return dict(sorted(out.items()))

    def volumes(self):
        """Traded volume counted for fee tiers: sorted ``(account, venue, epoch, current, previous)``."""
        cdef int64_t h, i
        return sorted((self.volume_index.slots[h].k1, self.volume_index.slots[h].k2, self.volume_rows[i].epoch,
                       self.volume_rows[i].current, self.volume_rows[i].previous)
                      for h in range(<int64_t>self.volume_index.mask + 1)
                      if (i := self.volume_index.slots[h].val) >= 0)

    def venue_params(self):
        return VenueParamsView(self.admin, self.protocol_account, self.stake_asset, self.min_stake, self.unbond_period)

    def assets(self):
        cdef int32_t i
        return [AssetView(i, unpack_symbol(self.asset_table[i].symbol_lo, self.asset_table[i].symbol_hi),
                          self.asset_table[i].decimals)
                for i in range(1, self.max_assets + 1) if self.asset_table[i].exists]


# ---------------------------------------------------------------- snapshots

STATE_VERSION = 13  # 3: venues, 4: oracles, 5: perpetual positions, 6: perpetual markets' leverage, 7: impact, slice,
# 8: outcomes, 9: venue risk, 10: exposure caps, 11: funding, margin tiers, 12: margin modes (isolated positions),
# 13: collateral assets and venue weights (unified account)
READABLE_STATE_VERSIONS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)  # 3 has no oracles, 3-4 no positions, 3-5 no market risk
# (leverage 1), 3-6 no impact size or slice (1 lot, no limit), 3-7 no outcome state (no outcome market was tradable
# before 8), 3-8 no venue risk (rebuilt: no settings, open interest 0), 3-9 no exposure caps, 3-10 no funding (the
# defaults, scheduled from the state's clock) and no margin tiers, 3-11 no margin modes (every position cross), 3-12
# no collateral (the unified account off)
MARGIN_MODE_STATE = np.dtype([("account", "<i8"), ("market", "<i8")])  # an isolated position
COLLATERAL_ASSET_STATE = np.dtype([("asset", "<u4"), ("price_market", "<u4"), ("max_weight_bps", "<i8")])
VENUE_COLLATERAL_STATE = np.dtype([("venue", "<u4"), ("asset", "<u4"), ("weight_bps", "<i8")])
MARGIN_TIER_STATE = np.dtype([("market", "<u4"), ("tier", "<u4"), ("floor", "<i8"), ("leverage", "<i8")])
FUNDING_STATE = np.dtype([("market", "<u4"), ("pad", "<u4"), ("interval", "<i8"), ("sample_interval", "<i8"),
                          ("interest", "<i8"), ("clamp", "<i8"), ("cap", "<i8"), ("next_sample", "<i8"),
                          ("next_funding", "<i8"), ("premium_sum", "<i8"), ("samples", "<i8")])
EXPOSURE_CAP_STATE = np.dtype([("account", "<i8"), ("venue", "<u4"), ("cap_bps", "<i4")])
MARKET_RISK_STATE = np.dtype([("market", "<u4"), ("max_leverage", "<i4"), ("maintenance_bps", "<i4"),
                              ("impact_lots", "<i8"), ("slice_lots", "<i8")])
OUTCOME_STATE = np.dtype([("market", "<u4"), ("state", "u1"), ("outcome", "u1"), ("pad", "<u2"), ("payout", "<i8"),
                          ("resolver", "<i8"), ("window", "<i8"), ("event", "<i8"), ("finalize_at", "<i8"),
                          ("collateral", "<i8"), ("event_no", "<i8")])
OUTCOME_EVENT_STATE = np.dtype([("event", "<i8"), ("converted", "<i8"), ("advance", "<i8")])
VENUE_RISK_STATE = np.dtype([("venue", "<u4"), ("market", "<u4"), ("band_bps", "<i4"), ("move_bps", "<i4"),
                             ("oi_cap", "<i8"), ("window_ms", "<i8"), ("cooldown_ms", "<i8"), ("long_oi", "<i8"),
                             ("short_oi", "<i8"), ("halted", "u1")])
POSITION_STATE = np.dtype([("account", "<i8"), ("market", "<u4"), ("pad", "<u4"), ("size", "<i8"),
                           ("entry_value", "<i8"), ("margin", "<i8"), ("realised", "<i8")])
ORACLE_STATE = np.dtype([("venue", "<u4"), ("market", "<u4"), ("feed_id", "<i8"), ("feed_account", "<i8"),
                         ("timeout", "<i8"), ("price", "<i8"), ("source_ts", "<i8"), ("sources", "<i8"),
                         ("updated_at", "<i8"), ("stale", "u1")])
VENUE_STATE = np.dtype([("venue", "<u4"), ("status", "u1"), ("access", "u1"), ("pool", "u1"), ("pad", "u1"),
                        ("accepts", "<u8"), ("blocked_regions", "<u8"), ("operator", "<i8"), ("insurance", "<i8"),
                        ("stake", "<i8"), ("unbonding", "<i8"), ("unbond_at", "<i8"), ("maker_bps", "<i4"),
                        ("taker_bps", "<i4"), ("operator_bps", "<i4"), ("insurance_bps", "<i4"), ("tier_asset", "<u4"),
                        ("n_tiers", "<i4"), ("tier_epoch", "<i8")])
TIER_STATE = np.dtype([("venue", "<i8"), ("tier", "<i8"), ("min_volume", "<i8"), ("maker_bps", "<i4"),
                       ("taker_bps", "<i4")])
VENUE_FEE_STATE = np.dtype([("venue", "<i8"), ("asset", "<i8"), ("amount", "<i8")])
VOLUME_STATE = np.dtype([("account", "<i8"), ("venue", "<i8"), ("epoch", "<i8"), ("current", "<i8"),
                         ("previous", "<i8")])
PAIR_STATE = np.dtype([("a", "<i8"), ("b", "<i8")])  # (venue, market), (venue, account), (account index, region)
ASSET_STATE = np.dtype([("asset", "<u4"), ("decimals", "<i4"), ("symbol_lo", "<i8"), ("symbol_hi", "<i8"),
                        ("outstanding", "<i8"), ("fees", "<i8")])
MARKET_STATE = np.dtype([("market", "<u4"), ("venue", "<u4"), ("base", "<u4"), ("quote", "<u4"),
                         ("tick_size", "<i8"), ("lot_size", "<i8"), ("min_size", "<i8"), ("maker_bps", "<i4"),
                         ("taker_bps", "<i4"), ("band_bps", "<i4"), ("kind", "u1"), ("halted", "u1"),
                         ("pad", "u2"), ("last_price", "<i8")])
BALANCE_STATE = np.dtype([("account_index", "<i8"), ("asset", "<u4"), ("pad", "<u4"), ("free", "<i8"),
                          ("held", "<i8")])
ORDER_STATE = np.dtype([("order_id", "<i8"), ("account", "<i8"), ("client_id", "<i8"), ("price", "<i8"),
                        ("qty", "<i8"), ("filled", "<i8"), ("remaining", "<i8"), ("expire_at", "<i8"),
                        ("rest_seq", "<i8"), ("market", "<u4"), ("venue", "<u4"), ("side", "u1"), ("stp", "u1"), ("post_only", "u1"),
                        ("tif", "u1"), ("maker_bps", "<i2"), ("taker_bps", "<i2")])
if ORDER_STATE.itemsize != sizeof(OrderState) or BALANCE_STATE.itemsize != sizeof(BalanceState):
    raise ImportError("snapshot row dtypes do not match the C structs")


class Engine(CommandAPI):
    """The matcher with the command builders of ``engine.api.CommandAPI``.

    ``Matcher`` is a final class so that its C methods are direct calls the
    compiler can inline; the engine delegates to it.
    """

    def __init__(self, **capacities):
        self.core = Matcher(**capacities)
        for name in _DELEGATED:
            setattr(self, name, getattr(self.core, name))

    def export_state(self, reuse_buffers: bool = False) -> dict:
        """Everything a snapshot needs, as numpy arrays (see ``Matcher.export_state``)."""
        return self.core.export_state(reuse_buffers)

    @classmethod
    def from_state(cls, state: dict, **capacities) -> "Engine":
        """A new engine holding exactly the exported state."""
        engine = cls(**capacities)
        engine.core.import_state(state)
        return engine

    cmd_seq = property(lambda self: self.core.cmd_seq)
    event_seq = property(lambda self: self.core.event_seq)
    last_order_id = property(lambda self: self.core.last_order_id)
    now = property(lambda self: self.core.now)
    open_orders = property(lambda self: self.core.open_orders)
    index_slots = property(lambda self: self.core.index_slots)
    event_capacity = property(lambda self: self.core.event_capacity)


_DELEGATED = (
    "process", "process_into", "process_count", "process_timed", "publish_to", "last_events", "l2", "l3", "order", "balance",
    "balances", "accounts", "fees", "best_bid", "best_ask", "last_price", "markets", "assets",
    "venues", "venue", "venue_markets", "allowed", "region", "venue_params", "venue_fee_schedule", "venue_fees",
    "volumes", "oracles", "oracle", "positions", "position", "market_risks", "fundings", "margin_tiers", "outcomes", "outcome", "outcome_events",
    "venue_market_risks", "venue_market_risk", "exposure_caps", "margin_modes", "collateral_assets",
    "venue_collaterals",
)


def record_layout():
    """Sizes and field offsets of the compiled records (tests compare them with the numpy dtypes)."""
    cdef xos_command c
    cdef xos_event e
    cdef char *cb = <char *>&c
    cdef char *eb = <char *>&e
    command = {
        "kind": <char *>&c.kind - cb, "side": <char *>&c.side - cb, "tif": <char *>&c.tif - cb,
        "ord_type": <char *>&c.ord_type - cb, "stp": <char *>&c.stp - cb, "flags": <char *>&c.flags - cb,
        "venue": <char *>&c.venue - cb, "market": <char *>&c.market - cb, "ts": <char *>&c.ts - cb,
        "account": <char *>&c.account - cb, "price": <char *>&c.price - cb, "qty": <char *>&c.qty - cb,
        "id": <char *>&c.id - cb, "aux": <char *>&c.aux - cb,
    }
    event = {
        "kind": <char *>&e.kind - eb, "code": <char *>&e.code - eb, "side": <char *>&e.side - eb,
        "reason": <char *>&e.reason - eb, "flags": <char *>&e.flags - eb, "market": <char *>&e.market - eb,
        "venue": <char *>&e.venue - eb, "seq": <char *>&e.seq - eb, "cmd_seq": <char *>&e.cmd_seq - eb,
        "durable_seq": <char *>&e.durable_seq - eb, "ts": <char *>&e.ts - eb,
        "order_id": <char *>&e.order_id - eb, "account": <char *>&e.account - eb,
        "client_id": <char *>&e.client_id - eb, "price": <char *>&e.price - eb, "qty": <char *>&e.qty - eb,
        "remaining": <char *>&e.remaining - eb, "maker_order": <char *>&e.maker_order - eb,
        "maker_account": <char *>&e.maker_account - eb, "maker_fee": <char *>&e.maker_fee - eb,
        "taker_fee": <char *>&e.taker_fee - eb,
    }
    return {
        "version": XOS_LAYOUT_VERSION,
        "command": {"size": sizeof(xos_command), "fields": command},
        "event": {"size": sizeof(xos_event), "fields": event},
    }

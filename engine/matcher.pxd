cimport cython
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
cimport numpy as cnp

from records cimport xos_command, xos_event
from hashmap cimport xos_hmap


cdef struct Order:
    int64_t id
    int64_t account          # account id (as the user knows it)
    int64_t client_id
    int64_t price
    int64_t qty              # filled + remaining (amends and STP decrements reset it)
    int64_t filled
    int64_t remaining
    int64_t expire_at
    int64_t hold_per_lot     # buy orders: price + worst-case taker fee per lot
    int64_t rest_seq         # when it joined its level: the level's time priority
    int16_t maker_bps        # its fees, fixed when it was placed (its venue's, at its tier)
    int16_t taker_bps
    int32_t bal_base         # balance indexes of the account's base and quote assets
    int32_t bal_quote
    int32_t acct_idx
    int32_t prev             # FIFO neighbours in the price level (pool slots, -1 = none)
    int32_t next
    int32_t acct_prev        # neighbours in the account's open-order list
    int32_t acct_next
    uint32_t market
    uint32_t venue
    uint8_t side
    uint8_t stp
    uint8_t post_only
    uint8_t tif
    uint8_t registered       # in the order and client indexes and its account's list


cdef struct Level:
    int64_t price
    int64_t qty              # aggregate open qty
    int32_t count
    int32_t head             # oldest order (pool slot)
    int32_t tail


cdef struct BookSide:
    Level *levels            # sorted so the best price is at the end; levels[n - 1] is never empty
    int32_t n
    int32_t cap
    int32_t empty            # emptied levels kept in place (count == 0) until compaction


cdef struct Market:
    bint exists
    uint8_t kind
    uint32_t venue
    uint32_t base
    uint32_t quote
    int64_t tick_size
    int64_t lot_size
    int64_t min_size
    int32_t maker_bps
    int32_t taker_bps
    int32_t band_bps
    int64_t last_price
    bint halted              # set by Halt (the risk worker), cleared by Resume
    int32_t stale_oracles    # venues whose oracle for this market is stale (0: the place path skips the lookup)
    int32_t max_leverage     # perpetual markets (MarketRisk): orders hold ceil(price / it) per lot; 1 otherwise
    int32_t maintenance_bps  # maintenance margin in bps of the initial margin
    bint mark_dirty          # in ``dirty_marks``: its mark is recomputed at the end of the command
    int64_t impact_lots      # perpetual: the size (lots) of the impact bid and ask in its mark
    int64_t slice_lots       # perpetual: the most lots one liquidation order closes (0: no limit)
    int64_t mark             # perpetual: the mark price (0: none yet), recomputed after each command that moves it
    int64_t position_head    # perpetual: its positions (index in position_rows, -1 = none), newest first
    int32_t venue_gates      # venues with a band, an open-interest cap or a halt here (0: the place path skips the lookup)
    int64_t funding_interval # perpetual funding (FundingConfig): ns of engine clock between fundings
    int64_t sample_interval  # ns of engine clock between premium samples
    int64_t interest         # interest rate per interval, 1e-8
    int64_t clamp            # the interest term's clamp, 1e-8
    int64_t cap              # the rate's cap per interval, 1e-8
    int64_t next_sample      # engine clock of the next premium sample
    int64_t next_funding     # engine clock from which ApplyFunding is accepted
    int64_t premium_sum      # premiums sampled since the last funding (1e-8) and how many
    int64_t samples
    int64_t tier_floor[3]    # MarginTiers: notional floors of brackets 1..n_tiers (bracket 0 starts at 0)
    int32_t tier_leverage[3] # their max leverage (bracket 0: max_leverage)
    int32_t n_tiers
    BookSide sides[2]


cdef struct Asset:
    bint exists
    int32_t decimals
    int64_t symbol_lo
    int64_t symbol_hi
    int64_t outstanding      # deposits - withdrawals


cdef struct Account:
    int64_t id
    uint8_t region           # region tag (0..63) set by the admin; venues may block regions
    int32_t order_head       # open orders, oldest first
    int32_t order_tail
    int64_t balance_head     # balance entries, newest first (-1 = none)
    int64_t balance_block    # index of the account's first BALANCE_BLOCK entries in the balance table
    int32_t n_balances
    int64_t position_head    # its positions, newest first (index in position_rows, -1 = none)
    int32_t perp_orders      # its resting perpetual orders: with none and no position it owes nothing (unified check)


cdef struct Balance:
    int64_t free
    int64_t held
    uint32_t asset           # 0: an unused entry of an account's block
    int32_t owner            # account index
    int64_t next             # next balance of the same account


cdef struct FeeTier:
    int64_t min_volume       # traded notional (tier asset) in the previous epoch that earns it
    int32_t maker_bps
    int32_t taker_bps


cdef struct Volume:            # an account's traded notional on one venue (tier asset)
    int64_t epoch            # engine clock // the venue's tier epoch, when last added to
    int64_t current          # in that epoch
    int64_t previous         # in the epoch before it


cdef struct Venue:
    bint exists
    uint8_t status           # XOS_VENUE_*
    uint8_t access           # XOS_ACCESS_*
    uint8_t pool             # its orders' matching pool (0..63)
    uint64_t accepts         # pools its orders may trade with (always includes its own)
    uint64_t match_mask      # accepts while its orders may trade (live, winding down), else 0
    uint64_t blocked_regions # bit r: accounts tagged region r may not place orders here
    int64_t operator         # the account allowed to change it (venue 0: none, the admin only)
    int64_t insurance        # its insurance fund account
    int64_t stake            # bonded stake (stake asset)
    int64_t unbonding        # requested for release, still locked (and slashable)
    int64_t unbond_at        # engine clock at which ``unbonding`` is released
    int64_t open_orders      # resting orders placed through it
    int32_t maker_bps        # fees of orders placed through it (tier 0); venue 0 uses the market's
    int32_t taker_bps
    int32_t operator_bps     # split of its collected fees; the protocol gets the rest
    int32_t insurance_bps
    uint32_t tier_asset      # fills in markets quoted in this asset count towards tiers
    int32_t n_tiers
    int64_t tier_epoch       # ns of engine clock per volume epoch
    FeeTier tiers[4]


cdef struct Oracle:            # a venue's oracle for one market (OracleConfig, OraclePrice)
    uint32_t venue
    uint32_t market
    int64_t feed_id          # the feed allowed to update it, and the account it sends as
    int64_t feed_account
    int64_t timeout          # ns of engine clock without an accepted price before it is stale
    int64_t price            # the latest accepted price (0: none yet)
    int64_t source_ts        # its source time (the feed's clock); a newer price must have a later one
    int64_t sources          # how many sources the latest price is the median of
    int64_t updated_at       # engine clock of the latest price (or of the configuration, before any)
    bint stale


cdef struct VenueRisk:         # a venue's own risk settings and open interest in one market (VenueMarketRisk)
    uint32_t venue
    uint32_t market
    int32_t band_bps         # its price band around the market's last trade (0: the market's own band)
    int32_t move_bps         # breaker settings, stored and echoed for the risk worker (0: no breaker)
    int64_t oi_cap           # perpetual markets: bound on each side's open interest (0: none)
    int64_t window_ms
    int64_t cooldown_ms
    int64_t long_oi          # long size its orders' fills opened less the long size they closed
    int64_t short_oi         # likewise for shorts
    int64_t open_buy         # remaining of its open orders on each side (perpetual markets)
    int64_t open_sell
    bint halted              # VenueMarketHalt: its new orders here are refused


cdef struct Position:          # an account's position in one perpetual market (views.PositionView)
    int64_t account
    uint32_t market
    int64_t size             # signed, base units
    int64_t entry_value      # quote, of the open size (>= 0)
    int64_t margin           # quote held for it
    int64_t realised         # quote realised into free so far (signed)
    int64_t next_of_account  # the account's next position (-1 = none)
    int64_t next_of_market   # the market's next position (-1 = none)
    bint isolated            # MarginMode: isolated margin (its margin and PnL count only for itself); else cross


cdef struct AdlEntry:           # one position in an ADL ranking
    int64_t row              # index in position_rows
    int64_t profit           # unrealised PnL at mark
    int64_t margin           # its margin, at least 1
    int64_t account
    uint32_t market


cdef struct OutcomeMarket:     # an outcome market's resolution state (views.OutcomeView), indexed by market id
    uint8_t state            # 0 not configured, else XOS_OS_OPEN / PROPOSED / FINAL
    uint8_t outcome          # proposed or final: 1 YES won, 0 NO won
    int64_t payout           # quote per lot a winning share pays; prices lie strictly between 0 and it
    int64_t resolver
    int64_t window           # dispute window, ns of engine clock
    int64_t event            # multi-outcome event id (0: standalone)
    int64_t finalize_at      # a proposed resolution is final at this engine clock
    int64_t collateral       # quote locked: payout x YES lots outstanding
    int64_t event_no         # NO shares (base units) its event holds from converts


cdef struct OutcomeEvent:      # markets of which exactly one resolves YES
    int64_t id
    int64_t converted        # base units of NO converted so far
    int64_t advance          # quote advanced to mint converts' YES, repaid by the final resolution
    int64_t n_markets
    uint32_t first           # its first market (the one its members' parameters must match)


cdef struct Admission:          # what PlaceOrder's checks found (``admit``), for ``afford`` and ``accept``
    int64_t acct_idx
    int64_t per_lot          # hold per lot (quote): buys, perpetual and outcome orders
    int64_t amount           # what the order takes from free: its hold (quote) or a spot sell's size (base)
    uint32_t asset           # the asset it takes it from
    int16_t maker_bps
    int16_t taker_bps


cdef struct Expiry:
    int64_t expire_at
    int64_t order_id


cdef packed struct OrderState:     # a snapshot's order row (numpy ORDER_STATE)
    int64_t order_id
    int64_t account
    int64_t client_id
    int64_t price
    int64_t qty
    int64_t filled
    int64_t remaining
    int64_t expire_at
    int64_t rest_seq
    uint32_t market
    uint32_t venue
    uint8_t side
    uint8_t stp
    uint8_t post_only
    uint8_t tif
    int16_t maker_bps
    int16_t taker_bps


cdef packed struct BalanceState:   # a snapshot's balance row (numpy BALANCE_STATE)
    int64_t account_index
    uint32_t asset
    uint32_t pad
    int64_t free
    int64_t held


cdef struct Touched:
    uint32_t market
    uint8_t side
    int32_t count            # the level's order count and aggregate qty after the last change
    int64_t price
    int64_t qty


@cython.final
cdef class Matcher:
    cdef readonly int64_t max_orders
    cdef readonly int64_t max_accounts
    cdef readonly int32_t max_markets
    cdef readonly int32_t max_assets
    cdef readonly int32_t max_venues
    cdef Venue *venue_table
    cdef uint64_t *offers            # per venue a bitset of the markets it offers
    cdef int64_t offer_words         # words per venue in ``offers``
    cdef xos_hmap allow_index        # (account, venue) -> 1: allow-list entries
    cdef int64_t admin               # 0 until VenueParams sets it
    cdef int64_t protocol_account
    cdef uint32_t stake_asset
    cdef int64_t min_stake
    cdef int64_t unbond_period
    cdef int64_t next_release        # earliest unbond_at of any venue (INT64_MAX when none)
    cdef xos_hmap fee_index          # (venue, asset) -> index in venue_pool
    cdef int64_t *venue_pool         # fees a venue (other than 0) collected and has not swept
    cdef int64_t n_venue_pool
    cdef int64_t cap_venue_pool
    cdef xos_hmap volume_index       # (account, venue) -> index in volume_rows
    cdef Volume *volume_rows
    cdef int64_t n_volumes
    cdef int64_t cap_volumes
    cdef xos_hmap oracle_index       # (venue, market) -> index in oracle_rows
    cdef Oracle *oracle_rows         # in configuration order (the order staleness is checked in)
    cdef int64_t n_oracles
    cdef int64_t cap_oracles
    cdef int64_t next_stale_at       # earliest moment a fresh oracle goes stale (INT64_MAX when none)
    cdef xos_hmap venue_risk_index   # (venue, market) -> index in venue_risk_rows
    cdef VenueRisk *venue_risk_rows  # in order of creation (settings, a halt, or the venue's first perpetual order)
    cdef int64_t n_venue_risks
    cdef int64_t cap_venue_risks
    cdef int64_t next_sample_at      # earliest next premium sample of any perpetual market (INT64_MAX when none)
    cdef xos_hmap position_index     # (account, market) -> index in position_rows
    cdef xos_hmap cap_index          # (account, venue) -> the account's exposure cap (bps) in the venue's risk group
    cdef Position *position_rows     # in order of each position's first fill
    cdef int64_t n_positions
    cdef int64_t cap_positions
    cdef uint32_t *dirty_marks       # perpetual markets whose mark may have moved in this command
    cdef int64_t n_dirty
    cdef int64_t cap_dirty
    cdef OutcomeMarket *outcome_table  # per market id (state 0: not an outcome market or not configured)
    cdef uint32_t *outcome_order     # configured outcome markets in configuration order
    cdef int64_t n_outcomes
    cdef xos_hmap outcome_event_index  # (event id, 0) -> index in outcome_event_rows
    cdef OutcomeEvent *outcome_event_rows
    cdef int64_t n_outcome_events
    cdef int64_t cap_outcome_events
    cdef int64_t next_finalize_at    # earliest finalize_at of a proposed resolution (INT64_MAX when none)
    cdef Market *market_table
    cdef Asset *asset_table
    cdef int64_t *fee_pool
    cdef Order *orders
    cdef int32_t free_slot
    cdef int64_t n_open
    cdef Account *accts
    cdef int64_t n_accounts
    cdef Balance *bals
    cdef int64_t n_bals
    cdef int64_t cap_bals
    cdef xos_hmap order_index
    cdef xos_hmap client_index
    cdef xos_hmap account_index
    cdef xos_hmap balance_index
    cdef Expiry *heap
    cdef int64_t n_heap
    cdef int64_t cap_heap
    cdef Touched *touched
    cdef int64_t n_touched
    cdef int64_t cap_touched
    cdef xos_hmap touched_index  # (market << 1 | side, price) -> its place in touched
    cdef int64_t unit_seq       # cmd_seq of the batch's last unit (a multi-leg order's: its header's)
    cdef xos_event *events
    cdef int64_t n_events
    cdef int64_t cap_events
    cdef int64_t _cmd_seq
    cdef int64_t _event_seq
    cdef int64_t _last_order_id
    cdef int64_t _rest_seq           # orders that joined a level so far
    cdef uint32_t valuation_asset    # unified account (CollateralAsset): 0 = off, margin rules per quote asset
    cdef uint32_t *coll_market       # per asset: its price market (0: the valuation asset or none)
    cdef int32_t *coll_bound         # per asset: the protocol bound on its weight (bps), -1 = not a collateral asset
    cdef xos_hmap venue_coll_index   # (venue, asset) -> the venue's own weight (bps)
    cdef int64_t *coll_eq            # scratch of ``unified``, per asset: eq_a and the margin requirement
    cdef int64_t *coll_req
    cdef int64_t *coll_seen          # per asset: the ``coll_stamp`` of the unified walk that last listed it
    cdef uint32_t *coll_list         # the assets that walk listed
    cdef int64_t coll_stamp
    cdef object export_buffers       # [balances, orders] row buffers kept between exports
    cdef int64_t _now

    cdef xos_event *emit(self, uint16_t kind) noexcept nogil
    cdef xos_event *emit_order(self, uint16_t kind, Order *o) noexcept nogil
    cdef void reject(self, const xos_command *c, uint16_t code) noexcept nogil
    cdef void touch(self, uint32_t market, uint8_t side, int64_t price, int64_t qty, int32_t count) noexcept nogil
    cdef void emit_touched_levels(self) noexcept nogil
    cdef void forget_touched(self) noexcept nogil
    cdef int64_t account_index_of(self, int64_t account) noexcept nogil
    cdef int64_t new_account(self, int64_t account) noexcept nogil
    cdef int64_t balance_of(self, int64_t acct_idx, uint32_t asset) noexcept nogil
    cdef int64_t ensure_balance(self, int64_t acct_idx, uint32_t asset) noexcept nogil
    cdef int64_t free_of(self, int64_t acct_idx, uint32_t asset) noexcept nogil
    cdef void release_hold(self, Order *o, int64_t qty) noexcept nogil
    cdef void rest(self, Market *m, int32_t slot) noexcept nogil
    cdef void unlink(self, Market *m, int32_t slot) noexcept nogil
    cdef void level_reduce(self, Market *m, Order *o, int64_t qty) noexcept nogil
    cdef void register(self, int32_t slot) noexcept nogil
    cdef void retire(self, int32_t slot) noexcept nogil
    cdef void cancel_order(self, int32_t slot, bint in_level, uint8_t reason, uint16_t code, int64_t qty) noexcept nogil
    cdef void fill(self, Market *m, int32_t t, int32_t k, int64_t q) noexcept nogil
    cdef Position *position_of(self, int64_t account, uint32_t market) noexcept nogil
    cdef int64_t perp_fill(self, Market *m, Order *o, int64_t q, int64_t price, int64_t fee, int64_t *pnl) noexcept nogil
    cdef void emit_position(self, Market *m, Order *o, Position *p, int64_t price, int64_t pnl) noexcept nogil
    cdef bint fok_fillable(self, Market *m, Order *T) noexcept nogil
    cdef int64_t outcome_leg(self, Market *m, uint8_t side, int64_t price) noexcept nogil
    cdef uint16_t outcome_order_code(self, uint32_t market) noexcept nogil
    cdef Position *outcome_move(self, Market *m, uint32_t market, int64_t account, int64_t bal, int64_t delta,
                                int64_t price, int64_t *cash) noexcept nogil
    cdef void emit_outcome_position(self, Position *p, int64_t bal, uint8_t side, uint8_t reason, uint32_t venue,
                                    int64_t order_id, int64_t price, int64_t cash) noexcept nogil
    cdef void emit_outcome_status(self, uint32_t market, uint8_t reason, int64_t account) noexcept nogil
    cdef uint16_t outcome_code(self, uint32_t market) noexcept nogil
    cdef OutcomeEvent *outcome_event_of(self, int64_t event) noexcept nogil
    cdef void cmd_outcome_config(self, const xos_command *c) noexcept nogil
    cdef void cmd_convert(self, const xos_command *c) noexcept nogil
    cdef void cmd_resolve(self, const xos_command *c) noexcept nogil
    cdef void finalize(self, uint32_t market, uint8_t reason, int64_t account) noexcept nogil
    cdef void finalize_due(self) noexcept nogil
    cdef bint match(self, Market *m, int32_t t) noexcept nogil
    cdef void take_and_rest(self, Market *m, int32_t t) noexcept nogil
    cdef bint heap_less(self, int64_t a, int64_t b) noexcept nogil
    cdef void heap_swap(self, int64_t a, int64_t b) noexcept nogil
    cdef void heap_push(self, int64_t expire_at, int64_t order_id) noexcept nogil
    cdef void heap_pop(self) noexcept nogil
    cdef void expire_orders(self) noexcept nogil
    cdef uint16_t locate_order(self, const xos_command *c, int32_t *slot) noexcept nogil
    cdef uint16_t check_account(self, int64_t account, int64_t *acct_idx) noexcept nogil
    cdef uint16_t check_price_qty(self, Market *m, int64_t price, int64_t qty) noexcept nogil
    cdef void cmd_place(self, const xos_command *c) noexcept nogil
    cdef uint16_t admit(self, const xos_command *c, Admission *adm) noexcept nogil
    cdef uint16_t afford(self, const xos_command *c, Admission *adm, int64_t committed, int64_t group_committed,
                         int64_t slots_committed, const Admission *earlier, int64_t n_earlier) noexcept nogil
    cdef void cmd_collateral_asset(self, const xos_command *c) noexcept nogil
    cdef void cmd_venue_collateral(self, const xos_command *c) noexcept nogil
    cdef bint collateral_price(self, uint32_t asset, int64_t *price, int64_t *lot) noexcept nogil
    cdef int64_t collateral_weight(self, uint32_t asset, uint32_t venue) noexcept nogil
    cdef int64_t outcome_mark(self, Market *m) noexcept nogil
    cdef void coll_entry(self, uint32_t asset, int64_t *n) noexcept nogil
    cdef int unified(self, int64_t acct_idx, int64_t venue, const uint32_t *assets, const int64_t *amounts,
                     int64_t n_takes, bint maintenance, int64_t *equity, int64_t *requirement,
                     bint with_holds=*) noexcept nogil
    cdef uint16_t unified_code(self, int64_t acct_idx, int64_t venue, const uint32_t *assets, const int64_t *amounts,
                               int64_t n_takes) noexcept nogil
    cdef bint may_owe(self, int64_t acct_idx) noexcept nogil
    cdef int64_t liquidation_equity(self, int64_t acct_idx, uint32_t venue, uint32_t asset) noexcept nogil
    cdef int64_t sell_collateral(self, int64_t acct_idx, int64_t fund, uint32_t venue, uint32_t asset) noexcept nogil
    cdef int64_t sell_outcome_shares(self, int64_t acct_idx, int64_t fund, uint32_t venue, uint32_t asset) noexcept nogil
    cdef bint over_cap(self, int64_t acct_idx, Market *m, int64_t amount) noexcept nogil
    cdef void cmd_set_exposure_cap(self, const xos_command *c) noexcept nogil
    cdef int32_t accept(self, const xos_command *c, Admission *adm) noexcept nogil
    cdef int64_t cmd_multi_leg(self, const xos_command *c, int64_t available) noexcept nogil
    cdef void reject_leg(self, const xos_command *header, const xos_command *c, uint16_t code,
                         int64_t leg) noexcept nogil
    cdef bint reduces(self, const xos_command *c) noexcept nogil
    cdef void dirty_mark(self, uint32_t market) noexcept nogil
    cdef int64_t impact_price(self, Market *m, uint8_t side) noexcept nogil
    cdef void update_marks(self) noexcept nogil
    cdef int64_t compute_mark(self, uint32_t market, int64_t *inputs) noexcept nogil
    cdef bint margin_short(self, int64_t acct_idx, uint32_t asset, int64_t amount) noexcept nogil
    cdef int64_t margin_excess(self, int64_t acct_idx, uint32_t asset) noexcept nogil
    cdef int64_t fund_of(self, uint32_t venue) noexcept nogil
    cdef int64_t equity_of(self, int64_t acct_idx, uint32_t asset, int64_t *maintenance) noexcept nogil
    cdef void pseudo_order(self, Order *o, int64_t account, Market *m, uint32_t venue, uint8_t side,
                           int64_t hold_per_lot) noexcept nogil
    cdef void transfer_position(self, uint8_t reason, Market *m, uint32_t venue, int64_t target, uint8_t side,
                                int64_t counterparty, int64_t q, int64_t price, bint holds) noexcept nogil
    cdef int64_t adl_ranking(self, uint32_t market, uint32_t venue, uint32_t asset, int64_t target, int sign,
                             AdlEntry **out) noexcept nogil
    cdef void cmd_liquidate(self, const xos_command *c) noexcept nogil
    cdef int64_t position_equity(self, Position *p, int64_t *maintenance) noexcept nogil
    cdef int64_t liquidation_equity_now(self, int64_t acct_idx, uint32_t venue, uint32_t asset, int64_t isolated_row,
                                        int64_t base_free) noexcept nogil
    cdef uint16_t check_perp_account(self, const xos_command *c, int64_t *acct_idx) noexcept nogil
    cdef void cmd_margin_mode(self, const xos_command *c) noexcept nogil
    cdef void cmd_isolated_margin(self, const xos_command *c) noexcept nogil
    cdef void emit_margin_position(self, Position *p, Market *m, int64_t b, uint16_t flags) noexcept nogil
    cdef uint16_t check_market_kind(self, const xos_command *c, uint8_t kind) noexcept nogil
    cdef uint16_t check_market_operator(self, const xos_command *c, uint8_t kind) noexcept nogil
    cdef void cmd_market_risk(self, const xos_command *c) noexcept nogil
    cdef void schedule_funding(self, Market *m) noexcept nogil
    cdef void find_next_sample(self) noexcept nogil
    cdef void sample_premiums(self) noexcept nogil
    cdef int64_t funding_rate(self, Market *m, int64_t *premium) noexcept nogil
    cdef void cmd_apply_funding(self, const xos_command *c) noexcept nogil
    cdef void cmd_funding_config(self, const xos_command *c) noexcept nogil
    cdef void cmd_margin_tiers(self, const xos_command *c) noexcept nogil
    cdef void cmd_cancel(self, const xos_command *c) noexcept nogil
    cdef void cmd_amend(self, const xos_command *c) noexcept nogil
    cdef void cmd_mass_cancel(self, const xos_command *c) noexcept nogil
    cdef bint mass_cancel_selects(self, const xos_command *c, const Order *o, bint all_markets, bint by_venue) noexcept nogil
    cdef void cmd_balance(self, const xos_command *c) noexcept nogil
    cdef void cmd_add_asset(self, const xos_command *c) noexcept nogil
    cdef void cmd_add_market(self, const xos_command *c) noexcept nogil
    cdef void cmd_list_market(self, const xos_command *c) noexcept nogil
    cdef void list_market(self, const xos_command *c, uint32_t base, uint32_t quote, int32_t maker, int32_t taker,
                          uint64_t band, int64_t sender) noexcept nogil
    cdef void cmd_market_status(self, const xos_command *c) noexcept nogil
    cdef bint offered(self, uint32_t venue, uint32_t market) noexcept nogil
    cdef void set_offer(self, uint32_t venue, uint32_t market, bint on) noexcept nogil
    cdef bint eligible(self, uint32_t taker_venue, uint32_t maker_venue) noexcept nogil
    cdef bint eligible_cross(self, Market *m, Order *T) noexcept nogil
    cdef bint meet(self, Market *m, int32_t t, int32_t k) noexcept nogil
    cdef bint match_past(self, Market *m, int32_t t) noexcept nogil
    cdef void set_status(self, Venue *v, uint8_t status) noexcept nogil
    cdef inline uint16_t check_access(self, uint32_t venue, int64_t account, int64_t acct_idx) noexcept nogil
    cdef uint16_t check_operator(self, const xos_command *c) noexcept nogil
    cdef void echo(self, uint16_t kind, const xos_command *c) noexcept nogil
    cdef void emit_venue(self, const xos_command *c) noexcept nogil
    cdef Oracle *oracle_of(self, uint32_t venue, uint32_t market) noexcept nogil
    cdef bint oracle_stale(self, uint32_t venue, uint32_t market) noexcept nogil
    cdef void emit_oracle_status(self, Oracle *o) noexcept nogil
    cdef void mark_stale_oracles(self) noexcept nogil
    cdef VenueRisk *venue_risk_of(self, uint32_t venue, uint32_t market, bint create) noexcept nogil
    cdef void venue_open(self, Order *o, int64_t delta) noexcept nogil
    cdef uint16_t check_venue_risk(self, VenueRisk *r, Market *m, uint8_t side, int64_t price, bint new_price,
                                   int64_t added, bint reduce_only) noexcept nogil
    cdef object view_venue_risk(self, VenueRisk *r)
    cdef void cmd_venue_market_risk(self, const xos_command *c) noexcept nogil
    cdef void cmd_venue_market_status(self, const xos_command *c) noexcept nogil
    cdef void cmd_oracle_config(self, const xos_command *c) noexcept nogil
    cdef void cmd_oracle_price(self, const xos_command *c) noexcept nogil
    cdef void transfer(self, uint8_t reason, uint32_t venue, int64_t account, uint32_t asset, int64_t amount,
                       int64_t bucket_after, int64_t into_held=*) noexcept nogil
    cdef int64_t *fee_slot(self, uint32_t venue, uint32_t asset) noexcept nogil
    cdef void collect(self, uint32_t venue, uint32_t asset, int64_t amount) noexcept nogil
    cdef Volume *volume_of(self, int64_t account, uint32_t venue, bint create) noexcept nogil
    cdef void add_volume(self, Order *o, uint32_t quote, int64_t notional) noexcept nogil
    cdef void order_fees(self, Market *m, uint32_t venue, int64_t account, int16_t *maker, int16_t *taker) noexcept nogil
    cdef void cmd_venue_fees(self, const xos_command *c) noexcept nogil
    cdef void cmd_sweep_fees(self, const xos_command *c) noexcept nogil
    cdef void release_unbonds(self) noexcept nogil
    cdef void cmd_venue_params(self, const xos_command *c) noexcept nogil
    cdef void cmd_launch_venue(self, const xos_command *c) noexcept nogil
    cdef void cmd_stake(self, const xos_command *c) noexcept nogil
    cdef void cmd_venue_status(self, const xos_command *c) noexcept nogil
    cdef void cmd_venue_config(self, const xos_command *c) noexcept nogil
    cdef void cmd_set_region(self, const xos_command *c) noexcept nogil
    cdef void cmd_slash(self, const xos_command *c) noexcept nogil
    cdef xos_event *emit_listing(self, const xos_command *c) noexcept nogil
    cdef cnp.ndarray export_buffer(self, int which, int64_t n, dtype, bint reuse)
    cdef void copy_balances(self, BalanceState *out, int64_t n) noexcept nogil
    cdef void copy_orders(self, OrderState *out) noexcept nogil
    cdef int64_t load_books(self, const int64_t *accounts, int64_t n_accounts, const BalanceState *balances,
                            int64_t n_balances, const OrderState *orders, int64_t n_orders) noexcept nogil
    cdef int64_t execute(self, const xos_command *c, int64_t available) noexcept nogil
    cdef int64_t run_batch(self, const xos_command *cmds, int64_t n, int64_t *durations) noexcept nogil
    cdef void fit_events(self) noexcept nogil
    cdef const xos_command *command_pointer(self, cnp.ndarray commands) except NULL
    cdef Market *market_ptr(self, market) except NULL
    cdef object view_order(self, int32_t slot)
    cdef object view_venue(self, int32_t i)
    cdef object view_oracle(self, int64_t i)
    cdef object view_position(self, Position *p)
    cdef object view_outcome(self, uint32_t market)

from libc.stdint cimport int32_t, int64_t

cdef extern from "intmath.h" nogil:
    int64_t XOS_MAX_MONEY
    int64_t xos_fee(int64_t amount, int32_t bps)
    int64_t xos_buy_hold(int64_t lots, int64_t price, int32_t taker_bps)
    int64_t xos_mul_capped(int64_t a, int64_t b)
    int64_t xos_mul_div(int64_t a, int64_t b, int64_t c)
    bint xos_outside_band(int64_t price, int64_t last, int32_t band_bps)
    bint xos_moved_past(int64_t price, int64_t ref, int64_t bps)
    int xos_ratio_cmp(int64_t u1, int64_t m1, int64_t u2, int64_t m2)
    int64_t xos_bankruptcy_price(int64_t mark, int64_t lots, int64_t equity, int64_t tick, int is_long)
    bint xos_sum_exceeds(int64_t a, int64_t b, int64_t c, int64_t cap)
    int64_t XOS_RATE_SCALE
    int64_t xos_premium(int64_t impact, int64_t oracle)
    int64_t xos_funding_amount(int64_t notional, int64_t rate, int round_up)

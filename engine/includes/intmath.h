/* Exact integer money arithmetic: 128-bit intermediates, ceil rounding. */
#ifndef XOS_INTMATH_H
#define XOS_INTMATH_H
#include <stdint.h>

#define XOS_MAX_MONEY ((int64_t)1 << 62)

/* ceil(amount * bps / 10000), rounded towards +infinity: the exchange's
 * favour for a charge (bps > 0) and for a rebate (bps < 0) alike. */
static inline int64_t xos_fee(int64_t amount, int32_t bps) {
    /* |bps| <= 10000 here, so below 2^49 the product fits in 64 bits and the
     * division by a constant compiles to a multiply: the common case. */
    if (amount < ((int64_t)1 << 49) && amount > -((int64_t)1 << 49)) {
        int64_t p = amount * bps, q = p / 10000;
        if (p > 0 && p % 10000 != 0) q += 1;
        return q;
    }
    __int128 p = (__int128)amount * bps;
    __int128 q = p / 10000;
    if (p > 0 && p % 10000 != 0) q += 1;
    return (int64_t)q;
}

/* lots * (price + worst-case taker fee per lot), saturated just above
 * XOS_MAX_MONEY so callers can compare without overflow. */
static inline int64_t xos_buy_hold(int64_t lots, int64_t price, int32_t taker_bps) {
    __int128 per_lot = (__int128)price + xos_fee(price, taker_bps > 0 ? taker_bps : 0);
    __int128 h = per_lot * lots;
    if (h > (__int128)XOS_MAX_MONEY) return XOS_MAX_MONEY + 1;
    return (int64_t)h;
}

/* a * b for non-negative a, b, saturated just above XOS_MAX_MONEY */
static inline int64_t xos_mul_capped(int64_t a, int64_t b) {
    __int128 p = (__int128)a * b;
    return p > (__int128)XOS_MAX_MONEY ? XOS_MAX_MONEY + 1 : (int64_t)p;
}

/* floor(a * b / c) for a, b >= 0, c > 0 and b <= c: a position's share of a closed part */
static inline int64_t xos_mul_div(int64_t a, int64_t b, int64_t c) {
    return (int64_t)((__int128)a * b / c);
}

/* |price - last| * 10000 > band_bps * last */
static inline int xos_outside_band(int64_t price, int64_t last, int32_t band_bps) {
    __int128 diff = (__int128)price - last;
    if (diff < 0) diff = -diff;
    return diff * 10000 > (__int128)band_bps * last;
}
/* ref > 0 and |price - ref| * 10000 > bps * ref, any int64 bps (the risk worker's breakers and band watch) */
static inline int xos_moved_past(int64_t price, int64_t ref, int64_t bps) {
    __int128 diff = (__int128)price - ref;
    if (diff < 0) diff = -diff;
    return ref > 0 && diff * 10000 > (__int128)bps * ref;
}

/* Compare u1 / m1 with u2 / m2 (m1, m2 > 0) exactly: -1, 0 or 1 (the ADL ranking's profit per margin). */
static inline int xos_ratio_cmp(int64_t u1, int64_t m1, int64_t u2, int64_t m2) {
    __int128 a = (__int128)u1 * m2, b = (__int128)u2 * m1;
    return a < b ? -1 : (a > b ? 1 : 0);
}

/* The price at which closing a position of `lots` lots leaves `equity` (its other positions at `mark`) at 0:
 * (mark * lots - equity) / lots for a long, rounded up to the tick, (mark * lots + equity) / lots for a short,
 * rounded down; within one tick .. XOS_MAX_MONEY (reference ``_bankruptcy_price``). */
static inline int64_t xos_bankruptcy_price(int64_t mark, int64_t lots, int64_t equity, int64_t tick, int is_long) {
    __int128 value = (__int128)mark * lots, num, p;
    __int128 top = (__int128)(XOS_MAX_MONEY / tick) * tick;
    if (is_long) {
        num = value - equity;
        if (num <= 0) return tick;
        p = (num + lots - 1) / lots;
        p = (p + tick - 1) / tick * tick;
    } else {
        num = value + equity;
        if (num <= 0) return tick;
        p = num / lots / tick * tick;
    }
    if (p < tick) p = tick;
    if (p > top) p = top;
    return (int64_t)p;
}

/* a + b + c > cap, exactly (a venue's open interest, its open orders and a new order against its cap) */
static inline int xos_sum_exceeds(int64_t a, int64_t b, int64_t c, int64_t cap) {
    return (__int128)a + b + c > (__int128)cap;
}

#define XOS_RATE_SCALE 100000000  /* funding rates in 1e-8 (records.RATE_SCALE) */

/* A premium sample: floor((impact - oracle) * 1e8 / oracle), at most +1e8, for impact, oracle > 0. */
static inline int64_t xos_premium(int64_t impact, int64_t oracle) {
    __int128 num = ((__int128)impact - oracle) * XOS_RATE_SCALE, q = num / oracle;
    if (num % oracle != 0 && num < 0) q -= 1;  /* C truncates towards 0: floor */
    return q > XOS_RATE_SCALE ? XOS_RATE_SCALE : (int64_t)q;
}

/* notional * rate / 1e8 for notional >= 0, 0 <= rate <= 1e8: rounded up for a payer, down for a receiver. */
static inline int64_t xos_funding_amount(int64_t notional, int64_t rate, int round_up) {
    __int128 p = (__int128)notional * rate;
    return (int64_t)(round_up ? (p + XOS_RATE_SCALE - 1) / XOS_RATE_SCALE : p / XOS_RATE_SCALE);
}
#endif

/* Open-addressing hash map: (int64, int64) key -> int64 value >= 0.
 * Linear probing, power-of-two capacity, load factor <= 1/2, backward-shift
 * deletion (no tombstones, so long runs of add/remove never degrade it).
 * Used for order id -> pool slot, (account, client id) -> slot,
 * account id -> account index and (account, asset) -> balance index. */
#ifndef XOS_HASHMAP_H
#define XOS_HASHMAP_H
#include <stdint.h>
#include <stdlib.h>

typedef struct { int64_t k1, k2, val; } xos_hslot;   /* val < 0: empty */
typedef struct { xos_hslot *slots; uint64_t mask; int64_t count; } xos_hmap;

static inline uint64_t xos_hmix(int64_t k1, int64_t k2) {
    uint64_t x = (uint64_t)k1 * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)k2 + 0x632BE59BD9B4E019ULL);
    x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 29; x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 32);
}

static inline int xos_hmap_init(xos_hmap *m, int64_t capacity) {
    uint64_t cap = 16;
    while (cap < (uint64_t)capacity * 2) cap <<= 1;
    m->slots = (xos_hslot *)malloc(cap * sizeof(xos_hslot));
    if (!m->slots) return -1;
    for (uint64_t i = 0; i < cap; i++) m->slots[i].val = -1;
    m->mask = cap - 1;
    m->count = 0;
    return 0;
}

static inline void xos_hmap_free(xos_hmap *m) { free(m->slots); m->slots = NULL; m->count = 0; }

static inline int64_t xos_hmap_get(const xos_hmap *m, int64_t k1, int64_t k2) {
    uint64_t i = xos_hmix(k1, k2) & m->mask;
    for (;;) {
        const xos_hslot *s = &m->slots[i];
        if (s->val < 0) return -1;
        if (s->k1 == k1 && s->k2 == k2) return s->val;
        i = (i + 1) & m->mask;
    }
}

static inline void xos_hmap_insert_raw(xos_hmap *m, int64_t k1, int64_t k2, int64_t val) {
    uint64_t i = xos_hmix(k1, k2) & m->mask;
    while (m->slots[i].val >= 0) {
        if (m->slots[i].k1 == k1 && m->slots[i].k2 == k2) { m->slots[i].val = val; return; }
        i = (i + 1) & m->mask;
    }
    m->slots[i].k1 = k1; m->slots[i].k2 = k2; m->slots[i].val = val;
    m->count++;
}

/* Rehashes every key into a fresh table sized for ``capacity`` keys; 0 on success, -1 when
 * the allocation failed (the map is unchanged). */
static inline int xos_hmap_rehash(xos_hmap *m, int64_t capacity) {
    xos_hmap other;
    if (xos_hmap_init(&other, capacity) != 0) return -1;
    for (uint64_t i = 0; i <= m->mask; i++)
        if (m->slots[i].val >= 0)
            xos_hmap_insert_raw(&other, m->slots[i].k1, m->slots[i].k2, m->slots[i].val);
    free(m->slots);
    *m = other;
    return 0;
}

/* 0 on success, -1 when growing failed (the map is unchanged). */
static inline int xos_hmap_put(xos_hmap *m, int64_t k1, int64_t k2, int64_t val) {
    if ((uint64_t)(m->count + 1) * 2 > m->mask + 1 && xos_hmap_rehash(m, (int64_t)(m->mask + 1)) != 0)
        return -1;
    xos_hmap_insert_raw(m, k1, k2, val);
    return 0;
}

/* Shrinks a map whose keys fill under 1/16 of its slots, not below room for ``min_keys`` keys:
 * after a burst its few keys would stay spread over megabytes, a cache miss at every probe.
 * Afterwards they fill at most 1/4, so it grows again only once they have doubled, and shrinks
 * again only once they have fallen by four (each resize's cost is paid by as many puts or dels).
 * Returns 1 when it shrank, 0 when it did not (no need, or no memory: the map is unchanged). */
static inline int xos_hmap_fit(xos_hmap *m, int64_t min_keys) {
    int64_t want = 2 * m->count > min_keys ? 2 * m->count : min_keys;
    if ((uint64_t)m->count * 16 >= m->mask + 1 || (uint64_t)want * 4 > m->mask + 1) return 0;
    return xos_hmap_rehash(m, want) == 0;
}

/* Removes the key; returns 1 if it was there. */
static inline int xos_hmap_del(xos_hmap *m, int64_t k1, int64_t k2) {
    uint64_t i = xos_hmix(k1, k2) & m->mask;
    for (;;) {
        xos_hslot *s = &m->slots[i];
        if (s->val < 0) return 0;
        if (s->k1 == k1 && s->k2 == k2) break;
        i = (i + 1) & m->mask;
    }
    /* backward shift: pull later members of the probe run into the hole */
    uint64_t hole = i, j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        xos_hslot *s = &m->slots[j];
        if (s->val < 0) break;
        uint64_t home = xos_hmix(s->k1, s->k2) & m->mask;
        /* can s move to hole? only if home is not cyclically in (hole, j] */
        if (((j - home) & m->mask) >= ((j - hole) & m->mask)) {
            m->slots[hole] = *s;
            hole = j;
        }
    }
    m->slots[hole].val = -1;
    m->count--;
    return 1;
}
#endif

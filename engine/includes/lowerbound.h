/* Binary search over sorted int64 arrays (the gateway's keyed accounts, the risk worker's listed markets). */
#ifndef XOS_LOWERBOUND_H
#define XOS_LOWERBOUND_H
#include <stdint.h>

/* The first index of a[0..n) whose value is not below key (n when none): where key is, or would go. */
static inline int64_t xos_lower_bound(const int64_t *a, int64_t n, int64_t key) {
    int64_t lo = 0, hi = n, mid;
    while (lo < hi) {
        mid = (lo + hi) >> 1;
        if (a[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

#endif

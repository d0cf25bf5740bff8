/* Which ring events a consumer copies out (RingConsumer.take_kinds, workercore.select_fresh): a byte
 * per event kind (engine.workers.kind_mask) says every event of the kind, or only those of no order.
 * Settlement learns listings from Accepted events and follows no orders: copying every order's
 * Accepted only to drop it was about a quarter of its CPU under an order flow. */
#ifndef XOS_EVENTKEEP_H
#define XOS_EVENTKEEP_H
#include <stdint.h>
#include "records.h"

enum { XOS_KEEP_NONE = 0, XOS_KEEP_ALL = 1, XOS_KEEP_ORDERLESS = 2 };

static inline int xos_event_kept(const xos_event *e, const uint8_t *keep, int64_t nkeep) {
    uint8_t k;
    if (e->kind >= nkeep)
        return 0;
    k = keep[e->kind];
    return k == XOS_KEEP_ALL || (k == XOS_KEEP_ORDERLESS && e->order_id == 0);
}

#endif

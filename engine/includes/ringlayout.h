/* Shared-memory layout of the event ring (engine/ring.pyx).
 *
 * One file under /dev/shm: a 4096-byte header, then `capacity` xos_event
 * slots (capacity a power of two); the event at ring position p (event seq
 * p + 1) lives in slot p & (capacity - 1).  Every field that one process
 * writes and others poll sits on its own 64-byte cache line.  Bump
 * XOS_RING_LAYOUT on any change here (it is checked together with
 * XOS_LAYOUT_VERSION, the record layout). */
#ifndef XOS_RINGLAYOUT_H
#define XOS_RINGLAYOUT_H
#include <stdint.h>
#include <stddef.h>
#include "records.h"

#define XOS_RING_MAGIC 0x00474E4952534F58LL /* "XOSRING\0" little-endian */
#define XOS_RING_LAYOUT 2
#define XOS_RING_MAX_CONSUMERS 8
#define XOS_RING_NAME_BYTES 24
#define XOS_RING_DATA_OFFSET 4096

enum { XOS_RING_FREE = 0, XOS_RING_CLAIMING = 1, XOS_RING_ACTIVE = 2 };
/* a consumer's `sleeping` word: awake, asleep on the futex, or waiting on its doorbell (a FIFO the producer writes) */
enum { XOS_RING_AWAKE = 0, XOS_RING_FUTEX = 1, XOS_RING_DOORBELL = 2 };

/* One consumer: 128 bytes, two cache lines. */
typedef struct xos_ring_consumer {
    /* line 0: written by the consumer at every commit */
    int64_t cursor;        /* events consumed; the next event it reads has seq cursor + 1 */
    int64_t waits;         /* wait() calls that found nothing and had to wait */
    int64_t wait_ns;       /* total time spent in those waits */
    int64_t sleeps;        /* futex sleeps among them */
    int64_t pad0[4];
    /* line 1: registration, and the futex word the producer checks after publishing */
    int32_t state;         /* XOS_RING_FREE / CLAIMING / ACTIVE */
    int32_t sleeping;      /* XOS_RING_FUTEX / DOORBELL while the consumer sleeps (or is about to) waiting for events */
    int64_t pid;
    int64_t pid_start;     /* start time of pid (/proc/PID/stat field 22): a reused pid is not the owner */
    char name[XOS_RING_NAME_BYTES];
    int64_t pad1[2];
} xos_ring_consumer;

typedef struct xos_ring_header {
    /* line 0: fixed at creation (magic is written last) */
    int64_t magic;
    uint32_t layout_version;   /* XOS_LAYOUT_VERSION of the records */
    uint32_t slot_size;        /* sizeof(xos_event) */
    int64_t capacity;          /* slots, a power of two */
    int64_t creator_pid;
    int64_t creator_start;
    uint32_t ring_layout;      /* XOS_RING_LAYOUT */
    uint32_t data_offset;      /* XOS_RING_DATA_OFFSET */
    int32_t max_consumers;
    int32_t closed;            /* set by the producer's close(): waiting consumers return */
    int64_t pad0[1];
    /* line 1: the producer cursor */
    int64_t cursor;            /* events published; the last published event has seq == cursor */
    int64_t claim;             /* end of the chunk being written (cursor <= claim <= cursor + capacity) */
    int64_t pad1[6];
    /* line 2: the producer's waiting (backpressure) */
    int32_t producer_sleeping; /* futex word: 1 while the producer sleeps for room */
    int32_t pad2;
    int64_t producer_need;     /* while sleeping: the cursor every consumer must reach */
    int64_t waits;             /* publishes that had to wait for room */
    int64_t wait_ns;
    int64_t sleeps;            /* futex sleeps among them */
    int64_t wakes;             /* futex wake-ups the producer issued to sleeping consumers */
    int64_t pad3[2];
    /* line 3: bumped by consumers when they register, leave or seek back */
    int32_t epoch;
    int32_t pad4;
    int64_t pad5[7];
    xos_ring_consumer consumers[XOS_RING_MAX_CONSUMERS];
} xos_ring_header;

_Static_assert(sizeof(xos_ring_consumer) == 128, "consumer slot is two cache lines");
_Static_assert(offsetof(xos_ring_consumer, state) == 64, "consumer registration on line 1");
_Static_assert(offsetof(xos_ring_header, cursor) == 64, "producer cursor on line 1");
_Static_assert(offsetof(xos_ring_header, producer_sleeping) == 128, "producer wait on line 2");
_Static_assert(offsetof(xos_ring_header, epoch) == 192, "epoch on line 3");
_Static_assert(offsetof(xos_ring_header, consumers) == 256, "consumers from line 4");
_Static_assert(sizeof(xos_ring_header) <= XOS_RING_DATA_OFFSET, "header fits before the slots");
_Static_assert(sizeof(xos_event) == 128, "slot size");

#endif

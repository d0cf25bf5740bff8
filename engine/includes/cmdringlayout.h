/* Shared-memory layout of the command ring (engine/cmdring.pyx): the gateway's commands into the matcher.
 *
 * One file under /dev/shm: a 4096-byte header, then `capacity` xos_command slots (capacity a power of
 * two); the command at ring position p lives in slot p & (capacity - 1).  One producer (the gateway),
 * one consumer (the matcher).  Each side's cursor sits on a cache line of its own.  Bump
 * XOS_CMD_RING_LAYOUT on any change here (it is checked together with XOS_LAYOUT_VERSION, the record
 * layout). */
#ifndef XOS_CMDRINGLAYOUT_H
#define XOS_CMDRINGLAYOUT_H
#include <stdint.h>
#include <stddef.h>
#include "records.h"

#define XOS_CMD_RING_MAGIC 0x0000444D43534F58LL /* "XOSCMD\0\0" little-endian */
#define XOS_CMD_RING_LAYOUT 1
#define XOS_CMD_RING_DATA_OFFSET 4096

typedef struct xos_cmd_ring_header {
    /* line 0: fixed at creation (magic is written last), and the consumer's close */
    int64_t magic;
    uint32_t layout_version;   /* XOS_LAYOUT_VERSION of the records */
    uint32_t slot_size;        /* sizeof(xos_command) */
    int64_t capacity;          /* slots, a power of two */
    uint32_t ring_layout;      /* XOS_CMD_RING_LAYOUT */
    uint32_t data_offset;      /* XOS_CMD_RING_DATA_OFFSET */
    int32_t closed;            /* set by the consumer's close(): the producer attaches to the next ring */
    int32_t pad0;
    int64_t pad1[3];
    /* line 1: the producer's */
    int64_t head;              /* commands published */
    int64_t producer_pid;
    int64_t producer_start;    /* start time of producer_pid (/proc/PID/stat field 22) */
    int64_t full;              /* publishes refused for want of room (the producer keeps them and tries again) */
    int64_t doorbells;         /* wake-ups the producer rang for a sleeping consumer */
    int64_t pad2[3];
    /* line 2: the consumer's */
    int64_t tail;              /* commands taken */
    int64_t consumer_pid;
    int64_t consumer_start;
    int32_t consumer_sleeping; /* 1 while the consumer waits on its doorbell (or is about to) */
    int32_t pad3;
    int64_t pad4[4];
} xos_cmd_ring_header;

_Static_assert(offsetof(xos_cmd_ring_header, head) == 64, "producer cursor on line 1");
_Static_assert(offsetof(xos_cmd_ring_header, tail) == 128, "consumer cursor on line 2");
_Static_assert(sizeof(xos_cmd_ring_header) == 192, "three cache lines");
_Static_assert(sizeof(xos_command) == 64, "slot size");
#endif

from libc.stdint cimport int32_t, int64_t, uint32_t

cdef extern from "ringlayout.h" nogil:
    int64_t XOS_RING_MAGIC
    int XOS_RING_LAYOUT
    int XOS_RING_MAX_CONSUMERS
    int XOS_RING_NAME_BYTES
    int XOS_RING_DATA_OFFSET
    enum:
        XOS_RING_FREE
        XOS_RING_CLAIMING
        XOS_RING_ACTIVE
    enum:
        XOS_RING_AWAKE
        XOS_RING_FUTEX
        XOS_RING_DOORBELL

    ctypedef struct xos_ring_consumer:
        int64_t cursor
        int64_t waits
        int64_t wait_ns
        int64_t sleeps
        int32_t state
        int32_t sleeping
        int64_t pid
        int64_t pid_start
        char name[24]

    ctypedef struct xos_ring_header:
        int64_t magic
        uint32_t layout_version
        uint32_t slot_size
        int64_t capacity
        int64_t creator_pid
        int64_t creator_start
        uint32_t ring_layout
        uint32_t data_offset
        int32_t max_consumers
        int32_t closed
        int64_t cursor
        int64_t claim
        int32_t producer_sleeping
        int64_t producer_need
        int64_t waits
        int64_t wait_ns
        int64_t sleeps
        int64_t wakes
        int32_t epoch
        xos_ring_consumer consumers[8]

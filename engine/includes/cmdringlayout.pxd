from libc.stdint cimport int32_t, int64_t, uint32_t

cdef extern from "cmdringlayout.h" nogil:
    int64_t XOS_CMD_RING_MAGIC
    int XOS_CMD_RING_LAYOUT
    int XOS_CMD_RING_DATA_OFFSET

    ctypedef struct xos_cmd_ring_header:
        int64_t magic
        uint32_t layout_version
        uint32_t slot_size
        int64_t capacity
        uint32_t ring_layout
        uint32_t data_offset
        int32_t closed
        int64_t head
        int64_t producer_pid
        int64_t producer_start
        int64_t full
        int64_t doorbells
        int64_t tail
        int64_t consumer_pid
        int64_t consumer_start
        int32_t consumer_sleeping

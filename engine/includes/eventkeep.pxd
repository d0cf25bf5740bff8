from libc.stdint cimport int64_t, uint8_t

from records cimport xos_event

cdef extern from "eventkeep.h" nogil:
    enum:
        XOS_KEEP_NONE
        XOS_KEEP_ALL
        XOS_KEEP_ORDERLESS
    bint xos_event_kept(const xos_event *e, const uint8_t *keep, int64_t nkeep)

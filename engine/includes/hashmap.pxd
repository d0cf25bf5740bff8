from libc.stdint cimport int64_t, uint64_t

cdef extern from "hashmap.h" nogil:
    ctypedef struct xos_hslot:
        int64_t k1
        int64_t k2
        int64_t val

    ctypedef struct xos_hmap:
        xos_hslot *slots
        uint64_t mask
        int64_t count

    int xos_hmap_init(xos_hmap *m, int64_t capacity)
    void xos_hmap_free(xos_hmap *m)
    int64_t xos_hmap_get(const xos_hmap *m, int64_t k1, int64_t k2)
    int xos_hmap_put(xos_hmap *m, int64_t k1, int64_t k2, int64_t val)
    int xos_hmap_del(xos_hmap *m, int64_t k1, int64_t k2)
    int xos_hmap_fit(xos_hmap *m, int64_t min_keys)

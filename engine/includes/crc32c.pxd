from libc.stdint cimport uint32_t

cdef extern from "crc32c.h" nogil:
    uint32_t xos_crc32c(uint32_t crc, const void *data, size_t n)
    uint32_t xos_crc32c_sw(uint32_t crc, const void *data, size_t n)
    uint32_t xos_crc32c_hw(uint32_t crc, const void *data, size_t n)
    int xos_crc32c_hw_available()

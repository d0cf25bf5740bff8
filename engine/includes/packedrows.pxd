from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

cdef extern from "packedrows.h" nogil:
    enum:
        XOS_PACK_MAX_FIELDS
        XOS_PACK_TRUNCATED
        XOS_PACK_LONG_VARINT
        XOS_PACK_UNKNOWN_FIELD
        XOS_PACK_OUT_OF_RANGE
        XOS_PACK_ZERO_PRESENT
        XOS_PACK_TOO_MANY_ROWS

    ctypedef struct xos_pack_field:
        uint32_t offset
        uint8_t size
        uint8_t is_signed
        uint8_t delta

    ctypedef struct xos_pack_layout:
        xos_pack_field fields[16]
        uint32_t n_fields
        uint32_t row_size
        uint32_t map_bytes

    size_t xos_pack_row_max(const xos_pack_layout *L)
    size_t xos_pack_rows(const xos_pack_layout *L, const unsigned char *rows, size_t n, unsigned char *out,
                         uint64_t *last)
    int64_t xos_count_rows(const xos_pack_layout *L, const unsigned char *data, size_t size)
    int64_t xos_unpack_rows(const xos_pack_layout *L, const unsigned char *data, size_t size, unsigned char *out,
                            int64_t max_rows, int64_t *bad_row, int *bad_field)

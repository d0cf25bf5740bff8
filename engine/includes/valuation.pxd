from libc.stdint cimport int64_t

cdef extern from "valuation.h" nogil:
    ctypedef struct xos_row_value:
        int over
    int xos_revalue_cells(const int64_t *cells, const int64_t *amounts, int64_t m, const int64_t *w,
                          const int64_t *s, int64_t width, int64_t nrows, xos_row_value *rows)
    int xos_row_fits(const xos_row_value *row, int64_t *out)

# Declarations of gateway/rowpack.pyx: one record dtype's packing (engine/includes/packedrows.h), whose layout the
# gateway's C paths use directly.
from packedrows cimport xos_pack_layout

cdef enum:  # gateway.messages' row formats (tests/test_rowpack.py holds them equal)
    FIXED_ROWS = 2
    PACKED_ROWS = 3


cdef class RowPacking:
    cdef xos_pack_layout layout
    cdef readonly object dtype
    cdef readonly tuple deltas

# Declarations of engine/rowpack.pyx: one record dtype's packing (engine/includes/packedrows.h), whose layout the
# C paths use directly (the journal's frames, the gateway's intake and replies).
from packedrows cimport xos_pack_layout


cdef class RowPacking:
    cdef xos_pack_layout layout
    cdef readonly object dtype
    cdef readonly tuple deltas
    cdef readonly str kernels

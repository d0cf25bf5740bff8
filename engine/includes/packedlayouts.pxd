from packedrows cimport xos_pack_layout

cdef extern from "packedlayouts.h" nogil:
    const char *xos_pack_choose(xos_pack_layout *L, int specialize)

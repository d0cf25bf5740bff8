# Declarations of engine/arrays.pyx: numpy arrays of packed C structs handed to C at the Python edge.
ctypedef int (*layout_check_f)(object array) except -1

cdef class RecordLayout:
    cdef readonly str name
    cdef object checked  # the dtype whose layout ``check`` passed last: its next arrays are compared by identity
    cdef layout_check_f check
    cdef char *records(self, object array, Py_ssize_t *count, bint writable) except NULL

cdef RecordLayout record_layout(str name, layout_check_f check)

# cython: language_level=3
"""Numpy arrays of packed C structs handed to C at the Python edge.

A typed memoryview of a structured array (``ReportRow[::1]``) checks the array's dtype against the
struct field by field on every call: numpy makes the buffer's format string and Cython parses it,
~2.5 us a call warm and several times that on the cold caches of a lone order's path, and a batch's
path takes several such arrays.  A ``RecordLayout`` does that check once per dtype object (numpy
keeps the dtype object an array was made with, so the arrays of one dtype share it) and then only
compares the array's dtype by identity."""
cimport numpy as cnp

cnp.import_array()

cdef char EMPTY = 0  # where an empty array's records "start": never read


cdef class RecordLayout:
    """One packed struct's arrays: ``records`` checks an array (1-d, C-contiguous, writable when
    asked; its dtype the struct's, by ``check`` the first time a dtype object is seen) and gives its
    records' address and count."""

    cdef char *records(self, object array, Py_ssize_t *count, bint writable) except NULL:
        cdef cnp.ndarray a
        cdef char *data
        if not isinstance(array, cnp.ndarray):
            raise TypeError(f"{self.name}: expected a numpy array, not {type(array).__name__}")
        a = <cnp.ndarray>array
        if cnp.PyArray_NDIM(a) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
            raise ValueError(f"{self.name}: expected a 1-d C-contiguous array, not shape {array.shape}")
        if writable and not cnp.PyArray_ISWRITEABLE(a):
            raise ValueError(f"{self.name}: the array is read-only")
        if <object>cnp.PyArray_DESCR(a) is not self.checked:
            self.check(array)  # raises ValueError naming the mismatch
            self.checked = <object>cnp.PyArray_DESCR(a)
        count[0] = cnp.PyArray_DIM(a, 0)
        data = cnp.PyArray_BYTES(a)
        return data if data != NULL else &EMPTY


cdef RecordLayout record_layout(str name, layout_check_f check):
    """The layout of ``name`` records; ``check`` makes a typed memoryview of an array (``cdef const
    Struct[::1] view = array``), which checks its dtype against the struct, field by field."""
    cdef RecordLayout layout = RecordLayout.__new__(RecordLayout)
    layout.name, layout.check = name, check
    return layout

# cython: language_level=3
"""Packed rows from Python (``engine/includes/packedrows.h``, ``packedlayouts.h``): a ``RowPacking`` is one
record dtype's packing (which int64 fields go as deltas), with ``pack`` and ``unpack`` for the Python paths; the
C paths use its ``layout`` directly: the journal's packed frames (``engine/journal.pyx``), the gateway's intake
and replies (``gateway/intake.pyx``, ``gateway/routing.pyx``)."""
import numpy as np

from packedrows cimport (XOS_PACK_LONG_VARINT, XOS_PACK_MAX_FIELDS, XOS_PACK_OUT_OF_RANGE, XOS_PACK_TOO_MANY_ROWS,
                      XOS_PACK_TRUNCATED, XOS_PACK_UNKNOWN_FIELD, XOS_PACK_ZERO_PRESENT, xos_count_rows,
                      xos_pack_row_max, xos_pack_rows, xos_unpack_rows)
from packedlayouts cimport xos_pack_choose
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

PACK_TOO_MANY_ROWS = XOS_PACK_TOO_MANY_ROWS  # PackedRowsError.code of rows past the reader's max_rows
PROBLEMS = {  # by XOS_PACK_* code
    XOS_PACK_TRUNCATED: "the bytes end inside it",
    XOS_PACK_LONG_VARINT: "a varint past 64 bits or longer than its value needs",
    XOS_PACK_UNKNOWN_FIELD: "its map marks a field past the row's {fields}",
    XOS_PACK_OUT_OF_RANGE: "its value does not fit {type}",
    XOS_PACK_ZERO_PRESENT: "marked present with the value 0 (a field left out is 0)",
    XOS_PACK_TOO_MANY_ROWS: "past the {max_rows} rows taken",
}


class PackedRowsError(ValueError):
    """Bytes that are not packed rows of a layout: ``code`` (an XOS_PACK_* number), the ``row`` and the ``field``
    (its name; None for the row's presence map) where the reading stopped."""

    def __init__(self, message: str, code: int, row: int, field: str | None):
        super().__init__(message)
        self.code, self.row, self.field = code, row, field


cdef class RowPacking:
    """The packing of ``dtype``'s records (every field a little-endian integer of 1, 2, 4 or 8 bytes, at most
    16): ``deltas`` names the int64 fields sent as the difference from the field's last non-zero value in the
    message (ids, sequence numbers, prices, times).  ``kernels`` names the codec it packs with: the one compiled
    for its layout (``engine/includes/packedlayouts.h``: the journal's commands and the wire's rows) or
    "generic"; ``specialize=False`` takes the generic one whatever the layout (the tests' and the benchmark's
    other side)."""

    def __cinit__(self):
        xos_pack_choose(&self.layout, 0)  # never a layout without its codec, even one __init__ did not make

    def __init__(self, dtype, deltas=(), specialize=True):
        dtype = np.dtype(dtype)
        names = dtype.names or ()
        if not 0 < len(names) <= XOS_PACK_MAX_FIELDS:
            raise ValueError(f"RowPacking: {len(names)} fields in {dtype}; 1 to {XOS_PACK_MAX_FIELDS} are packed")
        unknown = sorted(set(deltas) - set(names))
        if unknown:
            raise ValueError(f"RowPacking: deltas {unknown} are not fields of {dtype}")
        for k, name in enumerate(names):
            field, offset = dtype.fields[name][:2]
            if field.kind not in "iu" or field.itemsize not in (1, 2, 4, 8) or field.byteorder == ">" or field.shape:
                raise ValueError(f"RowPacking: field {name} is {field}, not a little-endian integer of 1, 2, 4 or 8 "
                                 f"bytes")
            if name in deltas and field != np.dtype("<i8"):
                raise ValueError(f"RowPacking: delta field {name} is {field}; deltas are int64 fields'")
            self.layout.fields[k].offset = offset
            self.layout.fields[k].size = field.itemsize
            self.layout.fields[k].is_signed = field.kind == "i"
            self.layout.fields[k].delta = name in deltas
        self.layout.n_fields = len(names)
        self.layout.row_size = dtype.itemsize
        self.layout.map_bytes = (len(names) + 7) // 8
        self.kernels = xos_pack_choose(&self.layout, specialize).decode()
        self.dtype, self.deltas = dtype, tuple(name for name in names if name in deltas)

    def pack(self, rows) -> bytes:
        """``rows`` (a 1-D array of ``dtype``) packed: one group of ``pack_groups``."""
        blob, _ = self.pack_groups(rows, max(1, len(rows)))
        return blob.tobytes()

    def pack_groups(self, rows, Py_ssize_t size) -> tuple:
        """``rows`` packed ``size`` at a time (the last group may be shorter), each group as a message of its own
        (its deltas from 0): (every group's bytes one after another as a uint8 array, each group's length as
        int64s).  A load generator's messages, made without a Python call each."""
        rows = np.ascontiguousarray(rows)
        if rows.dtype != self.dtype or rows.ndim != 1:
            raise TypeError(f"RowPacking: rows of {rows.dtype} (ndim {rows.ndim}), not a list of {self.dtype}")
        if size < 1:
            raise ValueError(f"RowPacking.pack_groups: groups of {size} rows")
        cdef Py_ssize_t n = len(rows), groups = (n + size - 1) // size, g, at = 0
        out = np.empty(n * <Py_ssize_t>xos_pack_row_max(&self.layout) + 1, np.uint8)
        lengths = np.empty(groups, np.int64)
        cdef const unsigned char[::1] src = rows.view(np.uint8) if n else b""
        cdef unsigned char[::1] dst = out
        cdef int64_t[::1] ends = lengths
        cdef uint64_t last[XOS_PACK_MAX_FIELDS]
        with nogil:
            for g in range(groups):
                memset(last, 0, sizeof(last))
                ends[g] = xos_pack_rows(&self.layout, &src[g * size * self.layout.row_size], min(size, n - g * size),
                                        &dst[at], last)
                at += ends[g]
        return out[:at], lengths

    def count(self, data) -> int:
        """How many rows ``unpack`` reads in ``data`` (bytes-like) when it reads them all; when it refuses them,
        never fewer than it read.  No row is decoded: a reader that only needs the count (the benchmark's load
        client in its timed loop) decodes later."""
        cdef const unsigned char[::1] src = data
        return xos_count_rows(&self.layout, &src[0], src.shape[0]) if src.shape[0] else 0

    def unpack(self, data, Py_ssize_t max_rows=-1) -> np.ndarray:
        """The rows packed in ``data`` (bytes-like); at most ``max_rows`` when it is not negative.  Raises
        ``PackedRowsError`` naming the row and field where bytes that are not packed rows stop making sense."""
        cdef const unsigned char[::1] src = data
        cdef Py_ssize_t room = xos_count_rows(&self.layout, &src[0], src.shape[0]) if src.shape[0] else 0
        if max_rows >= 0:
            room = min(room, max_rows)
        out = np.empty(room, self.dtype)
        cdef unsigned char[::1] dst = out.view(np.uint8) if room else np.empty(1, np.uint8)
        cdef int64_t n, bad_row = 0
        cdef int bad_field = -1
        with nogil:
            n = xos_unpack_rows(&self.layout, &src[0] if src.shape[0] else NULL, src.shape[0], &dst[0], room,
                                &bad_row, &bad_field)
        if n < 0:
            raise self.error(-n, bad_row, bad_field, max_rows)
        return out[:n]

    def error(self, int code, int64_t row, int field, Py_ssize_t max_rows) -> PackedRowsError:
        """The ``PackedRowsError`` for a decode's ``code`` at ``row`` and ``field`` (-1: the row's map)."""
        name = self.dtype.names[field] if field >= 0 else None
        problem = PROBLEMS[code].format(fields=self.layout.n_fields, max_rows=max_rows,
                                        type=self.dtype.fields[name][0] if name else "")
        where = f"row {row}, field {name}" if name else f"row {row}" + ("" if code == XOS_PACK_TOO_MANY_ROWS
                                                                          else "'s presence map")
        return PackedRowsError(f"packed rows: {where}: {problem}", code, row, name)

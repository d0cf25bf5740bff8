"""Packed rows (``engine/includes/packedrows.h``) in plain Python: the same rules, field by field, that
``tests/test_rowpack.py`` holds the C codec to (``engine.rowpack.RowPacking``)."""
from __future__ import annotations

import numpy as np

TRUNCATED, LONG_VARINT, UNKNOWN_FIELD, OUT_OF_RANGE, ZERO_PRESENT, TOO_MANY_ROWS = range(1, 7)
MASK = (1 << 64) - 1


class ReferenceError(ValueError):
    def __init__(self, code: int, row: int, field: int):
        super().__init__(f"code {code} at row {row}, field {field}")
        self.code, self.row, self.field = code, row, field


def zigzag(v: int) -> int:
    return (v << 1) & MASK if v >= 0 else ((-v << 1) - 1) & MASK


def unzigzag(u: int) -> int:
    return u >> 1 if not u & 1 else -(u >> 1) - 1


def wrap(v: int) -> int:
    """``v`` as an int64 (two's complement)."""
    v &= MASK
    return v - (1 << 64) if v >> 63 else v


class ReferencePacking:
    def __init__(self, dtype: np.dtype, deltas=()):
        self.dtype = np.dtype(dtype)
        self.names = self.dtype.names
        self.delta = [name in deltas for name in self.names]
        self.signed = [self.dtype.fields[name][0].kind == "i" for name in self.names]
        self.bits = [8 * self.dtype.fields[name][0].itemsize for name in self.names]
        self.map_bytes = (len(self.names) + 7) // 8

    def pack(self, rows: np.ndarray) -> bytes:
        out = bytearray()
        last = [0] * len(self.names)
        for row in rows.tolist():
            present, values = 0, []
            for k, v in enumerate(row):
                if v == 0:
                    continue
                present |= 1 << k
                if self.delta[k]:
                    u, last[k] = zigzag(wrap(v - last[k])), v
                else:
                    u = zigzag(v) if self.signed[k] else v
                values.append(u)
            out += present.to_bytes(self.map_bytes, "little")
            for u in values:
                while u >= 0x80:
                    out.append(u & 0x7F | 0x80)
                    u >>= 7
                out.append(u)
        return bytes(out)

    def fits(self, k: int, v: int) -> bool:
        bits = self.bits[k]
        return -(1 << bits - 1) <= v < 1 << bits - 1 if self.signed[k] else 0 <= v < 1 << bits

    def unpack(self, data: bytes, max_rows: int = -1) -> np.ndarray:
        rows, last, at = [], [0] * len(self.names), 0
        while at < len(data):
            n = len(rows)
            if len(data) - at < self.map_bytes:
                raise ReferenceError(TRUNCATED, n, -1)
            if n == max_rows:
                raise ReferenceError(TOO_MANY_ROWS, n, -1)
            present = int.from_bytes(data[at:at + self.map_bytes], "little")
            at += self.map_bytes
            if present >> len(self.names):
                raise ReferenceError(UNKNOWN_FIELD, n, -1)
            row = []
            for k in range(len(self.names)):
                if not present >> k & 1:
                    row.append(0)
                    continue
                u = shift = 0
                while True:
                    if at == len(data):
                        raise ReferenceError(TRUNCATED, n, k)
                    byte = data[at]
                    at += 1
                    u |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                    if shift == 70:
                        raise ReferenceError(LONG_VARINT, n, k)
                if u > MASK or (byte == 0 and shift > 7):
                    raise ReferenceError(LONG_VARINT, n, k)
                if self.delta[k]:
                    v = wrap(last[k] + unzigzag(u))
                else:
                    v = unzigzag(u) if self.signed[k] else u
                    if self.bits[k] == 64 and not self.signed[k]:
                        v &= MASK
                if v == 0:
                    raise ReferenceError(ZERO_PRESENT, n, k)
                if not self.fits(k, v):
                    raise ReferenceError(OUT_OF_RANGE, n, k)
                if self.delta[k]:
                    last[k] = v
                row.append(v)
            rows.append(tuple(row))
        return np.array(rows, self.dtype)

"""Packed rows (``engine/includes/packedrows.h`` through ``engine.rowpack.RowPacking``) against the same rules in
Python (``tests/rowpack_reference.py``): the same bytes for any rows of the gateway's three row dtypes and of the
journal's commands, every row back as it was, and for any bytes the same rows or the same refusal at the same row
and field.  Each layout through both of its codecs: the one compiled for it (``packedlayouts.h``) and the generic
one."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rowpack_reference import ReferenceError, ReferencePacking

from engine import journal
from engine.rowpack import PackedRowsError, RowPacking
from gateway import intake
from gateway import messages as m

ENGINE_PACKINGS = [m.COMMAND_PACKING, m.ACK_PACKING, m.REPORT_PACKING, journal.COMMAND_PACKING]
PACKINGS = ENGINE_PACKINGS + [RowPacking(p.dtype, p.deltas, specialize=False) for p in ENGINE_PACKINGS]
IDS = ["command", "ack", "report", "journal", "command-generic", "ack-generic", "report-generic", "journal-generic"]


def reference(packing: RowPacking) -> ReferencePacking:
    return ReferencePacking(packing.dtype, packing.deltas)


def field_values(dtype: np.dtype):
    """Values a field of ``dtype`` holds: 0 most often, small ones, values near the last ones (deltas), extremes."""
    bits = 8 * dtype.itemsize
    lo, hi = (-(1 << bits - 1), (1 << bits - 1) - 1) if dtype.kind == "i" else (0, (1 << bits) - 1)
    return st.one_of(st.just(0), st.integers(max(lo, -300), min(hi, 300)), st.integers(lo, hi),
                     st.sampled_from([lo, hi, lo + 1, hi - 1, 1 << bits - 2]))


def rows_of(packing: RowPacking):
    fields = [field_values(packing.dtype.fields[name][0]) for name in packing.dtype.names]
    return st.lists(st.tuples(*fields), max_size=40).map(lambda rows: np.array(rows, packing.dtype))


@pytest.mark.parametrize("packing", PACKINGS, ids=IDS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_c_packs_what_python_packs_and_both_read_every_row_back(packing, data):
    rows = data.draw(rows_of(packing))
    ref = reference(packing)
    packed = packing.pack(rows)
    assert packed == ref.pack(rows)
    assert packing.unpack(packed).tobytes() == rows.tobytes()
    assert ref.unpack(packed).tobytes() == rows.tobytes()
    assert packing.count(packed) == len(rows)  # counted without decoding, exactly
    blob, lengths = packing.pack_groups(rows, 7) if len(rows) else (np.zeros(0, np.uint8), [])
    ends = np.cumsum(lengths)
    assert [blob[e - n:e].tobytes() for e, n in zip(ends, lengths)] == \
        [packing.pack(rows[k:k + 7]) for k in range(0, len(rows), 7)]


def read(reader, data: bytes, max_rows: int):
    """``reader``'s rows of ``data`` as bytes, or its refusal as (code, row, field index)."""
    try:
        return reader(data, max_rows).tobytes()
    except PackedRowsError as exc:
        return exc.code, exc.row, -1 if exc.field is None else exc.__dict__["field_index"]
    except ReferenceError as exc:
        return exc.code, exc.row, exc.field


def c_reader(packing: RowPacking):
    def unpack(data: bytes, max_rows: int) -> np.ndarray:
        try:
            return packing.unpack(data, max_rows)
        except PackedRowsError as exc:
            exc.field_index = -1 if exc.field is None else packing.dtype.names.index(exc.field)
            raise
    return unpack


def mutated(rng: random.Random, packed: bytes) -> bytes:
    body = bytearray(packed)
    for _ in range(rng.choice([1, 1, 2, 3])):
        what = rng.randrange(4)
        if what == 0 and body:
            body[rng.randrange(len(body))] = rng.randrange(256)
        elif what == 1 and body:
            del body[rng.randrange(len(body)):]
        elif what == 2:
            body.insert(rng.randrange(len(body) + 1), rng.choice([0, 0x80, 0xFF, 1, 0x7F]))
        else:
            at = rng.randrange(len(body) + 1)
            body[at:at] = b"\xff" * rng.randrange(1, 12)
    return bytes(body)


@pytest.mark.parametrize("packing", PACKINGS, ids=IDS)
def test_c_and_python_read_any_bytes_the_same(packing):
    """Packed rows cut, flipped and grown at random, and random bytes: C and Python read the same rows or refuse at
    the same row and field for the same reason, with and without a row limit."""
    rng = random.Random(37)
    ref, c = reference(packing).unpack, c_reader(packing)
    codes = set()
    for i in range(4000):
        rows = np.zeros(rng.randrange(1, 6), packing.dtype)
        for name in packing.dtype.names:
            kind, bits = packing.dtype.fields[name][0].kind, 8 * packing.dtype.fields[name][0].itemsize
            lo, hi = (-(1 << bits - 1), (1 << bits - 1) - 1) if kind == "i" else (0, (1 << bits) - 1)
            rows[name] = [rng.choice([0, 0, 1, rng.randint(lo, hi), rng.randint(0, 70)]) for _ in range(len(rows))]
        data = mutated(rng, packing.pack(rows)) if i % 4 else rng.randbytes(rng.randrange(0, 24))
        max_rows = rng.choice([-1, -1, 0, 1, 3])
        got = read(c, data, max_rows)
        assert got == read(ref, data, max_rows), (data.hex(), max_rows)
        if type(got) is tuple:
            codes.add(got[0])
            assert packing.count(data) >= got[1]  # never fewer rows than were read before the refusal
        elif max_rows < 0:
            assert packing.count(data) * packing.dtype.itemsize == len(got)
    narrow = any(packing.dtype.fields[name][0].itemsize < 8 for name in packing.dtype.names)
    spare_bits = len(packing.dtype.names) % 8 != 0
    assert codes == {1, 2, 5, 6} | ({3} if spare_bits else set()) | ({4} if narrow else set())  # each one possible


@pytest.mark.parametrize("data, message", [
    (b"\x01", "row 0's presence map: the bytes end inside it"),
    (b"\x01\x00", "row 0, field kind: the bytes end inside it"),
    (b"\x01\x00\x81\x80", "row 0, field kind: the bytes end inside it"),
    (b"\x01\x00\x81\x00", "row 0, field kind: a varint past 64 bits or longer than its value needs"),
    (b"\x00\x01" + b"\xff" * 9 + b"\x02", "row 0, field rid: a varint past 64 bits"),
    (b"\x00\x20", "row 0's presence map: its map marks a field past the row's 13"),
    (b"\x40\x00\x80\x80\x80\x80\x10", "row 0, field market: its value does not fit uint32"),
    (b"\x01\x00\x01\x00\x01\x00\x00", "row 1, field rid: marked present with the value 0"),
    (b"\x01\x00\x01" * 3, "row 2: past the 2 rows taken"),
])
def test_a_refusal_names_the_row_the_field_and_what_is_wrong(data, message):
    with pytest.raises(PackedRowsError, match=message):
        m.COMMAND_PACKING.unpack(data, 2)


def test_a_delta_wraps_so_every_int64_has_one():
    rows = np.zeros(4, m.ACK_ROW_DTYPE)
    rows["rid"] = [-(1 << 63), (1 << 63) - 1, -(1 << 63), 1]
    packed = m.ACK_PACKING.pack(rows)
    assert (m.ACK_PACKING.unpack(packed) == rows).all() and packed == reference(m.ACK_PACKING).pack(rows)


def test_a_quoting_flows_rows_take_a_sixth_of_their_fixed_size():
    """Places of one market a tick apart and cancels by client id: ~8 bytes a row (54 fixed); their acks ~9 (56)."""
    rng = np.random.default_rng(5)
    rows = np.zeros(1000, m.COMMAND_ROW_DTYPE)
    cancel = np.arange(1000) % 2 == 1
    rows["kind"] = np.where(cancel, 2, 1)
    rows["flags"] = np.where(cancel, 2, 0)
    rows["market"] = np.where(cancel, 0, 7)
    rows["rid"] = 10_000_000 + np.arange(1000)
    rows["price"] = np.where(cancel, 0, 65_000_000 + rng.integers(-50, 50, 1000))
    rows["qty"] = np.where(cancel, 0, rng.integers(1, 100, 1000))
    rows["id"] = np.where(cancel, 5_000_000 + np.arange(1000) - 400, 5_000_000 + np.arange(1000))
    assert len(m.COMMAND_PACKING.pack(rows)) * 6 <= rows.nbytes
    acks = np.zeros(1000, m.ACK_ROW_DTYPE)
    acks["rid"], acks["order_id"], acks["client_id"] = rows["rid"], 80_000_000 + np.arange(1000), rows["id"]
    acks["cmd_seq"], acks["durable_seq"] = 123_456_789 + np.arange(1000), 123_457_800
    acks["ts"] = 1_764_600_000_000_000_000 + np.arange(1000) * 700
    assert len(m.ACK_PACKING.pack(acks)) * 5 <= acks.nbytes


@pytest.mark.parametrize("dtype, deltas, message", [
    (np.dtype([("a", "<f8")]), (), "field a is float64, not a little-endian integer"),
    (np.dtype([("a", ">i8")]), (), "field a is >i8"),
    (np.dtype([("a", "<i8")]), ("b",), r"deltas \['b'\] are not fields"),
    (np.dtype([("a", "<u8")]), ("a",), "delta field a is uint64; deltas are int64 fields'"),
    (np.dtype([(f"f{i}", "u1") for i in range(17)]), (), "17 fields"),
    (np.dtype(np.int64), (), "0 fields"),
])
def test_a_packing_takes_only_integer_records(dtype, deltas, message):
    with pytest.raises(ValueError, match=message):
        RowPacking(dtype, deltas)


def test_each_engine_packing_packs_with_the_codec_compiled_for_its_layout():
    assert [p.kernels for p in ENGINE_PACKINGS] == ["wire command", "wire ack", "wire report", "journal command"]
    assert {p.kernels for p in PACKINGS[len(ENGINE_PACKINGS):]} == {"generic"}


@pytest.mark.parametrize("change", ["a delta fewer", "a delta more", "a field narrower", "fields swapped",
                                    "a field fewer", "a field more", "padded"])
def test_a_layout_unlike_the_compiled_ones_in_any_way_packs_generically_and_alike(change):
    """A dtype like the ack row's but for one thing takes the generic codec, and packs what the reference packs."""
    names, deltas = list(m.ACK_ROW_DTYPE.names), set(m.ACK_PACKING.deltas)
    formats = ["<i8"] * len(names)
    if change == "a delta fewer":
        deltas.discard("ts")
    elif change == "a delta more":
        deltas.add("count")
    elif change == "a field narrower":
        formats[5] = "<i4"
    elif change == "fields swapped":
        names[0], names[5] = names[5], names[0]  # a delta field where count was, and count first
    elif change == "a field fewer":
        names, formats = names[:-1], formats[:-1]
        deltas.discard("ts")
    elif change == "a field more":
        names, formats = names + ["extra"], formats + ["<i8"]
    fields = {"names": names, "formats": formats}
    if change == "padded":
        fields["itemsize"] = m.ACK_ROW_DTYPE.itemsize + 8
    packing = RowPacking(np.dtype(fields), tuple(deltas))
    assert packing.kernels == "generic"
    rows = np.zeros(50, packing.dtype)
    for k, name in enumerate(packing.dtype.names):
        rows[name] = (np.arange(50) * (k + 1) + k * 1000) % (1 << 31)
    packed = packing.pack(rows)
    assert packed == reference(packing).pack(rows) and packing.unpack(packed).tobytes() == rows.tobytes()


def test_the_formats_and_the_row_dtypes_are_those_the_c_paths_read():
    assert intake.ROW_FORMATS == m.ROW_FORMATS
    assert [p.dtype for p in PACKINGS[:3]] == [m.COMMAND_ROW_DTYPE, m.ACK_ROW_DTYPE, m.REPORT_ROW_DTYPE]
    with pytest.raises(TypeError, match="not a list of"):
        m.ACK_PACKING.pack(np.zeros(2, m.COMMAND_ROW_DTYPE))
    with pytest.raises(ValueError, match="row format 4"):
        m.pack_rows(np.zeros(2, m.ACK_ROW_DTYPE), 4)
    with pytest.raises(ValueError, match="row format 1"):
        m.unpack_rows(b"", m.ACK_ROW_DTYPE, 1)


@pytest.mark.parametrize("row_format", m.ROW_FORMATS)
def test_unpack_rows_takes_at_most_max_rows_in_either_format(row_format):
    rows = np.zeros(5, m.COMMAND_ROW_DTYPE)
    rows["kind"] = 1
    data = m.pack_rows(rows, row_format)
    assert len(m.unpack_rows(data, m.COMMAND_ROW_DTYPE, row_format, 5)) == 5
    with pytest.raises(m.TooManyRows, match="more than 4 rows"):
        m.unpack_rows(data, m.COMMAND_ROW_DTYPE, row_format, 4)

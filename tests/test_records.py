"""The record layouts and result codes agree between Python, the C headers and the compiled engine."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import codes, records
from engine.codes import MESSAGES, ResultCode
from engine.records import (
    COMMAND_DTYPE,
    EVENT_DTYPE,
    LAYOUT_VERSION,
    Cmd,
    pack_market_assets,
    pack_market_params,
    pack_symbol,
    unpack_market_assets,
    unpack_market_params,
    unpack_symbol,
)

INCLUDES = Path(__file__).resolve().parent.parent / "engine" / "includes"
RECORDS_H = (INCLUDES / "records.h").read_text()
CODES_H = (INCLUDES / "codes.h").read_text()

C_TYPES = {
    "uint8_t": np.dtype("u1"),
    "uint16_t": np.dtype("<u2"),
    "uint32_t": np.dtype("<u4"),
    "uint64_t": np.dtype("<u8"),
    "int8_t": np.dtype("i1"),
    "int16_t": np.dtype("<i2"),
    "int32_t": np.dtype("<i4"),
    "int64_t": np.dtype("<i8"),
}


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def _header_struct(name: str) -> list[tuple[str, np.dtype]]:
    body = re.search(r"typedef\s+struct\s+%s\s*\{(.*?)\}" % name, _strip_comments(RECORDS_H), re.S)
    assert body, f"struct {name} not found in records.h"
    fields = re.findall(r"(\w+)\s+(\w+)\s*;", body.group(1))
    return [(field, C_TYPES[ctype]) for ctype, field in fields]


def _header_enum_values(text: str, prefix: str) -> dict[str, int]:
    return {
        name: int(value)
        for name, value in re.findall(r"\b%s(\w+)\s*=\s*(-?\d+)" % re.escape(prefix), _strip_comments(text))
    }


def _dtype_layout(dtype: np.dtype) -> dict[str, int]:
    return {name: dtype.fields[name][1] for name in dtype.names}


# --- the compiled structs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_layout():
    from engine.matcher import record_layout

    return record_layout()


@pytest.mark.parametrize("record, dtype", [("command", COMMAND_DTYPE), ("event", EVENT_DTYPE)])
def test_numpy_dtype_matches_compiled_struct(compiled_layout, record, dtype):
    layout = compiled_layout[record]
    assert layout["size"] == dtype.itemsize
    assert dict(layout["fields"]) == _dtype_layout(dtype)


def test_compiled_layout_version(compiled_layout):
    assert compiled_layout["version"] == LAYOUT_VERSION


# --- the header text ------------------------------------------------------------------------------


@pytest.mark.parametrize("struct, dtype", [("xos_command", COMMAND_DTYPE), ("xos_event", EVENT_DTYPE)])
def test_header_struct_matches_numpy_dtype(struct, dtype):
    fields = _header_struct(struct)
    assert [name for name, _ in fields] == list(dtype.names)
    for name, ctype in fields:
        assert dtype.fields[name][0] == ctype, name
    # natural C alignment gives the numpy offsets with no padding anywhere
    offset = 0
    for name, ctype in fields:
        assert offset % ctype.itemsize == 0, name
        assert dtype.fields[name][1] == offset, name
        offset += ctype.itemsize
    assert offset == dtype.itemsize


def test_header_layout_version():
    match = re.search(r"#define\s+XOS_LAYOUT_VERSION\s+(\d+)", RECORDS_H)
    assert match and int(match.group(1)) == LAYOUT_VERSION


def test_dtype_sizes():
    assert COMMAND_DTYPE.itemsize == 64
    assert EVENT_DTYPE.itemsize == 128
    assert not COMMAND_DTYPE.hasobject and not EVENT_DTYPE.hasobject


@pytest.mark.parametrize(
    "prefix, enum_cls",
    [
        ("XOS_CMD_", records.Cmd),
        ("XOS_EV_", records.Ev),
        ("XOS_SIDE_", records.Side),
        ("XOS_TIF_", records.Tif),
        ("XOS_ORD_", records.OrdType),
        ("XOS_STP_", records.Stp),
        ("XOS_MARKET_", records.MarketKind),
        ("XOS_CF_", records.CmdFlag),
        ("XOS_EF_", records.EvFlag),
        ("XOS_CANCEL_", records.CancelReason),
    ],
)
def test_header_enums_match_python(prefix, enum_cls):
    header = _header_enum_values(RECORDS_H, prefix)
    python = {m.name: int(m.value) for m in enum_cls}
    assert header == python


def test_codes_header_matches_result_codes():
    header = _header_enum_values(CODES_H, "XOS_")
    python = {m.name: int(m.value) for m in ResultCode}
    assert header == python
    # every enumerator in the header was parsed (nothing hidden behind an odd spelling)
    enum_body = re.search(r"enum\s*\{(.*?)\}", _strip_comments(CODES_H), re.S).group(1)
    assert len([e for e in enum_body.split(",") if e.strip()]) == len(python)


# --- result codes ---------------------------------------------------------------------------------


def test_every_code_has_a_message_and_a_band():
    assert set(MESSAGES) == set(ResultCode)
    for code in ResultCode:
        assert isinstance(MESSAGES[code], str) and MESSAGES[code].strip()
        assert codes.message(int(code)) == MESSAGES[code]
        band = codes.band(int(code))
        if code == ResultCode.OK:
            assert band == "ok"
        else:
            assert 100 <= int(code) < 600
            assert band == codes.BANDS[int(code) // 100]
        text = codes.describe(int(code))
        assert code.name in text and str(int(code)) in text and MESSAGES[code] in text


def test_code_numbers_fit_the_event_field():
    for code in ResultCode:
        assert 0 <= int(code) <= np.iinfo(EVENT_DTYPE["code"]).max


def test_codes_are_unique():
    assert len({int(c) for c in ResultCode}) == len(ResultCode)
    assert len(set(MESSAGES.values())) == len(MESSAGES)


def test_engine_error_carries_the_code():
    err = codes.EngineError(int(ResultCode.INSUFFICIENT_BALANCE))
    assert err.code is ResultCode.INSUFFICIENT_BALANCE
    assert "INSUFFICIENT_BALANCE" in str(err)


# --- pack / unpack helpers ------------------------------------------------------------------------

SYMBOLS = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=16)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(SYMBOLS)
def test_symbol_round_trip(symbol):
    lo, hi = pack_symbol(symbol)
    assert -(1 << 63) <= lo < (1 << 63) and -(1 << 63) <= hi < (1 << 63)
    assert unpack_symbol(lo, hi) == symbol


@pytest.mark.parametrize("bad", ["", "X" * 17, "A\0B", "é"])
def test_symbol_rejects_bad_input(bad):
    with pytest.raises((ValueError, UnicodeEncodeError)):
        pack_symbol(bad)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_market_assets_round_trip(base, quote):
    packed = pack_market_assets(base, quote)
    assert -(1 << 63) <= packed < (1 << 63)
    assert unpack_market_assets(packed) == (base, quote)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.integers(-(2**15), 2**15 - 1), st.integers(-(2**15), 2**15 - 1), st.integers(0, 2**32 - 1))
def test_market_params_round_trip(maker, taker, band):
    packed = pack_market_params(maker, taker, band)
    assert -(1 << 63) <= packed < (1 << 63)
    assert unpack_market_params(packed) == (maker, taker, band)
    # the packed value survives the int64 command field
    rec = records.command(Cmd.ADD_MARKET, aux=packed)
    assert unpack_market_params(int(rec["aux"])) == (maker, taker, band)


def test_command_helper_sets_fields():
    rec = records.command(Cmd.PLACE, side=1, account=7, price=100, qty=5, id=9, aux=123)
    assert rec.dtype == COMMAND_DTYPE and rec.shape == ()
    assert (int(rec["kind"]), int(rec["side"]), int(rec["account"])) == (1, 1, 7)
    assert (int(rec["price"]), int(rec["qty"]), int(rec["id"]), int(rec["aux"])) == (100, 5, 9, 123)
    assert int(rec["ts"]) == 0 and int(rec["flags"]) == 0


@pytest.mark.parametrize("field, value", [("qty", 1 << 63), ("account", -(1 << 63) - 1), ("venue", -1),
                                          ("market", 1 << 32), ("side", 256), ("price", 2.5), ("id", True),
                                          ("qty", np.uint64(1 << 63))])
def test_command_fields_out_of_range_are_refused_by_name(field, value):
    """A value its field cannot hold is refused naming the field and its range (numpy raises an OverflowError with
    no name, or wraps a numpy integer), and the record keeps what it had."""
    rec = records.command(Cmd.PLACE, qty=5)
    with pytest.raises(ValueError, match=rf"^{field} must be an integer in -?\d+ \.\. \d+, not "):
        records.fill_command(rec, **{field: value})
    assert int(rec["qty"]) == 5 and int(rec[field]) == (5 if field == "qty" else 0)
    records.fill_command(rec, **{field: np.iinfo(COMMAND_DTYPE[field]).max})  # the ends fit
    records.fill_command(rec, **{field: np.iinfo(COMMAND_DTYPE[field]).min})


def test_the_clis_field_ranges_are_the_command_fields():
    """`xos venue`'s typer bounds restate COMMAND_DTYPE's ranges (the CLI does not import numpy to start)."""
    from engine import cli

    for field, (low, high) in cli.FIELD_RANGES.items():
        assert (low, high) == (np.iinfo(COMMAND_DTYPE[field]).min, np.iinfo(COMMAND_DTYPE[field]).max)
    for arg, field in ((cli.VenueArg, "venue"), (cli.MarketArg, "market")):
        assert (arg.min, arg.max) == (np.iinfo(COMMAND_DTYPE[field]).min, np.iinfo(COMMAND_DTYPE[field]).max)
    assert cli.AccountArg.max == np.iinfo(COMMAND_DTYPE["account"]).max


# --- the engines decode the packed fields the same way -------------------------------------------


def test_engine_decodes_packed_admin_fields(engine_cls):
    e = engine_cls(max_orders=64, max_accounts=16, max_markets=8, max_assets=8)
    ev = e.add_asset(1, "BTC", 8)
    assert ev["kind"][0] == records.Ev.ACCEPTED and ev["market"][0] == 1
    ev = e.add_asset(2, "ABCDEFGHIJKLMNOP", 18)
    assert ev["kind"][0] == records.Ev.ACCEPTED
    ev = e.add_market(3, 1, 2, tick_size=5, lot_size=10, min_size=30, maker_bps=-7, taker_bps=11, band_bps=250)
    assert ev["kind"][0] == records.Ev.ACCEPTED and ev["market"][0] == 3
    assert [tuple(a) for a in e.assets()] == [(1, "BTC", 8), (2, "ABCDEFGHIJKLMNOP", 18)]
    (m,) = e.markets()
    assert tuple(m) == (3, 0, 0, 1, 2, 5, 10, 30, -7, 11, 250, False)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_select_and_join_records_are_numpys_own_indexing_and_concatenate(data):
    """``select_records`` / ``join_records`` (through plain views) give what numpy's structured indexing and
    concatenate give: masks, indices (repeated, out of order), empty picks, strided inputs, several dtypes."""
    dtype = data.draw(st.sampled_from([EVENT_DTYPE, COMMAND_DTYPE]))
    n = data.draw(st.integers(0, 40))
    raw = np.frombuffer(data.draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize)), np.uint8)
    rows = raw.view(dtype).copy()
    if data.draw(st.booleans()):
        rows = rows[::2]  # a strided view
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows))), bool)
    at = np.array(data.draw(st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=10 if len(rows) else 0)),
                  np.int64)
    for which in (mask, at):
        got = records.select_records(rows, which)
        assert got.dtype == dtype and got.tobytes() == rows[which].tobytes()
    parts = [rows, rows[:3], records.select_records(rows, mask)]
    joined = records.join_records(parts)
    assert joined.dtype == dtype and joined.tobytes() == np.concatenate(parts).tobytes()

"""The OrderRows check and conversion in C (gateway/intake.pyx rows_to_pending) against a plain
Python reading of the row rules (docs/ARCHITECTURE.md, OrderRows) on random rows."""
from __future__ import annotations

import numpy as np
import pytest

from engine.records import CmdFlag
from gateway import messages as m
from gateway.intake import rows_to_pending
from gateway.server import PENDING_DTYPE, ROW_RULES


def rule_broken(r) -> int:
    kind = int(r["kind"])
    allowed = {1: CmdFlag.POST_ONLY, 2: CmdFlag.BY_CLIENT_ID, 3: CmdFlag.BY_CLIENT_ID}.get(kind, 0)
    rules = [not 1 <= kind <= 4, r["side"] > 1, r["tif"] > 2, r["ord_type"] > 1, r["stp"] > 3,
             int(r["flags"]) & ~allowed, kind in (2, 3) and r["id"] == 0, kind != 1 and r["venue"] != 0]
    return next((i + 1 for i, broken in enumerate(rules) if broken), 0)


@pytest.mark.parametrize("one_session", [False, True], ids=["sessions", "one_session"])
def test_rows_to_pending_keeps_the_rules_and_fills_every_command_field(one_session):
    """Messages of several sessions (a session and account per message), or of one (one of each for all)."""
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 6, 400)
    rows = np.zeros(int(counts.sum()), m.COMMAND_ROW_DTYPE)
    good = rng.random(len(rows)) < 0.97  # most rows keep every rule, so most messages pass
    rows["kind"] = np.where(good, rng.integers(1, 5, len(rows)), rng.integers(0, 7, len(rows)))
    for name, top in (("side", 1), ("tif", 2), ("ord_type", 1), ("stp", 3)):
        rows[name] = np.where(good, rng.integers(0, top + 1, len(rows)), rng.integers(0, top + 3, len(rows)))
    rows["flags"] = np.where(good, 0, rng.integers(0, 4, len(rows)))
    rows["venue"] = np.where(rows["kind"] == 1, rng.integers(0, 3, len(rows)), np.where(good, 0, 1))
    rows["id"] = np.where(good, rng.integers(1, 1000, len(rows)), rng.integers(0, 2, len(rows)))
    for name in ("market", "rid", "price", "qty", "expire_at"):
        rows[name] = rng.integers(0, 1 << 31, len(rows))
    rows["market"][rng.random(len(rows)) < 0.3] = 0
    sids, accounts = rng.integers(0, 9, len(counts)), rng.integers(1, 1 << 40, len(counts))
    if one_session:
        sids, accounts = np.full(len(counts), 5), np.full(len(counts), 1 << 35)
    heads = np.stack([rng.integers(1, 1 << 40, len(counts)), counts], axis=1)  # (rid, row count) per message
    pending = np.empty(len(rows), PENDING_DTYPE)
    refused = np.empty((len(counts), 2), np.int64)
    n = rows_to_pending(rows.tobytes(), sids[:1] if one_session else sids, accounts[:1] if one_session else accounts,
                        heads, pending, refused)

    expected, at = [], 0
    for i, count in enumerate(counts.tolist()):
        message = rows[at:at + count]
        broken = [(j, rule_broken(r)) for j, r in enumerate(message) if rule_broken(r)]
        assert tuple(refused[i]) == (broken[0] if broken else (-1, 0))
        if broken:
            assert ROW_RULES[broken[0][1]](message[broken[0][0]])  # each rule has its description
        else:
            expected += [(sids[i], accounts[i], r) for r in message]
        at += count
    assert 0 < n == len(expected) < len(rows)
    for p, (sid, account, r) in zip(pending[:n], expected):
        cmd = p["cmd"]
        all_markets = r["kind"] == 4 and r["market"] == 0
        assert (p["sid"], p["rid"], cmd["account"], cmd["ts"]) == (sid, r["rid"], account, 0)
        assert int(cmd["flags"]) == (CmdFlag.ALL_MARKETS if all_markets else r["flags"])
        assert cmd["aux"] == r["expire_at"]
        for name in ("kind", "side", "tif", "ord_type", "stp", "venue", "market", "price", "qty", "id"):
            assert cmd[name] == r[name], name


def test_rows_to_pending_refuses_arguments_that_disagree():
    rows = np.zeros(3, m.COMMAND_ROW_DTYPE)
    rows["kind"] = 1
    heads = np.array([[1, 2], [2, 1]], np.int64)
    pending, refused = np.empty(3, PENDING_DTYPE), np.empty((2, 2), np.int64)
    ids = np.array([1, 2], np.int64)
    assert rows_to_pending(rows.tobytes(), ids, ids, heads, pending, refused) == 3
    for sids, accounts, hs, data in ((ids[:1], ids, heads, rows.tobytes()),                  # one session, or one each
                                     (np.arange(3), np.arange(3), heads, rows.tobytes()),
                                     (ids, ids, np.array([[1, 3], [2, 1]], np.int64), rows.tobytes()),  # 4 rows, 3 sent
                                     (ids, ids, heads, rows.tobytes()[:-1])):
        with pytest.raises(ValueError, match="disagree"):
            rows_to_pending(data, sids, accounts, hs, pending, refused)


def test_record_arrays_for_c_are_checked_once_per_dtype_and_refused_with_the_reason():
    """The structured arrays C fills (gateway/routing.pyx, intake.pyx, mdcore.pyx, through engine/arrays.pyx):
    the dtype is checked against the C struct field by field the first time each dtype object is seen, then by
    identity, and the shape, the contiguity and the writability every time."""
    rows = np.zeros(1, m.COMMAND_ROW_DTYPE)
    rows["kind"] = 1
    heads = np.array([[1, 1]], np.int64)
    ids = np.array([7], np.int64)

    def convert(out):
        return rows_to_pending(rows.tobytes(), ids, ids, heads, out, np.empty((1, 2), np.int64))

    assert convert(np.empty(1, PENDING_DTYPE)) == 1
    equal = np.dtype(PENDING_DTYPE.descr)  # an equal dtype, another object: checked, then used
    assert equal is not PENDING_DTYPE and convert(np.empty(1, equal)) == 1
    assert convert(np.empty(1, PENDING_DTYPE)) == 1  # and back
    read_only = np.empty(1, PENDING_DTYPE)
    read_only.flags.writeable = False
    for bad, error, reason in (
            (np.empty(1, [("sid", "<i8"), ("rid", "<i4")]), ValueError, "dtype mismatch"),
            (np.empty((1, 1), PENDING_DTYPE), ValueError, "pending commands: expected a 1-d C-contiguous array"),
            (np.empty(4, PENDING_DTYPE)[::2], ValueError, "1-d C-contiguous"),
            (read_only, ValueError, "pending commands: the array is read-only"),
            (bytearray(PENDING_DTYPE.itemsize), TypeError, "pending commands: expected a numpy array, not bytearray")):
        with pytest.raises(error, match=reason):
            convert(bad)
    assert convert(np.empty(1, PENDING_DTYPE)) == 1  # a refused array changes nothing

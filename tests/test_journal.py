"""The command journal: CRC32C, framing, group commit, rotation, reopen, and torn or corrupt tails."""
from __future__ import annotations

import os
import re
import shutil
import time
import warnings

import numpy as np
import pytest

from engine import journal as J
from engine.records import COMMAND_DTYPE

HDR = J.FILE_HEADER_SIZE
FRAME = J.FRAME_HEADER_SIZE
REC = J.RECORD_SIZE


def cmds(first_seq: int, n: int) -> np.ndarray:
    """n distinct commands; id = their sequence, so any mix-up shows."""
    a = np.zeros(n, dtype=COMMAND_DTYPE)
    seqs = np.arange(first_seq, first_seq + n, dtype=np.int64)
    a["kind"] = 1 + seqs % 3
    a["side"] = seqs % 2
    a["market"] = 7
    a["ts"] = seqs * 1000
    a["account"] = 100 + seqs % 5
    a["price"] = 50_000 + seqs
    a["qty"] = seqs * 3
    a["id"] = seqs
    a["aux"] = -seqs
    return a


def write_journal(directory, sizes, *, first_seq=1, segment_bytes=64 << 20, fsync="off", commit_each=True):
    """Append batches of the given sizes; returns (all commands, frame boundaries per segment path)."""
    seq = first_seq
    parts = []
    with J.JournalWriter(directory, segment_bytes=segment_bytes, fsync=fsync, first_seq=first_seq) as w:
        for n in sizes:
            batch = cmds(seq, n)
            assert w.append_array(batch, seq) == seq + n - 1
            parts.append(batch)
            seq += n
            if commit_each:
                assert w.commit() == seq - 1
    return np.concatenate(parts) if parts else np.empty(0, COMMAND_DTYPE)


def frame_bytes(first_seq: int, n: int) -> int:
    """The bytes of the frame of ``cmds(first_seq, n)``: packed, or as they are when that is no smaller."""
    return FRAME + min(len(J.COMMAND_PACKING.pack(cmds(first_seq, n))), n * REC)


def frame_at(data: bytes, off: int) -> tuple[int, int, int]:
    """(end, first_seq, count) of the frame whose header is at ``off``."""
    count = int.from_bytes(data[off + 4:off + 8], "little")
    seq = int.from_bytes(data[off + 8:off + 16], "little", signed=True)
    return off + FRAME + int.from_bytes(data[off + 16:off + 20], "little"), seq, count


def frames_of(path):
    """[(offset, end, first_seq, count)] of the frames in a (valid) segment."""
    data = open(path, "rb").read()
    out, off = [], HDR
    while off < len(data):
        out.append((off, *frame_at(data, off)))
        off = out[-1][1]
    return out


@pytest.fixture(autouse=True, params=[4 << 20, 97, 300], ids=["chunk4M", "chunk97", "chunk300"])
def read_chunk(request, monkeypatch):
    """Readers read segments through a buffer of this size: tiny ones make frames straddle reads."""
    monkeypatch.setattr(J, "READ_CHUNK", request.param)
    return request.param


def read_ids(directory):
    r = J.JournalReader(directory)
    first, arr = r.read_all()
    return r, first, arr


# ---------------------------------------------------------------- CRC32C


CRC_VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),                 # RFC 3720 B.4
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("impl", ["crc32c", "crc32c_sw", "crc32c_hw"])
@pytest.mark.parametrize("data,expected", CRC_VECTORS)
def test_crc32c_vectors(impl, data, expected):
    if impl == "crc32c_hw" and not J.CRC32C_HW:
        pytest.skip("no SSE4.2")
    assert getattr(J, impl)(data) == expected


def test_crc32c_hardware_and_software_agree_and_chain():
    rng = np.random.default_rng(5)
    blob = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    for _ in range(400):
        start = int(rng.integers(0, 64))           # every alignment
        n = int(rng.integers(0, 2000))
        piece = blob[start:start + n]
        sw = J.crc32c_sw(piece)
        assert J.crc32c(piece) == sw
        if J.CRC32C_HW:
            assert J.crc32c_hw(piece) == sw
        cut = int(rng.integers(0, n + 1))
        assert J.crc32c(piece[cut:], J.crc32c(piece[:cut])) == sw
        assert J.crc32c_sw(piece[cut:], J.crc32c_sw(piece[:cut])) == sw


# ---------------------------------------------------------------- writer and reader


def test_round_trip_across_rotations(tmp_path):
    rng = np.random.default_rng(1)
    sizes = [int(x) for x in rng.integers(1, 40, 60)] + [1, 1, 300]
    expected = write_journal(tmp_path, sizes, segment_bytes=4096)
    segs = J.list_segments(tmp_path)
    assert len(segs) > 5
    # segments are named by their first sequence and never exceed the limit unless one commit is bigger
    seq = 1
    for name_seq, path in segs:
        assert name_seq == seq
        fr = frames_of(path)
        seq += sum(f[3] for f in fr)
        assert os.path.getsize(path) <= 4096 or len(fr) == 1
    r, first, arr = read_ids(tmp_path)
    assert r.report == []
    assert first == 1 and r.last_seq == sum(sizes)
    assert np.array_equal(arr, expected)
    # batches come back as appended
    batches = list(J.JournalReader(tmp_path).read_from())
    assert [len(b) for _, b in batches] == sizes
    assert [s for s, _ in batches] == list(np.cumsum([1] + sizes[:-1]))
    assert np.array_equal(np.concatenate([b for _, b in batches]), expected)


def test_read_from_cuts_into_the_frame(tmp_path):
    expected = write_journal(tmp_path, [5, 5, 5, 5, 5], segment_bytes=500)
    for start in (1, 3, 6, 11, 24, 25):
        got = list(J.JournalReader(tmp_path).read_from(start))
        assert got[0][0] == start
        assert np.array_equal(np.concatenate([b for _, b in got]), expected[start - 1:])
        first, arr = J.JournalReader(tmp_path).read_all(start)
        assert first == start and np.array_equal(arr, expected[start - 1:])
    assert list(J.JournalReader(tmp_path).read_from(26)) == []
    assert len(J.JournalReader(tmp_path).read_all(26)[1]) == 0


def test_group_commit_one_fsync_per_commit(tmp_path):
    with J.JournalWriter(tmp_path, fsync="always") as w:
        for i in range(10):
            w.append_array(cmds(w.last_seq + 1, 3))
        assert w.durable_seq == 0 and w.last_seq == 30
        assert w.pending_bytes == sum(frame_bytes(1 + 3 * i, 3) for i in range(10))
        assert w.commit() == 30
        assert w.fsyncs == 1 and w.commits == 1 and w.frames == 10
        assert w.commit() == 30 and w.fsyncs == 1          # nothing new: no write, no fsync
        w.append_array(cmds(31, 1))
        assert w.commit() == 31 and w.fsyncs == 2
        assert w.fsync_ns > 0 and w.last_fsync_ns > 0
        assert w.bytes_written == sum(frame_bytes(1 + 3 * i, 3) for i in range(10)) + frame_bytes(31, 1)
        assert w.packed_frames == w.frames == 11
    with J.JournalWriter(tmp_path / "off", fsync="off") as w:
        w.append_array(cmds(1, 3))
        assert w.commit() == 3 and w.fsyncs == 0


def test_sequence_continuity_enforced(tmp_path):
    with J.JournalWriter(tmp_path, first_seq=10) as w:
        assert w.last_seq == 9 and w.durable_seq == 9
        with pytest.raises(ValueError, match="sequence gap"):
            w.append_array(cmds(1, 2), 1)
        w.append_array(cmds(10, 2), 10)
        for bad in (11, 13, 0, -5):
            with pytest.raises(ValueError, match="sequence gap"):
                w.append_array(cmds(bad, 1), bad)
        assert w.last_seq == 11
        w.append_array(cmds(12, 1))                        # default: the next sequence
        w.append_array(np.empty(0, COMMAND_DTYPE), 13)     # empty batch: no frame
        assert w.commit() == 12 and w.frames == 2
        with pytest.raises(TypeError):
            w.append_array(np.zeros(3, dtype=np.int64), 13)
    r, first, arr = read_ids(tmp_path)
    assert first == 10 and list(arr["id"]) == [10, 11, 12] and r.report == []
    assert J.list_segments(tmp_path)[0][0] == 10


def test_large_append_is_split_into_frames(tmp_path):
    n = J.MAX_FRAME_RECORDS + 3
    with J.JournalWriter(tmp_path, fsync="off") as w:
        w.append_array(cmds(1, n))
        assert w.frames == 2
        assert w.commit() == n
    first, arr = J.JournalReader(tmp_path).read_all()
    assert first == 1 and len(arr) == n and arr["id"][-1] == n and arr["id"][J.MAX_FRAME_RECORDS] == J.MAX_FRAME_RECORDS + 1


def test_reopen_and_continue(tmp_path):
    expected = write_journal(tmp_path, [3, 4, 5], segment_bytes=600)
    with J.JournalWriter(tmp_path, segment_bytes=600) as w:
        assert w.recovery == []
        assert w.last_seq == w.durable_seq == 12
        with pytest.raises(ValueError):
            w.append_array(cmds(12, 1), 12)
        w.append_array(cmds(13, 6), 13)
        assert w.commit() == 18
    with J.JournalWriter(tmp_path, segment_bytes=600) as w:
        assert w.last_seq == 18
        w.append_array(cmds(19, 2))
        w.commit()
    r, first, arr = read_ids(tmp_path)
    assert r.report == []
    assert np.array_equal(arr, np.concatenate([expected, cmds(13, 6), cmds(19, 2)]))


def test_uncommitted_appends_are_committed_by_close_only(tmp_path):
    w = J.JournalWriter(tmp_path, fsync="off")
    w.append_array(cmds(1, 4))
    assert len(J.JournalReader(tmp_path).read_all()[1]) == 0   # buffered, not written
    w.close()
    assert len(J.JournalReader(tmp_path).read_all()[1]) == 4
    with pytest.raises(ValueError, match="closed"):
        w.append_array(cmds(5, 1))
    w.close()  # idempotent


@pytest.mark.parametrize("fsync", ["always", "off"])
def test_durable_after_close(tmp_path, fsync):
    expected = write_journal(tmp_path, [1, 64, 7, 200], fsync=fsync, segment_bytes=8192, commit_each=False)
    r, first, arr = read_ids(tmp_path)
    assert r.report == [] and np.array_equal(arr, expected)


def test_one_writer_per_directory(tmp_path):
    with J.JournalWriter(tmp_path):
        with pytest.raises(RuntimeError, match="another writer"):
            J.JournalWriter(tmp_path)
    J.JournalWriter(tmp_path).close()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        J.JournalWriter(tmp_path, fsync="sometimes")
    with pytest.raises(ValueError):
        J.JournalWriter(tmp_path, segment_bytes=0)


def test_empty_and_missing_directories(tmp_path):
    r = J.JournalReader(tmp_path / "nothing")
    assert list(r.read_from()) == [] and r.report == []
    first, arr = r.read_all()
    assert len(arr) == 0
    with J.JournalWriter(tmp_path / "new") as w:
        assert w.last_seq == 0
    r, first, arr = read_ids(tmp_path / "new")
    assert len(arr) == 0 and r.report == [] and first == 1


# ---------------------------------------------------------------- damage


LAST_SEGMENT_SIZES = [2, 1, 3, 1, 1]   # the frames of the journal's last segment


def small_journal(directory):
    """Two full segments then a last one holding LAST_SEGMENT_SIZES."""
    sizes = [8] * 6 + LAST_SEGMENT_SIZES
    seg_bytes = HDR + 3 * max(frame_bytes(1 + 8 * i, 8) for i in range(6))   # 3 frames of 8 a segment (not 4)
    expected = write_journal(directory, sizes, segment_bytes=seg_bytes)
    segs = J.list_segments(directory)
    assert len(segs) == 3
    fr = frames_of(segs[-1][1])
    assert [f[3] for f in fr] == LAST_SEGMENT_SIZES
    return expected, segs, fr


def expected_prefix(frames, seg_first, cut):
    """Sequences kept when the segment is damaged at byte ``cut``: frames wholly before it."""
    if cut < HDR:
        return seg_first - 1
    kept = [f for f in frames if f[1] <= cut]
    return kept[-1][2] + kept[-1][3] - 1 if kept else seg_first - 1


def test_truncation_at_every_byte_of_the_last_segment(tmp_path):
    base = tmp_path / "base"
    expected, segs, fr = small_journal(base)
    seg_first, seg_path = segs[-1]
    blob = open(seg_path, "rb").read()
    boundaries = {HDR} | {f[1] for f in fr}
    work = tmp_path / "work"
    for cut in range(len(blob)):
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(base, work)
        path = work / os.path.basename(seg_path)
        with open(path, "r+b") as f:
            f.truncate(cut)
        keep = expected_prefix(fr, seg_first, cut)
        r, first, arr = read_ids(work)
        assert first == 1 and np.array_equal(arr, expected[:keep]), cut
        assert r.last_seq == keep
        if cut in boundaries:
            assert r.report == [], cut
        else:
            assert len(r.report) == 1, cut
            d = r.report[0]
            assert d.where == "tail" and d.segment == str(path) and d.next_seq == keep + 1
            assert d.offset + d.bytes == cut
        # the batch iterator agrees
        got = [b for _, b in J.JournalReader(work).read_from()]
        assert sum(len(b) for b in got) == keep
        # a writer reopening the journal drops the torn tail and continues at keep + 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with J.JournalWriter(work, segment_bytes=1 << 20) as w:
                assert w.last_seq == keep == w.durable_seq, cut
                assert (len(w.recovery) == 1) == (cut not in boundaries)
                w.append_array(cmds(keep + 1, 2))
                w.commit()
        assert len(caught) == len(w.recovery)
        r, first, arr = read_ids(work)
        assert r.report == [], cut
        assert np.array_equal(arr, np.concatenate([expected[:keep], cmds(keep + 1, 2)])), cut


def test_byte_flip_at_every_byte_of_the_last_segment(tmp_path):
    expected, segs, fr = small_journal(tmp_path)
    seg_first, seg_path = segs[-1]
    blob = bytearray(open(seg_path, "rb").read())
    for pos in range(len(blob)):
        damaged = bytearray(blob)
        damaged[pos] ^= 0xFF
        with open(seg_path, "wb") as f:
            f.write(damaged)
        # the frame holding pos is the damaged one: everything before it survives
        frame_start = max([HDR] + [f[0] for f in fr if f[0] <= pos]) if pos >= HDR else 0
        keep = expected_prefix(fr, seg_first, frame_start)
        r, first, arr = read_ids(tmp_path)
        assert np.array_equal(arr, expected[:keep]), pos
        assert len(r.report) == 1, pos
        d = r.report[0]
        assert d.where == "tail" and d.offset == frame_start and d.offset + d.bytes == len(blob), pos
        assert d.next_seq == keep + 1
    with open(seg_path, "wb") as f:
        f.write(blob)
    r, first, arr = read_ids(tmp_path)
    assert r.report == [] and np.array_equal(arr, expected)


def test_corruption_in_an_older_segment_is_reported_as_middle(tmp_path):
    expected, segs, fr = small_journal(tmp_path)
    first_seq, path = segs[1]
    frames = frames_of(path)
    off = frames[1][0] + FRAME + 10                      # inside the second frame's payload
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x01]))
    r, first, arr = read_ids(tmp_path)
    keep = frames[0][2] + frames[0][3] - 1
    assert np.array_equal(arr, expected[:keep])
    assert [d.where for d in r.report] == ["middle", "middle"]
    assert r.report[0].segment == path and r.report[0].offset == frames[1][0]
    assert r.report[0].reason == "frame CRC mismatch"
    assert r.report[1].segment == segs[2][1] and "earlier segment" in r.report[1].reason


def test_missing_segment_is_a_gap(tmp_path):
    expected, segs, fr = small_journal(tmp_path)
    os.unlink(segs[1][1])
    r, first, arr = read_ids(tmp_path)
    assert np.array_equal(arr, expected[:segs[1][0] - 1])
    assert r.report[0].segment == segs[2][1] and "segment starts at sequence" in r.report[0].reason


def test_reader_survives_garbage(tmp_path):
    rng = np.random.default_rng(9)
    expected, segs, fr = small_journal(tmp_path)
    seg_first, seg_path = segs[-1]
    blob = open(seg_path, "rb").read()
    junk_frame = bytearray(blob[fr[0][0]:fr[0][1]])
    for trial in range(300):
        kind = trial % 4
        if kind == 0:      # random bytes after a valid prefix
            data = blob[:fr[1][1]] + rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
        elif kind == 1:    # a valid frame replayed (sequence gap)
            data = blob + bytes(junk_frame)
        elif kind == 2:    # zero-filled tail (e.g. a file system that extended the file before a crash)
            data = blob + bytes(int(rng.integers(1, 200)))
        else:              # several random flips anywhere in the segment
            data = bytearray(blob)
            for p in rng.integers(0, len(blob), int(rng.integers(1, 5))):
                data[p] = int(rng.integers(0, 256))
            data = bytes(data)
        with open(seg_path, "wb") as f:
            f.write(data)
        r, first, arr = read_ids(tmp_path)
        assert len(arr) <= len(expected)
        assert np.array_equal(arr, expected[:len(arr)])
        if kind == 1:
            assert r.report[0].reason == "frame sequence gap" and len(arr) == len(expected)


@pytest.mark.parametrize("at, value, message", [
    (6, 99, "layout 99"),                                  # the records' layout version
    (4, 1, f"journal version 1 / layout .*, this build writes {J.JOURNAL_VERSION}"),   # version 1: fixed frames only
])
def test_a_journal_of_another_layout_or_version_is_refused_and_left_as_it_is(tmp_path, at, value, message):
    write_journal(tmp_path, [2])
    path = J.list_segments(tmp_path)[0][1]
    data = bytearray(open(path, "rb").read())
    data[at:at + 2] = value.to_bytes(2, "little")
    data[12:16] = bytes(4)
    data[12:16] = J.crc32c(bytes(data[:32])).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(ValueError, match=message):
        J.JournalWriter(tmp_path)
    r, first, arr = read_ids(tmp_path)
    assert len(arr) == 0 and re.search(message, r.report[0].reason)
    assert open(path, "rb").read() == data   # neither read nor truncated


# ---------------------------------------------------------------- packed frames


def command_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """n commands whose every field takes 0, small values, values near the last (deltas) or its extremes."""
    a = np.zeros(n, COMMAND_DTYPE)
    for name in COMMAND_DTYPE.names:
        info = np.iinfo(COMMAND_DTYPE.fields[name][0])
        choice = rng.integers(0, 5, n)
        small = rng.integers(max(info.min, -300), min(info.max, 300) + 1, n)
        wide = rng.integers(info.min, info.max, n, dtype=COMMAND_DTYPE.fields[name][0], endpoint=True)
        ends = rng.choice(np.array([info.min, info.max, info.min + 1, info.max - 1], dtype=object), n)
        near = 1_796_000_000_000_000_000 % (info.max + 1) + rng.integers(0, 5, n)
        a[name] = np.where(choice == 0, 0, np.where(choice == 1, small, np.where(choice == 2, wide, np.where(
            choice == 3, ends.astype(COMMAND_DTYPE.fields[name][0]), near))))
    return a


@pytest.mark.parametrize("fsync", ["off", "always"])
def test_any_commands_come_back_exactly(tmp_path, fsync):
    """Every field over its whole range, batches of 1 to 3,000, through rotations, a reopen and both frame kinds;
    read whole, frame by frame and from inside a frame."""
    rng = np.random.default_rng(38)
    parts, seq = [], 1
    for life in range(2):
        with J.JournalWriter(tmp_path, segment_bytes=256 << 10, fsync=fsync) as w:
            for _ in range(40):
                n = int(rng.choice([1, 2, 17, 300, 3000]))
                batch = command_values(rng, n)
                if rng.random() < 0.3:   # the matcher's batches: one ts, few accounts, near prices, rising ids
                    batch["ts"] = batch["ts"][0]
                    batch["account"] = rng.integers(1000, 1003, n)
                    batch["price"] = 100_000 + rng.integers(-50, 50, n)
                    batch["id"] = 7_000 + seq + np.arange(n)
                parts.append(batch)
                w.append_array(batch, seq)
                seq += n
                w.commit()
            kinds = (w.packed_frames, w.frames - w.packed_frames)
        assert all(kinds), kinds   # both kinds were written
    expected = np.concatenate(parts)
    r, first, arr = read_ids(tmp_path)
    assert r.report == [] and first == 1 and np.array_equal(arr, expected)
    assert [len(b) for _, b in J.JournalReader(tmp_path).read_from()] == [len(p) for p in parts]
    for start in (1, 2, 318, len(expected) - 1500, len(expected)):
        got = np.concatenate([b for _, b in J.JournalReader(tmp_path).read_from(start)])
        assert np.array_equal(got, expected[start - 1:]), start
        assert np.array_equal(J.JournalReader(tmp_path).read_all(start)[1], expected[start - 1:]), start


def test_a_batch_that_packs_no_smaller_goes_as_it_is(tmp_path):
    rng, wide = np.random.default_rng(9), np.zeros(50, COMMAND_DTYPE)
    for name in COMMAND_DTYPE.names:   # every field's top bit set, far from the last value: ~10 bytes an int64
        kind = COMMAND_DTYPE.fields[name][0]
        info = np.iinfo(kind)
        top = rng.integers(info.max // 2 + 1, info.max, 50, dtype=kind, endpoint=True)
        wide[name] = top * rng.choice([-1, 1], 50) if info.min else top
    assert len(J.COMMAND_PACKING.pack(wide)) >= wide.nbytes
    with J.JournalWriter(tmp_path) as w:
        w.append_array(cmds(1, 5))
        w.append_array(wide, 6)
        w.commit()
        assert (w.frames, w.packed_frames) == (2, 1)
        assert w.bytes_written == frame_bytes(1, 5) + FRAME + wide.nbytes
    path = J.list_segments(tmp_path)[0][1]
    data = open(path, "rb").read()
    magics = [data[off:off + 4] for off, *_ in frames_of_data(path)]
    assert magics == [J.PACKED_MAGIC.to_bytes(4, "little"), J.FRAME_MAGIC.to_bytes(4, "little")]
    r, first, arr = read_ids(tmp_path)
    assert r.report == [] and np.array_equal(arr, np.concatenate([cmds(1, 5), wide]))


def rewrite_frame_header(path, frame: int, **fields) -> None:
    """Set header fields of a segment's ``frame``-th frame (count, payload_len) and its CRC again: a frame that is
    intact to the CRC but says something else."""
    data = bytearray(open(path, "rb").read())
    off, end, _, _ = frames_of(path)[frame]
    at = {"count": 4, "payload_len": 16}
    for name, value in fields.items():
        data[off + at[name]:off + at[name] + 4] = value.to_bytes(4, "little")
    payload_len = int.from_bytes(data[off + 16:off + 20], "little")
    crc = J.crc32c(bytes(data[off + FRAME:off + FRAME + payload_len]), J.crc32c(bytes(data[off:off + 20])))
    data[off + 20:off + 24] = crc.to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("count, payload_len, reason", [
    (3, 5, "bad frame length"),        # under 2 bytes a command (a presence map)
    (1, 64, "bad frame length"),       # a packed command of 64 bytes or more: it would have gone as it is
])
def test_a_packed_frame_of_impossible_length_is_damage(tmp_path, count, payload_len, reason):
    write_journal(tmp_path, [4, 3])
    path = J.list_segments(tmp_path)[0][1]
    first_end = frames_of(path)[0][1]
    rewrite_frame_header(path, 1, count=count, payload_len=payload_len)
    r, first, arr = read_ids(tmp_path)
    assert np.array_equal(arr, cmds(1, 4))
    assert [(d.reason, d.offset, d.next_seq) for d in r.report] == [(reason, first_end, 5)]


def test_a_packed_frame_that_does_not_read_back_raises(tmp_path):
    """Its CRC holds but its rows are not its count (a writer of another packing): a clear error, never wrong
    commands; what comes before it reads."""
    write_journal(tmp_path, [4, 3, 2])
    path = J.list_segments(tmp_path)[0][1]
    rewrite_frame_header(path, 2, count=3)   # the last frame: 2 commands' rows under a count of 3
    with pytest.raises(ValueError, match=r"the packed frame at sequence 8 does not read back as its count"):
        J.JournalReader(tmp_path).read_all()
    frames = J.JournalReader(tmp_path).read_from(5)
    first, batch = next(frames)
    assert first == 5 and np.array_equal(batch, cmds(5, 3))
    with pytest.raises(ValueError, match=r"the packed frame at sequence 8 does not read back as its count"):
        next(frames)


def test_the_matchers_batches_pack_to_a_fifth(tmp_path):
    """A quoting flow as the matcher journals it (one ts a batch, a few accounts, prices near the book, ids
    rising): its frames take under a fifth of its fixed size."""
    rng = np.random.default_rng(5)
    batches = []
    for b in range(20):
        batch = np.zeros(4096, COMMAND_DTYPE)
        batch["kind"] = rng.choice([1, 2], 4096)
        batch["side"] = rng.integers(0, 2, 4096)
        batch["market"] = 1
        batch["ts"] = 1_796_000_000_000_000_000 + b * 9_000_000
        batch["account"] = 5001 + rng.integers(0, 4, 4096)
        batch["price"] = 100_000 - rng.integers(0, 500, 4096)
        batch["qty"] = rng.integers(1, 10, 4096)
        batch["id"] = 1 + b * 4096 + np.arange(4096)
        batches.append(batch)
    with J.JournalWriter(tmp_path) as w:
        for batch in batches:
            w.append_array(batch)
            w.commit()
        assert w.packed_frames == 20 and w.bytes_written < 20 * 4096 * REC / 5
    assert np.array_equal(read_ids(tmp_path)[2], np.concatenate(batches))


def test_replay_rebuilds_engine_state(tmp_path):
    """Commands journaled in batches and replayed give the same engine state."""
    from bench.orders import CONFIGS, generate
    from engine.matcher import Engine
    from engine.state import state_hash

    wl = generate(CONFIGS["A"].replace(commands=3000, orders=200, accounts=100))
    live = Engine(**wl.engine_kwargs)
    with J.JournalWriter(tmp_path, segment_bytes=32 << 10, fsync="off") as w:
        for part in (wl.setup, wl.prefill, *np.array_split(wl.stream, 17)):
            live.process(part)
            w.append_array(part)
            w.commit()
    replayed = Engine(**wl.engine_kwargs)
    for _, batch in J.JournalReader(tmp_path).read_from():
        replayed.process(batch)
    assert state_hash(replayed) == state_hash(live)


# ---------------------------------------------------------------- fsync="always": whole blocks, spares, zero fill


BLOCK = 4096


def wait_for_spare(w, timeout=10.0):
    """Until the writer's spare thread has a zero-filled segment ready."""
    deadline = time.monotonic() + timeout
    while not w.spare_ready_bytes:
        assert w.spare != "off" and not w.spare.startswith("failed"), w.spare
        assert time.monotonic() < deadline, "no spare segment within the timeout"
        time.sleep(0.002)


def data_end(path):
    """Where a segment's frames end (its zero-filled rest follows)."""
    fr = frames_of_data(path)
    return fr[-1][1] if fr else HDR


def frames_of_data(path):
    """frames_of for a segment that may end in zeros."""
    data = open(path, "rb").read()
    out, off = [], HDR
    magics = {J.FRAME_MAGIC.to_bytes(4, "little"), J.PACKED_MAGIC.to_bytes(4, "little")}
    while off + FRAME <= len(data) and data[off:off + 4] in magics:
        out.append((off, *frame_at(data, off)))
        off = out[-1][1]
    return out


def always_journal(directory, sizes, segment_bytes, spare_every=1):
    """Write ``sizes`` with fsync="always", letting the spare thread catch up every ``spare_every``
    commits (so that segments begin in spares); returns the commands and the writer's stats."""
    seq, parts = 1, []
    with J.JournalWriter(directory, segment_bytes=segment_bytes, fsync="always") as w:
        for i, n in enumerate(sizes):
            if i % spare_every == 0:
                wait_for_spare(w)
            parts.append(cmds(seq, n))
            w.append_array(parts[-1], seq)
            seq += n
            assert w.commit() == seq - 1
        stats = w.stats()
    assert w.spare == "stopped" and not os.path.exists(os.path.join(directory, J.SPARE_NAME))
    return np.concatenate(parts), stats


def test_always_writes_whole_blocks_into_zero_filled_spares(tmp_path):
    # the first commit passes the first block (the header's), so that the first segment moves into a spare too
    sizes = [400] + [int(x) for x in np.random.default_rng(3).integers(1, 120, 80)]
    expected, stats = always_journal(tmp_path, sizes, segment_bytes=24 << 10)
    assert stats["direct_io"] == J.direct_io_works(str(tmp_path))
    # every segment begins in a spare (each is ready in time here): even the first, a header alone until
    # the first commit moves into the spare under its name
    segs = J.list_segments(tmp_path)
    assert stats["preallocated_segments"] == len(segs) == stats["segments_created"] - 1 > 3
    for name_seq, path in segs:
        size = os.path.getsize(path)
        assert size % BLOCK == 0 and size >= data_end(path)   # a whole spare: data, then zeros
        assert not any(open(path, "rb").read()[data_end(path):])
        assert frames_of_data(path)[0][2] == name_seq
    assert stats["bytes_written"] == sum(frame_bytes(int(seq), n) for seq, n in zip(np.cumsum([1] + sizes[:-1]), sizes))
    assert stats["packed_frames"] == stats["frames"] == len(sizes)
    r, first, arr = read_ids(tmp_path)
    assert r.report == [] and first == 1 and np.array_equal(arr, expected)


def test_always_continues_inside_the_last_block(tmp_path):
    """A reopened writer rewrites the last block from where its data ends, through several lives,
    and segments without room are left for a spare as soon as one is ready."""
    rng = np.random.default_rng(4)
    seq, parts = 1, []
    for life in range(4):
        with J.JournalWriter(tmp_path, segment_bytes=64 << 10, fsync="always") as w:
            assert w.last_seq == w.durable_seq == seq - 1 and w.recovery == []
            for n in rng.integers(1, 40, 12):
                parts.append(cmds(seq, int(n)))
                w.append_array(parts[-1], seq)
                seq += int(n)
                w.commit()
        r, first, arr = read_ids(tmp_path)
        assert r.report == [] and np.array_equal(arr, np.concatenate(parts)), life
    assert [b.shape[0] for _, b in J.JournalReader(tmp_path).read_from()] == [len(p) for p in parts]


def test_zero_fill_followed_by_data_is_a_torn_tail(tmp_path):
    expected, _ = always_journal(tmp_path, [500, 900, 300], segment_bytes=64 << 10)   # past the first block: a spare
    _, path = J.list_segments(tmp_path)[-1]
    end, size = data_end(path), os.path.getsize(path)
    assert size > end + 2 * BLOCK   # the spare's zero-filled rest
    with open(path, "r+b") as f:     # a block of a later write that reached the disk out of order
        f.seek(end + BLOCK + 10)
        f.write(b"\x07")
    r, first, arr = read_ids(tmp_path)
    assert np.array_equal(arr, expected)
    assert [(d.reason, d.where, d.offset, d.bytes) for d in r.report] == \
        [("data after the zero-filled end", "tail", end, size - end)]
    with pytest.warns(RuntimeWarning, match="data after the zero-filled end"):
        w = J.JournalWriter(tmp_path, fsync="always")
    with w:
        assert w.last_seq == len(expected) and len(w.recovery) == 1
        w.append_array(cmds(len(expected) + 1, 4))
        w.commit()
    kept = [p for p in os.listdir(tmp_path) if ".dropped-" in p]
    assert len(kept) == 1 and os.path.getsize(tmp_path / kept[0]) == BLOCK + 11   # up to the byte, not the zeros
    r, first, arr = read_ids(tmp_path)
    assert r.report == [] and np.array_equal(arr, np.concatenate([expected, cmds(len(expected) + 1, 4)]))


def test_always_cut_anywhere_in_the_last_block(tmp_path):
    """A crash leaves the last segment cut anywhere (or its last block partly rewritten): the reader
    keeps the frames wholly before the cut, and a writer continues after them."""
    base = tmp_path / "base"
    expected, _ = always_journal(base, [3, 1, 4, 1, 5], segment_bytes=64 << 10)
    _, seg_path = J.list_segments(base)[-1]
    fr = frames_of_data(seg_path)
    first_of_segment = fr[0][2]
    work = tmp_path / "work"
    for cut in sorted({0, HDR, HDR + 5, fr[-1][1], fr[-1][1] + 1, BLOCK, 2 * BLOCK} | {f[0] + 30 for f in fr}):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        path = work / os.path.basename(seg_path)
        with open(path, "r+b") as f:
            f.truncate(cut)
        kept = [f for f in fr if f[1] <= cut]
        keep = kept[-1][2] + kept[-1][3] - 1 if kept else first_of_segment - 1
        r, first, arr = read_ids(work)
        assert np.array_equal(arr, expected[:keep]), cut
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with J.JournalWriter(work, fsync="always") as w:
                assert w.last_seq == keep, cut
                w.append_array(cmds(keep + 1, 2))
                w.commit()
        r, first, arr = read_ids(work)
        assert r.report == [] and np.array_equal(arr, np.concatenate([expected[:keep], cmds(keep + 1, 2)])), cut


def test_spare_lifecycle(tmp_path):
    (tmp_path / J.SPARE_NAME).write_bytes(b"left by a killed writer")
    with J.JournalWriter(tmp_path / "off", fsync="off") as w:
        assert w.spare == "off" and not w.direct
    with J.JournalWriter(tmp_path, fsync="always") as w:
        wait_for_spare(w)
        assert w.spare == "ready" and w.spare_ready_bytes == 1 << 20   # the first is small, then doubling
        assert os.path.getsize(tmp_path / J.SPARE_NAME) == 1 << 20
        assert not any(open(tmp_path / J.SPARE_NAME, "rb").read())
    assert w.spare == "stopped" and not (tmp_path / J.SPARE_NAME).exists()
    assert sorted(os.listdir(tmp_path)) == [J.segment_name(1), "off"]


def test_always_without_direct_io(tmp_path, monkeypatch):
    """A file system without O_DIRECT (tmpfs before Linux 6.6) is written through the page cache, in
    spares all the same."""
    monkeypatch.setattr(J, "direct_io_works", lambda directory: False)
    expected, stats = always_journal(tmp_path, [35, 350, 35, 350, 750], segment_bytes=8 << 10)
    assert not stats["direct_io"] and stats["preallocated_segments"] >= 3
    r, first, arr = read_ids(tmp_path)
    assert r.report == [] and np.array_equal(arr, expected)


def test_an_unclosed_writer_is_freed_and_stops_its_spare_thread(tmp_path):
    """The spare thread holds only the spare, so a writer dropped without close() is still freed: its
    thread ends and the directory's lock is released."""
    import gc
    import threading

    w = J.JournalWriter(tmp_path, fsync="always")
    wait_for_spare(w)
    assert "journal-spare" in [t.name for t in threading.enumerate()]
    del w
    gc.collect()
    deadline = time.monotonic() + 5
    while "journal-spare" in [t.name for t in threading.enumerate()]:
        assert time.monotonic() < deadline, "the spare thread outlived its writer"
        time.sleep(0.01)
    with J.JournalWriter(tmp_path, fsync="always") as w:
        assert w.last_seq == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_always_random_commits_reopens_and_spares_read_back_exactly(tmp_path, seed):
    """Random commit sizes into small segments, the writer closed and reopened at random, spares waited for
    or not (so segments begin in spares, in new files, or in a spare that replaces a header-only one): the
    reader always returns every committed command once, in order, with nothing reported."""
    rng = np.random.default_rng(seed)
    seq, parts = 1, []
    for life in range(5):
        with J.JournalWriter(tmp_path, segment_bytes=int(rng.choice([600, 5000, 20000])), fsync="always") as w:
            assert w.last_seq == seq - 1 and w.recovery == []
            for _ in range(int(rng.integers(1, 25))):
                if rng.random() < 0.3:
                    wait_for_spare(w)
                for _ in range(int(rng.integers(1, 3))):  # one commit, one or more appends
                    n = int(rng.choice([1, 2, 7, 40, 130]))
                    parts.append(cmds(seq, n))
                    w.append_array(parts[-1], seq)
                    seq += n
                assert w.commit() == seq - 1
        r, first, arr = read_ids(tmp_path)
        assert r.report == [] and first == 1 and np.array_equal(arr, np.concatenate(parts)), (seed, life)
    assert not os.path.exists(tmp_path / J.SPARE_NAME)

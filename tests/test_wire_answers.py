"""The wire benchmark's load client keeps its answers raw and times them after the run
(``bench.wire.answer_times``): each timed order's planned send, its answer's arrival and its ack's intake stamp,
from the ack rows as they came, the rejects' rids and the time of each read."""
from __future__ import annotations

import numpy as np

from bench.wire import ACK_ROW, answer_times
from gateway import messages as m


def ack_bytes(rids: list[int], ts: list[int]) -> bytes:
    rows = np.zeros(len(rids), m.ACK_ROW_DTYPE)
    rows["rid"], rows["ts"] = rids, ts
    return rows.tobytes()


def test_a_lone_ack_packs_as_a_row():
    assert ACK_ROW.size == m.ACK_ROW_DTYPE.itemsize
    row = np.frombuffer(ACK_ROW.pack(7, 70, 700, 9, 11, 3, 123), m.ACK_ROW_DTYPE)[0]
    assert (row["rid"], row["order_id"], row["client_id"], row["cmd_seq"], row["durable_seq"], row["count"],
            row["ts"]) == (7, 70, 700, 9, 11, 3, 123)


def test_answers_are_timed_by_their_read_and_the_untimed_left_out():
    """Orders 1-6 planned at 0, 10, ..., 50 ns (1 in the warm-up, before record_from = 5), order 7 untimed (-1):
    a first read brings acks 1-3 and reject 4 at t = 100, a second read acks 6, 7 and reject 5 at t = 200, a
    read with nothing new is not noted."""
    planned = np.array([0, 0, 10, 20, 30, 40, 50, -1], np.int64)  # by rid; rid 0 unused
    log = bytearray(ack_bytes([1, 2, 3], [1001, 1002, 1003]))
    rejects = [4]
    reads = [(len(log), len(rejects), 100)]
    log += ack_bytes([6, 7], [1006, 1007])
    rejects.append(5)
    reads.append((len(log), len(rejects), 200))
    sent, at, intake = answer_times(planned, log, rejects, reads, record_from=5)
    # acks first (2, 3, 6; 1 in the warm-up, 7 untimed), then the rejects (4, 5)
    assert sent.tolist() == [10, 20, 50, 30, 40]
    assert at.tolist() == [100, 100, 200, 100, 200]
    assert intake.tolist() == [1002, 1003, 1006]


def test_no_answers():
    sent, at, intake = answer_times(np.zeros(4, np.int64), bytearray(), [], [], record_from=0)
    assert len(sent) == len(at) == len(intake) == 0

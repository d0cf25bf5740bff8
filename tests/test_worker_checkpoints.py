"""A worker's checkpoints (``engine.process.WorkerStage``): when they come, what goes with them (the views), and
how they are written: by a forked child while the worker goes on (``ForkedWrite``), the ring released only once
the child is done, written in the worker instead when the child fails, and never landing after the worker died."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from engine import process
from engine.config import Config, EngineSection, WorkersSection
from engine.process import Checkpoint, ForkedWrite, WorkerStage, publish_views

PARENT = os.getpid()


class SlowCore:
    """A core whose pickling takes ``pickle_s`` (config B's margin book takes ~0.15 s), and fails in a forked
    child when asked to."""

    def __init__(self, cursor: int, pickle_s: float = 0.0, fail_in_child: bool = False):
        self.cursor, self.pickle_s, self.fail_in_child = cursor, pickle_s, fail_in_child

    def __getstate__(self):
        if self.fail_in_child and os.getpid() != PARENT:
            raise OSError(28, "No space left on device")
        time.sleep(self.pickle_s)
        return self.__dict__


class SlowCoreWithViews(SlowCore):
    def snapshot(self):
        raise OverflowError("valuations could exceed int64")


class RecordedConsumer:
    """A ring consumer's cursor and the releases made to it."""

    def __init__(self):
        self.cursor, self.released = 0, []

    def release_to(self, cursor: int) -> None:
        self.cursor = cursor
        self.released.append(cursor)


def bare_stage(tmp_path, core, **attrs) -> WorkerStage:
    """A worker stage without its ring and sockets: its checkpoints into ``tmp_path/run``, its releases recorded
    in ``stage.consumer.released``."""
    (tmp_path / "run").mkdir(exist_ok=True)
    stage = WorkerStage.__new__(WorkerStage)
    fields = dict(cfg=Config(engine=EngineSection(data_dir=str(tmp_path)), workers=WorkersSection(checkpoint_s=1.0)),
                  role="margin", core=core, checkpoint=Checkpoint(tmp_path / "run" / "margin.ckpt"), writing=None,
                  taken_seq=core.cursor, pending=7, checkpoints=0, checkpoint_total_s=0.0, checkpoint_cost_s=0.0,
                  checkpoint_fork_s=0.0, last_checkpoint=0.0, last_views=0.0, views_cursor=-1, view_errors=0,
                  consumer=RecordedConsumer())
    stage.__dict__.update(fields, **attrs)
    return stage


def test_a_costly_checkpoint_comes_no_sooner_than_its_share_of_the_time_allows(monkeypatch):
    """A worker checkpoints every ``checkpoint_s`` while events flow and when its ring goes idle, but a
    checkpoint that took 0.4 s (config B's margin book) waits 2 s: checkpoints take at most a fifth of the
    worker.  A quarter ring of events not yet durable cannot wait, and a durable core commits every batch."""
    now = 1000.0
    monkeypatch.setattr(time, "monotonic", lambda: now)
    cfg = Config(workers=WorkersSection(checkpoint_s=1.0))
    stage = SimpleNamespace(cfg=cfg, durable=False, pending=10, checkpoint_every=100, last_checkpoint=now,
                            checkpoint_cost_s=0.005, has_views=False, views_cursor=-1, core=SimpleNamespace(cursor=9))

    def after(seconds: float, idle: bool) -> bool:
        stage.last_checkpoint = now - seconds
        return WorkerStage.checkpoint_due(stage, idle)

    assert process.CHECKPOINT_SHARE == 0.2
    assert [after(s, False) for s in (0.5, 0.99, 1.0)] == [False, False, True]  # a cheap one: every checkpoint_s
    assert [after(s, True) for s in (0.01, 0.03, 0.5)] == [False, True, True]  # and soon after the ring goes idle
    stage.checkpoint_cost_s = 0.4
    assert [after(s, False) for s in (1.0, 1.99, 2.01)] == [False, False, True]
    assert [after(s, True) for s in (0.5, 1.99, 2.01)] == [False, False, True]
    stage.pending = 0
    assert not after(5.0, True)  # nothing to make durable
    stage.has_views = True  # and views older than the core: a quarter ring's checkpoint left them
    assert after(5.0, True) and not after(0.5, True)
    stage.views_cursor = 9
    assert not after(5.0, True)
    stage.pending = 100
    assert after(0.1, False)  # a quarter ring
    stage.pending, stage.durable = 1, True
    assert after(0.0, False)


def test_a_checkpoint_for_the_rings_room_publishes_views_only_every_checkpoint_s(tmp_path, monkeypatch):
    """Every checkpoint saves the core and releases the ring; the views go with it only once they are
    ``checkpoint_s`` old (a quarter ring of events can come much sooner), and the count and time of checkpoints
    are kept for the heartbeat.  Views left behind the core are published once the ring is idle (the test
    above)."""
    now = 1000.0
    monkeypatch.setattr(time, "monotonic", lambda: now)
    published = []

    class Core(SlowCore):
        def snapshot(self):
            published.append(now)
            return np.zeros(1)

    saved = []
    stage = bare_stage(tmp_path, Core(40), last_views=now - 0.5, views_cursor=3,
                       checkpoint=SimpleNamespace(save=saved.append))
    stage.consumer.cursor = 10
    assert not WorkerStage.views_due(stage)
    WorkerStage.make_durable(stage, views=WorkerStage.views_due(stage))
    assert (len(saved), published, stage.consumer.released, stage.pending, stage.checkpoints) == (1, [], [40], 0, 1)
    assert stage.views_cursor == 3  # the views are behind the core: an idle ring publishes them (above)
    now += 0.5
    assert WorkerStage.views_due(stage)
    WorkerStage.make_durable(stage, views=True)
    assert len(saved) == 2 and published == [now] and stage.last_views == now and stage.checkpoints == 2
    assert stage.views_cursor == 40


def test_a_view_that_cannot_be_made_is_removed_not_left_older_than_the_cursor(tmp_path, capsys):
    """A margin view whose values overflow is not published and its last file goes: the others and the cursor
    file still are, so a reader never takes an old view for one as new as the cursor."""
    from engine.workers.margin import BALANCES_VIEW_DTYPE

    class Core:
        cursor = 7

        def snapshot(self):
            raise OverflowError("valuations could exceed int64")

        def balances_view(self):
            return np.zeros(2, BALANCES_VIEW_DTYPE)

    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "margin-view.npy", np.zeros(1))  # the last checkpoint's
    stage = bare_stage(tmp_path, Core())
    WorkerStage.count_view_errors(stage, publish_views(stage.core, run, "margin"))
    assert not (run / "margin-view.npy").exists() and len(np.load(run / "margin-balances.npy")) == 2
    assert json.loads((run / "margin-views.json").read_text()) == {"cursor": 7} and stage.view_errors == 1
    assert "margin: view not published: valuations could exceed int64 (1 times)" in capsys.readouterr().err
    for _ in range(2):
        WorkerStage.count_view_errors(stage, publish_views(stage.core, run, "margin"))
    assert stage.view_errors == 3 and capsys.readouterr().err.count("not published") == 1  # the 1st, 2nd, 4th ...


def test_a_forked_checkpoint_holds_the_core_at_the_fork_and_releases_the_ring_when_written(tmp_path, capsys):
    """The worker goes on while the child pickles (0.5 s here): what it applies after the fork is not in the
    checkpoint, and the ring is released to the fork's cursor only once the child is done.  A second
    checkpoint waits for the first.  A view the child could not make is counted and reported by the worker."""
    core = SlowCoreWithViews(40, pickle_s=0.5)
    stage = bare_stage(tmp_path, core)
    started = time.monotonic()
    WorkerStage.start_checkpoint(stage, views=True)
    assert time.monotonic() - started < 0.25 and stage.checkpoint_fork_s < 0.25
    assert stage.pending == 0 and stage.views_cursor == 40 and stage.writing is not None
    writing = stage.writing
    core.cursor = stage.taken_seq = 55  # the worker goes on
    WorkerStage.start_checkpoint(stage, views=False)  # one at a time
    assert stage.writing is writing
    WorkerStage.finish_checkpoint(stage)
    assert stage.writing is writing and stage.consumer.released == [] and stage.checkpoints == 0
    WorkerStage.finish_checkpoint(stage, block=True)
    assert stage.writing is None and stage.consumer.released == [40] and stage.checkpoints == 1
    assert stage.checkpoint_cost_s >= 0.5 and stage.view_errors == 1
    assert "margin: view not published: valuations could exceed int64 (1 times)" in capsys.readouterr().err
    assert pickle.loads((tmp_path / "run" / "margin.ckpt").read_bytes()).cursor == 40
    assert json.loads((tmp_path / "run" / "margin-views.json").read_text()) == {"cursor": 40}
    WorkerStage.start_checkpoint(stage, views=False)
    WorkerStage.make_durable(stage, views=False)  # a stop: the child's first, then here (nothing newer to write)
    assert stage.writing is None and stage.consumer.released == [40, 55] and stage.checkpoints == 3
    assert pickle.loads((tmp_path / "run" / "margin.ckpt").read_bytes()).cursor == 55


def test_the_worker_beats_while_its_child_writes_the_checkpoint(tmp_path, capsys):
    """A worker's heartbeat and its checkpoint's child write into one directory at once, each through a temporary
    file of its own: with one shared name (``margin.tmp``) the heartbeat took the half-written checkpoint for its
    own (the checkpoint then held JSON and the worker could not restart)."""
    stage = bare_stage(tmp_path, SlowCore(12, pickle_s=0.3),
                       heartbeat=process.Heartbeat(Config(engine=EngineSection(data_dir=str(tmp_path))), "margin"))
    WorkerStage.start_checkpoint(stage, views=False)
    while stage.writing is not None:
        stage.heartbeat.beat(state="running", cursor=stage.core.cursor)
        WorkerStage.finish_checkpoint(stage)
    assert stage.checkpoints == 1 and stage.consumer.released == [12]
    assert "failed" not in capsys.readouterr().err  # the child wrote it, not the worker after it
    assert pickle.loads((tmp_path / "run" / "margin.ckpt").read_bytes()).cursor == 12
    assert json.loads((tmp_path / "run" / "margin.json").read_text())["cursor"] == 12


def test_a_checkpoint_whose_child_fails_is_written_by_the_worker(tmp_path, capsys):
    stage = bare_stage(tmp_path, SlowCore(12, fail_in_child=True))
    WorkerStage.start_checkpoint(stage, views=False)
    WorkerStage.finish_checkpoint(stage, block=True)
    err = capsys.readouterr().err
    assert "margin: the checkpoint's child failed (OSError: [Errno 28] No space left on device); writing it here" \
        in err
    assert stage.writing is None and stage.consumer.released == [12] and stage.checkpoints == 1
    assert pickle.loads((tmp_path / "run" / "margin.ckpt").read_bytes()).cursor == 12


def test_a_child_that_exits_without_a_word_has_failed():
    write = ForkedWrite(lambda: os._exit(0))
    assert write.poll(block=True) == {"failed": "exit status 0"}


PARENT_OF_A_SLOW_CHILD = """
import sys, time
from pathlib import Path
from engine.process import ForkedWrite
def work():
    Path(sys.argv[1] + ".started").touch()  # after its signals and its prctl
    time.sleep(3)
    Path(sys.argv[1]).write_text("landed")
    return []
write = ForkedWrite(work)
print(write.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_checkpoints_child_dies_with_its_worker(tmp_path, how):
    """A worker killed while its child writes: the child goes too, so its checkpoint cannot land after a newer
    worker has checkpointed and released the ring past it.  SIGTERM here is the default action (a worker's own
    handler stops it in order, waiting for the child); the child itself ignores SIGTERM and SIGINT."""
    landed = tmp_path / "landed"
    parent = subprocess.Popen([sys.executable, "-c", PARENT_OF_A_SLOW_CHILD, str(landed)], stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 10
    while not (tmp_path / "landed.started").exists():
        assert time.monotonic() < deadline, "the child did not start its work"
        time.sleep(0.02)
    os.kill(child, signal.SIGTERM)  # ignored
    time.sleep(0.2)
    assert child_alive(child)
    parent.send_signal(how)
    parent.wait()
    deadline = time.monotonic() + 5
    while child_alive(child):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)
    time.sleep(3.2)
    assert not landed.exists()


def child_alive(pid: int) -> bool:
    """Running (not gone, not a zombie no one has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

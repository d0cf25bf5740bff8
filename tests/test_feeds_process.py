"""Oracle feeds over real sockets and processes: CurveZMQ push authentication, and the feeds
process end to end into a real PULL socket standing where the matcher's input is."""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from typer.testing import CliRunner

from engine.cli import app
from engine.config import load
from engine.records import COMMAND_DTYPE, Cmd
from feeds.sources import PushAuthenticator, PushClient, PushSource, authorize_new_client, server_public_key

S = 1_000_000_000


def wait_for(predicate, timeout_s: float = 10.0, every_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s} s")


@pytest.fixture
def push_source(tmp_path):
    context = zmq.Context()
    auth = PushAuthenticator(context)
    keys = tmp_path / "keys"
    source = PushSource("ops", f"ipc://{tmp_path}/push", keys, context, auth)
    yield source, keys, auth
    source.close()
    auth.stop()
    context.term()


def drain(source, until_rows: int, timeout_s: float = 5.0) -> np.ndarray:
    got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sum(map(len, got)) < until_rows:
        source.sock.poll(20)
        got.append(source.poll(time.time_ns()))
    return np.concatenate(got)


def refused(source, at_least: int = 1):
    source.poll(time.time_ns())
    return source.rejects.counts["unauthenticated"] >= at_least


def test_push_keys_are_private_and_named_plainly(tmp_path):
    """The push server's secret and each pusher's are readable by their owner alone (they were made with the
    process's umask, 0644 here); a pusher's name with a directory in it is refused, an existing one kept."""
    import stat

    keys = tmp_path / "feeds" / "operator"
    secret = authorize_new_client(keys, "ops1")
    assert secret == keys / "clients" / "ops1.key_secret"
    for private in (keys / "server.key_secret", secret):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert (keys / "authorized" / "ops1.key").read_bytes() == (keys / "clients" / "ops1.key").read_bytes()
    with pytest.raises(ValueError, match="a key name is a plain file name"):
        authorize_new_client(keys, "../../escaped")
    with pytest.raises(FileExistsError, match="keys are never overwritten"):
        authorize_new_client(keys, "ops1")
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["ops1.key"]
    assert not list(tmp_path.rglob("escaped*"))


def test_authorized_pushes_arrive_and_unknown_keys_are_refused_and_counted(push_source):
    source, keys, auth = push_source
    secret = authorize_new_client(keys, "alice")
    auth.refresh()
    server_key = server_public_key(keys)
    ts = time.time_ns()
    stranger = PushClient(source.address, server_key, None)  # a key the server never saw
    try:
        stranger.send([(1, 123.0, ts)])
    except TimeoutError:  # on a loaded machine the refusal can come first: then nothing takes it
        pass
    wait_for(lambda: refused(source))
    assert "not authorized" in source.rejects.last
    plain = zmq.Context.instance().socket(zmq.PUSH)  # no CurveZMQ at all
    plain.connect(source.address)
    plain.send(b"\x91\x83")
    wait_for(lambda: refused(source, 2))
    assert "not a CurveZMQ client" in source.rejects.last
    alice = PushClient(source.address, server_key, secret, send_timeout_s=10.0)
    alice.send([(1, 100.5, ts), (2, math.nan, ts + 1)])
    rows = drain(source, until_rows=2)
    assert rows.tolist()[0] == (1, 100.5, ts) and math.isnan(rows["price"][1])  # NaN is carried, judged later
    assert source.messages == 1 and source.accepted_handshakes == 1
    time.sleep(0.2)
    assert len(source.poll(time.time_ns())) == 0  # nothing the refused clients sent ever came through
    for client in (stranger, alice):
        client.close()
    plain.close(linger=0)


def test_malformed_push_messages_are_counted_and_dropped_whole(push_source):
    source, keys, auth = push_source
    secret = authorize_new_client(keys, "alice")
    auth.refresh()
    alice = PushClient(source.address, server_public_key(keys), secret)
    alice.sock.send(b"not msgpack at all")
    alice.sock.send(alice.encoder.encode([{"market": 1, "price": "high", "ts_ns": 1}]))
    alice.sock.send(b"\x91\x81\xa6mark\xf7t\x01")  # a key that is not UTF-8 (msgspec < 0.23: UnicodeDecodeError)
    alice.send([(1, 100.0, 5)])
    rows = drain(source, until_rows=1)
    assert rows.tolist() == [(1, 100.0, 5)]
    assert source.rejects.counts == {"malformed": 3} and "msgpack array" in source.rejects.last
    alice.close()


def test_a_key_authorized_while_running_gets_in_after_a_refresh(push_source):
    source, keys, auth = push_source
    secret = authorize_new_client(keys, "late")
    early = PushClient(source.address, server_public_key(keys), secret)
    early.send([(1, 1.0, 1)])
    wait_for(lambda: refused(source))  # authorized/ was read when the source started
    early.close()
    auth.refresh()
    late = PushClient(source.address, server_public_key(keys), secret)
    late.send([(1, 2.0, 2)])
    assert (2.0, 2) in [(p, t) for _, p, t in drain(source, until_rows=1).tolist()]
    late.close()


FEED_CONFIG = """
[engine]
name = "{name}"
data_dir = "{data}"
input = "ipc://{tmp}/input"
[[assets]]
id = 1
symbol = "USDT"
decimals = 6
[[assets]]
id = 2
symbol = "BTC"
decimals = 8
[[markets]]
id = 1
base = "BTC"
quote = "USDT"
tick_size = 100
lot_size = 100000
min_size = 100000
venue = 0
[[markets]]
id = 2
base = "BTC"
quote = "USDT"
tick_size = 100
lot_size = 100000
min_size = 100000
[workers]
heartbeat_s = 0.1
[gateway]
enabled = false
[marketdata]
enabled = false
[venues]
admin = 9000
protocol_account = 9002
stake_asset = "USDT"
min_stake = 1
[feeds]
enabled = true
account = 9001
[[feeds.sources]]
kind = "file"
name = "rec"
path = "prices.csv"
[[feeds.sources]]
kind = "simulated"
name = "sim"
seed = 3
step_s = 0.05
vol_bps = 1.0
start_prices = {{ 1 = 100.0, 2 = 50.0 }}
[[feeds.sources]]
kind = "push"
name = "ops"
bind = "ipc://{tmp}/push"
[[feeds.markets]]
id = 11
market = 1
sources = ["rec", "sim", "ops"]
quorum = 2
interval_s = 0.1
[[feeds.markets]]
id = 12
market = 2
sources = ["sim", "ops"]
quorum = 2
interval_s = 0.1
"""


def test_feed_process_end_to_end_into_a_pull_socket(tmp_path):
    """The feeds role as `xos run` starts it, against a real PULL socket where the matcher's input is:
    market 1 gets a price (file + simulation agree), market 2 stays stale until an operator pushes,
    bad pushes are refused and counted, `xos feeds status` shows every source, SIGTERM stops it."""
    name = f"xos-feedtest-{os.getpid()}"
    (tmp_path / "prices.csv").write_text("ts_ns,market,price\n" + "".join(
        f"{k * S // 20},1,{100.0 + k * 0.01:.2f}\n" for k in range(200)))
    path = tmp_path / "xos.toml"
    path.write_text(FEED_CONFIG.format(name=name, data=tmp_path / "data", tmp=tmp_path))
    cfg = load(path)
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(cfg.input_address)
    proc = subprocess.Popen([sys.executable, "-m", "engine.process", "feeds", "--config", str(path)])
    try:
        def take(seconds: float) -> np.ndarray:
            got, deadline = [], time.monotonic() + seconds
            while time.monotonic() < deadline:
                if pull.poll(50):
                    got.append(np.frombuffer(pull.recv(), dtype=COMMAND_DTYPE))
            return np.concatenate(got) if got else np.zeros(0, COMMAND_DTYPE)

        first = take(1.5)
        assert len(first) >= 5 and proc.poll() is None
        assert set(first["kind"].tolist()) == {Cmd.ORACLE_PRICE}
        assert set(first["market"].tolist()) == {1}  # market 2 has only the simulation: below quorum
        assert set(first["id"].tolist()) == {11} and set(first["account"].tolist()) == {9001}
        assert (first["venue"] == 0).all() and (first["ts"] == 0).all()
        assert (first["qty"] == 2).all() and (first["price"] % 100 == 0).all()
        assert (np.abs(first["price"] - 100_000) <= 2_000).all()  # about 100 USDT: 1000 ticks of 100
        assert (np.diff(first["aux"]) >= 0).all() and (first["aux"] <= time.time_ns()).all()

        keys = tmp_path / "data" / "feeds" / "ops"
        secret = authorize_new_client(keys, "ops1")
        heartbeat_file = cfg.data_path / "run" / "feeds.json"
        status_file = cfg.data_path / "run" / "feeds-status.json"
        # the new key is picked up at a heartbeat (0.1 s here): two beats later it is in
        authorized_at = time.time()
        wait_for(lambda: json.loads(heartbeat_file.read_text())["time"] > authorized_at + 0.25)
        ops = PushClient(f"ipc://{tmp_path}/push", server_public_key(keys), secret)
        stranger = PushClient(f"ipc://{tmp_path}/push", server_public_key(keys), None)
        deadline = time.monotonic() + 10
        got2 = np.zeros(0, COMMAND_DTYPE)
        with contextlib.suppress(TimeoutError):  # queued before its handshake is refused, or refused
            stranger.send([(2, 1.0, time.time_ns())])
        while time.monotonic() < deadline and not len(got2):
            now = time.time_ns()
            ops.send([(2, 50.0, now), (2, math.nan, now), (7, 50.0, now), (1, 100.0, now + 60 * S)])
            batch = take(0.3)
            got2 = batch[batch["market"] == 2]
        assert len(got2) and (got2["id"] == 12).all() and (got2["qty"] == 2).all()
        assert (np.abs(got2["price"] - 50_000) <= 500).all()

        def beat_with_rejects():
            doc = json.loads(status_file.read_text())
            rej = doc["sources"]["ops"]["rejected"]
            return doc if {"not_finite", "unknown_market", "future_timestamp", "unauthenticated"} <= set(rej) else None

        doc = wait_for(beat_with_rejects, timeout_s=5)
        beat = json.loads(heartbeat_file.read_text())
        assert beat["role"] == "feeds" and beat["state"] == "running" and beat["sent"] >= len(first)
        assert beat["rejected"] >= 4 and beat["markets_fresh"] >= 1
        m1 = doc["sources"]["rec"]["markets"]["1"]
        assert m1["in_quorum"] and m1["observations"] > 0 and m1["age_s"] < 1 and m1["last_price"] > 100
        assert doc["markets"]["1"]["state"] == "fresh" and doc["markets"]["1"]["feed_id"] == 11

        result = CliRunner().invoke(app, ["feeds", "status", "--config", str(path)])
        assert result.exit_code == 0, result.output
        for words in ("market 1", "feed 11", "market 2", "rec", "sim", "ops", "not_finite", "unauthenticated"):
            assert words in result.output
        ops.close()
        stranger.close()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert json.loads(heartbeat_file.read_text())["state"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pull.close(linger=0)
        context.term()

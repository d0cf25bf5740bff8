"""Market data through real sockets: ``xos run``'s supervisor starts the matcher, the workers and the
market-data process on a private config; ``gateway.mdclient.MarketDataClient`` subscribes late, and
through a relay that drops one increment and corrupts the checksum of another.  Every book the
client ends with equals the book of an engine rebuilt from the journal (the journal is the truth).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import pytest
import zmq

from bench.orders import CONFIGS, generate
from engine.config import load
from engine.journal import JournalReader
from engine.matcher import Engine
from engine.process import InputClient, read_heartbeats
from engine.supervisor import Supervisor
from gateway.mdclient import MarketDataClient, MarketDataError
from gateway.mdmessages import CHANNEL_BOOK, ENCODER, PUB_DECODER, BookSnapshotRequest, BookUpdate

_names = itertools.count()


def write_config(tmp_path: Path, sockets: Path) -> Path:
    name = f"xos-mdtest-{os.getpid()}-{next(_names)}"
    lines = ["gateway.enabled = false",
             "[marketdata]", "enabled = true", f'address = "ipc://{sockets}/pub"',
             f'snapshot_address = "ipc://{sockets}/snap"',
             "[engine]", f'name = "{name}"', f'data_dir = "{tmp_path / "data"}"', "ring_capacity = 4096",
             "batch_max = 1024", 'fsync = "off"', "max_orders = 65536", "max_accounts = 8192",
             "[workers]", "heartbeat_s = 0.2", "stale_after_s = 5.0"]
    path = tmp_path / "xos.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def workload():
    return generate(CONFIGS["B"].replace(markets=3, commands=6_000, accounts=60, orders=300))


@pytest.fixture
def running(tmp_path, workload):
    """A supervised engine with market data; the workload's listings, deposits and resting orders sent."""
    sockets = Path(tempfile.mkdtemp(prefix="xosmd-", dir="/tmp"))  # ipc paths must stay short
    path = write_config(tmp_path, sockets)
    cfg = load(path)
    sup = Supervisor(cfg, str(path), log=lambda msg: None)
    sup.start()
    client = InputClient(cfg.input_address)
    try:
        client.send(workload.setup)
        client.send(workload.prefill)
        yield sup, cfg, client
    finally:
        client.close()
        sup.stop()
        shutil.rmtree(sockets, ignore_errors=True)


def send_slowly(client: InputClient, commands, batch: int = 200, pause_s: float = 0.01) -> None:
    for i in range(0, len(commands), batch):
        client.send(commands[i : i + batch])
        time.sleep(pause_s)


def wait_published(sup: Supervisor, cfg, timeout_s: float = 60.0) -> None:
    """Until the matcher is idle and market data has applied every event it published."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        sup.check()
        beats = read_heartbeats(cfg)
        seq = beats.get("matcher", {}).get("event_seq")
        md = beats.get("marketdata", {})
        if seq is not None and md.get("cursor") == seq and last == seq:
            assert md["l3_mismatches"] == 0 and md["unknown_orders"] == 0
            return
        last = seq if md.get("cursor") == seq else None
        time.sleep(0.3)
    raise AssertionError(f"market data not caught up after {timeout_s} s: {read_heartbeats(cfg)}")


def journal_engine(cfg) -> Engine:
    e = Engine(max_orders=cfg.engine.max_orders, max_accounts=cfg.engine.max_accounts,
               max_markets=cfg.engine.max_markets, max_assets=cfg.engine.max_assets)
    for _, commands in JournalReader(cfg.data_path / "journal").read_from(1):
        e.process(commands)
    return e


def engine_book(e: Engine, market: int) -> tuple[list, list]:
    bids, asks = e.l2(market, depth=1 << 30)
    return [[p, q] for p, q, _ in bids], [[p, q] for p, q, _ in asks]


async def wait_in_sync(md: MarketDataClient, markets: list[int], timeout_s: float = 20.0) -> None:
    """Until each watched book is at the seq the service's snapshot has now."""
    deadline = time.monotonic() + timeout_s
    for m in markets:
        target = (await md.fetch_order_book(m))["nonce"]
        while not (md.books[m].synced and md.order_book(m)["nonce"] >= target):
            assert time.monotonic() < deadline, f"market {m} not in sync: {md.order_book(m)['nonce']} < {target}"
            await asyncio.sleep(0.02)


def test_late_joiner_gets_snapshot_then_increments(running, workload):
    sup, cfg, client = running
    wait_published(sup, cfg)

    async def scenario():
        md = MarketDataClient.from_config(cfg)
        try:
            markets = await md.load_markets()
            ids = sorted(m["id"] for m in markets.values())
            assert len(ids) == 3 and all(s == m["symbol"] and "/" in s for s, m in markets.items())
            e = journal_engine(cfg)
            symbol = next(s for s, m in markets.items() if m["id"] == ids[0])
            snap = await md.fetch_order_book(symbol)
            assert (snap["bids"], snap["asks"]) == engine_book(e, ids[0])
            assert snap["symbol"] == symbol and snap["nonce"] > 0
            top = await md.fetch_order_book(symbol, limit=3)
            assert top["bids"] == snap["bids"][:3] and top["asks"] == snap["asks"][:3]
            l3 = await md.fetch_l3_order_book(symbol)
            assert [o[2] for o in l3["bids"] + l3["asks"]] == [o.order_id for o in e.l3(ids[0])]
            with pytest.raises(MarketDataError, match="unknown market"):
                await md.fetch_order_book("NOPE/NONE")
            # a limit that is no count is refused by the client, naming it (-3 used to get the whole book), and a
            # negative depth sent raw by the service
            for limit, error in ((-3, ValueError), (2.5, TypeError), (True, TypeError), (1 << 31, ValueError)):
                with pytest.raises(error, match="limit must be None or an int"):
                    await md.fetch_order_book(symbol, limit)
                with pytest.raises(error, match="limit must be None or an int"):
                    await md.watch_order_book(symbol, limit)
            with pytest.raises(MarketDataError, match=r"MALFORMED_REQUEST.*>= 0 - at `\$\.depth`"):
                await md.request(BookSnapshotRequest(ids[0], -1))
            assert (await md.fetch_order_book(symbol)) == snap  # and it goes on serving
            # a late joiner: the books come from snapshots, then follow the increments
            for m in ids:
                book = await md.watch_order_book(m)
                assert (book["bids"], book["asks"]) == engine_book(e, m)
            trades_task = asyncio.ensure_future(md.watch_trades(ids[0]))
            await asyncio.sleep(0.1)  # subscribed before the stream goes on
            await asyncio.get_running_loop().run_in_executor(None, send_slowly, client, workload.stream[:3000])
            await asyncio.get_running_loop().run_in_executor(None, wait_published, sup, cfg)
            await wait_in_sync(md, ids)
            e = journal_engine(cfg)
            for m in ids:
                book = md.order_book(m)
                assert (book["bids"], book["asks"]) == engine_book(e, m)
            trades = await asyncio.wait_for(trades_task, 5)
            assert trades and all(t["symbol"] == symbol and t["amount"] > 0 for t in trades)
            assert md.resyncs == 0 and md.gaps == 0 and md.checksum_errors == 0 and md.trade_gaps == 0
        finally:
            await md.close()

    asyncio.run(scenario())


class FaultyRelay:
    """A real PUB/SUB hop that forwards everything unchanged, except that once armed (``arm("drop")``
    or ``arm("corrupt")``) it drops, or flips a bit of the checksum of, the next book increment of
    ``market``."""

    def __init__(self, upstream: str, address: str, market: int):
        self.context = zmq.Context()
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(upstream)
        self.pub = self.context.socket(zmq.PUB)
        self.pub.bind(address)
        self.market = market
        self.fault: str | None = None
        self.done: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def arm(self, fault: str) -> None:
        self.fault = fault

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sub.poll(50):
                continue
            topic, payload = self.sub.recv_multipart()
            fault = self.fault
            if fault and topic[4:] == CHANNEL_BOOK:
                msg = PUB_DECODER.decode(payload)
                if isinstance(msg, BookUpdate) and msg.market == self.market:
                    self.fault = None
                    self.done.append(fault)
                    if fault == "drop":
                        continue
                    payload = ENCODER.encode(msgspec.structs.replace(msg, checksum=msg.checksum ^ 1))
            self.pub.send_multipart([topic, payload])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sub.close(linger=0)
        self.pub.close(linger=0)
        self.context.term()


def test_gap_and_bad_checksum_each_resync_to_the_right_book(running, workload):
    sup, cfg, client = running
    wait_published(sup, cfg)
    relay_address = f"ipc://{Path(cfg.marketdata.address[len('ipc://'):]).parent}/relay"

    async def scenario():
        probe = MarketDataClient.from_config(cfg)
        markets = await probe.load_markets()
        await probe.close()
        market = min(m["id"] for m in markets.values())
        relay = FaultyRelay(cfg.marketdata.address, relay_address, market)
        md = MarketDataClient(relay_address, cfg.marketdata.snapshot_address)
        loop = asyncio.get_running_loop()
        try:
            await md.watch_order_book(market)
            for fault, commands in (("drop", workload.stream[:2000]), ("corrupt", workload.stream[2000:4000])):
                relay.arm(fault)
                await loop.run_in_executor(None, send_slowly, client, commands)
                await loop.run_in_executor(None, wait_published, sup, cfg)
                await wait_in_sync(md, [market])
                assert relay.done[-1] == fault
                if fault == "drop":
                    assert md.gaps == 1 and md.checksum_errors == 0 and md.resyncs == 1
                else:
                    assert md.gaps == 1 and md.checksum_errors == 1 and md.resyncs == 2
                book = md.order_book(market)
                assert (book["bids"], book["asks"]) == engine_book(journal_engine(cfg), market)
        finally:
            await md.close()
            relay.close()

    asyncio.run(scenario())


def test_killed_service_resumes_from_its_checkpoint_with_the_same_seqs(running, workload):
    """kill -9 market data mid-stream: the supervisor restarts it, it resumes from its checkpoint and
    numbers every update as an uninterrupted core fed the journal's events does; a watching client
    ends with the right book."""
    import numpy as np

    from gateway.marketdata import MarketDataCore

    sup, cfg, client = running
    wait_published(sup, cfg)

    async def scenario():
        md = MarketDataClient.from_config(cfg)
        loop = asyncio.get_running_loop()
        try:
            ids = sorted(m["id"] for m in (await md.load_markets()).values())
            for m in ids:
                await md.watch_order_book(m)
            await loop.run_in_executor(None, send_slowly, client, workload.stream[:1500])
            sup.procs["marketdata"].kill()
            await loop.run_in_executor(None, send_slowly, client, workload.stream[1500:3000])
            await loop.run_in_executor(None, wait_published, sup, cfg)
            assert sup.restarts["marketdata"] == 1
            await wait_in_sync(md, ids)
            e = Engine(max_orders=cfg.engine.max_orders, max_accounts=cfg.engine.max_accounts,
                       max_markets=cfg.engine.max_markets, max_assets=cfg.engine.max_assets)
            events = np.concatenate([e.process(c) for _, c in JournalReader(cfg.data_path / "journal").read_from(1)])
            uninterrupted = MarketDataCore()
            uninterrupted.apply(events)
            for m in ids:
                book = md.order_book(m)
                assert (book["bids"], book["asks"]) == engine_book(e, m)
                assert book["nonce"] == uninterrupted.books[m].seq
                l3 = await md.fetch_l3_order_book(m)
                assert [o[2] for o in l3["bids"] + l3["asks"]] == [o.order_id for o in e.l3(m)]
        finally:
            await md.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("checkpoint", ["deleted", "unreadable"])
def test_service_without_a_checkpoint_bootstraps_from_the_matchers_snapshot(tmp_path, workload, checkpoint):
    """Run, stop, delete the market-data checkpoint (or leave one it cannot read: another version's
    pickle), run again: the restarted matcher's ring starts at its snapshot, and the service builds
    its books from that snapshot instead of failing; the books are right before and after more
    commands."""
    sockets = Path(tempfile.mkdtemp(prefix="xosmd-", dir="/tmp"))
    path = write_config(tmp_path, sockets)
    cfg = load(path)
    try:
        for run in range(2):
            sup = Supervisor(cfg, str(path), log=lambda msg: None)
            sup.start()
            client = InputClient(cfg.input_address)
            try:
                if run == 0:
                    client.send(workload.setup)
                    client.send(workload.prefill)
                    send_slowly(client, workload.stream[:1000])
                else:
                    send_slowly(client, workload.stream[1000:2000])
                wait_published(sup, cfg)
                if run == 1:
                    assert sup.restarts.get("marketdata", 0) == 0
                    from engine.snapshot import read_snapshot

                    header, _ = read_snapshot(read_heartbeats(cfg)["matcher"]["restored_from"])

                    async def check():
                        md = MarketDataClient.from_config(cfg)
                        try:
                            e = journal_engine(cfg)
                            ids = sorted(m["id"] for m in (await md.load_markets()).values())
                            assert len(ids) == 3
                            for m in ids:
                                book = await md.watch_order_book(m)
                                assert (book["bids"], book["asks"]) == engine_book(e, m)
                                assert book["nonce"] > header.event_seq  # numbered on from the snapshot
                                l3 = await md.fetch_l3_order_book(m)
                                assert [o[2] for o in l3["bids"] + l3["asks"]] == [o.order_id for o in e.l3(m)]
                        finally:
                            await md.close()

                    asyncio.run(check())
            finally:
                client.close()
                sup.stop()
            if run == 0:
                ckpt = cfg.data_path / "run" / "marketdata.ckpt"
                if checkpoint == "deleted":
                    ckpt.unlink()
                else:  # a class this version no longer has
                    ckpt.write_bytes(b"cgateway.marketdata\nRetiredBook\n.")
    finally:
        shutil.rmtree(sockets, ignore_errors=True)

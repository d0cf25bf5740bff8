"""A supervised engine with its gateway for the gateway tests: the config is data (sections as
dicts, written with tomli_w), each client a CurveZMQ key pair named after who holds it."""
from __future__ import annotations

import asyncio
import importlib.resources
import itertools
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import tomli_w
import zmq
import zmq.asyncio

from engine.config import load
from engine.journal import JournalReader
from engine.process import WORKERS, read_heartbeats
from engine.supervisor import Supervisor
from gateway import messages as m
from gateway.client import Client, RequestTimeout
from gateway.keys import load_pair, new_pair, server_pair

_names = itertools.count()


def unit_market(market: int, base: str, quote: str, **fields) -> dict:
    """A market whose tick, lot and minimum size are 1."""
    return dict(id=market, base=base, quote=quote, tick_size=1, lot_size=1, min_size=1, **fields)


def funded(accounts, **deposits) -> list[dict]:
    return [{"id": a, "deposits": deposits} for a in accounts]


def order_rows(*specs: dict) -> np.ndarray:
    """``messages.COMMAND_ROW_DTYPE`` rows, each from a dict of its non-zero fields."""
    rows = np.zeros(len(specs), m.COMMAND_ROW_DTYPE)
    for row, spec in zip(rows, specs):
        for name, value in spec.items():
            row[name] = value
    return rows


def default_like() -> dict:
    """The built-in default config's assets, markets, demo accounts and venues (venue 1
    permissionless, venue 2 an allow-list of 1002 and 1003), without its oracle feeds."""
    text = importlib.resources.files("engine.data").joinpath("default.toml").read_text()
    sections = tomllib.loads(text)
    del sections["engine"]
    sections["feeds"] = {"enabled": False}
    return sections


def merged(base: dict, extra: dict) -> dict:
    """``extra``'s sections over ``base``'s (a section in both: its keys over base's)."""
    out = dict(base)
    for name, section in extra.items():
        out[name] = {**base[name], **section} if isinstance(section, dict) and name in base else section
    return out


class GatewayEngine:
    """``accounts``: who -> account, each with a registered key; ``unregistered``: key pairs the
    config does not know.  ``sections``: the config besides the engine, workers, market data and
    the gateway's address and keys (a ``gateway`` section here adds settings)."""

    def __init__(self, tmp: Path, accounts: dict[str, int], sections: dict, unregistered=("stranger",)):
        self.tmp = tmp
        self.accounts = dict(accounts)
        self.contexts: list[zmq.asyncio.Context] = []  # the clients', ended with the engine
        self.public = {}
        for who in (*accounts, *unregistered):
            new_pair(tmp / "keys", who)
            self.public[who] = load_pair(self.key(who))[0].decode()
        self.sections = merged({
            "engine": {"name": f"xos-gwtest-{os.getpid()}-{next(_names)}", "data_dir": str(tmp / "data"),
                       "ring_capacity": 65536, "batch_max": 1024, "fsync": "off", "max_orders": 65536,
                       "max_accounts": 8192},
            "workers": {"heartbeat_s": 0.2, "checkpoint_s": 0.2, "stale_after_s": 5.0},
            "marketdata": {"enabled": False},
            "gateway": {"address": f"ipc://{tmp / 'gw'}"},
        }, sections)
        self.path = tmp / "xos.toml"
        self.write()
        self.cfg = load(self.path)
        self.sup = Supervisor(self.cfg, str(self.path), log=lambda msg: None)
        self.sup.start()
        self.server_key = server_pair(self.cfg)[0]

    def write(self) -> None:
        keys = [{"account": account, "public_key": self.public[who]} for who, account in self.accounts.items()]
        self.path.write_text(tomli_w.dumps(merged(self.sections, {"gateway": {"keys": keys}})))

    def key(self, who: str) -> Path:
        return self.tmp / "keys" / f"{who}.key_secret"

    def client(self, who: str, timeout_s: float = 10.0) -> Client:
        context = zmq.asyncio.Context()
        self.contexts.append(context)
        return Client(self.cfg.gateway.address, server_key=self.server_key, secret_key_file=self.key(who),
                      timeout_s=timeout_s, context=context)

    def revoke(self, who: str) -> None:
        """Take the key out of the config (the gateway re-reads it every keys_reload_s)."""
        del self.accounts[who]
        self.write()

    def journal(self) -> np.ndarray:
        return np.concatenate([c for _, c in JournalReader(self.cfg.data_path / "journal").read_from(1)])

    def stop(self) -> None:
        self.sup.stop()
        # a clean stop leaves nothing in /dev/shm: the rings and their doorbells (the gateway's too)
        left = sorted(p.name for p in Path("/dev/shm").glob(f"{self.cfg.engine.name}-*"))
        assert not left, left
        # ended here, not by the garbage collector in some later test: a socket a test left open (its
        # messages unsendable, the gateway gone) would hold the context's term() there forever
        for context in self.contexts:
            context.destroy(linger=0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def restart_gateway(engine: GatewayEngine) -> None:
    """Kill the gateway and wait until the supervisor has started it again and it is routing the ring."""
    old = engine.sup.procs["gateway"]
    old.kill()
    old.wait()
    deadline = time.monotonic() + 20
    while True:
        engine.sup.check()  # restarts it
        beat = read_heartbeats(engine.cfg).get("gateway", {})
        if beat.get("pid") == engine.sup.procs["gateway"].pid and beat.get("ring_attached"):
            return
        assert time.monotonic() < deadline, "the gateway did not come back"
        time.sleep(0.05)


# Takes the command ring's waiting commands and exits without closing the ring, as a matcher killed between
# its take and its journal: a process of its own, for the next matcher takes over only a ring whose consumer died.
TAKE_WAITING = """
import sys
import numpy as np
from engine.cmdring import CommandRing
from engine.records import COMMAND_DTYPE
ring = CommandRing.consumer(sys.argv[1], int(sys.argv[2]))
n = min(int(ring.available()), int(sys.argv[3]))
taken = np.zeros(max(n, 1), COMMAND_DTYPE)
assert ring.take_into(taken.view(np.uint8), 0, n) == n
print(" ".join(map(str, taken["id"][:n].tolist())))
"""


async def kill_stopped_matcher(engine: GatewayEngine, take: int = 0) -> list[int]:
    """Kill the matcher, stopped (SIGSTOP) while the gateway's commands wait in its command ring, and wait until
    the supervisor has started the next, the gateway routes from its ring and each worker, gone with the old ring,
    reads the new one: a replay longer than the ring waits for all of them (their slots are reserved), and no one
    restarts a worker after this returns.  ``take``: how many of the waiting commands are taken first, the oldest
    (``TAKE_WAITING``), so that none of them runs; returns their ids."""
    old = engine.sup.procs["matcher"]
    old_workers = {role: engine.sup.procs[role] for role in WORKERS}
    os.kill(old.pid, signal.SIGKILL)
    old.wait()
    taken = []
    if take:
        out = subprocess.run([sys.executable, "-c", TAKE_WAITING, engine.cfg.command_ring_name,
                              str(engine.cfg.command_ring_capacity), str(take)], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        taken = list(map(int, out.split()))
    deadline = time.monotonic() + 20

    def back() -> bool:
        beats = read_heartbeats(engine.cfg)
        return (engine.sup.procs["matcher"] is not old and beats["matcher"]["pid"] != old.pid
                and beats.get("gateway", {}).get("ring_attached") is True
                and all(engine.sup.procs[role] is not proc and beats.get(role, {}).get("pid") == engine.sup.procs[
                    role].pid and beats[role]["state"] == "running" for role, proc in old_workers.items()))

    while not back():
        engine.sup.check()  # restarts the matcher and the workers that leave its dead ring
        assert time.monotonic() < deadline, "engine did not come back"
        await asyncio.sleep(0.1)
    return taken


async def connected(engine: GatewayEngine, *names, **kw) -> list[Client]:
    return [await engine.client(n, **kw).connect() for n in names]


async def handshake_refused(engine: GatewayEngine, who: str = "stranger") -> bool:
    """Whether a key the config does not register is refused at the CURVE handshake (nothing gets
    through, so the client's first request, load_markets, times out)."""
    client = engine.client(who, timeout_s=1.0)
    try:
        await client.connect()
    except RequestTimeout:
        return True
    finally:
        await client.close()
    return False

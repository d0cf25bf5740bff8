"""Market-data core benchmark: the matcher workload's events through ``MarketDataCore``.

    python -m bench.marketdata --config A --commands 200000 --runs 5 --json marketdata.json

The seeded ``bench.orders`` workload goes through the Cython matcher once, untimed, in matcher
batches of ``--matcher-batch`` commands each stamped with one ``ts`` (as ``MatcherStage`` stamps
its input batches, so the core conflates per batch as it does live).  Its events are then fed to
a fresh core in ring-sized slices (``--ring-batch``, the service's ``TAKE_MAX``), each taken as the
service takes it from the ring (``take_kinds``: only the kinds the core follows are copied), the
last one complete.  Reported, median (and best) of ``--runs``: events/s and messages/s of
``apply``, and separately the cost of encoding what it published (msgspec, as ``publish`` does),
with the published bytes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench import write_json
from bench.orders import CONFIGS, generate
from engine.matcher import Engine
from engine.process import TAKE_MAX
from engine.records import Ev
from gateway.marketdata import FOLLOWED, MarketDataCore
from gateway.mdmessages import ENCODER, topic


def matcher_events(config: str, commands: int | None, seed: int, matcher_batch: int) -> np.ndarray:
    """The workload's events, the stream processed in batches that each carry one ``ts``."""
    cfg = CONFIGS[config]
    wl = generate(cfg.replace(commands=commands or cfg.commands, seed=seed))
    e = Engine(**wl.engine_kwargs)
    out = []
    for commands in (wl.setup, wl.prefill, wl.stream):
        commands = commands.copy()
        for i in range(0, len(commands), matcher_batch):
            batch = commands[i:i + matcher_batch]
            batch["ts"] = batch["ts"].max()
            out.append(e.process(batch))
    return np.concatenate(out)


def run_core(events: np.ndarray, ring_batch: int) -> tuple[float, list, MarketDataCore]:
    core = MarketDataCore()
    keep = FOLLOWED[events["kind"]] if events["kind"].max() < len(FOLLOWED) else None
    slices = []  # what take_kinds hands over: the followed events of each ring batch, untimed here
    for i in range(0, len(events), ring_batch):
        part = events[i:i + ring_batch]
        chosen = part[keep[i:i + ring_batch].astype(bool)] if keep is not None else part
        slices.append((chosen, int(part["seq"][0]), int(part["seq"][-1])))
    published = []
    t0 = time.perf_counter()
    for j, (chosen, first, last) in enumerate(slices):
        published += core.apply_taken(chosen, first, last, complete=j == len(slices) - 1)
    dt = time.perf_counter() - t0
    assert core.cursor == int(events["seq"][-1]) and core.l3_mismatches == 0 and core.unknown_orders == 0
    return dt, published, core


def time_encode(published: list) -> tuple[float, int]:
    encode = ENCODER.encode
    t0 = time.perf_counter()
    size = 0
    for channel, msg in published:
        size += len(topic(msg.market, channel)) + len(encode(msg))
    return time.perf_counter() - t0, size


def run(args: argparse.Namespace) -> dict:
    events = matcher_events(args.config, args.commands, args.seed, args.matcher_batch)
    kinds = np.bincount(events["kind"], minlength=len(Ev) + 1)
    mix = {Ev(k).name.lower(): int(kinds[k]) for k in range(1, len(kinds)) if kinds[k]}
    print(f"{len(events)} events ({', '.join(f'{k} {v}' for k, v in mix.items())}), "
          f"{len(np.unique(events['ts']))} matcher batches", file=sys.stderr)
    apply_s, encode_s, messages, size = [], [], 0, 0
    for _ in range(args.runs):
        dt, published, _ = run_core(events, args.ring_batch)
        apply_s.append(dt)
        messages = len(published)
        et, size = time_encode(published)
        encode_s.append(et)
    apply_med, encode_med = statistics.median(apply_s), statistics.median(encode_s)
    out = {"config": args.config, "commands": args.commands, "seed": args.seed, "events": len(events),
           "matcher_batch": args.matcher_batch, "ring_batch": args.ring_batch, "runs": args.runs, "kinds": mix,
           "messages": messages, "published_bytes": size,
           "events_per_s": len(events) / apply_med, "best_events_per_s": len(events) / min(apply_s),
           "messages_per_s": messages / apply_med, "apply_s": apply_s,
           "encode_s": encode_s, "encode_ns_per_message": encode_med / max(messages, 1) * 1e9,
           "events_per_s_with_encode": len(events) / (apply_med + encode_med)}
    print(f"apply: {out['events_per_s'] / 1e6:.2f} M events/s (median of {args.runs}, best "
          f"{out['best_events_per_s'] / 1e6:.2f}), {out['messages_per_s'] / 1e3:.1f} k messages/s, "
          f"{messages} messages, {size / 1e6:.1f} MB")
    print(f"encode: {out['encode_ns_per_message']:.0f} ns per message; apply + encode "
          f"{out['events_per_s_with_encode'] / 1e6:.2f} M events/s")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.marketdata", description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="A")
    p.add_argument("--commands", type=int, default=200_000, help="stream length")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=5, help="timed runs (median reported)")
    p.add_argument("--matcher-batch", type=int, default=4096, help="commands per matcher batch (one ts each)")
    p.add_argument("--ring-batch", type=int, default=TAKE_MAX, help="events per take from the ring")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    write_json(args.json, run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

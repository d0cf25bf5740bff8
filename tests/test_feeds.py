"""Oracle feeds, in process: the checks, tick conversion and aggregation, the file and simulated
sources, the feeds config and the shipped sample file."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.config import ConfigError, FileSourceConfig, load, loads
from engine.records import Cmd, Ev
from feeds.aggregate import REFUSALS, Aggregator
from feeds.kernels import REASONS, masked_median
from feeds.sources import (OBSERVATION_DTYPE, FileReplaySource, Rejects, SimulatedSource, observations,
                           resolve_path)

S = 1_000_000_000
T0 = 1_800_000_000 * S  # the tests' clock

BASE = """
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
[[markets]]
id = 2
base = "BTC"
quote = "USDT"
tick_size = 100
lot_size = 100000
min_size = 100000
"""


VENUES = '''[venues]
admin = 9000
protocol_account = 9002
stake_asset = "USDT"
min_stake = 1
'''


def feeds_toml(quorum: int = 2, deviation: int = 200, stale: float = 5.0, interval: float = 1.0,
               sources=("a", "b", "c"), extra: str = "") -> str:
    text = BASE + VENUES + "[feeds]\nenabled = true\naccount = 9001\nfuture_tolerance_s = 2.0\n"
    for name in ("a", "b", "c", "d"):
        text += f'[[feeds.sources]]\nkind = "simulated"\nname = "{name}"\nstart_prices = {{ 1 = 100.0 }}\n'
    text += (f"[[feeds.markets]]\nid = 7\nmarket = 1\nsources = {list(sources)!r}\nquorum = {quorum}\n"
             f"stale_after_s = {stale}\nmax_deviation_bps = {deviation}\ninterval_s = {interval}\n")
    return (text + extra).replace("'", '"')


def make(**kw) -> Aggregator:
    return Aggregator(loads(feeds_toml(**kw)))


def push(agg: Aggregator, source: str, price: float, ts: int, market: int = 1, rejects: Rejects | None = None) -> int:
    """One price from a source, arriving at its own timestamp."""
    return agg.ingest(source, rejects or Rejects(), observations([(market, price, ts)]), ts)


# BTC/USDT here: 10^6 × 100000 / (10^8 × 100) = 10 ticks per USDT, and a tick is 100 price units.
def test_prices_become_ticks_half_to_even_and_the_command_carries_the_contract():
    agg = make(quorum=1, sources=("a",))
    for i, (price, units) in enumerate(((65000.1, 65_000_100), (0.25, 200), (0.75, 800), (0.35, 400), (1.0, 1000))):
        agg.next_due[:] = 0
        push(agg, "a", price, T0 + i)
        (cmd,) = agg.aggregate(T0 + 10)
        assert int(cmd["price"]) == units, price
    assert cmd["kind"] == Cmd.ORACLE_PRICE == 96
    assert (int(cmd["venue"]), int(cmd["market"]), int(cmd["account"]), int(cmd["id"]), int(cmd["qty"])) == (0, 1, 9001, 7, 1)
    assert int(cmd["aux"]) == T0 + 4  # the source time of the price used
    assert cmd["ts"] == 0  # the matcher stamps its clock at intake


def test_masked_median_odd_even_and_ties_to_even():
    v = np.array([[5, 1, 3], [4, 2, 9], [7, 8, 0], [1, 2, 9]], dtype=np.int64)
    m = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=bool)
    assert masked_median(v, m).tolist() == [3, 3, 0, 2]  # (1+2)/2 = 1.5 -> 2, the even tick
    assert masked_median(np.array([[2, 5]]), np.array([[True, True]])).tolist() == [4]  # 3.5 -> 4


def test_quorum_and_median_as_sources_drop_out_and_recover():
    agg = make(quorum=2, stale=5.0)
    push(agg, "a", 100.0, T0)
    push(agg, "b", 101.0, T0)
    push(agg, "c", 101.5, T0)
    (cmd,) = agg.aggregate(T0)
    assert int(cmd["price"]) == 101_0 * 100 and int(cmd["qty"]) == 3  # median of 1000, 1010, 1015 ticks
    # c goes silent: at +6 s only a and b are fresh -> the mean of the two, qty 2
    push(agg, "a", 100.0, T0 + 5 * S)
    push(agg, "b", 100.4, T0 + 5 * S)
    (cmd,) = agg.aggregate(T0 + 6 * S)
    assert int(cmd["price"]) == 1002 * 100 and int(cmd["qty"]) == 2  # (1000 + 1004) / 2
    assert agg.stale_drops[0].tolist() == [0, 0, 1]
    assert agg.in_quorum[0].tolist() == [True, True, False]
    # b goes silent too: one fresh source, below the quorum -> stale, nothing sent
    push(agg, "a", 100.0, T0 + 10 * S)
    assert len(agg.aggregate(T0 + 11 * S)) == 0
    assert not agg.fresh[0] and agg.stale_rounds[0] == 1
    assert agg.stale_drops[0].tolist() == [0, 1, 2]
    # c comes back: quorum again
    push(agg, "c", 100.2, T0 + 12 * S)
    (cmd,) = agg.aggregate(T0 + 12 * S)
    assert agg.fresh[0] and int(cmd["price"]) == 1001 * 100 and int(cmd["aux"]) == T0 + 10 * S


def test_staleness_counts_from_the_source_timestamp_at_the_bound():
    agg = make(quorum=1, sources=("a",), stale=5.0)
    push(agg, "a", 100.0, T0)
    assert len(agg.aggregate(T0 + 5 * S)) == 1  # exactly stale_after_s old: still fresh
    agg.next_due[:] = 0
    assert len(agg.aggregate(T0 + 5 * S + 1)) == 0


def test_deviation_guard_drops_the_outlier_and_can_cost_the_quorum():
    agg = make(quorum=2, deviation=200)
    push(agg, "a", 100.0, T0)
    push(agg, "b", 100.1, T0)
    push(agg, "c", 105.0, T0)  # 5 % off the median (100.1)
    (cmd,) = agg.aggregate(T0)
    assert int(cmd["qty"]) == 2 and int(cmd["price"]) == 1000 * 100  # (1000 + 1001) / 2 = 1000.5 -> 1000
    assert agg.deviation_drops[0].tolist() == [0, 0, 1]
    assert agg.in_quorum[0].tolist() == [True, True, False]
    assert agg.deviation[0, 2] == pytest.approx((1050 - 1001) * 1e4 / 1001)
    # exactly at the bound stays in: 2 % of 1000 ticks is 20 ticks
    agg = make(quorum=3, deviation=200)
    for name, price in (("a", 98.0), ("b", 100.0), ("c", 102.0)):
        push(agg, name, price, T0)
    assert int(agg.aggregate(T0)[0]["qty"]) == 3
    push(agg, "c", 102.1, T0 + 1)
    agg.next_due[:] = 0
    assert len(agg.aggregate(T0 + 1)) == 0 and not agg.fresh[0]  # 21 ticks off: dropped, 2 < quorum 3


BAD = [
    ("unknown_market", (2, 100.0, T0), "feeds no market 2"),
    ("unknown_market", (-1, 100.0, T0), "feeds no market -1"),
    ("not_finite", (1, math.nan, T0), "nan is not a finite number"),
    ("not_finite", (1, math.inf, T0), "inf is not a finite number"),
    ("not_finite", (1, -math.inf, T0), "-inf is not a finite number"),
    ("not_positive", (1, 0.0, T0), "0.0 is not positive"),
    ("not_positive", (1, -5.0, T0), "-5.0 is not positive"),
    ("bad_timestamp", (1, 100.0, 0), "timestamp 0 is not a positive"),
    ("future_timestamp", (1, 100.0, T0 + 3 * S), "3.000 s ahead"),
    ("too_large", (1, 1e300, T0), "beyond the market's largest price"),
    ("too_large", (1, 2.0 ** 53 / 10 * 1.01, T0), "beyond the market's largest price"),
    ("below_one_tick", (1, 0.04, T0), "rounds to 0 ticks"),
]


@pytest.mark.parametrize("reason,row,words", BAD, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BAD)])
def test_bad_input_is_refused_with_its_reason_and_counted(reason, row, words):
    agg = make(quorum=1, sources=("a",))
    rejects = Rejects()
    good = (1, 100.0, T0 - 1)
    assert agg.ingest("a", rejects, observations([good, row]), T0) == 1  # the good row still gets in
    assert rejects.counts == {reason: 1}
    assert rejects.last.startswith(reason + ": ") and words in rejects.last
    (cmd,) = agg.aggregate(T0)
    assert int(cmd["price"]) == 1000 * 100


def test_within_future_tolerance_is_accepted():
    agg = make(quorum=1, sources=("a",))
    assert push(agg, "a", 100.0, T0 + 2 * S) == 1


def test_out_of_order_is_refused_and_the_sent_source_time_never_goes_back():
    agg = make(quorum=1, sources=("a", "b"))
    rejects = Rejects()
    push(agg, "a", 100.0, T0)
    assert push(agg, "a", 99.0, T0 - 1, rejects=rejects) == 0
    assert rejects.counts == {"out_of_order": 1}
    (cmd,) = agg.aggregate(T0)
    assert int(cmd["aux"]) == T0
    # b arrives with an older (but fresh) price: the median of a and b would claim time T0 - S,
    # older than what was sent, so that round is held back
    push(agg, "b", 100.0, T0 - S)
    assert len(agg.aggregate(T0 + S)) == 0 and agg.held_back[0] == 1
    # b catches up, but the oldest source time used is still a's T0, which was sent: the matcher
    # would refuse it as not newer, so it is held back too, until a moves on
    push(agg, "b", 100.0, T0 + S)
    assert len(agg.aggregate(T0 + 2 * S)) == 0 and agg.held_back[0] == 2
    push(agg, "a", 100.0, T0 + 2 * S)
    (cmd,) = agg.aggregate(T0 + 3 * S)
    assert int(cmd["aux"]) == T0 + S and int(cmd["qty"]) == 2


def test_rounds_follow_the_interval_and_a_batch_keeps_each_sources_latest():
    agg = make(quorum=1, sources=("a",), interval=1.0)
    agg.ingest("a", Rejects(), observations([(1, 100.0, T0 - 2), (1, 101.0, T0 - 1)]), T0)
    assert agg.observations[0, 0] == 2
    (cmd,) = agg.aggregate(T0)
    assert int(cmd["price"]) == 1010 * 100
    push(agg, "a", 102.0, T0 + S // 2)
    assert len(agg.aggregate(T0 + S - 1)) == 0  # not due yet
    assert len(agg.aggregate(T0 + S)) == 1
    assert len(agg.aggregate(T0 + 2 * S)) == 0 and agg.held_back[0] == 1  # nothing newer came in
    # a feed late by more than an interval skips the rounds it missed and stays on its grid
    push(agg, "a", 103.0, T0 + 3 * S)
    assert len(agg.aggregate(T0 + 3 * S + S // 2)) == 1 and agg.next_due[0] == T0 + 4 * S


@pytest.mark.parametrize("extra,words", [
    ('[[feeds.markets]]\nid = 8\nmarket = 3\nsources = ["a"]\n', "feeds.markets[1].market: unknown market 3"),
    ('[[feeds.markets]]\nid = 7\nmarket = 2\nsources = ["a"]\n', "feeds.markets[1].id"),
    ('[[feeds.markets]]\nid = 8\nmarket = 1\nsources = ["a"]\n', "market 1 has two feeds"),
    ('[[feeds.markets]]\nid = 8\nmarket = 2\nsources = ["zz"]\n', "unknown source 'zz'"),
    ('[[feeds.markets]]\nid = 8\nmarket = 2\nsources = ["a"]\nquorum = 2\n', "must be in 1..1"),
    ('[[feeds.markets]]\nid = 8\nmarket = 2\nsources = ["a"]\nmax_deviation_bps = 0\n', "max_deviation_bps"),
    ('[[feeds.markets]]\nid = 8\nmarket = 2\nsources = ["a"]\nstale_after_s = 0\n', "must be positive"),
    ('[[feeds.sources]]\nkind = "simulated"\nname = "a"\nstart_prices = { 1 = 1.0 }\n', "unique"),
    ('[[feeds.sources]]\nkind = "simulated"\nname = "e"\nstart_prices = { 2 = 1.0 }\n', "market 2 has no feed"),
    ('[[feeds.sources]]\nkind = "simulated"\nname = "e"\nstart_prices = { 1 = -1.0 }\n', "positive and finite"),
    ('[[feeds.sources]]\nkind = "tick"\nname = "e"\n', "Invalid value 'tick'"),
    ('[[feeds.sources]]\nkind = "push"\nname = "e"\n', "bind"),
])
def test_feeds_config_errors_name_the_field(extra, words):
    with pytest.raises(ConfigError) as err:
        loads(feeds_toml(extra=extra), "f.toml")
    assert words in str(err.value)


def test_enabled_feeds_need_an_account():
    with pytest.raises(ConfigError, match="feeds.account"):
        loads(feeds_toml().replace("account = 9001", "account = 0"))


def test_the_built_in_config_feeds_its_markets_from_the_shipped_sample():
    cfg = load()
    assert cfg.feeds.enabled and [m.market for m in cfg.feeds.markets] == [1, 2, 3, 4]  # 4: the BTC perpetual
    agg = Aggregator(cfg)
    sources = [FileReplaySource(s.name, resolve_path(s.path, cfg), s.rows_from) for s in cfg.feeds.sources
               if isinstance(s, FileSourceConfig)]
    for s in sources:
        assert agg.ingest(s.name, s.rejects, s.poll(T0), T0) == 4 and not s.rejects.counts
    commands = agg.aggregate(T0)
    assert commands["market"].tolist() == [1, 2, 3, 4] and (commands["qty"] == 3).all()
    assert commands["price"][3] == commands["price"][0]  # the perpetual's oracle is the BTC index
    assert (commands["price"] % 100 == 0).all() and (commands["price"] > 0).all()


def test_the_shipped_sample_is_what_the_seeded_script_writes(tmp_path):
    script = Path(__file__).resolve().parent.parent / "scripts" / "make_sample_prices.py"
    sys.path.insert(0, str(script.parent))
    try:
        import make_sample_prices
    finally:
        sys.path.remove(str(script.parent))
    make_sample_prices.main(["--out", str(tmp_path / "s.csv")])
    shipped = resolve_path("builtin:sample_prices.csv", load())
    assert (tmp_path / "s.csv").read_bytes() == shipped.read_bytes()


# ------------------------------------------------------------------ sources


def write_prices(path: Path, rows: list[tuple]) -> Path:
    if path.suffix == ".csv":
        path.write_text("ts_ns,market,price,source\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    else:
        path.write_text("".join(f'{{"ts_ns": {r[0]}, "market": {r[1]}, "price": {r[2]}, "source": "{r[3]}"}}\n'
                                for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_file_replay_retimes_filters_loops_and_counts_unreadable_rows(tmp_path, suffix):
    rows = [(5 * S, 1, 10.5, "x"), (6 * S, 1, 11.0, "y"), (7 * S, 1, 12.0, "x"), (9 * S, 1, 13.0, "x")]
    path = write_prices(tmp_path / f"p{suffix}", rows)
    with path.open("a") as fh:
        fh.write("not,a,row,x\n" if suffix == ".csv" else '{"ts_ns": "soon"}\n')
    src = FileReplaySource("f", path, rows_from="x", speed=2.0, loop=True)
    line = 6 if suffix == ".csv" else 5  # after the header, if any, and the 4 rows
    assert src.rejects.counts == {"malformed": 1} and f"p{suffix}:{line}: " in src.rejects.last
    first = src.poll(T0)
    assert first.tolist() == [(1, 10.5, T0)]
    assert src.next_due_ns() == T0 + S  # 2 recorded seconds at speed 2
    assert src.poll(T0 + S).tolist() == [(1, 12.0, T0 + S)]
    assert src.poll(T0 + 2 * S).tolist() == [(1, 13.0, T0 + 2 * S)]
    # period: span 4 s / 2 + one average gap (4/2 s recorded -> 1 s): the next cycle starts at +3 s
    assert len(src.poll(T0 + 3 * S - 1)) == 0
    assert src.poll(T0 + 3 * S).tolist() == [(1, 10.5, T0 + 3 * S)]
    # asleep for many cycles: it skips them rather than replaying a backlog
    later = src.poll(T0 + 300 * S + S)
    assert later.tolist() == [(1, 10.5, T0 + 300 * S), (1, 12.0, T0 + 301 * S)]


@pytest.mark.parametrize("suffix, bad_line", [
    (".jsonl", b'{"ts_ns": 1, "market": 1, "price": 2.0, "source": "\xf7"}\n'),
    (".csv", b"1,1,2.\xf70,x\n"),
])
def test_a_line_that_is_not_utf8_is_counted_unreadable(tmp_path, suffix, bad_line):
    path = write_prices(tmp_path / f"p{suffix}", [(5 * S, 1, 10.5, "x")])
    with path.open("ab") as fh:
        fh.write(bad_line)
    src = FileReplaySource("f", path)
    line = 3 if suffix == ".csv" else 2  # after the header, if any, and the good row
    assert src.rejects.counts == {"malformed": 1} and f"p{suffix}:{line}: " in src.rejects.last
    assert src.poll(T0).tolist() == [(1, 10.5, T0)]


def test_file_replay_without_loop_goes_silent(tmp_path):
    src = FileReplaySource("f", write_prices(tmp_path / "p.csv", [(1, 1, 1.0, "x"), (2, 1, 2.0, "x")]), loop=False)
    assert len(src.poll(T0)) == 1 and len(src.poll(T0 + S)) == 1
    assert len(src.poll(T0 + 100 * S)) == 0 and src.next_due_ns() is None


def test_file_replay_refuses_files_it_cannot_use(tmp_path):
    (tmp_path / "h.csv").write_text("time,market,price\n1,1,1\n")
    with pytest.raises(ValueError, match="lacks"):
        FileReplaySource("f", tmp_path / "h.csv")
    with pytest.raises(ValueError, match="no price rows from source 'zz'"):
        FileReplaySource("f", write_prices(tmp_path / "p.csv", [(1, 1, 1.0, "x")]), rows_from="zz")
    with pytest.raises(ValueError, match=".csv or .jsonl"):
        FileReplaySource("f", tmp_path / "p.txt")


def test_simulated_source_is_seeded_and_steps_with_time():
    def run(seed):
        src = SimulatedSource("s", {1: 100.0, 2: 50.0}, seed=seed, step_s=0.5, vol_bps=20, jump_probability=0.2,
                              jump_bps=300)
        out = [src.poll(T0)]
        assert src.next_due_ns() == T0 + S // 2
        out += [src.poll(T0 + k * S // 4) for k in range(1, 41)]
        return np.concatenate(out)

    a, b = run(1), run(1)
    assert a.tobytes() == b.tobytes() and a.tobytes() != run(2).tobytes()
    assert a.dtype == OBSERVATION_DTYPE and len(a) == 2 * 21  # the start and 20 steps of 0.5 s
    assert a[:2].tolist() == [(1, 100.0, T0), (2, 50.0, T0)]
    assert sorted(set(a["ts"].tolist())) == [T0 + k * S // 2 for k in range(21)]
    assert (a["price"] > 0).all() and len(set(a["price"][::2].tolist())) > 15


def test_refusal_reasons_match_the_kernels_codes():
    assert tuple(REFUSALS) == REASONS[1:]


def random_feeds_config(rng: np.random.Generator, markets: int):
    """Markets fed by 1-4 of four sources each, with random quorums, bounds and intervals."""
    text = "[[assets]]\nid = 1\nsymbol = \"USDT\"\ndecimals = 6\n[[assets]]\nid = 2\nsymbol = \"BTC\"\ndecimals = 8\n"
    for m in range(1, markets + 1):
        text += (f"[[markets]]\nid = {m}\nbase = \"BTC\"\nquote = \"USDT\"\ntick_size = 100\nlot_size = 100000\n"
                 "min_size = 100000\n")
    text += VENUES + "[feeds]\nenabled = true\naccount = 9001\n"
    for name in "abcd":
        text += f'[[feeds.sources]]\nkind = "simulated"\nname = "{name}"\nstart_prices = {{ 1 = 100.0 }}\n'
    for m in range(1, markets + 1):
        names = [str(n) for n in rng.choice(list("abcd"), size=int(rng.integers(1, 5)), replace=False)]
        text += (f"[[feeds.markets]]\nid = {100 + m}\nmarket = {m}\nsources = {names!r}\n"
                 f"quorum = {int(rng.integers(1, len(names) + 1))}\nstale_after_s = {int(rng.integers(1, 4))}\n"
                 f"max_deviation_bps = {int(rng.choice([1, 50, 200, 10000]))}\n"
                 f"interval_s = {float(rng.choice([0.5, 1.0]))}\n")
    return loads(text.replace("'", '"'))


def test_a_round_is_the_per_market_rule_on_random_states():
    """The round's C loop against a per-market reading of the rules (``feeds.aggregate``) in plain
    Python, on random prices, ages, sources, quorums, bounds, due times and last sent times."""
    from fractions import Fraction

    def median(values):
        v = sorted(values)
        return round(Fraction(v[(len(v) - 1) // 2] + v[len(v) // 2], 2)) if v else 0  # ties to even

    rng = np.random.default_rng(7)
    outcomes = []
    for trial in range(20):
        agg = Aggregator(random_feeds_config(rng, 30))
        now = T0 + trial * S
        for row, names in enumerate(agg.sources):
            k = len(names)
            agg.ticks[row, :k] = rng.integers(1000, 1010, size=k) * rng.choice([1, 1, 2], size=k)
            agg.ts[row, :k] = np.where(rng.random(k) < 0.15, 0, now - rng.integers(0, 4 * S, size=k))
        agg.next_due[:] = now + rng.choice([-S, 0, 1], size=len(agg.next_due))
        agg.last_sent_ts[:] = np.where(rng.random(len(agg.next_due)) < 0.2, now, 0)
        before = {name: getattr(agg, name).copy() for name in
                  ("ticks", "ts", "next_due", "last_sent_ts", "stale_drops", "deviation_drops", "sent", "stale_rounds",
                   "held_back", "price_ticks", "quorum_size", "fresh")}
        got = agg.aggregate(now)
        expected = []
        for row, names in enumerate(agg.sources):
            due = before["next_due"][row] <= now
            interval = int(agg.interval_ns[row])
            grid = before["next_due"][row]  # the next point of the market's grid after now
            while due and grid <= now:
                grid += interval
            assert agg.next_due[row] == grid
            if not due:
                assert agg.stale_rounds[row] == before["stale_rounds"][row] and agg.sent[row] == before["sent"][row]
                continue
            ticks, ts = before["ticks"][row, :len(names)].tolist(), before["ts"][row, :len(names)].tolist()
            fresh = [c for c in range(len(names)) if ts[c] > 0 and now - ts[c] <= agg.stale_ns[row]]
            m = median([ticks[c] for c in fresh])
            bps = int(agg.max_deviation_bps[row])
            kept = [c for c in fresh if abs(ticks[c] - m) * 10_000 <= bps * m]
            for c in range(len(names)):
                assert agg.stale_drops[row, c] - before["stale_drops"][row, c] == (ts[c] > 0 and c not in fresh)
                assert agg.deviation_drops[row, c] - before["deviation_drops"][row, c] == (c in fresh and c not in kept)
                assert agg.in_quorum[row, c] == (c in kept and len(kept) >= agg.quorum[row])
            ok = len(kept) >= agg.quorum[row]
            assert agg.fresh[row] == ok and agg.quorum_size[row] == (len(kept) if ok else 0)
            assert agg.stale_rounds[row] - before["stale_rounds"][row] == (not ok)
            if not ok:
                continue
            source_ts = min(ts[c] for c in kept)
            if source_ts <= before["last_sent_ts"][row]:
                assert agg.held_back[row] - before["held_back"][row] == 1
                continue
            price = median([ticks[c] for c in kept])
            expected.append((Cmd.ORACLE_PRICE, int(agg.venue[row]), int(agg.market[row]), 9001, price * 100, len(kept),
                             int(agg.feed_id[row]), source_ts))
            assert agg.price_ticks[row] == price and agg.last_sent_ts[row] == source_ts
        assert [tuple(int(c[f]) for f in ("kind", "venue", "market", "account", "price", "qty", "id", "aux"))
                for c in got] == expected
        for field in ("side", "tif", "ord_type", "stp", "flags", "ts"):
            assert not got[field].any()
        outcomes += [len(got), int((agg.held_back - before["held_back"]).sum()),
                     int((agg.stale_rounds - before["stale_rounds"]).sum()),
                     int((agg.deviation_drops - before["deviation_drops"]).sum())]
    sent, held, stale, deviating = np.reshape(outcomes, (-1, 4)).sum(axis=0)
    assert min(sent, held, stale, deviating) > 10  # every outcome came up


def test_rounds_at_jittered_times_stay_on_the_grid_and_the_matcher_accepts_every_one():
    """Sources stepping at twice the round interval (every other round has nothing new), rounds run
    late by random amounts (sometimes past the next round): every command sent is accepted by the
    matcher (never a source time it has seen), and rounds skip what they missed without leaving
    their grid."""
    from engine.matcher import Engine
    from engine.process import bootstrap_commands

    cfg = loads(feeds_toml(interval=0.01, stale=1.0))
    engine = Engine(max_orders=100, max_accounts=100, max_markets=16, max_assets=8)
    engine.process(bootstrap_commands(cfg))
    agg = Aggregator(cfg)
    sources = [SimulatedSource(name, {1: 100.0}, seed=i, step_s=0.02, vol_bps=5.0) for i, name in enumerate("abc")]
    rng = np.random.default_rng(3)
    now, sent, kinds = T0, 0, []
    for _ in range(300):
        for s in sources:
            agg.ingest(s.name, Rejects(), s.poll(now), now)
        commands = agg.aggregate(now)
        commands["ts"] = now
        kinds += engine.process(commands)["kind"].tolist()
        sent += len(commands)
        assert (agg.next_due[0] - T0) % (S // 100) == 0 and agg.next_due[0] > now
        now = int(agg.next_due[0]) + int(rng.choice([0, 1000, 3_000_000, 12_000_000]))  # late, or past the next
    assert sent > 100 and kinds.count(int(Ev.ORACLE)) == sent and int(Ev.REJECTED) not in kinds
    assert agg.held_back[0] > 50  # the rounds with nothing newer

"""Venues list their own markets (issue 7): ListMarket (Cmd 83) from a live staked venue's operator or the admin,
on both engines (``engine_cls``): the listing is AddMarket's (same echo, same state) and the venue offers it,
every reject with its code and the state unchanged, the new market traded on the venue and offered by another;
the differential stream ``generators.VenueListingStreamGenerator``; the gateway message and ``xos venue
list-market`` through real sockets."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from engine.codes import ResultCode as RC
from engine.matcher import Engine
from engine.records import Cmd, Ev, EvFlag, MarketKind, Tif, pack_listing, pack_market_assets, pack_market_params
from engine.state import canonical_state

from generators import ENGINE_KWARGS, VenueListingStreamGenerator
from test_differential import run_differential
from test_venues import ADMIN, BTC, MKT, OKB, OP1, OP2, T1, T2, T3, USD, codes, ok, state, two_venues

NEW = 5  # the market venue 1 lists
LISTING = dict(tick_size=2, lot_size=3, min_size=6, maker_bps=-2, taker_bps=5, band_bps=300)
ECHO_FIELDS = ("kind", "code", "side", "reason", "flags", "market", "venue", "order_id", "account", "client_id",
               "price", "qty", "remaining", "maker_order", "maker_fee", "taker_fee")


def world(engine_cls):
    """``two_venues`` plus venue 3 (T3's) halted and venue 4 (T1's) slashed below the minimum stake."""
    e = two_venues(engine_cls)
    ok(e.launch_venue(T3, 3, 1_000, insurance_account=903))
    ok(e.set_venue_status(T3, 3, 2))
    ok(e.launch_venue(T1, 4, 1_000, insurance_account=904))
    ok(e.slash(ADMIN, 4, 1, reason=1))
    return e


def test_an_operator_lists_what_the_admin_would_and_its_venue_offers_it(engine_cls):
    by_operator, by_admin = world(engine_cls), world(engine_cls)
    listed = ok(by_operator.list_market(OP1, 1, NEW, BTC, OKB, kind=MarketKind.PERPETUAL, **LISTING))
    added = ok(by_admin.add_market(NEW, BTC, OKB, venue=1, kind=MarketKind.PERPETUAL, **LISTING))
    assert [int(k) for k in listed["kind"]] == [Ev.ACCEPTED]
    assert listed[list(ECHO_FIELDS)].tolist() == added[list(ECHO_FIELDS)].tolist()  # AddMarket's echo
    assert (listed[0]["flags"], listed[0]["account"], listed[0]["remaining"]) == (
        EvFlag.MARKET_LISTING, pack_market_assets(BTC, OKB), pack_market_params(-2, 5, 300))
    assert (int(listed[0]["maker_account"]), int(added[0]["maker_account"])) == (OP1, 0)  # its sender; trusted: 0
    assert canonical_state(by_operator) == canonical_state(by_admin)
    assert by_operator.venue_markets(1) == [MKT, NEW] and NEW not in by_operator.venue_markets(2)
    ok(by_operator.list_market(ADMIN, 2, NEW + 1, USD, BTC, tick_size=1, lot_size=1, min_size=1))  # the admin may
    assert NEW + 1 in by_operator.venue_markets(2)


def test_the_listing_trades_on_its_venue_and_any_venue_may_offer_it(engine_cls):
    e = world(engine_cls)
    ok(e.list_market(OP1, 1, NEW, BTC, USD, **LISTING))
    ok(e.place(T1, NEW, 1, 100, 12, 1, venue=1))
    fill = ok(e.place(T3, NEW, 0, 100, 6, 1, tif=Tif.IOC, venue=1))
    fills = fill[fill["kind"] == Ev.FILL]
    assert (len(fills), int(fills[0]["qty"]), int(fills[0]["price"])) == (1, 6, 100)
    assert codes(e.place(T2, NEW, 0, 100, 6, 2, venue=2)) == [RC.MARKET_NOT_OFFERED]
    assert codes(e.place(T2, NEW, 0, 100, 6, 2, venue=0)) == [RC.MARKET_NOT_OFFERED]  # venue 0: the admin's only
    ok(e.offer_market(OP2, 2, NEW))  # listed once, offered by any number of venues: one shared book
    taken = ok(e.place(T2, NEW, 0, 100, 6, 2, tif=Tif.IOC, venue=2))
    assert [(int(f["venue"]), int(f["client_id"])) for f in taken[taken["kind"] == Ev.FILL]] == [(2, 1)]


def listing(account=OP1, venue=1, market=NEW, kind=MarketKind.SPOT, base=BTC, quote=OKB, tick=2, lot=3, min_size=6,
            maker=0, taker=0, band=0):
    flags, aux = pack_listing(base, quote, maker, taker, band)
    return lambda e: e.submit(Cmd.LIST_MARKET, account=account, venue=venue, market=market, side=kind, flags=flags,
                              price=tick, qty=lot, id=min_size, aux=aux)


BAD_LISTINGS = [
    ("sender 0", listing(account=0), RC.INVALID_ACCOUNT_ID),
    ("unknown venue", listing(venue=9), RC.UNKNOWN_VENUE),
    ("another venue's operator", listing(account=OP2), RC.NOT_VENUE_OPERATOR),
    ("a trader", listing(account=T2), RC.NOT_VENUE_OPERATOR),
    ("venue 0 from an operator", listing(venue=0), RC.NOT_VENUE_OPERATOR),
    ("venue 0 from the admin: AddMarket's", listing(account=ADMIN, venue=0), RC.PROTOCOL_VENUE),
    ("market id 0", listing(market=0), RC.INVALID_MARKET_ID),
    ("market id above max_markets", listing(market=17), RC.INVALID_MARKET_ID),
    ("market exists", listing(market=MKT), RC.MARKET_EXISTS),
    ("venue halted", listing(account=T3, venue=3), RC.VENUE_NOT_LIVE),
    ("stake slashed below the minimum", listing(account=T1, venue=4), RC.STAKE_BELOW_MINIMUM),
    ("market kind 3", listing(kind=3), RC.INVALID_MARKET_KIND),
    ("unknown base", listing(base=3), RC.UNKNOWN_ASSET),
    ("quote 0", listing(quote=0), RC.UNKNOWN_ASSET),
    ("quote above max_assets", listing(quote=0xFFFF), RC.UNKNOWN_ASSET),
    ("same base and quote", listing(quote=BTC), RC.SAME_BASE_AND_QUOTE),
    ("tick 0", listing(tick=0), RC.INVALID_TICK_SIZE),
    ("lot negative", listing(lot=-3), RC.INVALID_LOT_SIZE),
    ("min size 0", listing(min_size=0), RC.INVALID_MIN_SIZE),
    ("min size off lot", listing(min_size=7), RC.INVALID_MIN_SIZE),
    ("maker above taker", listing(maker=5, taker=4), RC.INVALID_FEES),
    ("rebate above the taker fee", listing(maker=-6, taker=5), RC.INVALID_FEES),
    ("taker above 1000", listing(taker=1001), RC.INVALID_FEES),
    ("band above 10000", listing(band=10_001), RC.INVALID_PRICE_BAND),
    ("band at the u16 limit", listing(band=0xFFFF), RC.INVALID_PRICE_BAND),
]


@pytest.mark.parametrize("what, command, code", BAD_LISTINGS, ids=[b[0] for b in BAD_LISTINGS])
def test_a_bad_listing_is_rejected_with_its_code_and_changes_nothing(engine_cls, what, command, code):
    e = world(engine_cls)
    before = state(e)
    ev = command(e)
    assert [int(k) for k in ev["kind"]] == [Ev.REJECTED] and codes(ev) == [code], what
    assert state(e) == before


def test_every_listing_check_is_covered():
    """ListMarket reaches AddMarket's codes (besides its own sender and stake checks)."""
    add_market_codes = {RC.INVALID_MARKET_ID, RC.MARKET_EXISTS, RC.UNKNOWN_VENUE, RC.VENUE_NOT_LIVE,
                        RC.INVALID_MARKET_KIND, RC.UNKNOWN_ASSET, RC.SAME_BASE_AND_QUOTE, RC.INVALID_TICK_SIZE,
                        RC.INVALID_LOT_SIZE, RC.INVALID_MIN_SIZE, RC.INVALID_FEES, RC.INVALID_PRICE_BAND}
    assert {code for _, _, code in BAD_LISTINGS} == add_market_codes | {
        RC.INVALID_ACCOUNT_ID, RC.NOT_VENUE_OPERATOR, RC.PROTOCOL_VENUE, RC.STAKE_BELOW_MINIMUM}


@pytest.mark.parametrize("base, quote", [(70_000, USD), (BTC, 1 << 16), (-1, USD)])
def test_asset_ids_listmarket_cannot_carry_are_refused_before_the_engine(engine_cls, base, quote):
    e = world(engine_cls)
    before, seq = state(e), e.cmd_seq
    with pytest.raises(ValueError, match=r"asset id must be in 0\.\.65535 \(a larger id is listed by the admin's "
                                         r"AddMarket\)"):
        e.list_market(OP1, 1, NEW, base, quote, tick_size=1, lot_size=1, min_size=1)
    assert state(e) == before and e.cmd_seq == seq


# ------------------------------------------------------------------ differential stream

@pytest.mark.parametrize("seed", [1, 2])
def test_differential_stream_with_listings(seed, tmp_path):
    stats = run_differential(seed, 15_000, engine_kwargs=dict(ENGINE_KWARGS, max_markets=64), dump_dir=tmp_path,
                             generator=VenueListingStreamGenerator, listing_share=0.02)
    assert stats["fills"] > 300


def test_the_listing_stream_lists_trades_and_reaches_the_checks():
    kwargs = dict(ENGINE_KWARGS, max_markets=64)
    e = Engine(**kwargs)
    gen = VenueListingStreamGenerator(3, limits=kwargs, listing_share=0.02)
    rejected, listed, fills = collections.Counter(), set(), 0
    for _ in range(60):
        cmds = gen.next_chunk(250)
        first = gen.n_observed + 1
        ev = e.process(cmds)
        gen.observe(cmds, ev)
        ours = set((np.flatnonzero(cmds["kind"] == Cmd.LIST_MARKET) + first).tolist())
        rejected.update(int(r["code"]) for r in ev[ev["kind"] == Ev.REJECTED] if int(r["cmd_seq"]) in ours)
        accepted = ev[(ev["kind"] == Ev.ACCEPTED) & (ev["flags"] == EvFlag.MARKET_LISTING)]
        listed |= set(accepted["market"][accepted["maker_account"] != 0].tolist())
        fills += int(np.isin(ev["market"][ev["kind"] == Ev.FILL], list(listed)).sum())
    assert len(listed) > 20 and fills > 100
    assert {RC(c) for c in rejected} >= {
        RC.INVALID_ACCOUNT_ID, RC.UNKNOWN_VENUE, RC.NOT_VENUE_OPERATOR, RC.INVALID_MARKET_ID, RC.MARKET_EXISTS,
        RC.VENUE_NOT_LIVE, RC.INVALID_MARKET_KIND, RC.UNKNOWN_ASSET, RC.SAME_BASE_AND_QUOTE, RC.INVALID_TICK_SIZE,
        RC.INVALID_LOT_SIZE, RC.INVALID_MIN_SIZE, RC.INVALID_FEES, RC.INVALID_PRICE_BAND}


# ------------------------------------------------------------------ through the gateway and `xos venue list-market`

@pytest.fixture(scope="module")
def gateway_engine(tmp_path_factory):
    from gateway_harness import funded, unit_market
    from test_gateway_venues import KEYS, Engine as VenueGatewayEngine

    e = VenueGatewayEngine(tmp_path_factory.mktemp("gwlisting"), KEYS, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="OKB", decimals=2),
                   dict(id=3, symbol="BTC", decimals=2)],
        "markets": [unit_market(1, "OKB", "USD")],
        "accounts": funded((11, 12), USD=1000000, OKB=1000000, BTC=1000000),
        "venues": dict(admin=99, protocol_account=98, stake_asset="OKB", min_stake=1000, unbond_period_s=0.0,
                       launch=[dict(id=1, operator=11, insurance_account=901, stake=5000, markets=[1])]),
    })
    yield e
    e.stop()


def test_an_operator_lists_through_the_gateway_and_xos_venue_list_market(gateway_engine):
    from gateway import messages as m
    from gateway.client import BadRequest, InvalidOrder, PermissionDenied
    from gateway_harness import run
    from test_gateway_venues import xos_venue

    engine = gateway_engine

    async def scenario():
        op = await engine.client("operator").connect()
        ack = await op.send_command(m.ListMarket, venue=1, market=2, base=3, quote=1, tick_size=1, lot_size=1,
                                    min_size=1, maker_bps=-1, taker_bps=4, band_bps=500)
        with pytest.raises(InvalidOrder, match="MARKET_EXISTS"):
            await op.send_command(m.ListMarket, venue=1, market=2, base=3, quote=1, tick_size=1, lot_size=1,
                                  min_size=1)
        with pytest.raises(BadRequest, match=r"list_market\.base"):  # above 65535: the admin's AddMarket
            await op.send_command(m.ListMarket, venue=1, market=3, base=70_000, quote=1, tick_size=1, lot_size=1,
                                  min_size=1)
        other = await engine.client("other").connect()
        with pytest.raises(PermissionDenied, match="NOT_VENUE_OPERATOR"):
            await other.send_command(m.ListMarket, venue=1, market=3, base=3, quote=2, tick_size=1, lot_size=1,
                                     min_size=1)
        # the listed market trades through the gateway on the venue
        await op.request(m.PlaceOrder(rid=op.next_rid(), market=2, side=1, price=50, qty=2, client_id=1, venue=1))
        taken = await other.request(m.PlaceOrder(rid=other.next_rid(), market=2, side=0, price=50, qty=2,
                                                 client_id=1, venue=1, tif=Tif.IOC))
        for c in (op, other):
            await c.close()
        return ack, taken

    ack, taken = run(scenario())
    cmd = engine.journal()[ack.cmd_seq - 1]
    assert (int(cmd["kind"]), int(cmd["account"])) == (Cmd.LIST_MARKET, 11)
    assert ack.durable_seq >= ack.cmd_seq
    state = engine.state()
    market = next(x for x in state.markets() if x.market_id == 2)
    assert (market.base, market.quote, market.venue, market.maker_bps, market.taker_bps, market.band_bps) == (
        3, 1, 1, -1, 4, 500)
    assert 2 in state.venue_markets(1)
    assert taken.order_id > 0 and state.balance(12, 3)[0] == 1000000 + 2
    done = xos_venue(engine, "list-market", 1, 4, "--base", 3, "--quote", 2, "--tick-size", 1, "--lot-size", 1,
                     "--min-size", 1, "--key", engine.key("operator"))
    assert done.returncode == 0 and "LIST_MARKET venue 1: ok" in done.stdout, done.stdout + done.stderr
    assert 4 in engine.state().venue_markets(1)
    refused = xos_venue(engine, "list-market", 1, 5, "--base", 3, "--quote", 2, "--tick-size", 1, "--lot-size", 1,
                        "--min-size", 1, "--key", engine.key("other"))
    assert refused.returncode == 1 and "NOT_VENUE_OPERATOR" in refused.stdout, refused.stdout + refused.stderr
    too_large = xos_venue(engine, "list-market", 1, 5, "--base", 70_000, "--quote", 2, "--tick-size", 1,
                          "--lot-size", 1, "--min-size", 1, "--key", engine.key("operator"))
    assert too_large.returncode == 2 and "admin's AddMarket" in too_large.stderr, too_large.stderr
    trusted = xos_venue(engine, "list-market", 1, 5, "--base", 2, "--quote", 3, "--tick-size", 1, "--lot-size", 1,
                        "--min-size", 1, "--kind", "perpetual", "--trusted-as", 99)  # the admin's trusted path
    assert trusted.returncode == 0 and "LIST_MARKET venue 1: ok" in trusted.stdout, trusted.stdout + trusted.stderr
    assert engine.state().venue_markets(1) == [1, 2, 4, 5]

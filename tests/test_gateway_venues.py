"""Venue operator commands through the gateway: real sockets (CurveZMQ over ipc) into a supervised
engine whose config launches venue 1 (operator 11); the sender of each command is the account of
the session's key, and the matcher decides who may change what."""
from __future__ import annotations

import subprocess
import sys

import pytest

from engine.records import Cmd, VenueAccess, VenueStatus
from engine.venues import rebuild
from gateway import messages as m
from gateway.client import BadRequest, InvalidOrder, PermissionDenied

from gateway_harness import GatewayEngine, funded, handshake_refused, run, unit_market

KEYS = {"operator": 11, "other": 12}  # "stranger" gets a key pair the config does not register


class Engine(GatewayEngine):
    def state(self):
        """The matcher's state as the journal rebuilds it (every acknowledged command is in it)."""
        return rebuild(self.cfg)[0]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = Engine(tmp_path_factory.mktemp("gwvenues"), KEYS, {
        "assets": [dict(id=1, symbol="USD", decimals=2), dict(id=2, symbol="OKB", decimals=2)],
        "markets": [unit_market(1, "OKB", "USD"), unit_market(2, "USD", "OKB")],
        "accounts": funded((11, 12, 13), USD=1000000, OKB=1000000),
        "venues": dict(admin=99, protocol_account=98, stake_asset="OKB", min_stake=1000, unbond_period_s=0.0,
                       launch=[dict(id=1, operator=11, insurance_account=901, stake=5000, markets=[1])]),
    })
    yield e
    e.stop()


def venue_view(e, venue: int) -> tuple:
    return e.venue(venue), e.venue_fee_schedule(venue), e.allowed(venue), e.venue_markets(venue)


def test_the_operator_changes_its_venue_and_launches_are_sent_as_the_keys_account(engine):
    async def scenario():
        op = await engine.client("operator").connect()
        acks = [await op.send_command(m.VenueFees, venue=1, maker_bps=-1, taker_bps=4, operator_bps=5000,
                                       insurance_bps=1000),
                await op.send_command(m.OfferMarket, venue=1, market=2),
                await op.send_command(m.Allow, venue=1, account=13),
                await op.send_command(m.AddStake, venue=1, amount=500),
                await op.send_command(m.VenuePolicy, venue=1, pool=3, accepts=(1 << 3) | 1),
                await op.send_command(m.VenueStatus, venue=1, status=VenueStatus.HALTED)]
        other = await engine.client("other").connect()
        acks.append(await other.send_command(m.LaunchVenue, venue=2, stake=2000, insurance_account=902,
                                              access=VenueAccess.ALLOW_LIST))
        for c in (op, other):
            await c.close()
        return acks

    acks = run(scenario())
    journal = engine.journal()
    for ack, (kind, sender) in zip(acks, [(Cmd.VENUE_FEES, 11), (Cmd.OFFER_MARKET, 11), (Cmd.ALLOW, 11),
                                          (Cmd.ADD_STAKE, 11), (Cmd.VENUE_POLICY, 11), (Cmd.VENUE_STATUS, 11),
                                          (Cmd.LAUNCH_VENUE, 12)]):
        assert ack.durable_seq >= ack.cmd_seq > 0 and ack.order_id == 0 and ack.client_id == 0
        cmd = journal[ack.cmd_seq - 1]
        assert (int(cmd["kind"]), int(cmd["account"])) == (kind, sender)  # the key's account sent it
    e = engine.state()
    v1, fees, allowed, markets = venue_view(e, 1)
    assert (v1.status, v1.stake, v1.pool, v1.accepts) == (VenueStatus.HALTED, 5500, 3, 9)
    assert (fees.maker_bps, fees.taker_bps, fees.operator_bps, fees.insurance_bps) == (-1, 4, 5000, 1000)
    assert allowed == [13] and markets == [1, 2]
    v2 = e.venue(2)
    assert (v2.operator, v2.stake, v2.access, v2.insurance_account) == (12, 2000, VenueAccess.ALLOW_LIST, 902)


def test_another_accounts_key_is_refused_and_nothing_changes(engine):
    before = engine.state()

    async def scenario():
        other = await engine.client("other").connect()
        refused = []
        for request, fields in [(m.Deny, dict(venue=1, account=13)), (m.VenueStatus, dict(venue=1, status=1)),
                                (m.WithdrawMarket, dict(venue=1, market=1)), (m.Unbond, dict(venue=1, amount=10)),
                                (m.SweepFees, dict(venue=1, asset=1))]:
            with pytest.raises(PermissionDenied, match="NOT_VENUE_OPERATOR") as exc:
                await other.send_command(request, **fields)
            refused.append(exc.value)
        await other.close()
        return refused

    run(scenario())
    after = engine.state()
    assert venue_view(after, 1) == venue_view(before, 1)
    assert after.balances(11) == before.balances(11) and after.balances(12) == before.balances(12)
    assert {int(a) for a in engine.journal()["account"][-5:]} == {12}  # journaled as sent: by 12, and refused


def test_an_unknown_key_cannot_connect(engine):
    n = len(engine.journal())
    assert run(handshake_refused(engine))
    assert len(engine.journal()) == n


def test_bad_fields_get_a_clear_reject_and_admin_commands_are_not_served(engine):
    async def scenario():
        op = await engine.client("operator").connect()
        with pytest.raises(BadRequest, match=r"venue_fees\.maker_bps.*32767"):  # would not fit the packed int16
            await op.send_command(m.VenueFees, venue=1, maker_bps=40_000, taker_bps=1)
        with pytest.raises(BadRequest, match=r"venue_status\.venue"):
            await op.send_command(m.VenueStatus, venue=-1, status=2)
        with pytest.raises(BadRequest, match=r"venue_policy\.pool"):
            await op.send_command(m.VenuePolicy, venue=1, pool=256)
        with pytest.raises(InvalidOrder, match="INVALID_VENUE_STATUS"):  # the matcher's own check
            await op.send_command(m.VenueStatus, venue=1, status=9)
        with pytest.raises(InvalidOrder, match="UNKNOWN_VENUE"):
            await op.send_command(m.AddStake, venue=77, amount=10)
        with pytest.raises(TypeError, match="amount must be an int"):
            await op.send_command(m.AddStake, venue=1, amount=10.5)
        with pytest.raises(TypeError, match="not a venue, outcome, liquidation or exposure-cap command"):
            await op.send_command(m.PlaceOrder, market=1)
        await op.send_raw(m.encoder.encode(["venue_params", 41, 2, 1000, 0, 11, 11]))  # admin only: no message
        err = await op.expect_reply(41)
        assert type(err) is m.Error and err.name == "UNKNOWN_MESSAGE"
        assert await op.heartbeat() > 0  # and the session is served on
        await op.close()

    before = venue_view(engine.state(), 1)
    run(scenario())
    assert venue_view(engine.state(), 1) == before


def xos_venue(engine, *args):
    return subprocess.run([sys.executable, "-m", "engine.cli", "venue", *map(str, args), "-c", str(engine.path)],
                          capture_output=True, text=True, timeout=60)


def test_xos_venue_goes_through_the_gateway_with_a_key(engine):
    ok = xos_venue(engine, "allow", 1, 12, "--key", engine.key("operator"))
    assert ok.returncode == 0 and "ALLOW venue 1: ok" in ok.stdout, ok.stdout + ok.stderr
    refused = xos_venue(engine, "deny", 1, 12, "--key", engine.key("other"))
    assert refused.returncode == 1 and "rejected NOT_VENUE_OPERATOR" in refused.stdout, refused.stdout + refused.stderr
    venue_file = engine.tmp / "venue3.toml"
    venue_file.write_text("id = 3\noperator = 12\ninsurance_account = 903\nstake = 1000\nmarkets = [1]\n")
    wrong = xos_venue(engine, "launch", venue_file, "--key", engine.key("operator"))
    assert wrong.returncode == 2 and "not the venue's operator 12" in wrong.stderr
    assert 12 in engine.state().allowed(1) and engine.state().venue(3) is None

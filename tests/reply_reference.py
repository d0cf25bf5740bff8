"""The gateway's reply pass written out in Python, one event at a time: the reference that
gateway/routing.pyx's ``ReplyRouter.route`` is tested against.  Which events concern the accounts
with keys, the orders' client ids and open sizes as those events show them, which command each
event answers (``reference_echoes``, the echo rules in numpy) and how, and the execution reports."""
from __future__ import annotations

import collections

import numpy as np

from engine.records import (CancelReason, Cmd, CmdFlag, Ev, EvFlag, pack_market_assets, pack_market_params,
                            unpack_listing)
from gateway import messages as m
from gateway.routing import PENDING_DTYPE
from gateway.server import EVENT_ACCOUNTS_KINDS, OWN_FIRST_KINDS

MAKER_DONE = int(EvFlag.MAKER_DONE)
LISTING = int(EvFlag.ASSET_LISTING | EvFlag.MARKET_LISTING)
LOST_SCAN = 64  # how deep into a FIFO an echo proves the commands before it lost (gateway/routing.pyx)


def reference_echoes(ev: np.ndarray, cmd: np.ndarray) -> np.ndarray:
    """Row by row: is event ``ev[i]`` the own first event of command ``cmd[i]`` (it echoes its fields)?"""
    ek, ck = ev["kind"], cmd["kind"]
    same_market = ev["market"] == cmd["market"]
    same_id = ev["client_id"] == cmd["id"]
    accepted = ek == Ev.ACCEPTED
    same_price_venue = (ev["price"] == cmd["price"]) & (ev["venue"] == cmd["venue"])
    same_values = same_id & same_market & same_price_venue & (ev["qty"] == cmd["qty"])
    target = np.where(cmd["flags"] & CmdFlag.BY_CLIENT_ID, ev["client_id"], ev["order_id"]) == cmd["id"]
    rejected = (ek == Ev.REJECTED) & (ev["flags"] == ck)  # a Rejected names the refused command's kind
    out = (rejected & same_values) | \
        ((ck == Cmd.PLACE) & accepted & (ev["order_id"] > 0) & same_id & same_market & (ev["side"] == cmd["side"])
         & same_price_venue) | \
        ((ck == Cmd.MASS_CANCEL) & accepted & (ev["order_id"] == 0) & same_market) | \
        ((ck == Cmd.CANCEL) & (ek == Ev.CANCELLED) & (ev["reason"] == CancelReason.USER) & target) | \
        ((ck == Cmd.AMEND) & (ek == Ev.AMENDED) & target)
    # a multi-leg order's header: its first leg's Accepted or its one Rejected, the parent id in maker_order
    legs = cmd["qty"]
    out |= (ck == Cmd.MULTI_LEG) & (ev["maker_order"] == cmd["id"]) & (
        (accepted & (ev["reason"] == 1) & (ev["maker_account"] == legs))
        | (rejected & (ev["reason"] <= legs)))
    field = ck >= Cmd.VENUE_PARAMS
    out |= field & ((ek == Ev.VENUE) | (ek == Ev.ORACLE_CONFIG)) & (ev["flags"] == ck) & same_values & \
        (ev["side"] == cmd["side"]) & (ev["remaining"] == cmd["aux"])
    status = ek == Ev.OUTCOME_STATUS
    out |= (ck == Cmd.OUTCOME_CONFIG) & status & (ev["reason"] == 1) & same_market & (ev["price"] == cmd["price"]) & \
        (ev["order_id"] == cmd["id"]) & (ev["maker_order"] == cmd["qty"]) & (ev["client_id"] == cmd["aux"])
    out |= (ck == Cmd.RESOLVE) & status & (ev["reason"] != 1) & \
        ((same_market & (ev["qty"] == cmd["qty"])) | (ev["client_id"] != 0))
    out |= (ck == Cmd.CONVERT) & (ek == Ev.OUTCOME_CONVERT) & same_market & (ev["qty"] == cmd["qty"])
    out |= (ck == Cmd.LIQUIDATE) & (ek == Ev.LIQUIDATION) & (ev["account"] == cmd["id"]) & \
        (ev["venue"] == cmd["venue"]) & (ev["market"] == cmd["market"]) & (ev["maker_order"] == cmd["aux"])
    out |= (ck == Cmd.ISOLATED_MARGIN) & (ek == Ev.POSITION) & (ev["flags"] == ck) & same_market
    out |= ((ck == Cmd.VENUE_MARKET_HALT) | (ck == Cmd.VENUE_MARKET_RESUME)) & (ek == Ev.MARKET_STATUS) & \
        (ev["flags"] == ck) & same_market & (ev["venue"] == cmd["venue"])
    list_market = (ck == Cmd.LIST_MARKET) & accepted & (ev["flags"] == EvFlag.MARKET_LISTING) & same_values & \
        (ev["side"] == cmd["side"]) & (ev["maker_account"] == cmd["account"])
    for i in np.flatnonzero(list_market).tolist():  # its assets and fees are in AddMarket's packing in the echo
        base, quote, maker, taker, band = unpack_listing(int(cmd["flags"][i]), int(cmd["aux"][i]))
        list_market[i] = int(ev["account"][i]) == pack_market_assets(base, quote) and \
            int(ev["remaining"][i]) == pack_market_params(maker, taker, band)
    return out | list_market


class ReferenceReplies:
    """``ReplyRouter`` in Python: ``fifo`` (account -> list of PENDING_DTYPE rows, oldest first) is
    filled by the test as the gateway's ``ForwardBatch.enqueue`` fills the router's; ``orders``: order id ->
    [client id, open size] of the keyed accounts' orders."""

    def __init__(self, keyed, journaling: bool = True):
        self.keyed = {int(a) for a in keyed}
        self.journaling = journaling
        self.claimed = 0
        self.fifo: dict[int, list] = collections.defaultdict(list)
        self.orders: dict[int, list[int]] = {}

    def concerns(self, e: dict) -> bool:
        kind, keyed = e["kind"], self.keyed
        listing = kind == Ev.ACCEPTED and e["flags"] == EvFlag.MARKET_LISTING
        return kind in EVENT_ACCOUNTS_KINDS and (
            e["account"] in keyed or ((kind == Ev.FILL or listing) and e["maker_account"] in keyed)
            or (kind == Ev.LIQUIDATION and e["client_id"] in keyed))

    def follow(self, e: dict) -> tuple[int, int, int] | None:
        """The table's part of event ``e``; a fill's (taker's client id, maker's, maker's open size after it)."""
        kind, orders = e["kind"], self.orders
        if kind == Ev.ACCEPTED and e["order_id"] > 0 and e["flags"] == 0:
            orders[e["order_id"]] = [e["client_id"], e["remaining"]]
        elif kind == Ev.FILL:
            taker, maker = orders.get(e["order_id"]), orders.get(e["maker_order"])
            left = 0 if e["flags"] & MAKER_DONE else (maker[1] - e["qty"] if maker else -1)
            fill = (taker[0] if taker else 0, maker[0] if maker else 0, left)
            if maker:
                maker[1] = left
            if taker:
                taker[1] = e["remaining"]
            return fill
        elif kind in (Ev.CANCELLED, Ev.AMENDED) and e["order_id"] in orders:
            orders[e["order_id"]][1] = e["remaining"]
        return None

    def answer(self, events: np.ndarray, i: int, e: dict, acks: list, rejects: list, lost: list) -> None:
        """Event ``i`` answers a command if it is the first of its command of an answering kind."""
        kind = e["kind"]
        if kind not in OWN_FIRST_KINDS or e["cmd_seq"] == self.claimed or \
                (kind == Ev.CANCELLED and e["reason"] != CancelReason.USER) or \
                (kind == Ev.POSITION and e["flags"] != Cmd.ISOLATED_MARGIN):
            return
        self.claimed = e["cmd_seq"]
        listing = kind == Ev.ACCEPTED and e["flags"] == EvFlag.MARKET_LISTING
        sender = e["client_id"] if kind == Ev.LIQUIDATION else e["maker_account"] if listing else e["account"]
        q = self.fifo.get(sender)
        if not q:
            return
        window = np.array(q[:LOST_SCAN], PENDING_DTYPE)
        hits = np.flatnonzero(reference_echoes(events[np.full(len(window), i)], window["cmd"]))
        if not len(hits):
            return  # another producer's command for the account
        d = int(hits[0])
        lost += [(int(p["sid"]), int(p["rid"]), int(p["cmd"]["kind"]), int(p["cmd"]["id"]), int(p["cmd"]["account"]))
                 for p in q[:d]]
        p = q[d]
        del q[:d + 1]
        sid, rid, ckind, ident = int(p["sid"]), int(p["rid"]), int(p["cmd"]["kind"]), int(p["cmd"]["id"])
        if kind == Ev.REJECTED:
            rejects.append((sid, rid, ckind, ident, e["code"], e["client_id"], e["cmd_seq"], e["reason"]))
            return
        durable_by = e["cmd_seq"] + (int(p["cmd"]["qty"]) if ckind == Cmd.MULTI_LEG else 0)
        if self.journaling and e["durable_seq"] < durable_by:
            raise RuntimeError("not acknowledging a command that is not durable")
        if sid < 0:
            return
        order_id, client_id = e["order_id"], e["client_id"]
        if ckind == Cmd.MULTI_LEG:
            client_id = ident
        elif ckind >= Cmd.VENUE_PARAMS:
            order_id = client_id = 0
        count = e["qty"] if ckind == Cmd.MASS_CANCEL else 0
        acks.append((sid, (rid, order_id, client_id, e["cmd_seq"], e["durable_seq"], count, e["ts"])))

    @staticmethod
    def report(e: dict, fill: tuple | None, reports: list) -> None:
        """Event ``e``'s execution reports: (account, REPORT_ROW_DTYPE fields as a dict) each."""
        if e["kind"] not in (Ev.FILL, Ev.CANCELLED, Ev.AMENDED):
            return
        row = {name: e[name] for name in ("side", "market", "venue", "order_id", "client_id", "price", "qty",
                                          "remaining", "seq", "cmd_seq", "ts")}
        if e["kind"] == Ev.FILL:
            taker_client, maker_client, maker_left = fill
            reports.append((e["account"], dict(row, kind=1, liquidity=2, fee=e["taker_fee"], client_id=taker_client)))
            reports.append((e["maker_account"], dict(row, kind=1, liquidity=1, fee=e["maker_fee"],
                                                     order_id=e["maker_order"], venue=e["client_id"],
                                                     client_id=maker_client, side=1 - e["side"],
                                                     remaining=maker_left)))
        else:
            cancel = e["kind"] == Ev.CANCELLED
            reports.append((e["account"], dict(row, kind=2 if cancel else 3, reason=e["reason"] if cancel else 0,
                                               code=e["code"] if cancel else 0)))

    def route(self, events: np.ndarray, after: int = 0, quiet_until: int = 0) -> tuple:
        """(acks as (sid, row tuple), rejects, lost, reports as (account, row dict), listings) of a batch,
        as ``ReplyRouter.route`` makes them."""
        acks, rejects, lost, reports, listings = [], [], [], [], 0
        for i, values in enumerate(events.tolist()):
            e = dict(zip(events.dtype.names, values))
            if e["seq"] <= after:
                continue
            listings += e["kind"] == Ev.ACCEPTED and e["flags"] & LISTING != 0
            if not self.concerns(e):
                continue
            fill = self.follow(e)
            if e["seq"] <= quiet_until:
                continue
            self.answer(events, i, e, acks, rejects, lost)
            self.report(e, fill, reports)
        return acks, rejects, lost, reports, listings


def routed(router, table, events: np.ndarray, after: int = 0, quiet_until: int = 0) -> tuple:
    """``router.route`` (a ``ReplyRouter``) of a batch, in ``ReferenceReplies.route``'s terms."""
    n_acks, n_reports, listings = router.route(np.ascontiguousarray(events).view(np.uint8), after, quiet_until, table)
    acks = list(zip(router.ack_sid[:n_acks].tolist(), router.acks[:n_acks].tolist()))
    reports = [(account, dict(zip(m.REPORT_ROW_DTYPE.names, row))) for account, row in
               zip(router.report_to[:n_reports].tolist(), router.reports[:n_reports].tolist())]
    return acks, list(router.rejects), list(router.lost), reports, listings


def full_rows(reports: list) -> list:
    """Reference reports with every REPORT_ROW_DTYPE field (those a kind does not use are 0)."""
    return [(account, {name: row.get(name, 0) for name in m.REPORT_ROW_DTYPE.names}) for account, row in reports]

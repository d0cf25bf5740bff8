"""The order-entry wire protocol: msgspec MessagePack Structs, one message per ZeroMQ frame.

A client (DEALER) sends one request per message; the gateway (ROUTER) answers each request that
carries a request id ``rid`` with exactly one reply of the same ``rid`` (Ack, Reject, a query
result or Error), and pushes ExecutionReports (fills, cancels, amends) to every session of the
order's account.  Several replies for one session may travel together in one ``Replies``.

Structs are encoded as arrays whose first element is the tag (``array_like``): compact and fast
to decode.  Prices and sizes are int64 engine units (price in quote units per lot, size in base
units, see docs/ARCHITECTURE.md "Units"); never floats.  The account is never in a message: the
gateway takes it from the session's authenticated CurveZMQ key.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec
import numpy as np

from engine.records import OrdType, Side, Stp, Tif

I64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]  # every integer fits the engine's int64
MarketId = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]  # the command's u32 field


class _Msg(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, tag_field="t"):
    pass


# ------------------------------------------------------------------ requests: commands


class PlaceOrder(_Msg, tag="place"):
    rid: I64
    market: MarketId
    side: Side
    price: I64  # limit price, or a market order's protection price
    qty: I64
    client_id: I64  # unique among the account's open orders (the matcher rejects DUPLICATE_CLIENT_ID)
    tif: Tif = Tif.GTC
    ord_type: OrdType = OrdType.LIMIT
    stp: Stp = Stp.CANCEL_TAKER
    post_only: bool = False
    expire_at: I64 = 0  # engine clock ns, 0 = none (GTC only)


class CancelOrder(_Msg, tag="cancel"):
    rid: I64
    order_id: I64 = 0  # exactly one of order_id and client_id
    client_id: I64 = 0


class AmendOrder(_Msg, tag="amend"):
    rid: I64
    qty: I64  # the new open (remaining) size
    price: I64 = 0  # 0 = keep the price
    order_id: I64 = 0  # exactly one of order_id and client_id
    client_id: I64 = 0


class MassCancel(_Msg, tag="mass_cancel"):
    rid: I64
    market: MarketId = 0  # 0 = every market


Command = Union[PlaceOrder, CancelOrder, AmendOrder, MassCancel]

# Market makers' batch path: commands as packed little-endian records, read by the gateway with
# numpy (no Python object per command).  kind: 1 place, 2 cancel, 3 amend, 4 mass cancel (the
# engine's Cmd numbers); flags: 1 post-only (place), 2 ``id`` is a client id (cancel, amend);
# ``id``: the client id of a place, the order (or client) id of a cancel or amend; a mass cancel
# uses only ``market`` (0 = every market).  Each row is answered under its own ``rid``.
COMMAND_ROW_DTYPE = np.dtype([("kind", "u1"), ("side", "u1"), ("tif", "u1"), ("ord_type", "u1"), ("stp", "u1"),
                              ("flags", "u1"), ("market", "<u4"), ("rid", "<i8"), ("price", "<i8"), ("qty", "<i8"),
                              ("id", "<i8"), ("expire_at", "<i8")])


class OrderRows(_Msg, tag="rows"):
    """Up to ``gateway.max_batch`` commands as ``COMMAND_ROW_DTYPE`` rows (``rows.tobytes()``).  A
    session that sends one gets its acks and execution reports as packed rows (AckRows,
    ReportRows) from then on.  A bad row refuses the whole message with an Error naming it."""

    rid: I64
    rows: bytes


class Batch(_Msg, tag="batch"):
    """Up to ``gateway.max_batch`` commands in one message; each is answered under its own rid
    (``rid`` is answered only by an Error that refuses the whole batch)."""

    rid: I64
    requests: list[Command]


# ------------------------------------------------------------------ requests: session and queries


class Heartbeat(_Msg, tag="heartbeat"):
    rid: I64


class SetDeadman(_Msg, tag="deadman"):
    """Arm the dead-man switch: no message for ``timeout_ms`` cancels all the account's orders.
    0 disarms it."""

    rid: I64
    timeout_ms: I64


class OpenOrders(_Msg, tag="open_orders"):
    rid: I64
    market: MarketId = 0  # 0 = every market


class OrderStatus(_Msg, tag="order_status"):
    rid: I64
    client_id: I64 = 0  # exactly one of client_id and order_id
    order_id: I64 = 0


class Balances(_Msg, tag="balances"):
    rid: I64


class Markets(_Msg, tag="markets"):
    rid: I64


Request = Union[PlaceOrder, CancelOrder, AmendOrder, MassCancel, Batch, OrderRows, Heartbeat, SetDeadman, OpenOrders,
                OrderStatus, Balances, Markets]
COMMANDS = (PlaceOrder, CancelOrder, AmendOrder, MassCancel)

# ------------------------------------------------------------------ replies


class Ack(_Msg, tag="ack"):
    """The command is in the journal (durable) and the matcher took it."""

    rid: I64
    order_id: I64  # the order it made or acted on (0 for a mass cancel)
    client_id: I64
    cmd_seq: I64
    durable_seq: I64  # the journal was durable up to here when the event was published (>= cmd_seq)
    count: I64 = 0  # mass cancel: orders cancelled
    ts: I64 = 0  # engine clock ns


class Reject(_Msg, tag="reject"):
    rid: I64
    code: I64  # engine/codes.py: stable numbers
    name: str  # the code's stable name, e.g. "INSUFFICIENT_BALANCE"
    reason: str  # readable
    client_id: I64 = 0
    cmd_seq: I64 = 0  # 0 when the gateway rejected it (55x) and the matcher never saw it


class Error(_Msg, tag="error"):
    """A message that is not a valid request (malformed, unknown, oversized); rid 0 if unreadable."""

    rid: I64
    code: I64
    name: str
    reason: str


ExecKind = Literal["fill", "cancel", "amend"]


class ExecutionReport(_Msg, tag="exec"):
    kind: ExecKind
    order_id: I64
    client_id: I64  # 0 for an order the gateway has not seen placed (before it started)
    market: MarketId
    side: Side
    price: I64  # fill: the execution price; cancel/amend: the order's price
    qty: I64  # fill: executed size; cancel: size taken off; amend: new open size
    remaining: I64  # the order's open size after this
    fee: I64 = 0  # fill: this side's fee (quote units; negative = rebate)
    liquidity: Literal["maker", "taker", ""] = ""
    reason: I64 = 0  # cancel: engine CancelReason
    code: I64 = 0  # cancel by matching (IOC, FOK, STP, post-only): its result code
    seq: I64 = 0  # event seq
    cmd_seq: I64 = 0
    ts: I64 = 0  # engine clock ns


class HeartbeatAck(_Msg, tag="heartbeat_ack"):
    rid: I64
    server_ns: I64


class DeadmanSet(_Msg, tag="deadman_set"):
    rid: I64
    timeout_ms: I64


class OrderInfo(msgspec.Struct, array_like=True, frozen=True):
    order_id: I64
    client_id: I64
    market: MarketId
    side: Side
    price: I64
    qty: I64  # original size (filled + remaining)
    filled: I64
    remaining: I64
    status: Literal["open", "filled", "cancelled"]
    ts: I64  # when placed (engine clock ns)


class OrdersResult(_Msg, tag="orders"):
    rid: I64
    orders: list[OrderInfo]


class OrderStatusResult(_Msg, tag="order_status_result"):
    rid: I64
    order: Union[OrderInfo, None]  # None: no order known under that id to the gateway


class BalanceInfo(msgspec.Struct, array_like=True, frozen=True):
    asset: I64
    symbol: str
    total: I64
    held: I64  # part of total held by open orders


class BalancesResult(_Msg, tag="balances_result"):
    rid: I64
    balances: list[BalanceInfo]
    as_of_seq: I64  # the margin worker's last checkpoint these figures come from
    equity: I64 = 0  # the margin view (valuation asset units)
    margin_used: I64 = 0
    available: I64 = 0


class MarketInfo(msgspec.Struct, array_like=True, frozen=True):
    market: MarketId
    base: str
    quote: str
    base_decimals: I64
    quote_decimals: I64
    tick_size: I64
    lot_size: I64
    min_size: I64


class MarketsResult(_Msg, tag="markets_result"):
    rid: I64
    markets: list[MarketInfo]


# Packed replies for sessions that send OrderRows.  Report kind: 1 fill, 2 cancel, 3 amend;
# liquidity: 0 none, 1 maker, 2 taker; the other fields as in Ack and ExecutionReport.
ACK_ROW_DTYPE = np.dtype([("rid", "<i8"), ("order_id", "<i8"), ("client_id", "<i8"), ("cmd_seq", "<i8"),
                          ("durable_seq", "<i8"), ("count", "<i8"), ("ts", "<i8")])
REPORT_ROW_DTYPE = np.dtype([("kind", "u1"), ("side", "u1"), ("liquidity", "u1"), ("reason", "u1"), ("code", "<u2"),
                             ("market", "<u4"), ("order_id", "<i8"), ("client_id", "<i8"), ("price", "<i8"),
                             ("qty", "<i8"), ("remaining", "<i8"), ("fee", "<i8"), ("seq", "<i8"),
                             ("cmd_seq", "<i8"), ("ts", "<i8")])
REPORT_KINDS = ("", "fill", "cancel", "amend")  # by the row's kind
LIQUIDITY = ("", "maker", "taker")


class AckRows(_Msg, tag="acks"):
    rows: bytes  # ACK_ROW_DTYPE records


class ReportRows(_Msg, tag="reports"):
    rows: bytes  # REPORT_ROW_DTYPE records


def ack_rows(msg: AckRows) -> np.ndarray:
    return np.frombuffer(msg.rows, ACK_ROW_DTYPE)


def report_rows(msg: ReportRows) -> np.ndarray:
    return np.frombuffer(msg.rows, REPORT_ROW_DTYPE)


def execution_report(r: tuple) -> ExecutionReport:
    """The ExecutionReport of a ``REPORT_ROW_DTYPE`` row (as a tuple)."""
    kind, side, liquidity, reason, code, market, order_id, client_id, price, qty, remaining, fee, seq, cmd_seq, ts = r
    return ExecutionReport(kind=REPORT_KINDS[kind], order_id=order_id, client_id=client_id, market=market, side=side,
                           price=price, qty=qty, remaining=remaining, fee=fee, liquidity=LIQUIDITY[liquidity],
                           reason=reason, code=code, seq=seq, cmd_seq=cmd_seq, ts=ts)


Reply = Union[Ack, Reject, Error, ExecutionReport, AckRows, ReportRows, HeartbeatAck, DeadmanSet, OrdersResult, OrderStatusResult,
              BalancesResult, MarketsResult]


class Replies(_Msg, tag="replies"):
    items: list[Reply]


Incoming = Union[Ack, Reject, Error, ExecutionReport, AckRows, ReportRows, HeartbeatAck, DeadmanSet, OrdersResult, OrderStatusResult,
                 BalancesResult, MarketsResult, Replies]

REQUEST_TAGS = frozenset(cls.__struct_config__.tag for cls in Request.__args__)

# One encoder and one decoder of each kind, created once (decoders compile their schema).
encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(Request)
reply_decoder = msgspec.msgpack.Decoder(Incoming)
raw_decoder = msgspec.msgpack.Decoder()  # untyped: to tell an unknown tag from a malformed message


def encode(msg) -> bytes:
    return encoder.encode(msg)

# Declarations of gateway/mdcore.pyx: the market-data publisher's event pass in C.
from libc.stdint cimport int64_t, uint8_t

cdef packed struct OpRow:  # gateway.mdmessages.OP_DTYPE (43 bytes)
    uint8_t op, side, reason
    int64_t order_id, price, qty, remaining, trade_id

cdef enum:  # the columns of the resting-order table (an engine.workercore.IntTable keyed by order id)
    O_MARKET
    O_SIDE
    O_PRICE
    O_REMAINING
    O_REST_SEQ  # time priority: the seq of the event that put the order at the back of its level
    ORDER_COLS

cdef packed struct TradeRow:  # gateway.mdmessages.TRADE_DTYPE (49 bytes)
    int64_t id, number, price, qty
    uint8_t side
    int64_t taker_order, maker_order

cdef struct SortItem:  # md_pass' sorts: by (k1, k2), then the row or event ``i`` it stands for
    int64_t k1, k2, i

cdef enum:
    GROUP_COLS = 8  # md_pass' groups: mdcore.GROUP_COLUMNS

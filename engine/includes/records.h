/* Fixed-size command and event records: the one encoding used by the batch
 * API, the (future) shared-memory ring and the journal.  Little-endian, int64
 * money and sizes, no floats.  Bump XOS_LAYOUT_VERSION on any change. */
#ifndef XOS_RECORDS_H
#define XOS_RECORDS_H
#include <stdint.h>

#define XOS_LAYOUT_VERSION 1

/* A command: 64 bytes, one cache line.  Field use per kind is documented in
 * docs/ARCHITECTURE.md ("Command format"). */
typedef struct xos_command {
    uint16_t kind;      /* XOS_CMD_* */
    uint8_t  side;      /* XOS_SIDE_* (AddMarket: market kind) */
    uint8_t  tif;       /* XOS_TIF_* */
    uint8_t  ord_type;  /* XOS_ORD_* */
    uint8_t  stp;       /* XOS_STP_* */
    uint16_t flags;     /* XOS_CF_* */
    uint32_t venue;
    uint32_t market;    /* market id, or asset id for asset/balance commands */
    int64_t  ts;        /* engine clock in ns, stamped at intake; never goes back */
    int64_t  account;
    int64_t  price;     /* quote units per lot; a multiple of the tick size */
    int64_t  qty;       /* base units; a multiple of the lot size */
    int64_t  id;        /* client order id (place) or order id / client id (cancel, amend) */
    int64_t  aux;       /* expire-at ns (place); packed parameters (admin) */
} xos_command;

/* An event: 128 bytes, two cache lines. */
typedef struct xos_event {
    uint16_t kind;      /* XOS_EV_* */
    uint16_t code;      /* result code (Rejected, matching cancels), else 0 */
    uint8_t  side;      /* order side (taker side for fills, level side for BookLevel) */
    uint8_t  reason;    /* XOS_CANCEL_* for Cancelled */
    uint16_t flags;     /* XOS_EF_* */
    uint32_t market;    /* market id, or asset id for Balance */
    uint32_t venue;     /* venue of the order (taker for fills) */
    int64_t  seq;         /* event sequence, dense from 1 */
    int64_t  cmd_seq;     /* sequence of the input command this event answers */
    int64_t  durable_seq; /* input commands up to here are durable (journal); 0 = none yet */
    int64_t  ts;          /* engine clock of the command */
    int64_t  order_id;    /* the order (taker for fills) */
    int64_t  account;     /* its account (taker for fills) */
    int64_t  client_id;   /* its client order id; for fills the maker's venue */
    int64_t  price;       /* order/fill/level price */
    int64_t  qty;         /* accepted, filled, cancelled, amended-to, level aggregate, balance delta */
    int64_t  remaining;   /* order's open qty after the event; level order count; balance free after */
    int64_t  maker_order;
    int64_t  maker_account;
    int64_t  maker_fee;   /* quote units, negative = rebate */
    int64_t  taker_fee;   /* quote units; for Balance events: held after */
} xos_event;

/* command kinds */
enum {
    XOS_CMD_PLACE = 1,
    XOS_CMD_CANCEL = 2,
    XOS_CMD_AMEND = 3,
    XOS_CMD_MASS_CANCEL = 4,
    XOS_CMD_DEPOSIT = 16,
    XOS_CMD_WITHDRAW = 17,
    XOS_CMD_ADD_ASSET = 32,
    XOS_CMD_ADD_MARKET = 33,
    XOS_CMD_HALT = 48,          /* risk: stop new orders and amends in a market */
    XOS_CMD_RESUME = 49,
    /* 64-95: venue commands */
    XOS_CMD_VENUE_PARAMS = 64, /* admin: stake asset, minimum stake, unbond period, protocol and admin accounts */
    XOS_CMD_LAUNCH_VENUE = 65, /* lock a stake and create a venue */
    XOS_CMD_ADD_STAKE = 66,
    XOS_CMD_UNBOND = 67, /* request: the amount stays locked for the unbond period */
    XOS_CMD_VENUE_STATUS = 68, /* live / halted / winding down / retired */
    XOS_CMD_VENUE_ACCESS = 69, /* access mode and blocked regions */
    XOS_CMD_VENUE_POLICY = 70, /* matching pool and the pools it trades with */
    XOS_CMD_VENUE_FEES = 71, /* maker / taker bps and the split of collected fees */
    XOS_CMD_OFFER_MARKET = 72,
    XOS_CMD_WITHDRAW_MARKET = 73,
    XOS_CMD_ALLOW = 74, /* allow-list */
    XOS_CMD_DENY = 75,
    XOS_CMD_SET_REGION = 76, /* admin: an account's region tag */
    XOS_CMD_SLASH = 77, /* admin: stake to insurance fund, then protocol */
    XOS_CMD_VENUE_FEE_TIER = 78, /* a volume tier */
    XOS_CMD_SWEEP_FEES = 79, /* pay a venue's collected fees out by its split */
    XOS_CMD_VENUE_MARKET_RISK = 80, /* a venue's band, open-interest cap and breaker settings in one market */
    XOS_CMD_VENUE_MARKET_HALT = 81, /* stop one venue's new orders in one market */
    XOS_CMD_VENUE_MARKET_RESUME = 82,
    XOS_CMD_LIST_MARKET = 83, /* AddMarket from a venue's operator (sender in account, assets in flags and aux) */
    /* 96-111: oracle prices and outcome resolution */
    XOS_CMD_ORACLE_PRICE = 96,
    XOS_CMD_RESOLVE = 97,
    XOS_CMD_ORACLE_CONFIG = 98, /* operator/admin: feed id and account of a venue's market oracle, timeout */
    XOS_CMD_MARKET_RISK = 112,  /* admin or listing operator: a perpetual market's max leverage, maintenance */
    XOS_CMD_LIQUIDATE = 113,    /* any account (a keeper): liquidate a target under maintenance in a venue's risk group */
    XOS_CMD_OUTCOME_CONFIG = 116, /* admin or listing operator: an outcome market's payout, resolver, window, event */
    XOS_CMD_CONVERT = 117,      /* NO shares of one outcome of an event into YES shares of all the others */
    XOS_CMD_APPLY_FUNDING = 120, /* any account (a scheduler): a perpetual market's due funding payment */
    XOS_CMD_FUNDING_CONFIG = 121, /* admin or listing operator: funding intervals, interest, clamp and cap */
    XOS_CMD_MARGIN_TIERS = 122,  /* admin or listing operator: a perpetual market's notional brackets and leverage */
    XOS_CMD_MULTI_LEG = 124,    /* header of an all-or-none order; qty = its 2..4 legs, the next records */
    XOS_CMD_LEG = 125,          /* one leg of the MultiLeg header before it */
    XOS_CMD_SET_EXPOSURE_CAP = 126, /* an account: qty = cap (bps of equity) on a venue risk group's margin, 0 = none */
    XOS_CMD_MARGIN_MODE = 128, /* an account: qty = 1 isolated / 0 cross margin in a perpetual market */
    XOS_CMD_ISOLATED_MARGIN = 129, /* an account: qty = signed quote amount from free into an isolated position's margin */
    XOS_CMD_COLLATERAL_ASSET = 130, /* admin: market = asset, id = price market (0: the valuation asset), qty = max weight */
    XOS_CMD_VENUE_COLLATERAL = 131  /* venue operator or admin: market = asset, venue, qty = the venue's weight (bps) */
};

/* event kinds */
enum {
    XOS_EV_ACCEPTED = 1,
    XOS_EV_REJECTED = 2,
    XOS_EV_FILL = 3,
    XOS_EV_CANCELLED = 4,
    XOS_EV_AMENDED = 5,
    XOS_EV_BOOK_LEVEL = 6,
    XOS_EV_BALANCE = 7,
    XOS_EV_MARKET_STATUS = 8,   /* qty = 1 halted, 0 live */
    XOS_EV_VENUE = 9,           /* an accepted venue command echoed; flags = its kind */
    XOS_EV_VENUE_TRANSFER = 10, /* stake between an account and a venue; reason = XOS_XFER_* */
    XOS_EV_ORACLE = 16,         /* an accepted OraclePrice echoed; flags = its kind */
    XOS_EV_ORACLE_STATUS = 17,  /* qty = 1 the venue's market oracle went stale, 0 fresh again */
    XOS_EV_ORACLE_CONFIG = 18,  /* an accepted OracleConfig echoed */
    XOS_EV_POSITION = 20,       /* a perpetual fill moved an account's position */
    XOS_EV_MARK = 21,           /* a perpetual market's mark price changed */
    XOS_EV_LIQUIDATION = 22,    /* a Liquidate passed its checks: the target's equity and maintenance */
    XOS_EV_DELEVERAGE = 23,     /* a position moved at the bankruptcy price (reason XOS_DELEV_*) */
    XOS_EV_LIQUIDATED = 24,     /* a liquidation is over: equity after, shortfall paid by the fund and by ADL */
    XOS_EV_FUNDING = 25,        /* an ApplyFunding: the rate and the totals paid, received and left over */
    XOS_EV_OUTCOME_POSITION = 28, /* a fill, convert or settlement moved an outcome position; reason = XOS_OC_* */
    XOS_EV_OUTCOME_STATUS = 29, /* an outcome market configured, resolution proposed or final; reason = XOS_OS_* */
    XOS_EV_OUTCOME_CONVERT = 30 /* an accepted Convert */
};

/* venue status, access mode and transfer reasons */
enum { XOS_VSTATUS_LIVE = 1, XOS_VSTATUS_HALTED = 2, XOS_VSTATUS_WINDING_DOWN = 3, XOS_VSTATUS_RETIRED = 4 };
enum { XOS_ACCESS_PERMISSIONLESS = 0, XOS_ACCESS_ALLOW_LIST = 1 };
enum {
    XOS_XFER_STAKE_LOCK = 1,
    XOS_XFER_STAKE_RELEASE = 2,
    XOS_XFER_SLASH_INSURANCE = 3,
    XOS_XFER_SLASH_PROTOCOL = 4,
    XOS_XFER_FEE_OPERATOR = 5,
    XOS_XFER_FEE_INSURANCE = 6,
    XOS_XFER_FEE_PROTOCOL = 7,
    XOS_XFER_INSURANCE_SHORTFALL = 8, /* insurance fund -> a liquidated account below zero */
    XOS_XFER_ADL_SHORTFALL = 9,       /* profits haircut by ADL -> a liquidated account below zero */
    XOS_XFER_FUNDING = 10,            /* a funding payment into (+) or out of (-) a position holder's free */
    XOS_XFER_FUNDING_REMAINDER = 11,  /* funding's rounding remainder -> the venue's insurance fund */
    XOS_XFER_COLLATERAL_SOLD = 12,    /* Liquidate: a liquidated account's other collateral -> the venue's fund */
    XOS_XFER_COLLATERAL_PAID = 13     /* Liquidate: the fund pays for it in the liquidated asset */
};
enum { XOS_DELEV_INSURANCE = 1, XOS_DELEV_ADL = 2, XOS_DELEV_SHORTFALL = 3 };

enum { XOS_SIDE_BUY = 0, XOS_SIDE_SELL = 1 };
enum { XOS_TIF_GTC = 0, XOS_TIF_IOC = 1, XOS_TIF_FOK = 2 };
enum { XOS_ORD_LIMIT = 0, XOS_ORD_MARKET = 1 };
enum {
    XOS_STP_CANCEL_TAKER = 0,
    XOS_STP_CANCEL_MAKER = 1,
    XOS_STP_CANCEL_BOTH = 2,
    XOS_STP_DECREMENT_BOTH = 3
};
enum { XOS_MARKET_SPOT = 0, XOS_MARKET_PERPETUAL = 1, XOS_MARKET_OUTCOME = 2 };
/* outcome markets: what moved a position (OutcomePosition reason), the market's state (OutcomeStatus reason) */
enum { XOS_OC_FILL = 1, XOS_OC_CONVERT = 2, XOS_OC_SETTLE = 3, XOS_OC_COLLATERAL = 4 };
enum { XOS_OS_OPEN = 1, XOS_OS_PROPOSED = 2, XOS_OS_FINAL = 3, XOS_OS_OVERTURNED = 4 };

/* command flags */
enum {
    XOS_CF_POST_ONLY = 1,
    XOS_CF_BY_CLIENT_ID = 2,   /* cancel/amend: id is a client order id */
    XOS_CF_ALL_MARKETS = 4,    /* mass cancel: every market (market ignored) */
    XOS_CF_REDUCE_ONLY = 8,    /* perpetual IOC/FOK orders: only shrink the position */
    XOS_CF_BY_VENUE = 16       /* mass cancel: only orders placed through the command's venue */
};

/* event flags */
enum {
    XOS_EF_MAKER_DONE = 1,      /* fill: the maker order is fully filled */
    XOS_EF_TAKER_DONE = 2,      /* fill: the taker order is fully filled */
    XOS_EF_PRIORITY_LOST = 4,   /* amended: the order went to the back of its level */
    XOS_EF_ASSET_LISTING = 8,   /* accepted: an AddAsset (the event echoes the listing) */
    XOS_EF_MARKET_LISTING = 16, /* accepted: an AddMarket */
    XOS_EF_LIQUIDATION = 32     /* accepted: a liquidation's IOC order */
};

/* cancel reasons */
enum {
    XOS_CANCEL_USER = 1,
    XOS_CANCEL_IOC = 2,
    XOS_CANCEL_FOK = 3,
    XOS_CANCEL_STP = 4,
    XOS_CANCEL_POST_ONLY = 5,
    XOS_CANCEL_EXPIRED = 6,
    XOS_CANCEL_MASS = 7,
    XOS_CANCEL_LIQUIDATION = 8
};

#endif

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t

cdef extern from "records.h" nogil:
    int XOS_LAYOUT_VERSION

    ctypedef struct xos_command:
        uint16_t kind
        uint8_t side
        uint8_t tif
        uint8_t ord_type
        uint8_t stp
        uint16_t flags
        uint32_t venue
        uint32_t market
        int64_t ts
        int64_t account
        int64_t price
        int64_t qty
        int64_t id
        int64_t aux

    ctypedef struct xos_event:
        uint16_t kind
        uint16_t code
        uint8_t side
        uint8_t reason
        uint16_t flags
        uint32_t market
        uint32_t venue
        int64_t seq
        int64_t cmd_seq
        int64_t durable_seq
        int64_t ts
        int64_t order_id
        int64_t account
        int64_t client_id
        int64_t price
        int64_t qty
        int64_t remaining
        int64_t maker_order
        int64_t maker_account
        int64_t maker_fee
        int64_t taker_fee

    enum:
        XOS_CMD_PLACE
        XOS_CMD_CANCEL
        XOS_CMD_AMEND
        XOS_CMD_MASS_CANCEL
        XOS_CMD_DEPOSIT
        XOS_CMD_WITHDRAW
        XOS_CMD_ADD_ASSET
        XOS_CMD_ADD_MARKET
        XOS_CMD_HALT
        XOS_CMD_RESUME
        XOS_CMD_VENUE_PARAMS
        XOS_CMD_LAUNCH_VENUE
        XOS_CMD_ADD_STAKE
        XOS_CMD_UNBOND
        XOS_CMD_VENUE_STATUS
        XOS_CMD_VENUE_ACCESS
        XOS_CMD_VENUE_POLICY
        XOS_CMD_VENUE_FEES
        XOS_CMD_VENUE_FEE_TIER
        XOS_CMD_SWEEP_FEES
        XOS_CMD_VENUE_MARKET_RISK
        XOS_CMD_VENUE_MARKET_HALT
        XOS_CMD_VENUE_MARKET_RESUME
        XOS_CMD_LIST_MARKET
        XOS_CMD_OFFER_MARKET
        XOS_CMD_WITHDRAW_MARKET
        XOS_CMD_ALLOW
        XOS_CMD_DENY
        XOS_CMD_SET_REGION
        XOS_CMD_SLASH
        XOS_CMD_ORACLE_PRICE
        XOS_CMD_RESOLVE
        XOS_CMD_ORACLE_CONFIG
        XOS_CMD_MARKET_RISK
        XOS_CMD_LIQUIDATE
        XOS_CMD_OUTCOME_CONFIG
        XOS_CMD_CONVERT
        XOS_CMD_APPLY_FUNDING
        XOS_CMD_FUNDING_CONFIG
        XOS_CMD_MARGIN_TIERS
        XOS_CMD_MULTI_LEG
        XOS_CMD_LEG
        XOS_CMD_SET_EXPOSURE_CAP
        XOS_CMD_MARGIN_MODE
        XOS_CMD_ISOLATED_MARGIN
        XOS_CMD_COLLATERAL_ASSET
        XOS_CMD_VENUE_COLLATERAL
        XOS_EV_VENUE
        XOS_EV_ORACLE
        XOS_EV_ORACLE_STATUS
        XOS_EV_ORACLE_CONFIG
        XOS_EV_POSITION
        XOS_EV_MARK
        XOS_EV_LIQUIDATION
        XOS_EV_DELEVERAGE
        XOS_EV_LIQUIDATED
        XOS_EV_FUNDING
        XOS_EV_OUTCOME_POSITION
        XOS_EV_OUTCOME_STATUS
        XOS_EV_OUTCOME_CONVERT
        XOS_OC_FILL
        XOS_OC_CONVERT
        XOS_OC_SETTLE
        XOS_OC_COLLATERAL
        XOS_OS_OPEN
        XOS_OS_PROPOSED
        XOS_OS_FINAL
        XOS_OS_OVERTURNED
        XOS_EV_VENUE_TRANSFER
        XOS_VSTATUS_LIVE
        XOS_VSTATUS_HALTED
        XOS_VSTATUS_WINDING_DOWN
        XOS_VSTATUS_RETIRED
        XOS_ACCESS_PERMISSIONLESS
        XOS_ACCESS_ALLOW_LIST
        XOS_XFER_STAKE_LOCK
        XOS_XFER_STAKE_RELEASE
        XOS_XFER_SLASH_INSURANCE
        XOS_XFER_SLASH_PROTOCOL
        XOS_XFER_FEE_OPERATOR
        XOS_XFER_FEE_INSURANCE
        XOS_XFER_FEE_PROTOCOL
        XOS_XFER_INSURANCE_SHORTFALL
        XOS_XFER_ADL_SHORTFALL
        XOS_XFER_FUNDING
        XOS_XFER_FUNDING_REMAINDER
        XOS_XFER_COLLATERAL_SOLD
        XOS_XFER_COLLATERAL_PAID
        XOS_DELEV_INSURANCE
        XOS_DELEV_ADL
        XOS_DELEV_SHORTFALL
        XOS_EV_ACCEPTED
        XOS_EV_REJECTED
        XOS_EV_FILL
        XOS_EV_CANCELLED
        XOS_EV_AMENDED
        XOS_EV_BOOK_LEVEL
        XOS_EV_BALANCE
        XOS_EV_MARKET_STATUS
        XOS_SIDE_BUY
        XOS_SIDE_SELL
        XOS_TIF_GTC
        XOS_TIF_IOC
        XOS_TIF_FOK
        XOS_ORD_LIMIT
        XOS_ORD_MARKET
        XOS_STP_CANCEL_TAKER
        XOS_STP_CANCEL_MAKER
        XOS_STP_CANCEL_BOTH
        XOS_STP_DECREMENT_BOTH
        XOS_MARKET_SPOT
        XOS_MARKET_PERPETUAL
        XOS_MARKET_OUTCOME
        XOS_CF_POST_ONLY
        XOS_CF_BY_CLIENT_ID
        XOS_CF_ALL_MARKETS
        XOS_CF_REDUCE_ONLY
        XOS_CF_BY_VENUE
        XOS_EF_MAKER_DONE
        XOS_EF_TAKER_DONE
        XOS_EF_PRIORITY_LOST
        XOS_EF_ASSET_LISTING
        XOS_EF_MARKET_LISTING
        XOS_EF_LIQUIDATION
        XOS_CANCEL_USER
        XOS_CANCEL_IOC
        XOS_CANCEL_FOK
        XOS_CANCEL_STP
        XOS_CANCEL_POST_ONLY
        XOS_CANCEL_EXPIRED
        XOS_CANCEL_MASS
        XOS_CANCEL_LIQUIDATION

"""Command builders shared by the Cython engine and the reference model.

Each call builds one command record, hands it to ``self.process`` and
returns that command's events.  Keeping this in one mixin means the two
implementations differ only in ``process`` and the queries.
"""
from __future__ import annotations

import numpy as np

from .records import (
    COMMAND_DTYPE,
    Cmd,
    CmdFlag,
    MarketKind,
    OrdType,
    Stp,
    Tif,
    pack_market_assets,
    pack_market_params,
    pack_symbol,
)


class CommandAPI:
    """Convenience commands on top of the engine's ``process(commands) -> events``."""

    def submit(self, kind: int, **fields) -> np.ndarray:
        cmd = np.zeros(1, dtype=COMMAND_DTYPE)
        cmd["kind"] = kind
        for name, value in fields.items():
            cmd[name] = value
        return self.process(cmd)

    def add_asset(self, asset_id: int, symbol: str, decimals: int, ts: int = 0) -> np.ndarray:
        lo, hi = pack_symbol(symbol)
        return self.submit(Cmd.ADD_ASSET, market=asset_id, price=decimals, id=lo, aux=hi, ts=ts)

    def add_market(
        self,
        market_id: int,
        base: int,
        quote: int,
        *,
        tick_size: int,
        lot_size: int,
        min_size: int,
        maker_bps: int = 0,
        taker_bps: int = 0,
        band_bps: int = 0,
        kind: int = MarketKind.SPOT,
        venue: int = 0,
        ts: int = 0,
    ) -> np.ndarray:
        return self.submit(
            Cmd.ADD_MARKET,
            market=market_id,
            venue=venue,
            side=kind,
            account=pack_market_assets(base, quote),
            price=tick_size,
            qty=lot_size,
            id=min_size,
            aux=pack_market_params(maker_bps, taker_bps, band_bps),
            ts=ts,
        )

    def deposit(self, account: int, asset: int, amount: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.DEPOSIT, account=account, market=asset, qty=amount, ts=ts)

    def withdraw(self, account: int, asset: int, amount: int, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.WITHDRAW, account=account, market=asset, qty=amount, ts=ts)

    def place(
        self,
        account: int,
        market: int,
        side: int,
        price: int,
        qty: int,
        client_id: int,
        *,
        tif: int = Tif.GTC,
        ord_type: int = OrdType.LIMIT,
        stp: int = Stp.CANCEL_TAKER,
        post_only: bool = False,
        expire_at: int = 0,
        venue: int = 0,
        ts: int = 0,
    ) -> np.ndarray:
        return self.submit(
            Cmd.PLACE,
            account=account,
            market=market,
            side=side,
            price=price,
            qty=qty,
            id=client_id,
            tif=tif,
            ord_type=ord_type,
            stp=stp,
            flags=CmdFlag.POST_ONLY if post_only else 0,
            aux=expire_at,
            venue=venue,
            ts=ts,
        )

    def halt(self, market: int, account: int = 0, ts: int = 0) -> np.ndarray:
        """Stop new orders and amends in the market (cancels still work); ``account`` names who asked."""
        return self.submit(Cmd.HALT, market=market, account=account, ts=ts)

    def resume(self, market: int, account: int = 0, ts: int = 0) -> np.ndarray:
        return self.submit(Cmd.RESUME, market=market, account=account, ts=ts)

    @staticmethod
    def _target(order_id: int | None, client_id: int | None) -> tuple[int, int]:
        if (order_id is None) == (client_id is None):
            raise ValueError("give exactly one of order_id and client_id")
        if order_id is not None:
            return order_id, 0
        return client_id, int(CmdFlag.BY_CLIENT_ID)

    def cancel(self, account: int, *, order_id: int | None = None, client_id: int | None = None, ts: int = 0) -> np.ndarray:
        ident, flags = self._target(order_id, client_id)
        return self.submit(Cmd.CANCEL, account=account, id=ident, flags=flags, ts=ts)

    def amend(
        self,
        account: int,
        *,
        order_id: int | None = None,
        client_id: int | None = None,
        price: int = 0,
        qty: int,
        ts: int = 0,
    ) -> np.ndarray:
        ident, flags = self._target(order_id, client_id)
        return self.submit(Cmd.AMEND, account=account, id=ident, flags=flags, price=price, qty=qty, ts=ts)

    def mass_cancel(self, account: int, market: int | None = None, ts: int = 0) -> np.ndarray:
        if market is None:
            return self.submit(Cmd.MASS_CANCEL, account=account, flags=CmdFlag.ALL_MARKETS, ts=ts)
        return self.submit(Cmd.MASS_CANCEL, account=account, market=market, ts=ts)

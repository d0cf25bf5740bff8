"""The ZeroMQ edge of xos: order entry (``gateway.server``), its wire messages
(``gateway.messages``), the client library (``gateway.client``) and market data."""

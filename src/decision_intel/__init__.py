"""P3.5 Decision Intelligence: why the trading pipeline is (not) trading."""

__version__ = "0.1.0"

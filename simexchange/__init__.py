"""A Binance-compatible spot exchange simulator for paper trading, demos and tests."""

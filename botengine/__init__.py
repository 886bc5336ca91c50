"""Bulkhead bot engine: strategies, runtime, backtester. Holds no exchange secret."""

"""Tests of the exchange simulator."""

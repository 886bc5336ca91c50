"""Bulkhead signer: holds exchange keys, enforces per-key policy, signs orders, audits everything.

This package never imports `botengine` or `simexchange` (an import-linter contract checks it).
"""

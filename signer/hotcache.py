"""Parsed-policy cache for the signing path.

A policy version's JSON never changes once stored, and the cache is keyed by the exact JSON
text read inside the decision's transaction, so a hit can never be stale: a new version (or any
edit at all) is a different key. It only saves re-validating the same document on every order.
"""

from __future__ import annotations

from functools import lru_cache

from signer.policy import Policy, policy_from_json
from signer.state import CurrentPolicy

_MAX_POLICIES = 4096


@lru_cache(maxsize=_MAX_POLICIES)
def _parse(policy_json: str) -> Policy:
    return policy_from_json(policy_json)  # Policy is a frozen model: safe to share


def parsed_policy_json(policy_json: str | None) -> Policy | None:
    """The parsed form of a stored policy document (None when there is none)."""
    return None if policy_json is None else _parse(policy_json)


def parsed_policy(current: CurrentPolicy | None) -> Policy | None:
    """The parsed form of a stored policy version (None when the key has no policy)."""
    return None if current is None else _parse(current.policy_json)

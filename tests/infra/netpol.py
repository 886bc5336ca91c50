"""A small evaluator of Kubernetes NetworkPolicy semantics, to test what the policies allow.

It follows the API's rules: a pod selected by no policy of a type is not isolated for it; once
selected, a connection is allowed only if some rule of some selecting policy matches its peer
and port; egress and ingress must both allow a pod-to-pod connection. Pod addresses are not
matched by ipBlock rules (whether they are depends on the network plugin), which only makes
the checks stricter for the engine and the signer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    ns_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Address:
    ip: str


Peer = Pod | Address


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    unsupported = set(selector) - {"matchLabels"}
    assert not unsupported, f"evaluator does not model {unsupported}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _types(policy: dict[str, Any]) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _selects(policy: dict[str, Any], pod: Pod) -> bool:
    return policy["metadata"]["namespace"] == pod.namespace and _matches(
        policy["spec"]["podSelector"], pod.labels
    )


def _peer_matches(peer: dict[str, Any], target: Peer, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        if not isinstance(target, Address):
            return False
        ip = ipaddress.ip_address(target.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if not isinstance(target, Pod):
        return False
    ns_sel = peer.get("namespaceSelector")
    in_ns = (
        _matches(ns_sel, target.ns_labels) if ns_sel is not None else target.namespace == policy_ns
    )
    return in_ns and _matches(peer.get("podSelector"), target.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports
    )


def _allowed(
    policies: list[dict[str, Any]], pod: Pod, peer: Peer, port: int, protocol: str, kind: str
) -> bool:
    rules_key, peers_key = ("egress", "to") if kind == "Egress" else ("ingress", "from")
    selecting = [p for p in policies if _selects(p, pod) and kind in _types(p)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(
                _peer_matches(x, peer, policy["metadata"]["namespace"]) for x in peers
            )
            if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def connection_allowed(
    policies: list[dict[str, Any]], src: Peer, dst: Peer, port: int, protocol: str = "TCP"
) -> bool:
    """May `src` open a connection to `dst`:port? Egress at a source pod, ingress at a pod."""
    if isinstance(src, Pod) and not _allowed(policies, src, dst, port, protocol, "Egress"):
        return False
    return not isinstance(dst, Pod) or _allowed(policies, dst, src, port, protocol, "Ingress")

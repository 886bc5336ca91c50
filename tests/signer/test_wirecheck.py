"""Request bytes the contract does not fully define are refused before any handler runs."""

from __future__ import annotations

import grpc
import pytest

from tests.signer.stack import Stack


def _raw_submit(stack: Stack, data: bytes) -> grpc.RpcError:
    client = stack.client()
    channel = grpc.insecure_channel(client.addresses[0])
    try:
        call = channel.unary_unary("/bulkhead.signer.v1.Signer/SubmitOrder")
        with pytest.raises(grpc.RpcError) as refused:
            call(data, timeout=10)
        return refused.value
    finally:
        channel.close()
        client.close()


def test_a_genuine_request_with_appended_unknown_fields_is_refused_and_places_nothing(
    sqlite_stack: Stack,
) -> None:
    client = sqlite_stack.client()
    price = sqlite_stack.price()
    good = client.order_request("BTC/USDT", "buy", "limit", "0.001", price, "wc-1")
    client.close()
    before = sqlite_stack.audit_size()
    err = _raw_submit(sqlite_stack, good.SerializeToString() + b"\xa0\x06\x01")  # field 100
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fields unknown" in (err.details() or "")
    assert sqlite_stack.audit_size() == before  # nothing decided, nothing recorded


def test_bytes_that_are_not_a_message_are_invalid_argument_not_internal(
    sqlite_stack: Stack,
) -> None:
    err = _raw_submit(sqlite_stack, b"\xff\xff\xff\xff")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid serialized request" in (err.details() or "")

"""Refuse request bytes that do not parse, with INVALID_ARGUMENT, before a handler runs.

gRPC's own deserializer answers INTERNAL ("Exception deserializing request!") and logs a
traceback per request: the wrong status for a client's bad input, and log noise an attacker
controls. This interceptor takes the bytes raw, parses them itself and aborts cleanly.

A request that parses but carries fields the contract does not define (bytes appended to a
genuine request, a newer client's fields) is refused too: the signer acts only on exactly what
the contract says, never on a message it could not fully read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet


class WireCheckInterceptor(grpc.ServerInterceptor):
    """Wrap every unary-unary handler so an undecodable request is INVALID_ARGUMENT."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        parse = handler.request_deserializer
        behaviour = handler.unary_unary
        if parse is None or behaviour is None:
            return handler
        method = handler_call_details.method

        def checked(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = parse(raw)
            except Exception:  # noqa: BLE001 - any parse failure is the client's bad input
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request: {len(raw)} bytes are not a valid serialized request for {method}",
                )
            if isinstance(request, Message) and has_unknown_fields(request):
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request: fields unknown to {method} (this signer speaks bulkhead.signer.v1)",
                )
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=None,  # bytes in; parsed above
            response_serializer=handler.response_serializer,
        )


def has_unknown_fields(message: Message) -> bool:
    """True when `message` or any message inside it holds fields its schema does not define."""
    if len(UnknownFieldSet(message)):
        return True
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        if any(has_unknown_fields(v) for v in values):
            return True
    return False

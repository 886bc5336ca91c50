"""Refuse request bytes that do not parse, with INVALID_ARGUMENT, before a handler runs.

gRPC's own deserializer answers INTERNAL ("Exception deserializing request!") and logs a
traceback per request: the wrong status for a client's bad input, and log noise an attacker
controls. This interceptor takes the bytes raw, parses them itself and aborts cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


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
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=None,  # bytes in; parsed above
            response_serializer=handler.response_serializer,
        )

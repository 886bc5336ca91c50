"""Binance error codes and messages, so clients see exactly what Binance would send.

Codes and texts follow Binance's spot `errors.md`; HTTP statuses follow Binance's practice
(400 for malformed or rejected requests, 401 for key problems).
"""

from __future__ import annotations

DECIMAL_RANGE = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"


class BinanceError(Exception):
    """An error answered as Binance's `{"code": ..., "msg": ...}` JSON with an HTTP status."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status

    def body(self) -> dict[str, object]:
        """The JSON body Binance sends for this error."""
        return {"code": self.code, "msg": self.msg}


def unknown_endpoint() -> BinanceError:
    """A path the simulator does not serve (Binance answers 404)."""
    return BinanceError(-1000, "An unknown error occurred while processing the request.", 404)


def unauthorized() -> BinanceError:
    """-1002: used by the wallet (sapi) endpoints for a key without the permission."""
    return BinanceError(-1002, "You are not authorized to execute this request.", 401)


def timestamp_outside_window() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def timestamp_ahead() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def illegal_chars(param: str, legal: str) -> BinanceError:
    return BinanceError(
        -1100, f"Illegal characters found in parameter '{param}'; legal range is '{legal}'."
    )


def duplicate_param() -> BinanceError:
    return BinanceError(-1101, "Duplicate values for a parameter detected.")


def mandatory(param: str) -> BinanceError:
    return BinanceError(
        -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."
    )


def one_of_mandatory(first: str, second: str) -> BinanceError:
    return BinanceError(
        -1102, f"Param '{first}' or '{second}' must be sent, but both were empty/null!"
    )


def not_required(param: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{param}' sent when not required.")


def too_much_precision(param: str) -> BinanceError:
    return BinanceError(-1111, f"Parameter '{param}' has too much precision.")


def invalid_tif() -> BinanceError:
    return BinanceError(-1115, "Invalid timeInForce.")


def invalid_order_type() -> BinanceError:
    return BinanceError(-1116, "Invalid orderType.")


def invalid_side() -> BinanceError:
    return BinanceError(-1117, "Invalid side.")


def empty_client_order_id() -> BinanceError:
    return BinanceError(-1118, "New client order ID was empty.")


def bad_interval() -> BinanceError:
    return BinanceError(-1120, "Invalid interval.")


def bad_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def invalid_parameter(param: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{param}' is not valid.")


def bad_recv_window() -> BinanceError:
    return BinanceError(-1131, "recvWindow must be less than 60000")


def invalid_resp_type() -> BinanceError:
    return BinanceError(-1136, "Invalid newOrderRespType")


def filter_failure(filter_type: str) -> BinanceError:
    """-1013 with Binance's filter failure message, e.g. 'Filter failure: LOT_SIZE'."""
    return BinanceError(-1013, f"Filter failure: {filter_type}")


def order_rejected(msg: str) -> BinanceError:
    """-2010 NEW_ORDER_REJECTED with the matching engine's message."""
    return BinanceError(-2010, msg)


def insufficient_balance() -> BinanceError:
    return order_rejected("Account has insufficient balance for requested action.")


def cancel_unknown() -> BinanceError:
    return BinanceError(-2011, "Unknown order sent.")


def no_such_order() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")


def bad_api_key_format() -> BinanceError:
    return BinanceError(-2014, "API-key format invalid.", 401)


def rejected_key() -> BinanceError:
    return BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def withdraw_insufficient() -> BinanceError:
    return BinanceError(-4026, "User has insufficient balance")

"""A ccxt instance whose transport is an allow-list guard, and what it hands back.

ccxt builds and signs every request in `sign()` and sends it in `fetch()`. The guard replaces
the instance's `fetch`: it matches the final URL against signer.venues for the operation being
run *before* anything is sent (ForbiddenEndpoint otherwise), then either raises a private
sentinel carrying the signed request (sign-only) or calls ccxt's own transport (submit) and
keeps the raw JSON answer. Errors are rebuilt from the exchange's code and message and scrubbed
of every credential and signature; ccxt's texts (which hold signed URLs) are never passed on.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import ccxt

from signer.errors import ExchangeError, ForbiddenEndpoint
from signer.venues import VENUES, Base, ExchangeSettings, override_api_urls

_CCXT_LOG = logging.Logger("signer.exchanges.ccxt")  # unregistered and disabled: ccxt logs
_CCXT_LOG.disabled = True  # request headers (the API key) and signed URLs at DEBUG
_SIG_PARAM = re.compile(r"(signature=)[^&\s\"']*")


class CredentialsLike(Protocol):
    """What the gateway needs from signer.keystore.Credentials."""

    @property
    def api_key(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def password(self) -> str | None: ...


@dataclass(frozen=True)
class SignedHttp:
    """A request ccxt built and signed, not sent. Its repr shows no header value or query."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None

    def __repr__(self) -> str:
        size = f"<{len(self.body)} bytes>" if self.body else None
        return (
            f"SignedHttp(method={self.method!r}, path={urlsplit(self.url).path!r}, "
            f"headers={sorted(self.headers)!r}, body={size})"
        )


class ExchangeRequestError(ExchangeError):
    """An exchange refusal or a transport failure, with what the caller needs to decide.

    `retriable`: a network-level failure (timeout, 5xx, rate limit, stale timestamp); for a create
    the order may still exist, so look it up by client order id before sending it again.
    `request_sent`: a request was handed to the transport; False means nothing left the process.
    `code`/`http_status`: the exchange's own error code and the HTTP status, when it answered.
    `kind`: ccxt's exception class name (OrderNotFound, InsufficientFunds, RequestTimeout...).
    """

    def __init__(
        self,
        message: str,
        *,
        exchange: str,
        operation: str,
        code: str | None = None,
        http_status: int | None = None,
        kind: str = "ExchangeError",
        retriable: bool = False,
        request_sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.exchange, self.operation, self.code = exchange, operation, code
        self.http_status, self.kind = http_status, kind
        self.retriable, self.request_sent = retriable, request_sent


class Captured(BaseException):
    """Sentinel: sign-only stops ccxt at the transport. BaseException so nothing swallows it."""

    def __init__(self, request: SignedHttp) -> None:
        super().__init__("captured")
        self.request = request


class _RedactSignatures(logging.Filter):
    """urllib3 logs request lines (query string included) at DEBUG: blank the signature."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SIG_PARAM.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def install_log_redaction() -> None:
    """Idempotent: add the signature filter to urllib3's request logger."""
    target = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactSignatures) for f in target.filters):
        target.addFilter(_RedactSignatures())


class GuardedClient:
    """One ccxt instance behind the allow-list guard. Not thread-safe: callers hold a lock."""

    def __init__(
        self, settings: ExchangeSettings, credentials: CredentialsLike | None, ops: frozenset[str]
    ) -> None:
        self.venue = VENUES[settings.exchange]
        self.ops = ops
        self.base = Base.for_venue(self.venue, settings.api_url)
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": settings.timeout_ms}
        config["options"] = {**copy.deepcopy(dict(self.venue.options)), **settings.options}
        self._secrets: tuple[str, ...] = ()
        if credentials is not None:
            password = credentials.password or ""
            config.update(apiKey=credentials.api_key, secret=credentials.secret, password=password)
            parts = [credentials.api_key, credentials.secret, password]
            parts += credentials.secret.splitlines()  # a PEM key: each base64 line too
            self._secrets = tuple(sorted({p.strip() for p in parts if len(p.strip()) >= 6}))
        ex: Any = getattr(ccxt, settings.exchange)(config)
        if settings.api_url is not None:
            ex.urls["api"] = override_api_urls(copy.deepcopy(ex.urls["api"]), settings.api_url)
        ex.logger, ex.verbose = _CCXT_LOG, False
        ex.session.trust_env = False  # no proxies or .netrc from the environment
        ex.session.max_redirects = 0  # a redirect would re-send signed headers elsewhere
        self._send = type(ex).fetch.__get__(ex)  # ccxt's real transport
        self._on_rest = ex.on_rest_response
        ex.fetch, ex.on_rest_response = self._fetch, self._on_rest_response
        self.ex = ex
        self.begin(None, capture=False)

    def begin(self, op: str | None, *, capture: bool) -> None:
        """Arm the guard for one operation (None: nothing may be sent) and reset the record."""
        self.op, self.capture = op, capture
        self.ex.enableRateLimit = not capture  # sign-only sends nothing: no need to throttle
        self.sent = self.done = False
        self.status: int | None = None
        self.body: str | None = None
        self.raw: Any = None
        self.last_request: tuple[str, dict[str, str], str | None] | None = None

    def _fetch(
        self, url: str, method: str = "GET", headers: dict | None = None, body: str | None = None
    ) -> Any:
        path = self.base.exchange_path(url)
        endpoint = None if path is None else self.venue.endpoint_for(method, path)
        if endpoint is None or endpoint.op != self.op or self.op not in self.ops:
            raise ForbiddenEndpoint(
                f"{self.venue.exchange}: {method} {urlsplit(url).path} is not an allowed "
                f"endpoint for operation {self.op or 'none'}; nothing was sent"
            )
        if self.ex.check_proxy_url_settings(url, method, headers, body) is not None or any(
            self.ex.check_proxy_settings(url, method, headers, body)
        ):
            raise ForbiddenEndpoint(f"{self.venue.exchange}: proxy settings are not allowed")
        request = SignedHttp(
            method, url, {str(k): str(v) for k, v in (headers or {}).items()}, body
        )
        self.last_request = (url, request.headers, body)
        if self.capture:
            raise Captured(request)
        self.sent = True
        self.raw = self._send(url, method, headers, body)
        self.done = True
        return self.raw

    def _on_rest_response(self, code: int, reason: str, url: str, method: str, *rest: Any) -> Any:
        # ccxt passes (response_headers, response_body, request_headers, request_body)
        self.status, self.body = code, rest[1] if len(rest) > 1 else None
        return self._on_rest(code, reason, url, method, *rest)

    def scrub(self, text: str) -> str:
        """Remove every credential and every value of the last signed request from `text`."""
        secrets = set(self._secrets)
        if self.last_request is not None:
            url, headers, body = self.last_request
            secrets.update(v for k, v in headers.items() if k.lower() != "content-type")
            for blob in (url, body or ""):
                secrets.update(m.group(0)[len("signature=") :] for m in _SIG_PARAM.finditer(blob))
        for secret in sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True):
            text = text.replace(secret, "***")
        return _SIG_PARAM.sub(r"\1***", text)

    def translate(self, op: str, exc: Exception) -> ExchangeRequestError:
        """A ccxt exception as an ExchangeRequestError built from the exchange's own answer."""
        name, kind = self.venue.exchange, type(exc).__name__
        code = None
        if self.status is not None:
            code, msg = _exchange_code(self.body)
            text = f"{name} {op} refused: HTTP {self.status}"
            text += (f" code {code}" if code else "") + (f": {msg}" if msg else f" ({kind})")
        elif self.sent:
            text = f"{name} {op}: transport failure ({kind}); the request may have reached {name}"
        else:
            detail = re.sub(r"https?://\S+", "<url>", str(exc))[:300]
            text = f"{name} {op}: {kind}: {detail}; nothing was sent"
        return ExchangeRequestError(
            self.scrub(text),
            exchange=name,
            operation=op,
            code=code,
            http_status=self.status,
            kind=kind,
            retriable=isinstance(exc, ccxt.NetworkError),
            request_sent=self.sent,
        )

    def close(self) -> None:
        self.ex.session.close()


def _exchange_code(body: str | None) -> tuple[str | None, str | None]:
    """(code, message) from an exchange error body: binance/kucoin `code`+`msg`, okx sCode/sMsg."""
    if not body:
        return None, None
    try:
        parsed = json.loads(body, parse_float=str, parse_int=str)
    except ValueError:
        return None, " ".join(body.split())[:200]
    if not isinstance(parsed, dict):
        return None, None
    code, msg = parsed.get("code"), parsed.get("msg") or parsed.get("message")
    data = parsed.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("sCode"):
        if str(data[0]["sCode"]) != "0":
            code, msg = data[0]["sCode"], data[0].get("sMsg") or msg
    return (None if code is None else str(code)), (None if msg is None else str(msg)[:300])

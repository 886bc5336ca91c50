"""The signer's exceptions. Shallow on purpose: each docstring says what happens operationally.

No exception text ever contains key material: messages name fields, ids and values the caller
sent, never a secret, a sealed blob or a master key.
"""

from __future__ import annotations


class SignerError(Exception):
    """Base class. Never raised directly."""


class ConfigError(SignerError):
    """Bad configuration or CLI input. Nothing was changed; the command exits non-zero."""


class InsecureStorage(SignerError):
    """Data directory or keystore readable by others. The signer refuses to start."""


class KeystoreError(SignerError):
    """Wrong master key, unknown key id, or a corrupt sealed secret. The command/request fails."""


class AuthError(SignerError):
    """Unknown bot/operator, bad signature, stale timestamp or replayed nonce.

    The request is refused with UNAUTHENTICATED and audited; nothing else changes.
    """

    def __init__(self, rule_id: str, message: str) -> None:
        super().__init__(message)
        self.rule_id = rule_id


class PermissionDenied(SignerError):
    """An authenticated identity asked for something it may not (another bot's key, say).

    Refused with PERMISSION_DENIED and audited.
    """

    def __init__(self, rule_id: str, message: str) -> None:
        super().__init__(message)
        self.rule_id = rule_id


class InvalidRequest(SignerError):
    """Malformed request (bad decimal, enum, size): INVALID_ARGUMENT, no change."""


class AuditUnavailable(SignerError):
    """The audit store could not commit. The request fails and no signature leaves; retry later."""


class ExchangeError(SignerError):
    """The exchange refused or could not be reached. The decision stays audited with the outcome."""


class ForbiddenEndpoint(SignerError):
    """A non-order endpoint (withdrawal, transfer...) was about to be signed. Never sent."""

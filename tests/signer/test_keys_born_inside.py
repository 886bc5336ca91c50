"""A key born inside the signer: only the public key ever leaves; orders sign with Ed25519."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from botengine.signer_client import Identity, SignerClient
from signer.core import now_ms
from tests.signer.stack import POLICY_TOML, Stack


def cli(stack: Stack, *args: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "signer.cli",
            *args,
            "--data-dir",
            str(stack.data_dir),
            "--master-key-file",
            str(stack.keyfile),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert "PRIVATE KEY" not in done.stdout + done.stderr
    return json.loads(done.stdout)


def test_generated_ed25519_key_trades_and_never_leaves_the_keystore(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    made = cli(stack, "keys", "generate", "--key-id", "born", "--exchange", "binance")
    pem = made["public_key_pem"]
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and made["status"] == "pending"

    # The operator registers the public key at the exchange; the exchange names the API key.
    registered = stack.sim.add_key(stack.account.account_id, "ED25519", pem)
    assert registered.secret == ""  # the exchange holds no secret for this key
    assert cli(stack, "keys", "set-api-key", "born", registered.api_key)["status"] == "active"

    stack.opened.actions.set_policy("test", now_ms(), "born", POLICY_TOML)
    bot = Identity.generate("bot-born")
    stack.opened.actions.register_bot("test", now_ms(), "bot-born", bot.public_key, ["born"])
    client = SignerClient(stack.addresses["bot_unix"], bot, "born")
    try:
        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
        reply = client.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "born-1")
        assert reply.decision.allowed, reply.decision.violations
        assert reply.order.status == "open", reply.exchange_error
        # Signed with Ed25519: the request carries a base64 signature the exchange verified.
        signed = client.submit_order(
            "BTC/USDT", "buy", "limit", "0.001", price, "born-2", mode="sign-only"
        ).signed_request
        assert "signature=" in signed.url + signed.body
    finally:
        client.close()

    for path in Path(stack.data_dir).rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path

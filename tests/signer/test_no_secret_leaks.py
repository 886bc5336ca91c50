"""A whole scenario through real processes, then every log, file, export, CLI output and gRPC
error is searched for the exchange secret and the master key: none may contain them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import grpc

from botengine.signer_client import Identity, SignerClient
from simexchange.testing import start_test_exchange
from tests.signer.stack import POLICY_TOML, write_config


def test_no_secret_in_logs_files_exports_or_errors(tmp_path: Path) -> None:
    sim, account = start_test_exchange({"USDT": "10000", "BTC": "0.001"}, thin=True)
    secret = account.secret
    data, key = tmp_path / "data", tmp_path / "master.key"
    seen: list[str] = []

    def cli(*args: str, stdin: str = "", ok: bool = True) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "signer.cli",
                *args,
                "--data-dir",
                str(data),
                "--master-key-file",
                str(key),
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        seen.extend([" ".join(args), done.stdout, done.stderr])  # argv too: never a secret
        assert (done.returncode == 0) == ok, done.stderr

    proc = None
    try:
        cli("init", "--create-key-file", "--kdf", "interactive")
        write_config(data, sim.base_url, None)
        cli(
            "keys",
            "add",
            "--key-id",
            "k1",
            "--exchange",
            "binance",
            "--api-key",
            account.api_key,
            stdin=secret + "\n",
        )
        cli(
            "keys",
            "add",
            "--key-id",
            "k1",
            "--exchange",
            "binance",
            "--api-key",
            account.api_key,
            stdin=secret + "\n",
            ok=False,
        )  # duplicate: an error path
        (tmp_path / "p.toml").write_text(POLICY_TOML)
        cli("policy", "set", "k1", str(tmp_path / "p.toml"))
        bot = Identity.generate("bot-1")
        cli("bots", "add", "bot-1", "--pubkey", bot.public_key.hex(), "--keys", "k1")
        log = open(tmp_path / "serve.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "signer.cli",
                "serve",
                "--data-dir",
                str(data),
                "--master-key-file",
                str(key),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        seen.append(line)
        client = SignerClient(json.loads(line)["serving"]["bot_unix"], bot, "k1")
        price = (sim.price("BTCUSDT") * Decimal("0.99")).quantize(Decimal("0.01"))
        replies = [
            client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "ok-1"),
            client.submit_order("DATA/USDT", "buy", "limit", "100", "0.5", "denied-1"),
            client.submit_order("BTC/USDT", "sell", "limit", "0.05", price, "exch-refused"),
            client.submit_order(
                "BTC/USDT", "buy", "limit", "0.01", price, "so-1", mode="sign-only"
            ),
            client.read("balances"),
        ]
        seen.extend(str(r) for r in replies)
        assert replies[2].exchange_error  # within policy, but the account holds 0.001 BTC
        forger = SignerClient(
            json.loads(line)["serving"]["bot_unix"], Identity.generate("bot-1"), "k1"
        )
        try:
            forger.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "forged")
        except grpc.RpcError as e:
            seen.append(str(e.details()))
        client.close()
        forger.close()
        cli("freeze", "--all")
        cli("audit", "export", "--out", str(tmp_path / "audit.jsonl"))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        sim.stop()

    master = key.read_bytes().strip()
    needles = [
        secret.encode(),
        secret.encode().hex().encode(),
        base64.b64encode(secret.encode()),
        master,
        bytes.fromhex(master.decode()),
    ]
    blobs = {f"cli/grpc #{i}": s.encode() for i, s in enumerate(seen)}
    blobs["serve.log"] = (tmp_path / "serve.log").read_bytes()
    blobs["export"] = (tmp_path / "audit.jsonl").read_bytes()
    for path in data.rglob("*"):
        if path.is_file():
            blobs[str(path)] = path.read_bytes()
    assert any(b"signer.db" in name.encode() for name in blobs)
    for name, blob in blobs.items():
        for needle in needles:
            assert needle not in blob, f"secret material found in {name}"

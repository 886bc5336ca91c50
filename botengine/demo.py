"""`bulkhead demo`: the signer's story end to end with three real processes.

simexchange (a Binance-compatible exchange) and the signer run as their own processes; this
process plays the bot. The operator steps go through the real `bulkhead-signer` CLI, the
exchange secret travels only over a pipe into `keys add`, and the bot holds nothing but its
Ed25519 identity. A rogue client with the bot's identity then tries what the 2022 attackers did;
each attempt must be refused with its rule id, and the audit log must verify at the end.

(The trading-bot part of the demo arrives with the botengine issue; this is its foundation.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from botengine.signer_client import Identity, SignerClient

POLICY = """
symbols = ["BTC/USDT", "ETH/USDT"]
sides = ["buy", "sell"]
order_types = ["limit"]
max_order_notional = "2000"
max_notional_24h = "10000"
max_open_orders = 20
orders_per_minute = 30
price_band_pct = "3"
reference_max_age_s = 30
"""


class Demo:
    def __init__(self, root: Path, console: Console) -> None:
        self.root = root
        self.console = console
        self.procs: list[subprocess.Popen[str]] = []
        self.results: list[tuple[str, str, bool]] = []
        self.data_dir = root / "signer-data"
        self.keyfile = root / "master.key"  # outside the data dir, as an operator would keep it
        self.base_url = ""

    def run(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *args], input=stdin, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])} failed: {done.stderr.strip()}")
        return done.stdout

    def signer(self, *args: str, stdin: str | None = None) -> str:
        return self.run(
            "signer.cli",
            *args,
            "--data-dir",
            str(self.data_dir),
            "--master-key-file",
            str(self.keyfile),
            stdin=stdin,
        )

    def spawn(self, *args: str) -> tuple[subprocess.Popen[str], str]:
        log = open(self.root / f"{args[0].split('.')[0]}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{args[0]} did not start; see {log.name}")
        return proc, line.strip()

    def check(self, step: str, detail: str, ok: bool) -> None:
        self.results.append((step, detail, ok))
        mark = "[green]held[/]" if ok else "[red]FAILED[/]"
        self.console.print(f"  {mark}  {step}: {detail}")

    def setup(self) -> SignerClient:
        c = self.console
        c.rule("1. exchange, signer and bot: three processes")
        accounts = self.root / "accounts.toml"
        out = self.run(
            "botengine.cli",
            "exchange-sim",
            "account",
            "new",
            "--accounts",
            str(accounts),
            "--name",
            "trader",
            "--balance",
            "USDT=10000",
            "--balance",
            "BTC=0.1",
        )
        fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        _, banner = self.spawn(
            "botengine.cli",
            "exchange-sim",
            "serve",
            "--port",
            "0",
            "--accounts",
            str(accounts),
            "--synthetic",
            "BTCUSDT=60000",
            "--synthetic",
            "ETHUSDT=3000",
            "--synthetic",
            "DATAUSDT=0.07",
        )
        base_url = self.base_url = banner.split()[2]
        c.print(f"simexchange: {base_url}")
        self.run(
            "signer.cli",
            "init",
            "--data-dir",
            str(self.data_dir),
            "--master-key-file",
            str(self.keyfile),
            "--create-key-file",
            "--kdf",
            "interactive",
        )
        (self.data_dir / "signer.toml").write_text(
            f'checkpoint_interval_s = 60\n[exchanges.binance]\napi_url = "{base_url}"\n'
        )
        # The secret goes through a pipe, never argv; it is sealed at once.
        self.signer(
            "keys",
            "add",
            "--key-id",
            "main",
            "--exchange",
            "binance",
            "--api-key",
            fields["api_key"],
            stdin=fields["secret"] + "\n",
        )
        del fields["secret"]
        policy = self.root / "policy.toml"
        policy.write_text(POLICY)
        self.signer("policy", "set", "main", str(policy))
        bot = Identity.generate("dca-bot")
        self.signer("bots", "add", "dca-bot", "--pubkey", bot.public_key.hex(), "--keys", "main")
        _, serving = self.spawn(
            "signer.cli",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--master-key-file",
            str(self.keyfile),
        )
        address = json.loads(serving)["serving"]["bot_unix"]
        c.print(f"signer: {address} (key 'main' sealed; policy BTC/USDT, ETH/USDT only)")
        return SignerClient(address, bot, "main")

    def trade(self, bot: SignerClient) -> Decimal:
        self.console.rule("2. the bot trades through the signer")
        price = self.public_price("BTCUSDT")
        limit = (price * Decimal("0.995")).quantize(Decimal("0.01"))
        r = bot.submit_order("BTC/USDT", "buy", "limit", "0.01", limit, "demo-1")
        self.check(
            "legit order",
            f"buy 0.01 BTC @ {limit}: {r.order.status or r.exchange_error}",
            r.decision.allowed and r.order.status == "open",
        )
        return price

    def public_price(self, market_id: str) -> Decimal:
        """Public market data needs no key: the bot reads the ticker straight from the exchange."""
        url = f"{self.base_url}/api/v3/ticker/price?symbol={market_id}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return Decimal(json.loads(resp.read())["price"])

    def attack(self, bot: SignerClient, price: Decimal) -> None:
        self.console.rule("3. the incident: a stolen engine holding the bot's identity")
        tries = [
            (
                "pump a thin coin",
                ("DATA/USDT", "buy", "limit", "20000", "0.25", "atk-1"),
                "symbol_not_allowed",
            ),
            (
                "exceed the order cap",
                ("BTC/USDT", "buy", "limit", "1", price, "atk-2"),
                "notional_cap",
            ),
            (
                "buy 30% above market",
                (
                    "BTC/USDT",
                    "buy",
                    "limit",
                    "0.01",
                    (price * Decimal("1.3")).quantize(Decimal("0.01")),
                    "atk-3",
                ),
                "price_band",
            ),
        ]
        for name, args, rule in tries:
            r = bot.submit_order(*args)  # type: ignore[arg-type]
            rules = {v.rule_id for v in r.decision.violations}
            self.check(
                name,
                f"refused: {', '.join(sorted(rules))}",
                not r.decision.allowed and rule in rules,
            )
        captured = bot.order_request(
            "BTC/USDT",
            "buy",
            "limit",
            "0.001",
            (price * Decimal("0.99")).quantize(Decimal("0.01")),
            "cap-1",
        )
        bot.call("SubmitOrder", captured)
        try:
            bot.call("SubmitOrder", captured)
            self.check("replay a captured intent", "accepted!", False)
        except grpc.RpcError as e:
            self.check(
                "replay a captured intent", e.details(), "replayed_nonce" in (e.details() or "")
            )
        self.check("reach a withdrawal", *self.try_withdraw(bot))
        self.signer("freeze", "--all", "--reason", "demo kill switch")
        eth = (self.public_price("ETHUSDT") * Decimal("0.99")).quantize(Decimal("0.01"))
        r = bot.submit_order("ETH/USDT", "buy", "limit", "0.1", eth, "after-freeze")
        rules = [v.rule_id for v in r.decision.violations]
        self.check(
            "freeze --all", f"next order refused: {', '.join(rules)}", rules == ["global_freeze"]
        )

    @staticmethod
    def try_withdraw(bot: SignerClient) -> tuple[str, bool]:
        """Call a Withdraw method on the signer's socket as a rogue client would: none exists."""
        channel = grpc.insecure_channel(bot.addresses[0])
        try:
            channel.unary_unary("/bulkhead.signer.v1.Signer/Withdraw")(b"", timeout=10)
            return "the signer answered a withdrawal call!", False
        except grpc.RpcError as e:
            return f"{e.code().name}: no such RPC exists", e.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            channel.close()

    def audit(self) -> None:
        self.console.rule("4. the auditor")
        export = self.root / "audit.jsonl"
        self.signer("audit", "export", "--out", str(export))
        out = self.run(
            "signer.cli",
            "audit",
            "verify",
            str(export),
            "--pubkey",
            str(self.data_dir / "audit_pubkey.hex"),
            "--json",
        )
        report = json.loads(out)
        self.check("audit verify", f"{report['records']} records, signed and chained", report["ok"])
        self.console.print(f"export: {export}")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main(argv: list[str] | None = None) -> int:
    keep = bool(argv and "--keep" in argv)
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="bulkhead-demo-"))
    root.chmod(0o700)
    demo = Demo(root, console)
    started = time.monotonic()
    try:
        bot = demo.setup()
        price = demo.trade(bot)
        demo.attack(bot, price)
        demo.audit()
        bot.close()
    except Exception as e:  # noqa: BLE001 - report and fail the demo
        demo.check("demo", f"stopped: {e}", False)
    finally:
        if not keep:
            demo.stop()
    table = Table(title=f"Bulkhead demo ({time.monotonic() - started:.1f} s) - data in {root}")
    for col in ("step", "detail", "result"):
        table.add_column(col)
    for step, detail, ok in demo.results:
        table.add_row(step, detail, "[green]held[/]" if ok else "[red]FAILED[/]")
    console.print(table)
    ok = bool(demo.results) and all(r[2] for r in demo.results)
    if keep:
        console.print(
            f"--keep: processes still running (pids {[p.pid for p in demo.procs]}); data in {root}"
        )
    return 0 if ok else 1

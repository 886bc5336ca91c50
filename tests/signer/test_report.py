"""`audit report` on a log written by a real signer run: the numbers in the HTML page and the CSV
files equal those recomputed here from the export; every linked proof checks; a tampered export
gets a failing verdict. One test loads the page in headless Chromium over the DevTools protocol
(no console error, no exception, no network request) and reads the numbers from the DOM.
"""

from __future__ import annotations

import asyncio
import csv
import html
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import nacl.signing
import pytest

from botengine.signer_client import Identity, SignerClient
from signer.auditformat import SignedCheckpoint
from signer.auditlog import StoredRecord
from signer.audittreehead import SignedTreeHead, read_heads
from signer.auditverify import VerifyReport
from signer.cli import main
from signer.core import now_ms
from signer.proofs import check_proof
from signer.report import aggregate, write_csv
from signer.report_html import render
from tests.signer.stack import KEY_ID, POLICY_TOML, Stack, build_stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def audit_cli(capsys: pytest.CaptureFixture[str] | None, *args: str) -> tuple[int, Any]:
    try:
        main(["audit", *args, "--json"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    if capsys is None:
        return code, None
    return code, json.loads(capsys.readouterr().out)


def scenario(stack: Stack) -> None:
    """Allowed, denied, cancelled and refused orders; a policy change; a freeze and its lift."""
    bot = stack.client()
    price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
    for i, amount in enumerate(["0.01", "0.02", "0.005"]):
        assert bot.submit_order(
            "BTC/USDT", "buy", "limit", amount, price, f"r-{i}"
        ).decision.allowed
    bot.submit_order("DATA/USDT", "buy", "limit", "1000", "0.5", "r-thin")
    bot.submit_order("BTC/USDT", "buy", "limit", "1", price, "r-big")
    assert bot.cancel_order("BTC/USDT", "r-1").decision.allowed
    op = stack.opened.actions
    op.set_policy("cli:ops", now_ms(), KEY_ID, POLICY_TOML.replace('"5000"', '"4000"'), 1)
    op.freeze("cli:ops", now_ms(), KEY_ID, "suspicious volume")
    frozen = bot.submit_order("BTC/USDT", "sell", "limit", "0.01", price, "r-frozen")
    assert "key_frozen" in {v.rule_id for v in frozen.decision.violations}
    op.unfreeze("cli:ops", now_ms(), KEY_ID, "checked")
    stranger = SignerClient(stack.addresses["bot_unix"], Identity.generate("bot-x"), KEY_ID)
    stack.clients.append(stranger)
    with pytest.raises(grpc.RpcError) as refused:  # an unregistered bot: refused, and audited
        stranger.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "r-stranger")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("report")
    stack = build_stack(root)
    try:
        scenario(stack)
        anchor = root / "anchor.jsonl"
        common = ["--data-dir", str(stack.data_dir), "--master-key-file", str(stack.keyfile)]
        assert audit_cli(None, "sth", "--anchor", str(anchor), *common)[0] == 0
        export = stack.export(root / "export.jsonl")
        # Trading goes on after the export; the anchor gets a head the export cannot match.
        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
        stack.client().submit_order("BTC/USDT", "buy", "limit", "0.01", price, "r-later")
        assert audit_cli(None, "sth", "--anchor", str(anchor), *common)[0] == 0
        pub = stack.data_dir / "audit_pubkey.hex"
        out = root / "report"
        code, _ = audit_cli(
            None,
            "report",
            str(export),
            "--pubkey",
            str(pub),
            "--out",
            str(out),
            "--head",
            str(anchor),
            *common,
        )
        assert code == 0
        yield {
            "audit": stack.opened.audit,
            "root": root,
            "export": export,
            "pub": pub,
            "out": out,
            "anchor": anchor,
            "public_key": stack.opened.audit.public_key,
        }
    finally:
        stack.stop()


def expected_numbers(export: Path) -> dict[str, str]:
    """Every data-k number of the page, recomputed independently from the export."""
    want: dict[str, Any] = defaultdict(int)
    notional: dict[str, Decimal] = defaultdict(Decimal)
    rules: Counter[str] = Counter()
    records = [
        json.loads(json.loads(line)["record"])
        for line in export.read_text().splitlines()
        if json.loads(line)["type"] == "record"
    ]
    for rec in records:
        p = rec["payload"]
        if rec["kind"] == "decision":
            subjects = [f"key:{p['key_id']}", f"bot:{p['bot_id']}"]
            for sub in subjects:
                if p["action"] == "cancel":
                    want[f"{sub}:cancels"] += 1
                elif p["allowed"]:
                    want[f"{sub}:allowed"] += 1
                    day = datetime.fromtimestamp(rec["ts_ms"] // 1000, UTC).strftime("%Y-%m-%d")
                    notional[f"{sub}:notional:{day}"] += Decimal(p["notional"])
                else:
                    want[f"{sub}:denied"] += 1
                    for r in p["reasons"]:
                        rules[f"{sub}:rule:{r['rule_id']}"] += 1
        elif rec["kind"] in ("auth_denied", "permission_denied"):
            for sub in [f"key:{p['key_id']}", f"bot:{p['claimed_identity']}"]:
                want[f"{sub}:refused"] += 1
                rules[f"{sub}:rule:{p['rule_id']}"] += 1
    subjects = {":".join(k.split(":")[:2]) for k in [*want, *rules, *notional]}
    for sub in subjects:
        for metric in ("allowed", "denied", "refused", "cancels"):
            want.setdefault(f"{sub}:{metric}", 0)
    out = {k: str(v) for k, v in want.items()}
    out |= {k: str(v) for k, v in rules.items()} | {k: str(v) for k, v in notional.items()}
    out["records:total"] = str(len(records))
    freezes = [
        r
        for r in records
        if r["kind"] == "admin" and r["payload"]["action"] in ("freeze", "unfreeze")
    ]
    out["freezes:total"] = str(len(freezes))
    return out


class _DataK(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.external: list[str] = []
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._open.append(a.get("data-k"))
        for name in ("src", "href"):
            v = a.get(name) or ""
            if tag in ("script", "link", "img", "iframe") and v and not v.startswith("data:"):
                self.external.append(v)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1]:
            self.values[self._open[-1]] = self.values.get(self._open[-1], "") + data


def test_report_numbers_csv_and_proofs_match_the_export(reported: dict[str, Any]) -> None:
    out, export = reported["out"], reported["export"]
    html = (out / "index.html").read_text()
    parsed = _DataK()
    parsed.feed(html)
    assert parsed.external == []  # nothing to fetch: scripts, styles and charts are inline
    assert "default-src 'none'" in html and "<svg" in html
    want = expected_numbers(export)
    assert parsed.values == want
    assert html.index("VERIFIED") < html.index("Per key")  # the verdict comes first
    assert want["key:k1:rule:symbol_not_allowed"] == "1" and want["bot:bot-x:refused"] == "1"
    assert want["key:k1:rule:key_frozen"] == "1" and want["freezes:total"] == "2"
    assert want["key:k1:allowed"] == "3" and want["key:k1:cancels"] == "1"

    lines = [json.loads(x) for x in export.read_text().splitlines()]
    records = [json.loads(x["record"]) for x in lines if x["type"] == "record"]
    with open(out / "records.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in records]
    by_seq = {r["seq"]: r for r in records}
    for row in rows:
        p = by_seq[int(row["seq"])]["payload"]
        if by_seq[int(row["seq"])]["kind"] == "decision":
            assert row["decision"] == ("allowed" if p["allowed"] else "denied")
            assert row["rule_ids"].split() == [r["rule_id"] for r in p["reasons"]]
            assert row["notional"] == (p.get("notional") or "")
    with open(out / "summary.csv", newline="") as fh:
        summary = {
            f"{r['subject']}:{r['id']}:{r['metric']}": r["value"] for r in csv.DictReader(fh)
        }
    assert {
        k.replace(":rule:", ":denied:"): v for k, v in want.items() if k.count(":") >= 2
    } == summary

    # Every order links its proof; each checks with nothing but the public key.
    coids = {
        r["payload"]["client_order_id"] for r in records if r["kind"] in ("decision", "outcome")
    }
    links = {row["client_order_id"]: row["proof"] for row in rows if row["proof"]}
    assert set(links) == coids and all(f"href='{links[c]}'" in html for c in coids)
    for coid, link in links.items():
        result = check_proof(json.loads((out / link).read_text()), reported["public_key"])
        assert result.ok, (coid, result.reason)


def test_a_tampered_export_gets_a_failing_verdict_and_no_proofs(
    reported: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = reported["export"].read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if "r-thin" in line)  # a denial
    lines[k] = lines[k].replace('\\"allowed\\":false', '\\"allowed\\":true')
    assert lines[k] != reported["export"].read_text().splitlines()[k]
    bad = reported["root"] / "tampered.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    out = reported["root"] / "bad-report"
    code, result = audit_cli(
        capsys,
        "report",
        str(bad),
        "--pubkey",
        str(reported["pub"]),
        "--out",
        str(out),
        "--head",
        str(reported["anchor"]),
    )
    assert code == 1 and not result["ok"] and f"record {k + 1}" in result["reason"].lower(), result
    html = (out / "index.html").read_text()
    assert "VERIFICATION FAILED" in html and "data-ok='false'" in html
    assert not (out / "proofs").exists()


def test_heads_signed_after_the_export_are_set_aside_but_earlier_ones_catch_truncation(
    reported: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    html = (reported["out"] / "index.html").read_text()
    assert "1 (1 signed after this export: not checked)" in html
    # An insider deletes the newest record, then exports: the export is self-consistent (the
    # signer signs its closing checkpoint), but the head anchored before it covers more.
    lines = reported["export"].read_text().splitlines()
    kept = lines[:-2]
    last = json.loads(kept[-1])
    closing = SignedCheckpoint.sign(
        reported["audit"]._key, last["seq"], last["hash"], json.loads(lines[-1])["ts_ms"] + 1
    )
    cut = reported["root"] / "truncated.jsonl"
    cut.write_text("\n".join([*kept, closing.to_json()]) + "\n")
    out = reported["root"] / "cut-report"
    code, result = audit_cli(
        capsys,
        "report",
        str(cut),
        "--pubkey",
        str(reported["pub"]),
        "--out",
        str(out),
        "--head",
        str(reported["anchor"]),
    )
    assert code == 1 and f"records {last['seq'] + 1} onward were removed" in result["reason"]

    # A head that looks newer than the export is set aside only when its signature is good.
    newest = read_heads(reported["anchor"])[-1]
    forged = SignedTreeHead.sign(
        nacl.signing.SigningKey.generate(),
        newest.tree_size + 5,
        newest.root_hash,
        newest.head_hash,
        newest.ts_ms + 1,
    )
    anchor = reported["root"] / "forged-anchor.jsonl"
    anchor.write_text(reported["anchor"].read_text() + forged.to_json() + "\n")
    code, result = audit_cli(
        capsys,
        "report",
        str(reported["export"]),
        "--pubkey",
        str(reported["pub"]),
        "--out",
        str(reported["root"] / "forged-report"),
        "--head",
        str(anchor),
    )
    want = f"tree head #2 (tree size {forged.tree_size}) is not validly signed"
    assert code == 1 and want in result["reason"], result


# --- headless Chromium over the DevTools protocol --------------------------------------------


class Browser:
    """Just enough of the DevTools protocol: one page, its console, exceptions and requests."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.next_id, self.session = ws, 0, ""
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.loaded = asyncio.Event()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                thrown = details.get("exception", {}).get("description", "")
                self.errors.append(f"exception: {details.get('text')} {thrown}"[:500])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                self.errors.append("console: " + json.dumps(params["args"])[:500])
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                self.errors.append("log: " + params["entry"]["text"][:500])
            elif method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Page.loadEventFired":
                self.loaded.set()

    async def send(
        self, method: str, params: dict[str, Any] | None = None, top: bool = False
    ) -> Any:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not top:
            msg["sessionId"] = self.session
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_str(json.dumps(msg))
        reply = await asyncio.wait_for(fut, 30)
        assert "error" not in reply, reply
        return reply["result"]

    async def open(self, url: str) -> None:
        target = await self.send("Target.createTarget", {"url": "about:blank"}, top=True)
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, top=True
        )
        self.session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            await self.send(f"{domain}.enable")
        await self.goto(url)

    async def goto(self, url: str) -> None:
        self.loaded.clear()
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(self.loaded.wait(), 30)

    async def js(self, expression: str) -> Any:
        done = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        assert "exceptionDetails" not in done, done
        return done["result"].get("value")


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; its absence fails the test (CI installs it), it never skips it."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run does)")
    return CHROMIUM


async def with_browser(chromium: str, page: Path, work: Path, body: Any) -> Any:
    """Run `body(browser)` against `page` in a fresh headless Chromium with its own profile."""
    profile = Path(tempfile.mkdtemp(dir=work))
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) == 2):
            # Chromium writes this file once its DevTools server listens.
            assert proc.poll() is None, f"chromium exited with status {proc.returncode}"
            assert time.monotonic() < deadline, "chromium's DevTools server did not start"
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as ws,
        ):
            browser = Browser(ws)
            await browser.open(page.as_uri())
            result = await body(browser)
            browser.reader.cancel()
            return result
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_page_loads_in_headless_chromium_without_errors_and_shows_the_exports_numbers(
    reported: dict[str, Any], chromium: str
) -> None:
    page = reported["out"] / "index.html"
    want = expected_numbers(reported["export"])

    async def body(b: Browser) -> dict[str, Any]:
        seen: dict[str, Any] = {"errors_before": list(b.errors)}
        seen["ready"] = await b.js("document.documentElement.getAttribute('data-ready')")
        seen["numbers"] = await b.js(
            "Object.fromEntries(Array.from(document.querySelectorAll('[data-k]'))"
            ".map(e => [e.dataset.k, e.textContent]))"
        )
        seen["verdict"] = await b.js(
            "document.querySelector('section').id + ':' + "
            "document.getElementById('verdict').dataset.ok"
        )
        seen["rows"] = await b.js("document.querySelectorAll('#records-table tbody tr').length")
        # Search: only the rows of one order stay visible.
        seen["search"] = await b.js(
            "(() => { const s = document.getElementById('search'); s.value = 'r-thin';"
            " s.dispatchEvent(new Event('input'));"
            " return [document.querySelectorAll('#records-table tbody tr:not([hidden])').length,"
            " document.getElementById('shown').textContent]; })()"
        )
        # Sort: clicking seq twice puts the newest record first.
        seen["sorted"] = await b.js(
            "(() => { const s = document.getElementById('search'); s.value = '';"
            " s.dispatchEvent(new Event('input'));"
            " const th = document.querySelector('#records-table th'); th.click(); th.click();"
            " return document.querySelector('#records-table tbody tr').dataset.seq; })()"
        )
        seen["errors"], seen["requests"] = list(b.errors), list(b.requests)
        return seen

    seen = asyncio.run(with_browser(chromium, page, reported["root"], body))
    assert seen["ready"] == "1" and seen["errors"] == [], seen["errors"]
    assert all(u.startswith("file://") for u in seen["requests"]), seen["requests"]
    assert seen["numbers"] == want
    assert seen["verdict"] == "verdict:true"
    assert seen["rows"] == int(want["records:total"])
    thin_rows = sum(1 for line in reported["export"].read_text().splitlines() if "r-thin" in line)
    assert seen["search"] == [thin_rows, f"{thin_rows} of {want['records:total']} records shown"]
    assert seen["sorted"] == want["records:total"]


def test_the_browser_harness_does_see_a_script_error_and_a_network_fetch(
    tmp_path: Path, chromium: str
) -> None:
    """The control for the test above: an empty error list must mean something."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><body><img src='http://127.0.0.1:45679/x.png'>"
        "<script>console.error('boom'); undefinedFunction();</script></body></html>"
    )

    async def body(b: Browser) -> tuple[list[str], list[str]]:
        await b.js("new Promise(r => setTimeout(r, 200))")  # let the refused image settle
        return list(b.errors), list(b.requests)

    errors, requests = asyncio.run(with_browser(chromium, page, tmp_path, body))
    assert any("undefinedFunction" in e for e in errors), errors
    assert any("boom" in e for e in errors), errors
    assert any(u.startswith("http://127.0.0.1:45679/") for u in requests), requests


def test_hostile_text_in_a_record_is_shown_as_text_never_as_markup() -> None:
    """A denied request's fields come from the bot: whatever they hold, the page shows them
    escaped (no tag, attribute or script of theirs reaches the DOM)."""
    hostile = "<script>alert(1)</script>' onmouseover='x\"><img src=x>"
    payload = {
        "action": "create",
        "allowed": False,
        "bot_id": hostile,
        "key_id": hostile,
        "symbol": hostile,
        "client_order_id": hostile,
        "reasons": [{"rule_id": hostile, "message": hostile}],
        "policy_version": 0,
    }
    obj = {"seq": 1, "ts_ms": 0, "kind": "decision", "payload": payload}
    rec = StoredRecord(1, b"{}", "0" * 64, "0" * 128)
    verdict = VerifyReport(True, 1, None, None, hostile)
    page = render(aggregate([(rec, obj)], verdict, "00" * 32, hostile, 0))
    assert hostile not in page and "<script>alert" not in page and "<img src=x>" not in page
    assert html.escape(hostile, quote=True) in page
    parsed = _DataK()
    parsed.feed(page)
    assert parsed.external == []


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("-12.5", "-12.5"),  # a negative number stays a number
        ("34.56", "34.56"),
        ("bot-1", "bot-1"),
        ("", ""),
    ],
)
def test_csv_cells_are_never_spreadsheet_formulas(tmp_path: Path, cell: str, written: str) -> None:
    path = tmp_path / "x.csv"
    write_csv(path, ["a", "b"], [{"a": cell, "b": "ok"}])
    with open(path, newline="", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == [{"a": written, "b": "ok"}]

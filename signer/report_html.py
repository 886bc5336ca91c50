"""The audit report's one HTML page: inline CSS, inline JS (search and sort), inline SVG charts.

Nothing is fetched: a Content-Security-Policy of default-src 'none' makes the browser refuse any
request the page might make, so the file is self-contained by construction. Every number an
auditor may want to check against the export carries a `data-k` attribute (for example
``key:k1:rule:notional_cap``); the browser test reads them back.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape

from signer.proofs import iso
from signer.report import COLUMNS, Report, Subject, time_of

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
NUMERIC = {"seq", "amount", "limit_price", "notional", "policy_version"}
CHART_W, CHART_H = 640, 160

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232a;
background:#f6f7f9}
main{max-width:1400px;margin:0 auto;padding:16px 24px 48px}
h1{margin:0 0 4px;font-size:26px}h2{margin:32px 0 8px;border-bottom:2px solid #d5dae1}
h3{margin:18px 0 6px}h4{margin:12px 0 4px;font-size:13px;text-transform:uppercase;color:#56606b}
.verdict{padding:16px 24px;border-radius:8px;margin:16px 0;color:#fff}
.verdict.ok{background:#1d7a46}.verdict.bad{background:#b3261e}
.verdict dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:10px 0 0}
.verdict dt{opacity:.8}.verdict dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}
.grid{display:grid;grid-template-columns:1fr;gap:16px}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:8px 32px}
.scroll{overflow-x:auto}
.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:12px 16px}
table{border-collapse:collapse}
td,th{padding:3px 8px;border-bottom:1px solid #e6e9ee;text-align:left;vertical-align:top}
th{background:#eef1f5}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.counts td{font-size:18px;font-weight:600}.counts th{font-weight:400}
#records-table{font-size:12.5px;background:#fff;width:100%}
#records-table th{cursor:pointer;position:sticky;top:0;white-space:nowrap}
#records-table th[aria-sort=ascending]::after{content:" \\25B2"}
#records-table th[aria-sort=descending]::after{content:" \\25BC"}
.allowed{color:#1d7a46;font-weight:600}.denied,.refused{color:#b3261e;font-weight:600}
.tools{display:flex;gap:12px;align-items:center;margin:8px 0}
#search{padding:6px 10px;font-size:14px;width:320px}
.muted{color:#6b7580}code{background:#eef1f5;padding:1px 4px;border-radius:3px}
svg{width:100%;max-width:640px;height:auto}svg .bar{fill:#3d6fb6}
svg text{font-size:10px;fill:#56606b}
"""

SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("records-table");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var search = document.getElementById("search");
  var kind = document.getElementById("kind-filter");
  var shown = document.getElementById("shown");
  rows.forEach(function (r) { r.searchText = r.textContent.toLowerCase(); });
  function apply() {
    var q = search.value.trim().toLowerCase(), k = kind.value, n = 0;
    rows.forEach(function (r) {
      var ok = (!q || r.searchText.indexOf(q) >= 0) && (!k || r.getAttribute("data-kind") === k);
      r.hidden = !ok;
      if (ok) { n += 1; }
    });
    shown.textContent = n + " of " + rows.length + " records shown";
  }
  // Decimal strings compared exactly, digit by digit: no float ever touches an amount.
  function cmpDecimal(a, b) {
    if (a === b) { return 0; }
    if (a === "") { return -1; }
    if (b === "") { return 1; }
    var pa = a.split("."), pb = b.split(".");
    var ia = pa[0].replace(/^0+(?=.)/, ""), ib = pb[0].replace(/^0+(?=.)/, "");
    if (ia.length !== ib.length) { return ia.length < ib.length ? -1 : 1; }
    if (ia !== ib) { return ia < ib ? -1 : 1; }
    var fa = pa[1] || "", fb = pb[1] || "", len = Math.max(fa.length, fb.length);
    while (fa.length < len) { fa += "0"; }
    while (fb.length < len) { fb += "0"; }
    return fa === fb ? 0 : (fa < fb ? -1 : 1);
  }
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      var numeric = th.getAttribute("data-type") === "num";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        var c = numeric ? cmpDecimal(x, y) : x.localeCompare(y);
        if (c === 0) { c = cmpDecimal(a.cells[0].textContent, b.cells[0].textContent); }
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  search.addEventListener("input", apply);
  kind.addEventListener("change", apply);
  apply();
  document.documentElement.setAttribute("data-ready", "1");
}());
"""


def e(value: object) -> str:
    return escape(str(value), quote=True)


def render(r: Report) -> str:
    kinds = sorted({row["kind"] for row in r.rows})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<link rel='icon' href='data:,'>",
        f"<title>Bulkhead audit report: {e(r.export_name)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        _verdict(r),
        "<nav><a href='#keys'>Per key</a> &middot; <a href='#bots'>Per bot</a> &middot; "
        "<a href='#freezes'>Freezes</a> &middot; <a href='#records'>Every record</a> &middot; "
        "<a href='#check'>How to check</a></nav>",
        "<h2 id='keys'>Per key</h2><div class='grid'>",
        *(_subject("key", k, s, r) for k, s in r.keys.items() if k),
        "</div><h2 id='bots'>Per bot</h2><div class='grid'>",
        *(_subject("bot", b, s, r) for b, s in r.bots.items() if b),
        "</div>",
        _freezes(r),
        "<h2 id='records'>Every record</h2><div class='tools'>",
        "<input id='search' type='search' placeholder='Search seq, bot, key, symbol, rule, "
        "order id...' aria-label='Search records'>",
        "<select id='kind-filter' aria-label='Kind'><option value=''>all kinds</option>",
        *(f"<option value='{e(k)}'>{e(k)}</option>" for k in kinds),
        f"</select><span id='shown' class='muted'></span><span class='muted'>"
        f"(<span data-k='records:total'>{len(r.rows)}</span> records in the export; click a "
        "column to sort)</span></div>",
        _records(r),
        _how_to_check(r),
        f"</main><script>{SCRIPT}</script></body></html>\n",
    ]
    return "".join(parts)


def _verdict(r: Report) -> str:
    v = r.verdict
    head = r.proof_head
    items = [
        ("export", r.export_name),
        ("records verified", str(v.records)),
        ("audit public key", r.public_key_hex),
        (
            "checkpoints / tree heads checked",
            f"{r.heads_checked}"
            + (
                f" ({r.heads_newer} signed after this export: not checked)" if r.heads_newer else ""
            ),
        ),
        (
            "proofs against",
            f"signed tree head of size {head.tree_size}, root {head.root_hash}, signed "
            f"{iso(head.ts_ms)} ({r.proofs_written} order proofs)"
            if head
            else "no proofs: give a signed tree head from the anchor with --head"
            if v.ok
            else "no proofs: the export does not verify",
        ),
        ("report generated", time_of(r.generated_ms) + " UTC"),
    ]
    title = "VERIFIED" if v.ok else "VERIFICATION FAILED"
    return (
        f"<section id='verdict' class='verdict {'ok' if v.ok else 'bad'}' "
        f"data-ok='{'true' if v.ok else 'false'}'><h1>{title}</h1>"
        f"<div id='verdict-reason'>{e(v.summary)}</div><dl>"
        + "".join(f"<dt>{e(k)}</dt><dd>{e(val)}</dd>" for k, val in items)
        + "</dl></section>"
    )


def _subject(kind: str, ident: str, s: Subject, r: Report) -> str:
    k = f"{kind}:{ident}"
    counts = "".join(
        f"<td class='n' data-k='{e(k)}:{name}'>{value}</td>"
        for name, value in (
            ("allowed", s.allowed),
            ("denied", s.denied),
            ("refused", s.refused),
            ("cancels", s.cancels),
        )
    )
    left = [
        "<table class='counts'><tr><th>orders allowed</th><th>orders denied</th>"
        "<th>refused (auth)</th><th>cancels</th></tr>",
        f"<tr>{counts}</tr></table><h4>Denied (and refused) by rule id</h4>",
    ]
    if s.by_rule:
        left.append("<table><tr><th>rule id</th><th class='n'>count</th></tr>")
        for rule, n in sorted(s.by_rule.items(), key=lambda x: (-x[1], x[0])):
            left.append(
                f"<tr><td><code>{e(rule)}</code></td>"
                f"<td class='n' data-k='{e(k)}:rule:{e(rule)}'>{n}</td></tr>"
            )
        left.append("</table>")
    else:
        left.append("<p class='muted'>none</p>")
    left.append(_policies(kind, ident, s, r))
    keys = {ident} if kind == "key" else {v.split(" v")[0] for v in s.policy_versions}
    freezes = [f for f in r.freezes if f["target"] in {"all keys", *(f"key {x}" for x in keys)}]
    left.append("<h4>Freezes" + (" of its keys" if kind == "bot" else "") + "</h4>")
    if freezes:
        left.append("<ul>")
        left.extend(
            f"<li>{e(f['time'])}: {e(f['action'])} {e(f['target'])} by {e(f['actor'])}"
            + (f" ({e(f['reason'])})" if f["reason"] else "")
            + "</li>"
            for f in freezes
        )
        left.append("</ul>")
    else:
        left.append("<p class='muted'>none</p>")
    if s.events:
        left.append("<h4>Changes</h4><ul>")
        left.extend(f"<li>{e(time_of(ts))}: {e(what)}</li>" for ts, what in sorted(s.events))
        left.append("</ul>")
    right = [
        "<h4>Notional per day, allowed orders (quote)</h4>",
        _chart(s.notional_by_day, f"{kind} {ident}"),
    ]
    if s.notional_by_day:
        right.append("<table><tr><th>day (UTC)</th><th class='n'>notional</th></tr>")
        for day, total in sorted(s.notional_by_day.items()):
            right.append(
                f"<tr><td>{e(day)}</td><td class='n' data-k='{e(k)}:notional:{e(day)}'>"
                f"{e(total)}</td></tr>"
            )
        right.append("</table>")
    return (
        f"<article class='card' id='{e(kind)}-{e(ident)}'><h3>{e(kind.title())} {e(ident)}</h3>"
        f"<div class='cols'><div>{''.join(left)}</div><div>{''.join(right)}</div></div></article>"
    )


def _policies(kind: str, ident: str, s: Subject, r: Report) -> str:
    out = ["<h4>Policy versions in force</h4>"]
    if kind == "key":
        versions = r.policy_history.get(ident, [])
        if not versions:
            return out[0] + "<p class='muted'>no policy: every order is denied</p>"
        out.append(
            "<table><tr><th>version</th><th>in force from</th><th>until</th><th>set by</th>"
            "<th>loosening</th><th class='n'>decisions</th></tr>"
        )
        for v in versions:
            used = s.policy_versions.get(f"{ident} v{v['version']}", 0)
            out.append(
                f"<tr><td>v{e(v['version'])}</td><td>{e(v['from'])}</td>"
                f"<td>{e(v['until'])}</td><td>{e(v['actor'])}</td><td>{e(v['loosening'])}</td>"
                f"<td class='n'>{used}</td></tr>"
            )
        out.append("</table>")
        return "".join(out)
    if not s.policy_versions:
        return out[0] + "<p class='muted'>no decisions</p>"
    out.append("<table><tr><th>key, version</th><th class='n'>decisions</th></tr>")
    for name, n in sorted(s.policy_versions.items()):
        out.append(f"<tr><td>{e(name)}</td><td class='n'>{n}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _chart(by_day: dict[str, Decimal], label: str) -> str:
    """Bars of exact decimals scaled to integer pixels (Decimal arithmetic, no floats)."""
    if not by_day:
        return "<p class='muted'>no allowed orders</p>"
    days = sorted(by_day)
    top = max(by_day.values()) or Decimal(1)
    slot = max(6, min(60, (CHART_W - 40) // len(days)))
    bars = []
    for i, day in enumerate(days):
        h = int((by_day[day] / top * (CHART_H - 30)).to_integral_value())
        x, y = 30 + i * slot, CHART_H - 16 - h
        bars.append(
            f"<rect class='bar' x='{x}' y='{y}' width='{max(2, slot - 4)}' height='{h}'>"
            f"<title>{e(day)}: {e(by_day[day])}</title></rect>"
        )
    axis = (
        f"<text x='30' y='{CHART_H - 2}'>{e(days[0])}</text>"
        + (
            f"<text x='{CHART_W - 4}' y='{CHART_H - 2}' text-anchor='end'>{e(days[-1])}</text>"
            if len(days) > 1
            else ""
        )
        + f"<text x='30' y='10'>max {e(top)}</text>"
    )
    return (
        f"<svg role='img' aria-label='Notional per day for {e(label)}' width='{CHART_W}' "
        f"height='{CHART_H}' viewBox='0 0 {CHART_W} {CHART_H}'>"
        f"<line x1='28' y1='{CHART_H - 16}' x2='{CHART_W}' y2='{CHART_H - 16}' stroke='#9aa3ad'/>"
        + "".join(bars)
        + axis
        + "</svg>"
    )


def _freezes(r: Report) -> str:
    out = ["<h2 id='freezes'>Freezes</h2>"]
    if not r.freezes:
        return out[0] + "<p class='muted' data-k='freezes:total'>0</p>"
    out.append(
        f"<p><span data-k='freezes:total'>{len(r.freezes)}</span> freeze events</p>"
        "<table><tr><th>time (UTC)</th><th>action</th><th>target</th><th>by</th>"
        "<th>reason</th></tr>"
    )
    for f in r.freezes:
        out.append(
            f"<tr><td>{e(f['time'])}</td><td>{e(f['action'])}</td><td>{e(f['target'])}</td>"
            f"<td>{e(f['actor'])}</td><td>{e(f['reason'])}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _records(r: Report) -> str:
    head = "".join(
        f"<th{' data-type=num class=n' if c in NUMERIC else ''}>{e(c)}</th>"
        for c in COLUMNS
        if c != "proof"
    )
    out = [f"<div class='scroll'><table id='records-table'><thead><tr>{head}</tr></thead><tbody>"]
    for row in r.rows:
        cells = []
        for c in COLUMNS:
            if c == "proof":
                continue
            value = e(row[c])
            if c == "client_order_id" and row["proof"]:
                value = f"<a href='{e(row['proof'])}' title='proof file'>{value}</a>"
            cls = " class='n'" if c in NUMERIC else ""
            if c == "decision" and row[c]:
                cls = f" class='{e(row[c])}'"
            cells.append(f"<td{cls}>{value}</td>")
        out.append(
            f"<tr data-kind='{e(row['kind'])}' data-seq='{e(row['seq'])}'>{''.join(cells)}</tr>"
        )
    out.append("</tbody></table></div>")
    return "".join(out)


def _how_to_check(r: Report) -> str:
    return (
        "<h2 id='check'>How to check this report yourself</h2><ol>"
        "<li><code>bulkhead-signer audit verify EXPORT --pubkey audit_pubkey.hex "
        "--checkpoint ANCHOR</code>: every record's hash, signature and link, and the signed "
        "heads kept outside the signer.</li>"
        "<li><code>bulkhead-signer audit check-proof proofs/ORDER.json --pubkey "
        "audit_pubkey.hex</code>: one order, offline, with nothing else.</li>"
        "<li><code>bulkhead-signer audit consistency OLD_HEAD NEW_HEAD --export EXPORT</code>: "
        "the newer head extends the older one.</li></ol>"
        f"<p class='muted'>records.csv holds every row of the table; summary.csv every number "
        f"of the key and bot cards. Public key {e(r.public_key_hex)}.</p>"
    )

"""A self-contained interactive HTML backtest page: no network fetch, no external script.

Two canvas charts (price with fills, equity) share a time axis: hover shows the values,
drag selects a time range to zoom into, double-click resets. Summary and deal tables below.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from botengine.backtest.report import DEAL_COLUMNS, SUMMARY_LABELS

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="__CSP__">
<title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 20px; color: #222 }
h1 { font-size: 18px }
canvas { border: 1px solid #ddd; display: block; margin: 6px 0; cursor: crosshair }
table { border-collapse: collapse; margin: 10px 0 }
td, th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right }
td:first-child, th:first-child { text-align: left }
#tip { position: fixed; background: #fff; border: 1px solid #999; padding: 4px 6px;
       font-size: 12px; pointer-events: none; display: none; white-space: pre }
.hint { color: #777; font-size: 12px }
</style></head><body>
<h1>__TITLE__</h1>
<div class="hint">hover for values; drag to zoom into a time range; double-click to reset</div>
<canvas id="price" width="1200" height="380"></canvas>
<canvas id="equity" width="1200" height="200"></canvas>
<div id="tip"></div>
<h2>Summary</h2><table>__SUMMARY__</table>
<h2>Deals</h2><table><tr>__DEAL_HEAD__</tr>__DEALS__</table>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const T0 = Math.min(D.price_t[0], D.equity_t[0]);
const T1 = Math.max(D.price_t.at(-1), D.equity_t.at(-1));
let view = [T0, T1];
const tip = document.getElementById("tip");
const fmtT = t => new Date(t).toISOString().slice(0, 16).replace("T", " ");

function lower(ts, t) {  // first index with ts[i] >= t
  let a = 0, b = ts.length;
  while (a < b) {
    const m = (a + b) >> 1;
    if (ts[m] < t) a = m + 1; else b = m;
  }
  return a;
}

function chart(id, ts, vs, color, fills) {
  const cv = document.getElementById(id), g = cv.getContext("2d");
  const W = cv.width, H = cv.height, P = 50;
  let drag = null;
  const xOf = t => P + (t - view[0]) / (view[1] - view[0]) * (W - 2 * P);
  const tAt = px => view[0] + (px - P) / (W - 2 * P) * (view[1] - view[0]);
  const pxOf = e => {
    const r = cv.getBoundingClientRect();
    return (e.clientX - r.left) * W / r.width;
  };
  function scales() {
    const a = Math.max(0, lower(ts, view[0]) - 1);
    const b = Math.min(ts.length, lower(ts, view[1]) + 1);
    let lo = Infinity, hi = -Infinity;
    for (let i = a; i < b; i++) { lo = Math.min(lo, vs[i]); hi = Math.max(hi, vs[i]); }
    if (!(hi > lo)) { hi = lo + 1; lo -= 1; }
    const pad = (hi - lo) * 0.05;
    lo -= pad; hi += pad;
    return {a, b, lo, hi, y: v => H - 20 - (v - lo) / (hi - lo) * (H - 40)};
  }
  function line(x0, y0, x1, y1, stroke) {
    g.strokeStyle = stroke; g.beginPath(); g.moveTo(x0, y0); g.lineTo(x1, y1); g.stroke();
  }
  function marker(f, s) {
    const X = xOf(f.t), Y = s.y(f.p), d = f.s === "buy" ? 1 : -1;
    g.fillStyle = f.s === "buy" ? "#2ca02c" : "#d62728";
    g.beginPath();
    g.moveTo(X, Y - 2 * d); g.lineTo(X - 4, Y + 5 * d); g.lineTo(X + 4, Y + 5 * d);
    g.fill();
  }
  function draw(hx) {
    const s = scales();
    g.clearRect(0, 0, W, H);
    g.font = "11px sans-serif";
    for (let k = 0; k <= 4; k++) {
      const v = s.lo + (s.hi - s.lo) * k / 4, y = s.y(v);
      line(P, y, W - P, y, "#eee");
      g.fillStyle = "#666"; g.fillText(v.toPrecision(6), 2, y + 4);
    }
    g.fillText(fmtT(view[0]), P, H - 4);
    g.fillText(fmtT(view[1]), W - P - 90, H - 4);
    g.strokeStyle = color; g.lineWidth = 1; g.beginPath();
    for (let i = s.a; i < s.b; i++) {
      if (i === s.a) g.moveTo(xOf(ts[i]), s.y(vs[i])); else g.lineTo(xOf(ts[i]), s.y(vs[i]));
    }
    g.stroke();
    for (const f of fills || []) if (f.t >= view[0] && f.t <= view[1]) marker(f, s);
    if (drag) {
      g.fillStyle = "rgba(0,0,255,.1)";
      g.fillRect(Math.min(...drag), 0, Math.abs(drag[1] - drag[0]), H);
    }
    if (hx !== undefined) line(hx, 0, hx, H, "#999");
  }
  function nearestFill(px) {
    let best = null, bd = 8;
    for (const f of fills || []) {
      if (f.t < view[0] || f.t > view[1]) continue;
      const dx = Math.abs(xOf(f.t) - px);
      if (dx < bd) { bd = dx; best = f; }
    }
    return best;
  }
  cv.addEventListener("mousemove", e => {
    const px = pxOf(e);
    if (drag) drag[1] = px;
    const i = Math.min(ts.length - 1, lower(ts, tAt(px)));
    let text = fmtT(ts[i]) + " UTC\\n" + id + ": " + vs[i];
    const f = nearestFill(px);
    if (f) text += "\\n" + f.s + " " + f.a + " @ " + f.p + " (" + f.r + ")\\n" + f.id;
    tip.textContent = text;
    tip.style.display = "block";
    tip.style.left = (e.clientX + 12) + "px";
    tip.style.top = (e.clientY + 12) + "px";
    redraw(px);
  });
  cv.addEventListener("mouseleave", () => { tip.style.display = "none"; drag = null; redraw(); });
  cv.addEventListener("mousedown", e => { drag = [pxOf(e), pxOf(e)]; });
  cv.addEventListener("mouseup", () => {
    if (drag && Math.abs(drag[1] - drag[0]) > 4) {
      view = [tAt(Math.min(...drag)), tAt(Math.max(...drag))];
    }
    drag = null;
    redraw();
  });
  cv.addEventListener("dblclick", () => { view = [T0, T1]; redraw(); });
  return draw;
}

const charts = [
  chart("price", D.price_t, D.price, "#444", D.fills),
  chart("equity", D.equity_t, D.equity, "#1f77b4", null),
];
function redraw(px) { for (const c of charts) c(px); }
redraw();
</script></body></html>
"""


def _cell(value: object) -> str:
    return html.escape("" if value is None else str(value))


def write_html(report: dict[str, Any], data: dict[str, Any], path: Path) -> Path:
    s = report["summary"]
    title = f"{s['bot']}: {s['strategy']} backtest on {s['symbol']}"
    summary = "".join(
        f"<tr><td>{_cell(label)}</td><td>{_cell(s[key])}</td></tr>"
        for key, label in SUMMARY_LABELS
        if key in s and s[key] is not None
    )
    head = "".join(f"<th>{_cell(c)}</th>" for c in DEAL_COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_cell(d[c])}</td>" for c in DEAL_COLUMNS) + "</tr>"
        for d in report["deals"]
    )
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    parts = {"CSP": _CSP, "TITLE": html.escape(title), "SUMMARY": summary, "DEAL_HEAD": head,
             "DEALS": rows, "DATA": payload}  # fmt: skip
    page = re.sub(r"__([A-Z_]+?)__", lambda m: parts[m[1]], _PAGE)  # one pass: no re-expansion
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path

"""The sample viewer's page: fixed CSS and JavaScript around one JSON data block.

Everything that comes from a run (questions, outputs, categories, ids, names) travels only in
`<script type="application/json">`, with `<`, `>`, `&` and the JavaScript line separators
written as \\u escapes, so no data byte can close the block or start markup. The script below
is the page's only code: it parses that block and builds the table with `textContent` and
`createElement` (never innerHTML), so data is shown, never run. Images are data: URIs the
harness made itself. Rows are drawn a page at a time, which keeps a 5,000-item run responsive.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_for_script(data: Any) -> str:
    """JSON that is safe inside <script type="application/json"> (and still parses to `data`)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_JSON_ESCAPES.get(ch, ch) for ch in text) if any(c in text for c in _JSON_ESCAPES) else text


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.3em;margin:.2em 0}
.meta,.count{color:#555;font-size:.9em}
.bar{display:flex;flex-wrap:wrap;gap:.8em;align-items:center;margin:.8em 0;padding:.5em;background:#f4f4f4;border-radius:4px}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left;font-size:.88em}
th{background:#eee}
td.thumb{width:100px}
td.thumb img{max-width:96px;max-height:96px;display:block;margin-bottom:2px}
.q,pre,td,option{unicode-bidi:isolate}
.q{white-space:pre-wrap;overflow-wrap:anywhere;max-height:12em;overflow:auto}
.outs{display:flex;gap:.4em;flex-wrap:wrap}
.out{flex:1 1 14em;min-width:10em;border:1px solid #ddd;border-radius:3px;padding:.25em}
.out pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;max-height:10em;overflow:auto;font-size:.95em}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.5em}
.side{font-weight:bold;font-size:.85em;color:#555}
.right{background:#e9f6ec}.wrong{background:#fbeaea}.partial{background:#fdf6e3}
.tag{display:inline-block;padding:0 .3em;border-radius:3px;font-size:.8em;background:#ddd;margin-right:.3em}
.tag.none{background:#f0c36d}
.pager button{margin:0 .2em}
"""

_JS = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const PAGE = 100;
const $ = (id) => document.getElementById(id);
let shown = [], page = 0;
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = show(text); return e; };
const mean = (s) => s.length ? s.reduce((a, x) => a + x[2], 0) / s.length : 0;
const verdict = (v) => v >= 1 ? "right" : v <= 0 ? "wrong" : "partial";
// Direction overrides and NULs in data are shown as visible codes, so text cannot reorder itself.
const CONTROL = /[\u0000\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const show = (t) => String(t).replace(CONTROL, (c) => "⟦U+" + c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0") + "⟧");
const fmt = (v) => (Math.round(v * 1000) / 1000).toString();
for (const r of D.rows) {
  r.score = r.u !== undefined ? r.u : mean(r.s);
  r.unparsed = r.s.some((x) => x[1] === null) || (r.b || []).some((x) => x[1] === null);
  r.hay = [r.id, r.q, r.p || "", r.t, r.c, ...(r.ch || []), ...r.s.map((x) => x[0] + " " + x[1]), ...(r.b || []).map((x) => x[0] + " " + x[1])].join("\n").toLowerCase();
}
function outputs(samples, label) {
  const box = el("div", "outs");
  samples.forEach((x, k) => {
    const o = el("div", "out " + verdict(x[2]));
    o.appendChild(el("div", "side", (label ? label + " · " : "") + "sample " + k + " · score " + fmt(x[2])));
    o.appendChild(el("pre", "", x[0]));
    const ex = el("div");
    ex.appendChild(el("span", x[1] === null ? "tag none" : "tag", x[1] === null ? "unparsed" : "extracted"));
    if (x[1] !== null) ex.appendChild(document.createTextNode(show(x[1])));
    o.appendChild(ex);
    box.appendChild(o);
  });
  return box;
}
function rowFor(r) {
  const tr = el("tr", verdict(r.score));
  tr.dataset.id = r.id;
  const th = el("td", "thumb");
  for (const i of r.img || []) { const im = el("img"); im.alt = "image"; im.loading = "lazy"; im.src = D.thumbs[i]; th.appendChild(im); }
  th.appendChild(el("div", "meta", r.id));
  tr.appendChild(th);
  const q = el("td");
  q.appendChild(el("div", "q", r.q));
  if (r.ch && r.ch.length) q.appendChild(el("div", "meta", "choices: " + r.ch.join(" | ")));
  q.appendChild(el("div", "", "target: " + r.t));
  q.appendChild(el("div", "meta", "category: " + r.c));
  if (r.p) { const d = el("details"); d.appendChild(el("summary", "", "prompt")); d.appendChild(el("div", "q", r.p)); q.appendChild(d); }
  tr.appendChild(q);
  const o = el("td");
  if (r.b) {
    o.appendChild(el("div", "side", (r.f === "wr" ? "wrong → right" : r.f === "rw" ? "right → wrong" : r.f === "up" ? "better" : "worse") +
      " (unit " + r.un + ": " + fmt(r.bu) + " → " + fmt(r.u) + ")"));
    const pair = el("div", "pair");  // baseline left, checkpoint right
    for (const [samples, label] of [[r.b, D.baseline], [r.s, D.checkpoint]]) {
      const col = el("div", "col");
      col.appendChild(el("div", "side", label));
      col.appendChild(outputs(samples, ""));
      pair.appendChild(col);
    }
    o.appendChild(pair);
  } else {
    o.appendChild(outputs(r.s, D.checkpoint));
  }
  tr.appendChild(o);
  tr.appendChild(el("td", "", fmt(r.score)));
  return tr;
}
function apply() {
  const wrong = $("wrong").checked, unp = $("unparsed").checked, cat = $("cat").value;
  const flip = $("flip") ? $("flip").value : "";
  const text = $("search").value.trim().toLowerCase();
  shown = D.rows.filter((r) => (!wrong || r.score < 1) && (!unp || r.unparsed) && (!cat || r.c === cat) &&
    (!flip || r.f === flip) && (!text || r.hay.includes(text)));
  const key = $("sort").value;
  const cmp = {
    order: (a, b) => a.o - b.o,
    score_up: (a, b) => a.score - b.score || a.o - b.o,
    score_down: (a, b) => b.score - a.score || a.o - b.o,
    category: (a, b) => (a.c < b.c ? -1 : a.c > b.c ? 1 : a.o - b.o),
    length: (a, b) => b.s.reduce((n, x) => n + x[0].length, 0) - a.s.reduce((n, x) => n + x[0].length, 0) || a.o - b.o,
  }[key];
  shown.sort(cmp);
  page = 0;
  draw();
}
function draw() {
  const body = $("rows");
  const frag = document.createDocumentFragment();
  const start = page * PAGE, stop = Math.min(shown.length, start + PAGE);
  for (let i = start; i < stop; i++) frag.appendChild(rowFor(shown[i]));
  body.replaceChildren(frag);
  $("count").textContent = shown.length ? `showing ${start + 1}-${stop} of ${shown.length} matching (${D.rows.length} in all)` : `no item matches (${D.rows.length} in all)`;
  $("prev").disabled = page === 0;
  $("next").disabled = stop >= shown.length;
}
function setup() {
  const head = $("head");
  head.querySelector("h1").textContent = D.title;
  head.querySelector(".meta").textContent = D.subtitle;
  const cat = $("cat");
  for (const c of D.categories) { const o = el("option", "", c || "(none)"); o.value = c; cat.appendChild(o); }
  if (D.flips) {
    const f = $("flip");
    for (const [v, label] of [["wr", "wrong → right"], ["rw", "right → wrong"], ["up", "better"], ["down", "worse"]]) {
      if (!D.flips[v]) continue;
      const o = el("option", "", `${label} (${D.flips[v]})`); o.value = v; f.appendChild(o);
    }
  } else { $("flipbox").remove(); }
  let timer = 0;
  $("search").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 150); });
  for (const id of ["wrong", "unparsed", "cat", "sort", "flip"]) if ($(id)) $(id).addEventListener("change", apply);
  $("prev").addEventListener("click", () => { page--; draw(); });
  $("next").addEventListener("click", () => { page++; draw(); });
  apply();
}
setup();
"""

_BODY = """<div id="head"><h1></h1><div class="meta"></div></div>
<div class="bar">
<label><input type="checkbox" id="wrong"> wrong only</label>
<label><input type="checkbox" id="unparsed"> unparsed only</label>
<label>category <select id="cat"><option value="">all</option></select></label>
<span id="flipbox"><label>flip <select id="flip"><option value="">all</option></select></label></span>
<label>search <input type="search" id="search" placeholder="id, question, output"></label>
<label>sort <select id="sort"><option value="order">item order</option><option value="score_up">score, low first</option>
<option value="score_down">score, high first</option><option value="category">category</option>
<option value="length">longest output</option></select></label>
<span class="pager"><button id="prev">◀ prev</button><button id="next">next ▶</button></span>
</div>
<div class="count" id="count"></div>
<table><colgroup><col style="width:110px"><col style="width:35%"><col><col style="width:4em"></colgroup>
<thead><tr><th>item</th><th>question · choices · target · category</th><th>outputs (raw, extracted, score)</th><th>score</th></tr></thead>
<tbody id="rows"></tbody></table>"""


# The CSP admits exactly this script, by hash: even markup smuggled past the escaping could not run.
_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()


def render(data: dict[str, Any], key: str = "") -> str:
    """The whole page; `data` holds title, subtitle, rows, thumbs, categories (see harness.report.viewer)."""
    title = html.escape(str(data.get("title", "samples")))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="harness-key" content="{html.escape(key, quote=True)}">'
        # No network, no inline handlers: the one script below is all the page may run.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        f"style-src 'unsafe-inline'; script-src '{_SCRIPT_HASH}'\">"
        f"<title>{title}</title><style>{_CSS}</style></head><body>\n{_BODY}\n"
        f'<script type="application/json" id="data">{json_for_script(data)}</script>\n'
        f"<script>{_JS}</script>\n</body></html>\n"
    )

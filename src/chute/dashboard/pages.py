"""The dashboard's pages: HTML made on the server, every value escaped,
and one small script (live numbers, charts, confirmations). No build step,
nothing loaded from elsewhere."""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any

from .._contract import DeadLetter

__all__ = ["index_page", "message_page", "queue_page"]

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#1d1d1f;color:#fff;padding:10px 20px}
header a{color:#fff;text-decoration:none;font-weight:600}
header .where{color:#aaa;margin-left:12px}
main{padding:16px 20px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:6px 10px;border-bottom:1px solid #e5e5e5;text-align:right;vertical-align:top}
th:first-child,td:first-child,td.text,th.text{text-align:left}
th{font-weight:600;color:#555;background:#f2f2f2}
.banner{padding:10px 14px;margin-bottom:12px;border-radius:4px}
.down{background:#ffe5e5;color:#8a0000}
.done{background:#e5f6e5;color:#0a5a0a}
.note{background:#fff6d9;color:#6a5000}
svg.spark{width:140px;height:28px;display:block}
svg.spark polyline{fill:none;stroke:#2a6fdb;stroke-width:1.5}
svg.rate polyline{stroke:#1a9a4a}
.numbers{display:flex;gap:16px;margin:8px 0 16px;align-items:flex-start;flex-wrap:wrap}
.numbers div{background:#fff;padding:8px 14px;border:1px solid #e5e5e5;border-radius:4px}
.numbers b{display:block;font-size:20px}
.actions{margin:12px 0;display:flex;gap:8px}
button{padding:5px 12px;border:1px solid #bbb;border-radius:4px;background:#fff;cursor:pointer}
button.danger{border-color:#c33;color:#c33}
pre{white-space:pre-wrap;margin:4px 0;font-size:12px;background:#f6f6f6;padding:6px}
.item{font-family:ui-monospace,monospace;max-width:420px;overflow-wrap:anywhere}
nav.pages{margin:12px 0}
nav.pages a,nav.pages span{margin-right:10px}
dialog{border:1px solid #bbb;border-radius:6px;padding:16px 20px}
"""

SCRIPT = """
const csrf = document.querySelector('meta[name=chute-csrf]').content;
function spark(svg, values) {
  if (!svg) return;
  const w = 140, h = 28, n = values.length;
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) =>
    `${n > 1 ? (i * w / (n - 1)).toFixed(1) : 0},${(h - 1 - v * (h - 2) / max).toFixed(1)}`);
  svg.querySelector('polyline').setAttribute('points', pts.join(' '));
}
function age(seconds) {
  if (seconds === null || seconds === undefined) return '-';
  if (seconds < 60) return seconds.toFixed(1) + ' s';
  if (seconds < 3600) return (seconds / 60).toFixed(1) + ' min';
  return (seconds / 3600).toFixed(1) + ' h';
}
function show(state) {
  const banner = document.getElementById('down');
  if (state.error) {
    banner.textContent = 'The store cannot be read: ' + state.error +
      ' (looking again every second; the numbers below are the last ones read)';
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  const names = new Set(state.queues.map(q => q.name));
  const shown = new Set([...document.querySelectorAll('[data-queue]')].map(e => e.dataset.queue));
  if (document.body.dataset.page === 'index' && !state.error &&
      (names.size !== shown.size || [...names].some(n => !shown.has(n)))) {
    location.reload();  // a queue came or went
    return;
  }
  for (const q of state.queues) {
    for (const row of document.querySelectorAll(`[data-queue="${CSS.escape(q.name)}"]`)) {
      for (const key of ['ready', 'delayed', 'in_flight', 'dead', 'rate']) {
        const cell = row.querySelector(`[data-n=${key}]`);
        if (cell) cell.textContent = q[key];
      }
      const cell = row.querySelector('[data-n=oldest_age]');
      if (cell) cell.textContent = age(q.oldest_age);
      spark(row.querySelector('svg.depth'), q.depth_history);
      spark(row.querySelector('svg.rate'), q.rate_history);
    }
  }
}
function listen() {
  const events = new EventSource('/events');
  events.onmessage = e => show(JSON.parse(e.data));
}
function ask(text, then) {
  const dialog = document.getElementById('confirm');
  dialog.querySelector('p').textContent = text;
  dialog.returnValue = '';
  dialog.onclose = () => { if (dialog.returnValue === 'yes') then(); };
  dialog.showModal();
}
async function act(what, ids, count) {
  const page = document.body;
  const verb = what === 'requeue' ? 'Requeue' : 'Purge';
  const target = ids === null ? `all ${count} dead letters` :
    `${ids.length} dead letter${ids.length === 1 ? '' : 's'}`;
  ask(`${verb} ${target} of ${page.dataset.name}?` +
      (what === 'purge' ? ' They are deleted for good.' : ''), async () => {
    const answer = await fetch(`${encodeURIComponent(page.dataset.name)}/dead/${what}`, {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'X-Chute-CSRF': csrf},
      body: JSON.stringify(ids === null ? {all: true} : {ids: ids}),
    });
    const said = await answer.json();
    sessionStorage.setItem('chute-said', JSON.stringify(said));
    location.reload();
  });
}
function selected() {
  return [...document.querySelectorAll('input.pick:checked')].map(e => e.value);
}
document.addEventListener('DOMContentLoaded', () => {
  if (document.body.dataset.page === 'message') return;
  listen();
  const said = sessionStorage.getItem('chute-said');
  if (said) {
    sessionStorage.removeItem('chute-said');
    const s = JSON.parse(said), box = document.getElementById('said');
    box.textContent = s.message;
    box.className = 'banner ' + (s.ok ? 'done' : 'note');
    box.hidden = false;
  }
  for (const b of document.querySelectorAll('button[data-act]')) {
    b.addEventListener('click', () => {
      const all = b.dataset.scope === 'all';
      const ids = all ? null : selected();
      if (!all && ids.length === 0) { alert('Select dead letters first.'); return; }
      act(b.dataset.act, ids, Number(b.dataset.count));
    });
  }
  const every = document.getElementById('pick-all');
  if (every) every.addEventListener('change', () => {
    for (const e of document.querySelectorAll('input.pick')) e.checked = every.checked;
  });
});
"""


def _page(title: str, body: str, *, csrf: str, where: str, kind: str, extra: str = "") -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="chute-csrf" content="{escape(csrf)}">
<title>{escape(title)} · chute</title>
<style>{STYLE}</style>
<script>{SCRIPT}</script>
</head><body data-page="{kind}"{extra}>
<header><a href="{"." if kind == "index" else ".."}/">chute</a>
<span class="where">{escape(where)}</span></header>
<main>
<div id="down" class="banner down" hidden></div>
<div id="said" class="banner" hidden></div>
{body}
</main>
<dialog id="confirm"><form method="dialog"><p></p>
<button value="no">Cancel</button> <button value="yes" class="danger">Confirm</button>
</form></dialog>
</body></html>
"""


def _spark(kind: str) -> str:
    return f'<svg class="spark {kind}" viewBox="0 0 140 28"><polyline points=""/></svg>'


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def index_page(state: dict[str, Any], *, csrf: str, where: str) -> str:
    rows = []
    for q in state["queues"]:
        name = escape(q["name"])
        rows.append(
            f'<tr data-queue="{name}"><td><a href="queues/{escape(_path(q["name"]))}">'
            f"{name}</a></td>"
            f'<td data-n="ready">{q["ready"]}</td><td data-n="delayed">{q["delayed"]}</td>'
            f'<td data-n="in_flight">{q["in_flight"]}</td><td data-n="dead">{q["dead"]}</td>'
            f'<td data-n="oldest_age">{_age(q["oldest_age"])}</td>'
            f'<td data-n="rate">{q["rate"]}</td>'
            f"<td>{_spark('depth')}</td><td>{_spark('rate')}</td></tr>"
        )
    table = (
        "<table><tr><th>queue</th><th>ready</th><th>delayed</th><th>in flight</th>"
        "<th>dead letters</th><th>oldest ready</th><th>got/s</th>"
        "<th>ready, last 5 min</th><th>got/s, last 5 min</th></tr>" + "".join(rows) + "</table>"
        if rows
        else f"<p>No queues at {escape(where)} yet.</p>"
    )
    return _page("queues", table, csrf=csrf, where=where, kind="index")


def queue_page(
    view: dict[str, Any],
    letters: list[DeadLetter[Any]],
    *,
    page: int,
    pages: int,
    per_page: int,
    csrf: str,
    where: str,
) -> str:
    name = view["name"]
    q = escape(name)
    numbers = "".join(
        f'<div>{label}<b data-n="{key}">{value}</b></div>'
        for label, key, value in (
            ("ready", "ready", view["ready"]),
            ("delayed", "delayed", view["delayed"]),
            ("in flight", "in_flight", view["in_flight"]),
            ("dead letters", "dead", view["dead"]),
            ("oldest ready", "oldest_age", _age(view["oldest_age"])),
            ("got/s", "rate", view["rate"]),
        )
    )
    charts = f"<div>ready, last 5 min{_spark('depth')}</div><div>got/s{_spark('rate')}</div>"
    dead = view["dead"]
    rows = "".join(_letter(d) for d in letters)
    if letters:
        letters_html = (
            '<div class="actions">'
            '<button data-act="requeue" data-scope="picked">Requeue selected</button>'
            '<button data-act="purge" data-scope="picked" class="danger">Purge selected</button>'
            f'<button data-act="requeue" data-scope="all" data-count="{dead}">'
            f"Requeue all {dead}</button>"
            f'<button data-act="purge" data-scope="all" data-count="{dead}" class="danger">'
            f"Purge all {dead}</button></div>"
            '<table class="letters"><tr><th class="text">'
            '<input type="checkbox" id="pick-all" title="select all on this page"></th>'
            '<th class="text">item</th><th>deliveries</th><th class="text">died</th>'
            '<th class="text">why</th></tr>' + rows + "</table>" + _pages(page, pages)
        )
    elif page > 1 and pages:
        letters_html = (
            f'<p class="banner note">Page {page} is past the end: there '
            f"{'is' if pages == 1 else 'are'} {pages} page{'' if pages == 1 else 's'} "
            f'of dead letters. <a href="?page={pages}">Go to the last one</a>.</p>'
        )
    else:
        letters_html = "<p>No dead letters.</p>"
    body = (
        f'<h2 data-queue="{q}">{q}</h2><div class="numbers" data-queue="{q}">{numbers}'
        f"{charts}</div><h3>Dead letters, newest first</h3>{letters_html}"
    )
    extra = f' data-name="{q}" data-page-number="{page}" data-per-page="{per_page}"'
    return _page(name, body, csrf=csrf, where=where, kind="queue", extra=extra)


def _letter(d: DeadLetter[Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.died_at))
    item = _show_item(d.item)
    why = escape(d.reason)
    if d.error_type is not None:
        why += f"<br><b>{escape(d.error_type)}</b>: {escape(d.error or '')}"
    if d.traceback:
        why += f"<details><summary>traceback</summary><pre>{escape(d.traceback)}</pre></details>"
    return (
        f'<tr data-letter="{escape(d.id or "")}"><td class="text">'
        f'<input type="checkbox" class="pick" value="{escape(d.id or "")}"></td>'
        f'<td class="text item">{escape(item)}</td><td>{d.deliveries}</td>'
        f'<td class="text">{when}</td><td class="text">{why}</td></tr>'
    )


def _show_item(item: Any) -> str:
    if isinstance(item, bytes):
        text = f"(undecodable) {item[:200]!r}"
    else:
        try:
            text = json.dumps(item, default=repr)
        except (TypeError, ValueError):
            text = repr(item)
    return text if len(text) <= 500 else text[:500] + "…"


def _pages(page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    links = []
    if page > 1:
        links.append(f'<a href="?page={page - 1}" rel="prev">← newer</a>')
    links.append(f"<span>page {page} of {pages}</span>")
    if page < pages:
        links.append(f'<a href="?page={page + 1}" rel="next">older →</a>')
    return '<nav class="pages">' + "".join(links) + "</nav>"


def message_page(title: str, text: str, *, where: str = "") -> str:
    body = f'<h2>{escape(title)}</h2><p class="banner note">{escape(text)}</p>'
    return _page(title, body, csrf="", where=where, kind="message")


def _path(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")

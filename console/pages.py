"""The console's HTML: small server-rendered pages, every value escaped."""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any
from urllib.parse import quote

from facegate.privacy.audit import AuditEntry

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff}header .who{margin-left:auto}
main{padding:12px 16px}table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ccd;padding:4px 8px;text-align:left}
.status{display:flex;gap:8px;flex-wrap:wrap;margin-bottom:8px}
.gate{padding:2px 8px;border-radius:10px;background:#dfe9df}.gate.quiet{background:#f3d9a4}
.gate.down{background:#e99;font-weight:bold}
.card{display:flex;gap:12px;align-items:center;background:#fff;border:1px solid #ccd;
 border-left:8px solid #6a6;margin-bottom:6px;padding:6px}
.card.reject{border-left-color:#c22;background:#fdeaea}.card.review{border-left-color:#e90;
 background:#fff6e0}.card img{width:96px;height:96px;object-fit:cover;background:#ddd}
.decision{font-weight:bold;text-transform:uppercase}.reject .decision{color:#c22}
.review .decision{color:#b60}.facts{min-width:260px}.actions button{margin:2px}
.card.unprocessed{border-left-color:#777;background:#eee}.unprocessed .decision{color:#555}
.done{color:#357;font-style:italic}.error{color:#c22}
"""


def layout(
    title: str, body: str, user: str | None = None, csrf: str = "", is_admin: bool = False
) -> str:
    """A whole page."""
    nav = ""
    if user is not None:
        nav = (
            '<a href="/">Gates</a>'
            + ('<a href="/admin/audit">Audit log</a>' if is_admin else "")
            + f'<span class="who">{escape(user)}</span>'
            '<form method="post" action="/logout" style="margin:0">'
            f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
            '<button type="submit">Log out</button></form>'
        )
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f'<meta name="csrf-token" content="{escape(csrf)}">'
        f"<title>{escape(title)} - FaceGate</title><style>{STYLE}</style></head>"
        f"<body><header><strong>FaceGate proctor console</strong>{nav}</header>"
        f"<main>{body}</main></body></html>"
    )


def login_page(csrf: str, error: str = "") -> str:
    """The login form."""
    message = f'<p class="error" id="login-error">{escape(error)}</p>' if error else ""
    return layout(
        "Log in",
        f"<h2>Log in</h2>{message}"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
        '<p><label>User <input name="username" autocomplete="username"></label></p>'
        '<p><label>Password <input name="password" type="password" '
        'autocomplete="current-password"></label></p>'
        '<p><button type="submit">Log in</button></p></form>',
        csrf=csrf,
    )


def gate_status(
    ages: dict[str, float],
    quiet_after_s: float,
    feed_alive: bool,
    services: dict[str, int] | None = None,
) -> str:
    """The gate badges: quiet gates, a stopped verdict feed and a service with no live instance
    (from the services' heartbeats) stand out."""
    parts = []
    if not feed_alive:
        parts.append('<span class="gate down">verdict feed DOWN</span>')
    for service, count in (services or {}).items():
        if count == 0:
            parts.append(f'<span class="gate down">{escape(service)}: DOWN</span>')
        else:
            parts.append(f'<span class="gate">{escape(service)}: {count} up</span>')
    for gate, age in ages.items():
        quiet = age >= quiet_after_s
        label = f"{escape(gate)}: quiet {age:.0f} s" if quiet else f"{escape(gate)}: live"
        parts.append(f'<span class="gate{" quiet" if quiet else ""}">{label}</span>')
    return "".join(parts) or "<span>no verdicts yet</span>"


def picker_page(
    pairs: list[tuple[str, str]], status: str, user: str, csrf: str, is_admin: bool
) -> str:
    """Choose an exam and a gate."""
    rows = "".join(
        f"<tr><td>{escape(exam)}</td><td>{escape(gate)}</td>"
        f'<td><a href="/live?exam={quote(exam)}&amp;gate={quote(gate)}">watch</a></td>'
        f'<td><a href="/exams/{quote(exam)}/attendance">attendance</a></td></tr>'
        for exam, gate in pairs
    )
    return layout(
        "Gates",
        f'<div class="status" id="status">{status}</div><h2>Exams and gates</h2>'
        f"<table><tr><th>exam</th><th>gate</th><th></th><th></th></tr>{rows}</table>"
        '<h3>Another exam and gate</h3><form method="get" action="/live">'
        '<input name="exam" placeholder="exam id"> <input name="gate" placeholder="gate id"> '
        f'<button type="submit">Watch</button></form>',
        user,
        csrf,
        is_admin,
    )


def live_page(exam: str, gate: str, user: str, csrf: str) -> str:
    """The live check-ins of one exam and gate; console.js fills it from the event stream."""
    return layout(
        f"{exam} / {gate}",
        f'<div class="status" id="status"></div>'
        f"<h2>Exam {escape(exam)}, gate {escape(gate)}</h2>"
        f'<p><a href="/exams/{quote(exam)}/attendance">Attendance</a></p>'
        f'<div id="checkins" data-exam="{escape(exam)}" data-gate="{escape(gate)}"></div>'
        '<script src="/static/console.js"></script>',
        user,
        csrf,
    )


def _when(value: Any) -> str:
    if not value:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(float(value)))


def attendance_page(exam: str, rows: list[dict[str, Any]], user: str, csrf: str) -> str:
    """An exam's attendance table."""
    body = "".join(
        f"<tr><td>{escape(str(r['student_id']))}</td><td>{escape(str(r['decision']))}</td>"
        f"<td>{escape(str(r['reason']))}</td><td>{escape(str(r.get('gate_id', '')))}</td>"
        f"<td>{_when(r.get('first_accepted_at'))}</td><td>{_when(r.get('last_seen_at'))}</td>"
        f"<td>{escape(str(r.get('attempts', 1)))}</td></tr>"
        for r in rows
    )
    return layout(
        f"Attendance {exam}",
        f"<h2>Attendance of exam {escape(exam)}</h2>"
        f'<p><a href="/exams/{quote(exam)}/attendance.csv">Export CSV</a></p>'
        "<table id=attendance><tr><th>student</th><th>latest verdict</th><th>reason</th>"
        "<th>gate</th><th>accepted at</th><th>last seen</th><th>attempts</th></tr>"
        f"{body}</table>",
        user,
        csrf,
    )


def _audit_details(entry: AuditEntry) -> str:
    """A proctor decision's exam, gate, verdict, model and frame; other entries' details."""
    d = entry.details
    if entry.action.startswith("feedback:"):
        return (
            f"exam {d.get('exam_id', '')}, gate {d.get('gate_id', '')}, verdict "
            f"{d.get('verdict_decision', '')}, model {d.get('model_version', '')}, frame "
            f"{d.get('frame_id', '')}"
        )
    return json.dumps(d, sort_keys=True)


def audit_page(entries: list[AuditEntry], user: str, csrf: str) -> str:
    """The audit log, newest first (admins only): proctors' decisions, enrolments, removals,
    forgets and retention runs."""
    body = "".join(
        f"<tr><td>{_when(e.at)}</td><td>{escape(e.actor)}</td>"
        f"<td>{escape(e.action)}</td><td>{escape(e.subject)}</td>"
        f"<td>{escape(_audit_details(e))}</td></tr>"
        for e in entries
    )
    return layout(
        "Audit log",
        "<h2>Audit log</h2><table><tr><th>when</th><th>who</th><th>action</th>"
        "<th>student</th><th>details</th></tr>"
        f"{body}</table>",
        user,
        csrf,
        is_admin=True,
    )


CONSOLE_JS = r"""
(function () {
  const list = document.getElementById('checkins');
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const labels = {confirm: 'Confirm', accept_manual: 'Accept after ID check',
                  impostor: 'Impostor', retry: 'Ask for retry'};
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function img(src, alt) {
    const i = el('img', 'face'); i.alt = alt; if (src) i.src = src; return i;
  }
  function card(c) {
    const div = el('div', 'card ' + c.decision);
    div.id = 'checkin-' + c.frame_id;
    div.dataset.decision = c.decision;
    const student = c.student_id ? encodeURIComponent(c.student_id) : null;
    div.append(img(student ? '/photo/' + student : '', 'enrolled photo'));
    div.append(img(c.has_thumbnail ? '/thumbnail/' + encodeURIComponent(c.frame_id) : '',
                   'captured face'));
    const facts = el('div', 'facts');
    facts.append(el('div', 'decision', c.decision + ' \u2013 ' + c.reason));
    facts.append(el('div', 'student', (c.name || c.student_id || 'no card') +
                    (c.student_id ? ' (' + c.student_id + ')' : '')));
    const time = new Date(c.captured_at * 1000).toLocaleTimeString();
    if (c.decision === 'unprocessed') {
      // The frame went to the dead-letter topic: no verdict will come, and nothing to decide.
      facts.append(el('div', 'hint', 'not processed: take a new picture'));
      facts.append(el('div', '', time));
      div.append(facts);
      return div;
    }
    const score = c.score === null ? 'no score' : 'score ' + c.score.toFixed(3) +
      (c.threshold === null ? '' : ' / threshold ' + c.threshold.toFixed(3));
    facts.append(el('div', 'score', score));
    if (c.top_match) facts.append(el('div', '', 'best match ' + c.top_match));
    facts.append(el('div', '', time + ' \u00b7 model v' + c.model_version));
    div.append(facts);
    const actions = el('div', 'actions');
    for (const action of Object.keys(labels)) {
      const b = el('button', 'action-' + action, labels[action]);
      b.onclick = () => decide(c.frame_id, action, actions);
      actions.append(b);
    }
    div.append(actions);
    return div;
  }
  async function decide(frameId, action, box) {
    const body = new URLSearchParams({action: action});
    const r = await fetch('/checkins/' + encodeURIComponent(frameId) + '/feedback',
      {method: 'POST', body: body, headers: {'X-CSRF-Token': csrf},
       credentials: 'same-origin'});
    const note = el('div', r.ok ? 'done' : 'error',
                    r.ok ? 'decided: ' + labels[action] : 'failed: ' + r.status);
    box.append(note);
  }
  const source = new EventSource('/events?exam=' + encodeURIComponent(list.dataset.exam) +
                                 '&gate=' + encodeURIComponent(list.dataset.gate));
  source.addEventListener('checkin', (e) => {
    const c = JSON.parse(e.data);
    const shown = document.getElementById('checkin-' + c.frame_id);
    // A verdict for a frame shown as unprocessed (replayed from the dead letters) replaces it.
    if (!shown) list.prepend(card(c));
    else if (shown.dataset.decision === 'unprocessed') shown.replaceWith(card(c));
  });
  source.addEventListener('status', (e) => {
    document.getElementById('status').innerHTML = JSON.parse(e.data).html;
  });
})();
"""

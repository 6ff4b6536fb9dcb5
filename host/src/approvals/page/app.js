// The approvals page of `warden serve`: pending asks with their answers,
// and a run's audit log. Every string from the server is guest-, model- or
// tool-written: it is inserted only as text (`textContent`), never as
// markup. The token lives in sessionStorage and travels only as an
// Authorization header: no cookie, so no other site can answer for you.
"use strict";

const TOKEN_KEY = "warden-token";
const REFRESH_MS = 1000;
// The cards on the page, by ask id: { key, card }. A card stays the same
// element for as long as its ask waits, so a refresh never replaces a
// button under the person's pointer (or a driver's click).
let shownCards = new Map();

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// An element with text only: `children` are elements or strings (as text).
function el(tag, className, children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children || []) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function text(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

// A request with the token as a bearer header; the JSON answer (or the
// text, with `asText`). Errors carry the server's message.
async function api(path, options, asText) {
  const headers = { "Accept": asText ? "application/x-ndjson" : "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (options && options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({ headers, credentials: "omit", cache: "no-store" }, options || {}));
  const raw = await response.text();
  let body = null;
  try {
    body = asText && response.ok ? raw : JSON.parse(raw);
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error;
    const message = typeof error === "string" ? error
      : error && typeof error.message === "string" ? error.message
      : response.status + " " + response.statusText;
    throw new Error(message);
  }
  return body;
}

function setStatus(id, message, kind) {
  const node = document.getElementById(id);
  node.textContent = message;
  node.className = kind || "";
}

function renderAsk(ask) {
  const card = el("article", "ask");
  card.dataset.id = text(ask.id);
  card.append(el("h3", "tool", [text(ask.subject)]));
  const facts = el("dl");
  const fact = (name, value, className) => {
    facts.append(el("dt", null, [name]));
    const dd = el("dd", className);
    if (typeof value === "string") dd.textContent = value; else dd.append(value);
    facts.append(dd);
  };
  fact("run", text(ask.run), "run");
  fact("kind", text(ask.kind), "kind");
  fact("rule", (ask.rules || []).map(text).join(", "), "rules");
  fact("why", text(ask.reason), "reason");
  const data = ask.data || {};
  const args = data.arguments !== undefined ? data.arguments : data;
  fact("arguments", el("pre", "arguments", [JSON.stringify(args, null, 2)]));
  const explained = ask.explained || {};
  for (const seen of explained.values || []) {
    const value = el("span", "explained", [
      el("span", "field", [text(seen.field)]), " = ",
      el("span", "value", [text(seen.value)]),
      el("span", "seen", ["seen: " + text(seen.seen)]),
    ]);
    fact("value", value);
  }
  if (explained.unlisted) fact("more", explained.unlisted + " more values, not shown");
  for (const label of explained.labels || []) {
    fact("label", text(label.label) + " (brought by " + (label.brought_by || []).map(text).join(", ") + ")", "label");
  }
  if ((ask.labels || []).length) fact("session labels", ask.labels.map(text).join(", "), "labels");
  if (ask.not_vouched) fact("note", text(ask.not_vouched), "note");
  if (ask.expires_at_ms) {
    fact("refused at", new Date(ask.expires_at_ms).toLocaleTimeString() + " if nobody answers", "expires");
  }
  card.append(facts);
  const answers = el("div", "answers");
  const button = (label, answer, className) => {
    const b = el("button", className, [label]);
    b.type = "button";
    b.addEventListener("click", () => answerAsk(ask.id, answer, card));
    answers.append(b);
  };
  button("Approve once", "once", "approve-once");
  button("Approve for the run", "run", "approve-run");
  button("Deny", "deny", "deny");
  card.append(answers);
  return card;
}

async function answerAsk(id, answer, card) {
  for (const b of card.querySelectorAll("button")) b.disabled = true;
  try {
    await api("/approvals/" + encodeURIComponent(id), { method: "POST", body: JSON.stringify({ answer }) });
    setStatus("status", "answered: " + answer, "ok");
  } catch (e) {
    setStatus("status", "not answered: " + e.message, "error");
    for (const b of card.querySelectorAll("button")) b.disabled = false;
  }
  await refresh();
}

async function refresh() {
  let body;
  try {
    body = await api("/approvals");
  } catch (e) {
    setStatus("status", "cannot list asks: " + e.message, "error");
    return;
  }
  const pending = Array.isArray(body && body.pending) ? body.pending : [];
  showPending(pending);
}

// Bring the list to `pending`: remove the cards of asks that left, add
// cards for new ones, and leave every other card (and its buttons) alone.
function showPending(pending) {
  const list = document.getElementById("pending");
  const next = new Map();
  const cards = pending.map((ask) => {
    const key = JSON.stringify(ask);
    const shown = shownCards.get(text(ask.id));
    const card = shown && shown.key === key ? shown.card : renderAsk(ask);
    next.set(text(ask.id), { key, card });
    return card;
  });
  const keep = new Set(cards);
  for (const node of [...list.children]) {
    if (!keep.has(node)) node.remove();
  }
  cards.forEach((card, i) => {
    if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
  });
  shownCards = next;
  document.getElementById("pending-count").textContent = "(" + pending.length + ")";
  if (!pending.length) list.append(el("p", "muted none", ["Nothing waits for an answer."]));
}

// The audit view: serve's GET /runs/{id}/audit, as a timeline.
let auditRecords = [];

// The audit log as JSON Lines: one record a line (a torn last line is
// skipped; the verify report says so).
function recordsOf(jsonl) {
  const records = [];
  for (const line of String(jsonl || "").split("\n")) {
    if (!line.trim()) continue;
    try {
      const record = JSON.parse(line);
      if (record && typeof record === "object") records.push(record);
    } catch (_) {
      // not a record
    }
  }
  return records;
}

function fillSelect(id, values) {
  const select = document.getElementById(id);
  const chosen = select.value;
  const options = [el("option", null, ["all"])];
  options[0].value = "";
  for (const value of values) {
    const option = el("option", null, [value]);
    option.value = value;
    options.push(option);
  }
  select.replaceChildren(...options);
  select.value = values.includes(chosen) ? chosen : "";
}

function renderAudit() {
  const kind = document.getElementById("audit-kind").value;
  const decision = document.getElementById("audit-decision").value;
  const rows = auditRecords
    .filter((r) => (!kind || text(r.kind) === kind) && (!decision || text(r.decision) === decision))
    .map((r) => {
      const row = el("tr", text(r.decision), [
        el("td", null, [text(r.seq)]),
        el("td", null, [text(r.time || r.ts)]),
        el("td", null, [text(r.kind)]),
        el("td", null, [text(r.event)]),
        el("td", null, [text(r.subject)]),
        el("td", null, [text(r.decision)]),
        el("td", null, [text(r.rule)]),
        el("td", "detail", [text(r.detail) + (r.outcome ? " -> " + text(r.outcome) : "")]),
      ]);
      return row;
    });
  document.getElementById("audit-rows").replaceChildren(...rows);
}

async function showAudit(event) {
  if (event) event.preventDefault();
  const run = document.getElementById("audit-run").value.trim();
  if (!run) return;
  const base = "/runs/" + encodeURIComponent(run) + "/audit";
  let body;
  try {
    body = await api(base, null, true);
  } catch (e) {
    auditRecords = [];
    renderAudit();
    setStatus("audit-verify", "cannot read the audit log: " + e.message, "error");
    return;
  }
  auditRecords = recordsOf(body);
  const unique = (field) => [...new Set(auditRecords.map((r) => text(r[field])))].sort();
  fillSelect("audit-kind", unique("kind"));
  fillSelect("audit-decision", unique("decision"));
  renderAudit();
  let verify;
  try {
    verify = await api(base + "/verify");
  } catch (e) {
    setStatus("audit-verify", auditRecords.length + " records; cannot verify: " + e.message, "error");
    return;
  }
  if (verify && verify.intact === true) {
    const state = verify.complete ? "the run ended" : "the run has not ended";
    const head = verify.head_matches === false ? "; its head does NOT match the one the server recorded" : "";
    setStatus("audit-verify", text(verify.records) + " records; hash chain intact (head " + text(verify.head) + "); " + state + head, verify.head_matches === false ? "error" : "ok");
  } else {
    const problems = ((verify && verify.problems) || []).map((p) => "line " + text(p.line) + ": " + text(p.message)).join("; ");
    setStatus("audit-verify", "hash chain NOT intact: " + problems, "error");
  }
}

function showTokenState() {
  document.getElementById("token-state").textContent = token() ? "token set for this tab" : "no token";
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    shownCards = new Map();
    showTokenState();
    refresh();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    shownCards = new Map();
    showTokenState();
    refresh();
  });
  document.getElementById("audit-form").addEventListener("submit", showAudit);
  document.getElementById("audit-kind").addEventListener("change", renderAudit);
  document.getElementById("audit-decision").addEventListener("change", renderAudit);
  const run = new URLSearchParams(location.search).get("run");
  if (run) {
    document.getElementById("audit-run").value = run;
    showAudit();
  }
  showTokenState();
  refresh();
  setInterval(refresh, REFRESH_MS);
});

// engagewatch triage page: plain JS, no build step.
// Every piece of data reaches the DOM through textContent or attributes, never innerHTML.
"use strict";

const API = "/api/v1";
const REFRESH_MS = 15000;
const TOKEN_KEY = "engagewatch.token";
const AUTHOR_KEY = "engagewatch.author";
const ALERTS_PAGE = 100;
const ALERTS_MOST = 500; // the API's largest page

let alertPages = 1; // hundreds of open alerts shown; "Show more" adds one
let alertQuery = ""; // the filters they were listed for: others start again at one

const $ = (selector) => document.querySelector(selector);

// --- DOM helpers ---------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function money(value) {
  if (value === null || value === undefined) return "—";
  return new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 }).format(value);
}

function when(text) {
  if (!text) return "—";
  const moment = new Date(text);
  return isNaN(moment) ? String(text) : moment.toISOString().replace("T", " ").slice(0, 16) + "Z";
}

function show(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(2);
  return String(value);
}

function setStatus(text) {
  $("#status").textContent = text;
}

// --- the API -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.error)) || "HTTP " + status);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// Reads and writes ask for the token when the server wants it (401), once per try.
async function authorized(call) {
  try {
    return await call();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    sessionStorage.removeItem(TOKEN_KEY);
    if (!(await askToken())) throw error;
    return await call();
  }
}

// --- dialogs -------------------------------------------------------------------------

function ask(dialogId, target) {
  const dialog = document.getElementById(dialogId);
  const form = dialog.querySelector("form");
  const label = dialog.querySelector(".target");
  if (label) label.textContent = target || "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" ? Object.fromEntries(new FormData(form)) : null),
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
  });
}

async function askToken() {
  const form = $("#token-dialog form");
  form.elements.author.value = sessionStorage.getItem(AUTHOR_KEY) || "";
  const answer = await ask("token-dialog");
  if (!answer || !answer.token) return false;
  sessionStorage.setItem(TOKEN_KEY, answer.token.trim());
  sessionStorage.setItem(AUTHOR_KEY, (answer.author || "").trim() || "triage page");
  updateSignin();
  return true;
}

async function author() {
  if (!sessionStorage.getItem(TOKEN_KEY) && !(await askToken())) return null;
  return currentAuthor();
}

function updateSignin() {
  const who = sessionStorage.getItem(AUTHOR_KEY);
  $("#signin").textContent = sessionStorage.getItem(TOKEN_KEY) ? "Token set (" + (who || "?") + ")" : "Set token";
}

// --- actions on alerts ---------------------------------------------------------------

function currentAuthor() {
  return sessionStorage.getItem(AUTHOR_KEY) || "triage page";
}

async function post(alert, verb, fields) {
  if ((await author()) === null) return;
  const path = "/alerts/" + encodeURIComponent(alert.fingerprint) + "/" + verb;
  try {
    // The author is read at send time: a 401 may have asked for a new token and name.
    await authorized(() => api(path, { method: "POST", body: { ...fields, author: currentAuthor() } }));
    setStatus(verb === "resolve" ? "Resolve requested: applied at the next sweep" : "Done: " + verb);
  } catch (error) {
    setStatus(verb + " failed: " + error.message);
  }
  await refresh();
}

async function act(alert, verb) {
  const dialogs = { ack: "ack-dialog", snooze: "snooze-dialog", resolve: "resolve-dialog" };
  const answer = await ask(dialogs[verb], alert.account_name + " / " + alert.rule);
  if (answer) await post(alert, verb, answer);
}

function alertState(alert) {
  const parts = [];
  if (alert.snoozed) parts.push(el("div", { class: "snoozed-note" }, "snoozed until " + when(alert.snoozed.until) + " by " + alert.snoozed.author + ": " + alert.snoozed.reason));
  if (alert.ack) parts.push(el("div", { class: "ack-note" }, "acked by " + alert.ack.author + (alert.ack.comment ? ": " + alert.ack.comment : "")));
  if (alert.resolve_requested) parts.push(el("div", {}, "resolve requested by " + alert.resolve_requested.author));
  return parts.length ? parts : "open";
}

function alertRow(alert, withAccount) {
  const buttons = [
    el("button", { type: "button", class: "ack", onclick: () => act(alert, "ack") }, "Acknowledge"),
    alert.snoozed
      ? el("button", { type: "button", class: "unsnooze", onclick: () => post(alert, "unsnooze", {}) }, "Unsnooze")
      : el("button", { type: "button", class: "snooze", onclick: () => act(alert, "snooze") }, "Snooze"),
    el("button", { type: "button", class: "resolve", onclick: () => act(alert, "resolve") }, "Resolve"),
  ];
  return el(
    "tr",
    { dataset: { fingerprint: alert.fingerprint }, class: alert.snoozed ? "snoozed" : null },
    el("td", {}, el("span", { class: "badge sev-" + alert.severity }, alert.severity)),
    withAccount ? el("td", {}, accountLink(alert.account_id, alert.account_name)) : null,
    el("td", {}, alert.rule + (alert.stakeholder ? " (" + alert.stakeholder + ")" : "")),
    el("td", {}, alert.summary || ""),
    el("td", {}, when(alert.starts_at)),
    el("td", {}, alertState(alert)),
    el("td", { class: "actions" }, buttons),
  );
}

// --- overview ------------------------------------------------------------------------

function filters() {
  const form = $("#filters");
  const params = new URLSearchParams();
  for (const name of ["owner", "segment", "tier"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  if (form.elements.include_snoozed.checked) params.set("include_snoozed", "true");
  return params;
}

function accountPath(accountId) {
  return "/triage/account/" + encodeURIComponent(accountId);
}

function accountLink(accountId, name) {
  return el("a", {
    href: accountPath(accountId),
    onclick: (event) => { event.preventDefault(); event.stopPropagation(); openAccount(accountId); },
  }, name || accountId);
}

function tierCell(tier) {
  return el("td", {}, el("span", { class: "tier tier-" + (tier || "none") }), tier || "—");
}

function silentRow(entry, index) {
  const open = () => openAccount(entry.account_id);
  const quiet = entry.days_silent === null || entry.days_silent === undefined
    ? "—"
    : entry.days_silent + " (" + show(entry.usual_gap_days) + ")";
  const alerts = entry.open_alerts.map((a) => el("div", {}, el("span", { class: "badge sev-" + a.severity }, a.rule)));
  return el(
    "tr",
    { tabindex: 0, dataset: { account: entry.account_id }, class: entry.snoozed ? "snoozed" : null,
      onclick: open, onkeydown: (event) => { if (event.key === "Enter") open(); } },
    el("td", { class: "num" }, String(index + 1)),
    el("td", {}, accountLink(entry.account_id, entry.name), entry.snoozed ? " (snoozed)" : ""),
    el("td", { class: "num" }, money(entry.arr)),
    el("td", {}, entry.renewal_date ? entry.renewal_date + " (" + entry.days_to_renewal + " d)" : "—"),
    el("td", {}, entry.owner || "—"),
    el("td", { class: "num" }, quiet),
    tierCell(entry.tier),
    el("td", {}, alerts.length ? alerts : "—"),
    el("td", { class: "num" }, show(entry.priority)),
  );
}

function heatColour(share) {
  // From a pale grey-blue (nobody) to a deep blue (the day's maximum).
  const s = Math.max(0, Math.min(1, share));
  const light = 94 - s * 62;
  return "hsl(212, " + (30 + s * 50) + "%, " + light + "%)";
}

function renderHeatmap(entries) {
  const mode = $("#filters").elements.heat.value;
  const rows = [];
  for (const entry of entries) {
    const days = entry.daily_active_users || [];
    const most = Math.max(1, ...days.map((d) => d.users));
    const scale = mode === "licenses" && entry.licenses ? entry.licenses : most;
    const cells = days.map((day) => {
      const cell = el("div", { class: "hm-cell", title: day.date + ": " + day.users + " active users" });
      cell.style.backgroundColor = day.users ? heatColour(day.users / scale) : "";
      return cell;
    });
    rows.push(
      el("div", { class: "hm-label", dataset: { account: entry.account_id }, onclick: () => openAccount(entry.account_id) }, entry.name),
      el("div", { class: "hm-cells", dataset: { account: entry.account_id } }, cells),
    );
  }
  if (entries.length && entries[0].daily_active_users && entries[0].daily_active_users.length) {
    const days = entries[0].daily_active_users;
    rows.push(el("div", {}), el("div", { class: "hm-axis" }, el("span", {}, days[0].date), el("span", {}, days[days.length - 1].date)));
  }
  $("#heatmap").replaceChildren(...rows);
}

async function loadOverview() {
  const params = filters();
  const silent = await authorized(() => api("/accounts/silent?" + params.toString()));
  const alertParams = new URLSearchParams();
  if (params.get("owner")) alertParams.set("owner", params.get("owner"));
  if (params.get("include_snoozed")) alertParams.set("include_snoozed", "true");
  if (alertParams.toString() !== alertQuery) alertPages = 1;
  alertQuery = alertParams.toString();
  // One request, so that the list is one reading of it (pages read one by one could
  // show an alert twice and miss another when the sweep moved the list in between).
  alertParams.set("limit", String(Math.min(ALERTS_MOST, ALERTS_PAGE * alertPages)));
  const alerts = await authorized(() => api("/alerts?" + alertParams.toString()));
  fill($("#silent tbody"), silent.accounts.map(silentRow));
  $("#silent-empty").hidden = silent.accounts.length > 0;
  renderHeatmap(silent.accounts);
  fill($("#alerts tbody"), alerts.alerts.map((a) => alertRow(a, true)));
  $("#alerts-empty").hidden = alerts.alerts.length > 0;
  const more = alerts.next_offset !== null;
  const most = alerts.alerts.length >= ALERTS_MOST;
  $("#alerts-more").hidden = !more;
  $("#alerts-more-button").hidden = most;
  $("#alerts-count").textContent = more
    ? "Showing " + alerts.alerts.length + " of " + alerts.total + " open alerts." + (most ? " Narrow them with the owner filter, or page through them with the API or the CLI." : "")
    : "";
  setStatus("as of " + when(silent.as_of));
}

// --- drill-down ----------------------------------------------------------------------

function facts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, show(value))]));
}

function renderSeries(daily, entryDaily) {
  const days = daily && daily.length
    ? daily.map((d) => ({ date: d.date, users: d.active_users }))
    : (entryDaily || []);
  const most = Math.max(1, ...days.map((d) => d.users));
  const bars = days.map((day) => {
    const bar = el("div", { class: "bar", title: day.date + ": " + day.users + " active users" });
    bar.style.height = (100 * day.users / most) + "%";
    return bar;
  });
  $("#dd-series").replaceChildren(...bars);
}

function historyRow(item) {
  const detail = item.reason || item.comment || item.summary || (item.until ? "until " + when(item.until) : "");
  return el(
    "tr",
    {},
    el("td", {}, when(item.at || item.created_at)),
    el("td", {}, item.kind),
    el("td", {}, item.rule || "—"),
    el("td", {}, item.author || "—"),
    el("td", {}, detail),
  );
}

async function loadAccount(accountId) {
  const body = await authorized(() => api("/accounts/" + encodeURIComponent(accountId)));
  const entry = body.account || {};
  const account = (body.snapshot && body.snapshot.account) || {};
  $("#dd-title").textContent = entry.name || account.name || accountId;
  facts($("#dd-facts"), [
    ["Account id", accountId],
    ["ARR", money(entry.arr ?? account.arr)],
    ["Renewal", entry.renewal_date || account.renewal_date],
    ["Owner", entry.owner || account.owner_email],
    ["Segment", entry.segment || account.segment],
    ["Status", entry.status || account.status],
    ["Health tier", entry.tier],
    ["Days silent (usual)", entry.days_silent === undefined || entry.days_silent === null ? null : entry.days_silent + " (" + show(entry.usual_gap_days) + ")"],
    ["Last active day", entry.last_active_day],
    ["Priority", entry.priority],
  ]);
  const metrics = (body.snapshot && body.snapshot.metrics) || {};
  facts($("#dd-metrics"), [
    ["Licenses", metrics.licenses ?? entry.licenses],
    ["Daily usage rate", metrics.daily_usage_rate],
    ["Active days (28)", metrics.active_days_28d],
    ["Avg time per login (s)", metrics.average_time_per_login_s_28d],
    ["NPS (28 days)", metrics.nps_28d],
    ["Active users trend", metrics.active_users_trend ? metrics.active_users_trend.change : null],
  ]);
  const stakeholders = body.snapshot
    ? body.snapshot.stakeholders
    : Object.entries(entry.stakeholders_last_seen || {}).map(([user, seen]) => ({ user_id: user, role: "", last_seen: seen }));
  fill($("#dd-stakeholders tbody"), stakeholders.map((s) => el("tr", {},
    el("td", {}, s.user_id), el("td", {}, s.role || "—"), el("td", {}, when(s.last_seen)),
    el("td", { class: "num" }, show(s.active_days_28d)))));
  renderSeries(body.snapshot && body.snapshot.daily, entry.daily_active_users);
  $("#dd-snapshot-note").textContent = body.snapshot_error || "";
  fill($("#dd-alerts tbody"), body.alerts.map((a) => alertRow(a, false)));
  fill($("#dd-history tbody"), body.history.map(historyRow));
}

// --- routing -------------------------------------------------------------------------

function currentAccount() {
  const match = location.pathname.match(/^\/triage\/account\/(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function openAccount(accountId) {
  history.pushState({}, "", accountPath(accountId));
  render();
}

async function refresh() {
  try {
    const accountId = currentAccount();
    if (accountId) await loadAccount(accountId);
    else await loadOverview();
  } catch (error) {
    setStatus("could not load: " + error.message);
  }
}

async function render() {
  const accountId = currentAccount();
  $("#drilldown").hidden = !accountId;
  $("#overview").hidden = Boolean(accountId);
  document.title = accountId ? accountId + " · engagewatch triage" : "engagewatch triage";
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#filters").addEventListener("change", () => refresh());
  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  $("#signin").addEventListener("click", () => askToken());
  $("#alerts-more-button").addEventListener("click", () => { alertPages += 1; refresh(); });
  $("#back").addEventListener("click", (event) => { event.preventDefault(); history.pushState({}, "", "/triage"); render(); });
  window.addEventListener("popstate", () => render());
  updateSignin();
  render();
  setInterval(() => { if (!document.querySelector("dialog[open]")) refresh(); }, REFRESH_MS);
});

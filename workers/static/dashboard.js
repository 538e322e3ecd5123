// dbfleet dashboard: renders /api/dashboard, refreshes it when /monitoring/realtime announces a change,
// acknowledges alerts. No framework, no build step; text is only ever set with textContent, never parsed as HTML.
(function () {
  "use strict";

  var csrf = document.querySelector('meta[name="dbfleet-csrf"]').content;
  var state = { data: null, loadedAt: 0, retry: 0, pending: null, socket: null };
  var RELOAD_EVENTS = { health: true, alert: true };

  function $(id) { return document.getElementById(id); }

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === "text") node.textContent = props[k];
      else if (k === "className") node.className = props[k];
      else if (k.slice(0, 5) === "data-" || k.slice(0, 5) === "aria-") node.setAttribute(k, props[k]);
      else node[k] = props[k];
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
    seconds = Math.max(0, seconds);
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 129600) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " d ago";
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return (Math.round(seconds * 10) / 10) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (Math.round(seconds / 360) / 10) + " h";
  }

  function bytes(n) {
    if (n === null || n === undefined) return "";
    var units = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  // seconds since an ISO time, against the server's clock (generated_at) plus time since the load
  function since(iso) {
    if (!iso || !state.data) return null;
    var server = Date.parse(state.data.generated_at) + (Date.now() - state.loadedAt);
    return (server - Date.parse(iso)) / 1000;
  }

  function drift() { return (Date.now() - state.loadedAt) / 1000; }

  function badge(status) {
    var label = { up: "up", degraded: "degraded", down: "down", firing: "firing", pending: "pending",
                  critical: "critical", warning: "warning", info: "info", running: "running",
                  completed: "completed", passed: "passed", failed: "failed" }[status] || (status || "unknown");
    var icon = { up: "●", degraded: "▲", down: "✖", firing: "✖", critical: "✖", warning: "▲", failed: "✖",
                 completed: "✔", passed: "✔" }[status] || "○";
    return el("span", { className: "badge st-" + (status || "unknown") },
              [el("span", { text: icon, "aria-hidden": "true" }), " " + label]);
  }

  function fill(tableId, rows) {
    var table = $(tableId), empty = $(tableId + "-empty");
    var body = table.tBodies[0];
    body.replaceChildren.apply(body, rows);
    table.hidden = rows.length === 0;
    if (empty) empty.hidden = rows.length !== 0;
  }

  function values(alert) {
    return Object.keys(alert.values || {}).sort().map(function (k) {
      var v = alert.values[k];
      return k + " = " + (typeof v === "number" ? Math.round(v * 100) / 100 : v);
    }).join(", ");
  }

  function alertRow(a) {
    var ack;
    if (a.acknowledged) {
      ack = el("span", { className: "acked", text: "✔ by " + (a.acknowledged_by || "someone") + " " +
                         ago(since(a.acknowledged_at)) });
    } else {
      ack = el("button", { type: "button", className: "ack", text: "Acknowledge", "data-alert-id": a.id,
                           "aria-label": "Acknowledge " + a.rule + " on " + a.database_id });
      ack.addEventListener("click", function () { acknowledge(a.id, ack); });
    }
    return el("tr", { "data-alert-id": a.id, "data-rule": a.rule, "data-database": a.database_id,
                      className: "sev-" + a.severity }, [
      el("td", {}, [badge(a.severity)]), el("th", { scope: "row", text: a.rule, title: a.expr || "" }),
      el("td", { text: a.database_id }), el("td", {}, [badge(a.state)]),
      el("td", { text: ago(since(a.fired_at || a.active_since)) }), el("td", { className: "values", text: values(a) }),
      el("td", {}, [ack])]);
  }

  function backupCell(b) {
    if (!b) return el("td", { className: "muted", text: "none yet" });
    var size = b.total_bytes !== undefined ? bytes(b.total_bytes) + ", " : "";
    return el("td", {}, [ago(b.age_seconds + drift()), el("br"),
                         el("small", { text: size + "took " + duration(b.duration_seconds) })]);
  }

  function drillCell(d) {
    if (!d) return el("td", { className: "muted", text: "none yet" });
    return el("td", {}, [badge(d.ok ? "passed" : "failed"), " " + ago(d.age_seconds + drift()), el("br"),
                         el("small", { text: "RTO " + duration(d.rto_seconds) + ", RPO " + duration(d.rpo_seconds) })]);
  }

  function databaseRow(d) {
    var h = d.health;
    return el("tr", { "data-database": d.id }, [
      el("th", { scope: "row", text: d.id }), el("td", { text: d.kind }),
      el("td", {}, [h ? badge(h.status) : el("span", { className: "muted", text: "not checked yet" })]),
      el("td", { text: h ? ago(since(h.checked_at)) : "–" }),
      el("td", { className: "problems" }, h ? [(h.problems || []).join(", "),
        h.error ? el("small", { className: "error", text: h.error, title: h.error }) : null] : []),
      backupCell(d.last_backup), drillCell(d.last_drill)]);
  }

  function migrationRow(m) {
    var total = m.batches_total || 0, done = m.batches_done || 0;
    var progress = m.status === "running" && total
      ? el("progress", { max: total, value: done, "aria-label": done + " of " + total + " batches" })
      : null;
    return el("tr", { "data-migration-id": m.id }, [
      el("th", { scope: "row", text: String(m.id).slice(0, 8), title: m.id }),
      el("td", { text: m.source + " → " + m.target }), el("td", {}, [badge(m.status)]),
      el("td", {}, [progress, total ? " " + done + "/" + total + " batches" : ""]),
      el("td", { text: m.rows !== undefined && m.rows !== null ? Number(m.rows).toLocaleString("en") : "–" }),
      el("td", { text: m.rows_per_second ? Math.round(m.rows_per_second) + " rows/s" : "–" }),
      el("td", { text: m.eta_seconds ? duration(m.eta_seconds) : "–" })]);
  }

  function render() {
    var d = state.data;
    if (!d) return;
    var focused = document.activeElement && document.activeElement.getAttribute("data-alert-id");
    $("sum-databases").textContent = d.summary.databases;
    $("sum-down").textContent = d.summary.down;
    $("sum-firing").textContent = d.summary.firing;
    $("sum-migrations").textContent = d.migrations.filter(function (m) { return m.status === "running"; }).length;
    document.body.classList.toggle("has-down", d.summary.down > 0);
    fill("alerts", d.alerts.map(alertRow));
    fill("databases", d.databases.map(databaseRow));
    fill("migrations", d.migrations.map(migrationRow));
    $("updated").textContent = "Updated " + ago(drift());
    if (focused) {
      var again = document.querySelector('button[data-alert-id="' + CSS.escape(focused) + '"]');
      (again || $("alerts-h")).focus();
    }
  }

  function say(text) {
    var m = $("message");
    m.textContent = text || "";
    m.hidden = !text;
  }

  function load() {
    return fetch("/api/dashboard", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
        if (!r.ok) throw new Error("the dashboard data answered " + r.status);
        return r.json();
      })
      .then(function (data) { state.data = data; state.loadedAt = Date.now(); render(); })
      .catch(function (e) { say("Cannot load the dashboard data: " + e.message); });
  }

  function soon() {  // several events in a burst: one fetch
    if (state.pending) return;
    state.pending = setTimeout(function () { state.pending = null; load(); }, 250);
  }

  function connection(kind, text) {
    var c = $("connection");
    c.className = "conn conn-" + kind;
    c.textContent = text;
  }

  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/monitoring/realtime";
    var ws = new WebSocket(url);
    state.socket = ws;
    ws.onopen = function () { state.retry = 0; connection("live", "Live"); soon(); };
    ws.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (RELOAD_EVENTS[msg.type]) soon();
    };
    ws.onclose = function () {
      var wait = Math.min(1000 * Math.pow(2, state.retry), 5000);
      state.retry += 1;
      connection("down", "Disconnected: reconnecting in " + Math.round(wait / 1000) + " s");
      setTimeout(connect, wait);
    };
  }

  function post(url, body) {
    return fetch(url, { method: "POST", credentials: "same-origin", body: body ? JSON.stringify(body) : null,
                        headers: { "Content-Type": "application/json", "X-Dbfleet-CSRF": csrf } });
  }

  function acknowledge(id, button) {
    var by = $("ackby").value.trim() || "dashboard";
    button.disabled = true;
    button.textContent = "Acknowledging…";
    post("/api/monitoring/alerts/" + encodeURIComponent(id) + "/acknowledge", { by: by })
      .then(function (r) {
        if (!r.ok) return r.json().then(function (e) { throw new Error(e.error || r.status); });
        say("");
        return load();
      })
      .catch(function (e) {
        button.disabled = false;
        button.textContent = "Acknowledge";
        say("Acknowledge failed: " + e.message);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var who = $("ackby");
    who.value = localStorage.getItem("dbfleet.ackby") || "";
    who.addEventListener("change", function () { localStorage.setItem("dbfleet.ackby", who.value.trim()); });
    $("signout").addEventListener("click", function () {
      post("/logout").then(function () { window.location.reload(); });
    });
    load();
    connect();
    setInterval(render, 10000);  // ages move on between events
    setInterval(function () {   // migration progress is not pushed: poll while one runs, else a slow safety net
      var running = state.data && state.data.migrations.some(function (m) { return m.status === "running"; });
      if (running || drift() > 60) load();
    }, 5000);
  });
})();

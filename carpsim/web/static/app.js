// carpsim status pages: one EventSource, topics kept in `S`, each panel re-rendered from them.
// No framework, no build step, no inline handlers (the CSP forbids them).
"use strict";

const S = {};  // topic -> value, as the server publishes them
const TOKEN = document.querySelector('meta[name="carpsim-token"]').content;
const SVGNS = "http://www.w3.org/2000/svg";

function esc(v) {
  return String(v === null || v === undefined ? "" : v).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function $(id) { return document.getElementById(id); }
function meta() { return S.meta || { mode: "node", nodes: [], topology: null }; }
function nodeTopic(name) { return S["node:" + name] || null; }
function fmtTime(t) {
  if (t === null || t === undefined || t === "") return "-";
  if (typeof t === "number") return new Date(t * 1000).toLocaleString();
  return String(t);
}
function fmtNum(v, digits) {
  if (v === null || v === undefined) return "-";
  return typeof v === "number" ? v.toFixed(digits) : esc(v);
}
function panel(title, sub, body, id) {
  return `<div class="panel"${id ? ` id="${esc(id)}"` : ""}>` +
    `<div class="panel-heading">${esc(title)}${sub ? ` <span class="sub">${esc(sub)}</span>` : ""}</div>` +
    `<div class="panel-body">${body}</div></div>`;
}
function kvTable(rows) {
  return `<table class="kv">${rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`).join("")}</table>`;
}
function nodeHeader(t, name) {
  if (!t) return "no data";
  const power = t.power === "on" ? `powered on${t.pid ? ", pid " + t.pid : ""}` : "powered OFF";
  return `${power}; control socket ${t.control}`;
}
function offline(t, what) {
  const why = !t ? "no data yet" : t.power !== "on" ? "the node is powered off" : "the node's control socket does not answer";
  return `<div class="none">${esc(what)}: ${esc(why)}</div>`;
}

// ---------------------------------------------------------------- Status / CARP

function vhidsOf(t) {
  return t && t.status && Array.isArray(t.status.vhids) ? t.status.vhids : null;
}

function demotion(status) {
  const total = status.demote || 0;
  const parts = [];
  if (status.admin_demote) parts.push(`operator ${status.admin_demote}`);
  const sync = status.statesync;
  if (sync && typeof sync === "object" && sync.demote) {
    parts.push(`state sync ${sync.demote} (${sync.ready ? "ready" : "not ready"}: ${sync.reason || "?"})`);
  }
  if (!total) return `<span class="ok">CARP demotion 0: not demoted</span>`;
  return `<span class="bad">CARP demoted by ${esc(total)}</span>` +
    (parts.length ? ` <span class="muted">(${esc(parts.join(", "))})</span>` : "");
}

function carpRows(name) {
  const t = nodeTopic(name);
  const vh = vhidsOf(t);
  if (vh) return vh;
  // Node silent: the lab still knows what it should carry, so show those rows as off.
  const topo = meta().topology;
  if (!topo) return [];
  const host = topo.hosts.find((h) => h.name === name);
  return topo.vips.map((v) => ({
    vhid: v.vhid, interface: v.segment, vips: [v.cidr],
    advbase: topo.carp.advbase, advskew: host ? host.advskew : null,
    state: t && t.power === "on" ? "UNKNOWN" : "OFF",
  }));
}

function renderCarp() {
  const cols = meta().nodes.map((name) => {
    const t = nodeTopic(name);
    const rows = carpRows(name).map((v) => {
      const st = String(v.state || "UNKNOWN").toUpperCase();
      const seen = v.last_advert_src ? `${esc(v.last_advert_src)}, ${fmtNum(v.last_advert_age_s, 1)} s ago` : "-";
      return `<tr class="carp-row" data-node="${esc(name)}" data-vhid="${esc(v.vhid)}">` +
        `<td>${esc(v.interface)}@${esc(v.vhid)}</td><td>${esc((v.vips || []).join(", "))}</td>` +
        `<td>${esc(v.advbase)}/${esc(v.advskew)}</td>` +
        `<td><span class="badge carp-state st-${esc(st)}">${esc(st)}</span></td>` +
        `<td class="muted">${v.master_down_s !== undefined ? fmtNum(v.master_down_s, 2) + " s" : "-"}</td>` +
        `<td class="muted">${seen}</td></tr>`;
    }).join("");
    const status = t && t.status;
    const head = status ? `<p>${demotion(status)}</p>` : offline(t, "CARP");
    const table = `<table><tr><th>CARP Interface</th><th>Virtual IP</th><th>advbase/skew</th><th>Status</th>` +
      `<th>master-down</th><th>last advert from</th></tr>${rows}</table>`;
    return panel(name, nodeHeader(t, name), head + table, "carp-" + name);
  });
  $("carp-cols").innerHTML = cols.join("");
}

// ---------------------------------------------------------------- Status / DHCP Leases

function dhcpServers(d) {
  if (!d) return [];
  if (Array.isArray(d)) return d;
  if (typeof d === "object") {
    if ("interface" in d || "leases" in d || "pool" in d) return [d];
    return Object.entries(d).map(([k, v]) => Object.assign({ interface: k }, v));
  }
  return [];
}

// The failover facts a student needs beside the two states; the message counters stay in
// the node's JSON status (and its metrics), not on this page.
const FO_EXTRA = [
  ["role", (v) => v], ["link", (v) => v], ["serving", (v) => (v ? "yes" : "no")],
  ["mclt", (v) => v], ["split", (v) => v], ["last_contact", fmtTime],
  ["bndupd_queue", (v) => v], ["unacked", (v) => v],
];
function foExtra(fo) {
  const rest = FO_EXTRA.filter(([k]) => fo[k] !== undefined && fo[k] !== null)
    .map(([k, f]) => `${esc(k)}: ${esc(f(fo[k]))}`);
  return rest.length ? `<p class="muted failover-extra">${rest.join("; ")}</p>` : "";
}

function renderDhcp() {
  const cols = meta().nodes.map((name) => {
    const t = nodeTopic(name);
    const status = t && t.status;
    let body;
    if (!status) {
      body = offline(t, "DHCP");
    } else if (status.dhcp && status.dhcp.error) {
      body = `<div class="bad">DHCP status error: ${esc(status.dhcp.error)}</div>`;
    } else {
      const servers = dhcpServers(status.dhcp);
      if (!servers.length) {
        body = `<div class="none dhcp-none">DHCP server: not configured on this node</div>`;
      } else {
        body = servers.map((s) => {
          const gw = s.gateway ? `gateway ${esc(s.gateway)} (${s.gateway_is_physical ? "this node's own address" : "the CARP VIP"})` : "";
          const pool = s.pool && typeof s.pool === "object"
            ? Object.entries(s.pool).map(([k, v]) => `${esc(k)} ${esc(typeof v === "object" ? JSON.stringify(v) : v)}`).join(", ") : "";
          const fo = s.failover;
          const foTable = fo && typeof fo === "object"
            ? `<h4>Failover Status</h4><table><tr><th>Pool</th><th>My State</th><th>Since</th><th>Peer State</th><th>Since</th></tr>` +
              `<tr class="dhcp-failover"><td>${esc(fo.name || s.interface)}</td><td>${esc(fo.my_state)}</td><td>${esc(fmtTime(fo.my_since || fo.my_state_since))}</td>` +
              `<td>${esc(fo.peer_state)}</td><td>${esc(fmtTime(fo.peer_since || fo.peer_state_since))}</td></tr></table>` +
              foExtra(fo)
            : `<p class="muted">Failover: not configured for this pool</p>`;
          const leases = Array.isArray(s.leases) ? s.leases : [];
          const rows = leases.map((l) => `<tr><td>${esc(l.ip)}</td><td>${esc(l.mac)}</td><td>${esc(l.hostname)}</td>` +
            `<td>${esc(fmtTime(l.start))}</td><td>${esc(fmtTime(l.end))}</td><td>${esc(l.binding_state)}</td></tr>`).join("");
          return `<h3>${esc(s.interface)} <small>${gw}</small></h3>` + (pool ? `<p class="muted">pool: ${pool}</p>` : "") + foTable +
            `<h4>Leases (${leases.length})</h4><table><tr><th>IP address</th><th>MAC address</th><th>Hostname</th><th>Start</th><th>End</th><th>Lease Type</th></tr>` +
            (rows || `<tr><td colspan="6" class="none">no leases</td></tr>`) + `</table>`;
        }).join("");
      }
    }
    return panel(name, nodeHeader(t, name), body, "dhcp-" + name);
  });
  $("dhcp-cols").innerHTML = cols.join("");
}

// ---------------------------------------------------------------- States and their sync

function renderStates() {
  const cols = meta().nodes.map((name) => {
    const t = nodeTopic(name);
    const status = t && t.status;
    let body;
    const sync = status && status.statesync;
    if (!status) {
      body = offline(t, "State table");
    } else if (!sync || typeof sync !== "object" || sync.enabled === false || sync.error) {
      body = sync && sync.error ? `<div class="bad">state sync error: ${esc(sync.error)}</div>`
        : `<div class="none">State sync: not configured on this node</div>`;
    } else {
      const st = sync.states || {};
      const bulk = sync.bulk || {};
      const fr = sync.frames || {};
      const drops = Object.entries(sync.drops || {}).map(([k, v]) => `${esc(k)} ${esc(v)}`).join(", ") || "none";
      const health = sync.ready ? `<span class="ok">ready</span>` : `<span class="bad">NOT READY</span>`;
      body = kvTable([
        ["states (kernel / mirror)", `${esc(st.kernel || 0)} / ${esc(st.mirror || 0)}`],
        ["own / from peer", `${esc(st.own || 0)} / ${esc(st.peer || 0)}`],
        ["sync health", `${health} <span class="muted">(${esc(sync.reason)})</span>`],
        ["sync link", `${esc(sync.interface)} to ${esc(sync.peer || "multicast")}, link ${sync.link_up ? "up" : "<span class='bad'>down</span>"}`],
        ["bulk update", `phase ${esc(sync.bulk_phase)}; ${esc(bulk.count || 0)} received (last ${esc(bulk.last_states || 0)} states in ${fmtNum(bulk.last_duration_s, 3)} s), ${esc(bulk.served || 0)} served, ${esc(bulk.gave_up || 0)} given up`],
        ["frames tx / rx", `${esc(fr.tx || 0)} / ${esc(fr.rx || 0)} (${esc(fr.tx_bytes || 0)} / ${esc(fr.rx_bytes || 0)} bytes)`],
        ["pending writes", esc(sync.pending_writes || 0)],
        ["drops", drops],
      ]);
      const recent = Array.isArray(sync.recent) ? sync.recent : null;
      if (recent === null) {
        body += `<p class="muted">Recent states: this node's status lists counts only, not individual states.</p>`;
      } else if (!recent.length) {
        body += `<h4>Recent states</h4><p class="none">no state seen or installed yet</p>`;
      } else {
        // Newest first, as the node lists them; "created by" is the state's creator (pfsync).
        body += `<h4>Recent states <small>(last ${recent.length} seen or installed)</small></h4>` +
          `<table class="recent-states"><tr><th>Protocol</th><th>Source -&gt; Destination</th><th>State</th><th>Created by</th></tr>` +
          recent.map((r) => `<tr class="recent-state origin-${esc(r.origin)}"><td>${esc(r.proto)}</td>` +
            `<td>${esc(r.src)} -&gt; ${esc(r.dst)}</td><td>${esc(r.state || "-")}</td>` +
            `<td>${r.origin === "own" ? "this node" : r.origin === "peer" ? "the peer (synced)" : esc(r.origin)}</td></tr>`).join("") +
          `</table>`;
      }
      const changes = Array.isArray(sync.ready_changes) ? sync.ready_changes.slice(-6).reverse() : [];
      if (changes.length) {
        body += `<h4>Sync readiness history</h4><table><tr><th>when</th><th>ready</th><th>why</th></tr>` +
          changes.map((c) => `<tr><td>${esc(fmtTime(c.wall))}</td><td>${c.ready ? "yes" : "no"}</td><td>${esc(c.reason)}</td></tr>`).join("") + `</table>`;
      }
    }
    return panel(name, nodeHeader(t, name), body, "states-" + name);
  });
  $("states-cols").innerHTML = cols.join("");
}

// ---------------------------------------------------------------- High Avail. Sync

// pfSense's fault codes on xmlrpc.php (the receiving side's answer to a bad call).
const FAULTS = { "-1": "bad username or password", "-2": "not enough privileges" };

function resultBadge(result, cls) {
  const r = result || "never";
  const kind = r === "ok" ? "ok" : r === "never" ? "muted" : "bad";
  return `<span class="${kind} ${cls}">${esc(r)}</span>`;
}

// Master side: rc.filter_synchronize pushing to "Synchronize Config to IP".
function haPush(cs) {
  if (!cs.peer_url) {
    return `<h4>Sending</h4><p class="none hasync-push-none">Synchronize Config to IP: not set ` +
      `(this node does not push its configuration)</p>`;
  }
  return `<h4>Sending <small>(this node pushes its configuration)</small></h4>` + kvTable([
    ["Synchronize Config to IP", `<span class="hasync-peer">${esc(cs.peer_url)}</span>`],
    ["Last XMLRPC sync", esc(fmtTime(cs.last_sync))],
    ["Result", resultBadge(cs.result, "hasync-push-result") +
      (cs.result === "ok" ? ` <span class="muted">(XMLRPC sync successfully completed)</span>` : "")],
    ["Last error", `<span class="hasync-push-error">${esc(cs.last_error || "-")}</span>`],
    ["Syncs ok / failed", `<span class="hasync-counts">${esc(cs.syncs_ok || 0)} / ${esc(cs.syncs_failed || 0)}</span>`],
  ]);
}

// Backup side: what xmlrpc.php restore_config_section last received, from which peer.
function haReceived(cs) {
  const rx = cs.received;
  if (!rx || typeof rx !== "object") return "";
  const faults = Object.entries(cs.faults || {}).map(([code, n]) =>
    `${esc(code)} (${esc(FAULTS[code] || "fault")}) x${esc(n)}`).join(", ") || "none";
  const drops = Object.entries(cs.drops || {}).map(([k, v]) => `${esc(k)} ${esc(v)}`).join(", ") || "none";
  const merged = rx.result === "ok" ? ` <span class="muted">(Merged in config from XMLRPC client)</span>` : "";
  return `<h4>Receiving <small>(XMLRPC restore_config_section from the peer)</small></h4>` + kvTable([
    ["Last config received", rx.last ? `${esc(fmtTime(rx.last))} from <span class="hasync-from">${esc(rx.from || "?")}</span>`
      : `<span class="none hasync-recv-none">nothing received yet</span>`],
    ["Result", resultBadge(rx.result, "hasync-recv-result") + merged],
    ["Last error", `<span class="hasync-recv-error">${esc(rx.last_error || "-")}</span>`],
    ["Received ok / refused / loops refused", `${esc(rx.ok || 0)} / ${esc(rx.faults || 0)} / ${esc(rx.loops || 0)}`],
    ["XML-RPC faults answered", `<span class="hasync-faults">${faults}</span>`],
    ["Requests dropped unread", drops],
  ]);
}

function renderHaSync() {
  const cols = meta().nodes.map((name) => {
    const t = nodeTopic(name);
    const status = t && t.status;
    let body;
    const cs = status && status.configsync;
    if (!status) {
      body = offline(t, "Config sync");
    } else if (!cs || typeof cs !== "object") {
      body = `<div class="none configsync-none">XML-RPC config sync: not configured on this node</div>`;
    } else if (cs.error) {
      body = `<div class="bad">config sync status error: ${esc(cs.error)}</div>`;
    } else {
      body = haPush(cs) + haReceived(cs);
    }
    return panel(name, nodeHeader(t, name), body, "hasync-" + name);
  });
  $("hasync-cols").innerHTML = cols.join("");
}

// ---------------------------------------------------------------- power buttons

let powerBuilt = "";
function renderPower() {
  const m = meta();
  if (m.mode !== "lab") return;
  const key = m.nodes.join(",");
  if (powerBuilt !== key) {
    $("power-cols").innerHTML = m.nodes.map((name) => panel(name, "", `<div class="power-row">` +
      `<span class="name">${esc(name)}</span><span class="power-state" id="power-state-${esc(name)}"></span>` +
      `<button type="button" class="btn btn-danger" data-action="off" data-node="${esc(name)}">Force Off</button>` +
      `<button type="button" class="btn btn-success" data-action="on" data-node="${esc(name)}">Power On</button></div>`,
      "power-" + name)).join("");
    powerBuilt = key;
  }
  const busy = (S.action && S.action.busy) || null;
  for (const name of m.nodes) {
    const t = nodeTopic(name);
    const on = t && t.power === "on";
    const el = $("power-state-" + name);
    if (el) el.textContent = on ? `on (pid ${t.pid})` : "off";
    for (const b of document.querySelectorAll(`button[data-node="${name}"]`)) {
      b.disabled = Boolean(busy) || (b.dataset.action === "off" ? !on : on);
    }
  }
  $("run-start").disabled = Boolean(busy);
  if (S.action && S.action.last) {
    const l = S.action.last;
    $("action-msg").textContent = `${l.ok ? "done" : "FAILED"}: ${l.action}${l.message ? " - " + l.message : ""}`;
  }
  if (busy) $("action-msg").textContent = `running: ${busy} ...`;
}

async function post(path, body) {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Carpsim-Token": TOKEN },
      body: JSON.stringify(body || {}),
    });
  } catch (err) {
    $("action-msg").textContent = `the server did not answer: ${err}`;
    return;
  }
  let data = {};
  try { data = await resp.json(); } catch (_) { data = {}; }
  $("action-msg").textContent = data.ok ? data.message || "ok" : `refused: ${data.error || resp.status}`;
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button");
  if (!b || b.disabled) return;
  if (b.dataset.action && b.dataset.node) {
    b.disabled = true;
    post(`/api/node/${encodeURIComponent(b.dataset.node)}/${b.dataset.action}`);
  } else if (b.id === "run-start") {
    b.disabled = true;
    post("/api/unsinkable", {
      cycles: Number($("run-cycles").value), settle: Number($("run-settle").value),
      streams: Number($("run-streams").value),
    });
  }
});

// ---------------------------------------------------------------- topology (inline SVG)

function el(name, attrs, text) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function nodeStates(name) {
  const states = {};
  for (const v of carpRows(name)) states[`${v.interface}/${v.vhid}`] = String(v.state).toUpperCase();
  return states;
}

function holders(vip) {
  return meta().nodes.filter((n) => nodeStates(n)[`${vip.segment}/${vip.vhid}`] === "MASTER");
}

function stateColour(state) {
  return { MASTER: "#5cb85c", BACKUP: "#f0ad4e", INIT: "#d9534f" }[state] || "#999";
}

function lastOctet(addr) { return "." + String(addr).split(".").pop(); }

function renderTopology() {
  const topo = meta().topology;
  const box = $("topo");
  if (!topo) { box.textContent = ""; return; }
  const W = 960;
  const fw = topo.firewall;
  const segs = Object.fromEntries(topo.segments.map((s) => [s.name, s]));
  const fwNodes = topo.hosts.filter((h) => h.node);
  const others = topo.hosts.filter((h) => !h.node);
  const outside = topo.segments.map((s) => s.name).filter((n) => n !== fw.wan && n !== fw.sync && !fw.inside.includes(n));
  const inside = fw.inside.filter((n) => segs[n]);
  const svg = el("svg", { viewBox: `0 0 ${W} 560`, role: "img", "aria-label": "lab topology" });
  const Y = { top: 30, outside: 95, router: 150, wan: 215, nodes: 300, inside: 400, hosts: 470 };
  const bus = {};  // segment -> {x1, x2, y}
  outside.forEach((n, i) => { const w = (W - 80) / outside.length; bus[n] = { x1: 40 + i * w + 10, x2: 40 + (i + 1) * w - 10, y: Y.outside }; });
  bus[fw.wan] = { x1: 40, x2: W - 40, y: Y.wan };
  inside.forEach((n, i) => { const w = (W - 80) / inside.length; bus[n] = { x1: 40 + i * w + 10, x2: 40 + (i + 1) * w - 10, y: Y.inside }; });

  // Hosts placed by where they attach: above outside buses, between outside and WAN, below inside buses.
  const placed = [];
  const groups = {};
  for (const h of others) {
    const segsOf = Object.keys(h.addresses);
    let row;
    let anchor;
    if (segsOf.includes(fw.wan)) { row = "router"; anchor = fw.wan; }
    else if (segsOf.some((s) => outside.includes(s))) { row = "top"; anchor = segsOf.find((s) => outside.includes(s)); }
    else { row = "hosts"; anchor = segsOf.find((s) => bus[s]) || segsOf[0]; }
    const key = row + ":" + anchor;
    (groups[key] = groups[key] || []).push(h);
    placed.push({ h, row, anchor, key });
  }
  const pos = {};
  for (const [key, hs] of Object.entries(groups)) {
    const [row, anchor] = key.split(":");
    const b = bus[anchor] || { x1: 40, x2: W - 40 };
    const span = b.x2 - b.x1;
    hs.forEach((h, i) => { pos[h.name] = { x: b.x1 + span * (i + 1) / (hs.length + 1), y: Y[row] }; });
  }
  fwNodes.forEach((h, i) => { pos[h.name] = { x: 40 + (W - 80) * (i + 1) / (fwNodes.length + 1), y: Y.nodes }; });
  // A host right above a firewall would hide that firewall's WAN wire behind its own.
  const nodeXs = fwNodes.map((h) => pos[h.name].x);
  const gap = fwNodes.length > 1 ? (nodeXs[1] - nodeXs[0]) / 2 : 120;
  for (const h of others) {
    const p = pos[h.name];
    if (p && p.y < Y.nodes && nodeXs.some((nx) => Math.abs(nx - p.x) < 70)) p.x += gap;
  }

  // Wires first (under the boxes), then buses, then boxes and labels.
  const wires = el("g", { stroke: "#999", "stroke-width": "1.5" });
  const labels = el("g", {});
  for (const h of topo.hosts) {
    const p = pos[h.name];
    if (!p) continue;
    for (const [seg, addr] of Object.entries(h.addresses)) {
      const b = bus[seg];
      if (!b) continue;
      const x = Math.min(Math.max(p.x, b.x1 + 12), b.x2 - 12);
      wires.appendChild(el("line", { x1: p.x, y1: p.y, x2: x, y2: b.y }));
      // Label a third of the way from the host: clear of the bus and of the other wires.
      const f = b.y > p.y ? 0.45 : 0.5;
      labels.appendChild(el("text", { x: p.x + (x - p.x) * f + 4, y: p.y + (b.y - p.y) * f, class: "small" }, `${seg} ${lastOctet(addr)}`));
    }
  }
  svg.appendChild(wires);
  // SYNC: a direct link between the firewalls.
  if (fw.sync && segs[fw.sync] && fwNodes.length > 1) {
    const a = pos[fwNodes[0].name];
    const z = pos[fwNodes[fwNodes.length - 1].name];
    svg.appendChild(el("line", { x1: a.x, y1: a.y, x2: z.x, y2: z.y, stroke: "#337ab7", "stroke-width": "3", "stroke-dasharray": "6 4" }));
    svg.appendChild(el("text", { x: a.x - 84, y: a.y - 4, "text-anchor": "end", class: "seg-label", fill: "#337ab7" }, `SYNC ${segs[fw.sync].subnet}`));
    svg.appendChild(el("text", { x: a.x - 84, y: a.y + 12, "text-anchor": "end", class: "small" }, "state sync, dashed"));
  }
  for (const [name, b] of Object.entries(bus)) {
    svg.appendChild(el("line", { x1: b.x1, y1: b.y, x2: b.x2, y2: b.y, stroke: "#444", "stroke-width": "4" }));
    svg.appendChild(el("text", { x: b.x1, y: b.y - 7, class: "seg-label" }, `${name.toUpperCase()} ${segs[name].subnet}`));
    const vips = topo.vips.filter((v) => v.segment === name);
    vips.forEach((v, i) => {
      const who = holders(v);
      const txt = `VIP ${v.address} (VHID ${v.vhid}): ${who.length ? who.join(" + ") + " MASTER" : "no MASTER"}`;
      svg.appendChild(el("text", {
        x: b.x2, y: b.y + 16 + i * 14, "text-anchor": "end", class: "vip-label", "data-vhid": v.vhid,
        "data-holder": who.join(","), fill: who.length === 1 ? "#3c763d" : "#a94442", "font-weight": "bold",
      }, txt));
    });
  }
  svg.appendChild(labels);
  for (const h of topo.hosts) {
    const p = pos[h.name];
    if (!p) continue;
    const g = el("g", { class: "host", "data-host": h.name });
    let fill = "#fff";
    let stroke = "#666";
    let sub = h.role;
    if (h.node) {
      const states = Object.values(nodeStates(h.name));
      const t = nodeTopic(h.name);
      const off = !t || t.power !== "on";
      const all = states.length && states.every((s) => s === states[0]) ? states[0] : "mixed";
      sub = off ? "powered off" : all === "mixed" ? "mixed: " + states.join("/") : all;
      fill = off ? "#eee" : stateColour(all);
      stroke = off ? "#999" : "#333";
    }
    const w = h.node ? 150 : 120;
    const syncAddr = h.node && fw.sync ? h.addresses[fw.sync] : null;
    const tall = syncAddr ? 14 : 0;
    g.appendChild(el("rect", { x: p.x - w / 2, y: p.y - 18, width: w, height: 36 + tall, rx: 4, fill, stroke, "stroke-width": h.node ? 2 : 1 }));
    if (syncAddr) g.appendChild(el("text", { x: p.x, y: p.y + 26, "text-anchor": "middle", class: "small" }, `${fw.sync} ${syncAddr}`));
    g.appendChild(el("text", { x: p.x, y: p.y - 3, "text-anchor": "middle", "font-weight": "bold" }, h.name));
    g.appendChild(el("text", { x: p.x, y: p.y + 12, "text-anchor": "middle", class: "small" },
      h.node ? `${sub} (advskew ${h.advskew})` : `${sub} ${Object.values(h.addresses).join(", ")}`));
    svg.appendChild(g);
  }
  box.replaceChildren(svg);
}

// ---------------------------------------------------------------- unsinkable chart

function renderRun() {
  const r = S.run;
  if (!r) return;
  $("run-state").textContent = r.state + (r.verdict ? ": " + r.verdict.toUpperCase() : "") + (r.error ? ": " + r.error : "");
  $("run-log").textContent = (r.log || []).join("\n");
  const v = $("run-verdict");
  v.textContent = r.summary || "";
  v.className = "verdict " + (r.verdict || "");
  const chart = $("run-chart");
  const pings = r.pings || [];
  const tput = r.throughput || [];
  if (!pings.length && !tput.length && !(r.marks || []).length) { chart.replaceChildren(); return; }
  const W = 960, H = 300, L = 56, R = 20;
  const span = Math.max(1, ...pings.map((p) => p[0]), ...tput.map((p) => p[0]), ...(r.marks || []).map((m) => m[1] + 1));
  const x = (t) => L + (W - L - R) * t / span;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "unsinkable probes" });
  // Top plot: ping RTT (ms) with lost probes as red ticks; bottom plot: TCP throughput.
  const P = { top: 20, bottom: 140 };
  const T = { top: 170, bottom: 270 };
  const rtts = pings.filter((p) => p[1] !== null).map((p) => p[1]);
  const rttMax = Math.max(1, ...rtts) * 1.1;
  const yr = (v) => P.bottom - (P.bottom - P.top) * v / rttMax;
  const tMax = Math.max(1, ...tput.map((p) => p[1])) * 1.1;
  const yt = (v) => T.bottom - (T.bottom - T.top) * v / tMax;
  for (const [y0, y1, label] of [[P.top, P.bottom, `ping RTT (ms, max ${rttMax.toFixed(1)})`], [T.top, T.bottom, `TCP Mbit/s (max ${tMax.toFixed(1)})`]]) {
    svg.appendChild(el("rect", { x: L, y: y0, width: W - L - R, height: y1 - y0, fill: "#fafafa", stroke: "#ccc" }));
    svg.appendChild(el("text", { x: L + 4, y: y0 + 12 }, label));
  }
  if (rtts.length) {
    const pts = pings.filter((p) => p[1] !== null).map((p) => `${x(p[0]).toFixed(1)},${yr(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(el("polyline", { points: pts, fill: "none", stroke: "#337ab7", "stroke-width": "1.2" }));
  }
  const lost = pings.filter((p) => p[2] > 0);
  for (const p of lost) svg.appendChild(el("line", { x1: x(p[0]), y1: P.bottom, x2: x(p[0]), y2: P.bottom - 10 - Math.min(40, p[2] * 4), stroke: "#d9534f", "stroke-width": "2" }));
  const lostTotal = pings.reduce((a, p) => a + p[2], 0);
  svg.appendChild(el("text", { x: W - R - 4, y: P.top + 12, "text-anchor": "end", fill: "#a94442" }, `${lostTotal} pings lost`));
  if (tput.length) {
    const pts = tput.map((p) => `${x(p[0]).toFixed(1)},${yt(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(el("polyline", { points: pts, fill: "none", stroke: "#5cb85c", "stroke-width": "1.5" }));
  }
  for (const [label, t] of r.marks || []) {
    const colour = label === "kill" ? "#d9534f" : "#3c763d";
    svg.appendChild(el("line", { x1: x(t), y1: P.top, x2: x(t), y2: T.bottom, stroke: colour, "stroke-width": "1.5", "stroke-dasharray": "4 3" }));
    svg.appendChild(el("text", { x: x(t) + 3, y: T.bottom + 14, fill: colour }, label));
  }
  for (let s = 0; s <= span; s += Math.max(1, Math.round(span / 10))) {
    svg.appendChild(el("text", { x: x(s), y: H - 6, "text-anchor": "middle", class: "small" }, `${s}s`));
  }
  chart.replaceChildren(svg);
}

// ---------------------------------------------------------------- wiring

function renderAll() {
  const m = meta();
  document.body.classList.toggle("mode-lab", m.mode === "lab");
  for (const e of document.querySelectorAll(".lab-only")) e.hidden = m.mode !== "lab";
  $("title").textContent = m.title || "";
  document.title = `carpsim - ${m.title || "Status"}`;
  renderPower();
  renderCarp();
  renderDhcp();
  renderStates();
  renderHaSync();
  if (m.mode === "lab") { renderTopology(); renderRun(); }
}

function connect() {
  const es = new EventSource("/events");
  const live = $("live");
  es.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  es.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "live off"; });
  es.addEventListener("snapshot", (ev) => {
    for (const k of Object.keys(S)) delete S[k];
    Object.assign(S, JSON.parse(ev.data));
    renderAll();
  });
  es.addEventListener("update", (ev) => {
    const changes = JSON.parse(ev.data);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null) delete S[k]; else S[k] = v;
    }
    renderAll();
  });
}

connect();

// The plant board's page script (api/board.py serves it; uPlot draws the trends).
// Everything shown is set with textContent: PLC names, messages and summaries are data.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const state = {
    range: "15m",
    rangeS: 900,
    step: 3,
    skew: 0, // server clock - browser clock, in seconds
    series: new Map(), // "plc/metric" -> {info, t, v, subBucket, subs, chart, el}
    markers: new Map(), // "plc/metric" -> Map(t -> marker)
    lastGood: new Map(), // plc -> epoch of its last good sample
    responses: [],
    lastEvent: 0,
    dirty: new Set(),
    order: [], // series index (as the server numbers them) -> "plc/metric"
  };
  const key = (plc, metric) => plc + "/" + metric; // ids and metric names have no "/"
  const now = () => Date.now() / 1000 + state.skew;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function safeLink(href, text) {
    // Links come from the server's settings; anything but http(s) or an anchor is not a link.
    if (typeof href !== "string" || !/^(https?:\/\/|#)/.test(href)) return text;
    return el("a", { href: href, rel: "noopener" }, text);
  }

  function fmtNum(v) {
    if (v === null || v === undefined) return "—";
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 100) return v.toFixed(1);
    return v.toFixed(2);
  }

  function fmtAge(s) {
    if (s === null || s === undefined || !isFinite(s)) return "never";
    if (s < 0) s = 0;
    if (s < 60) return s.toFixed(1) + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  }

  function fmtTime(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
  }

  function fmtLeft(s) {
    s = Math.max(0, Math.round(s));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  const who = (address) => String(address || "").replace(/^[a-z]+:/, "");

  // -- trends ------------------------------------------------------------------------------
  function chartWidth() {
    const box = $("trends");
    const w = Math.max(240, box.clientWidth);
    const cols = Math.max(1, Math.floor(w / 300));
    return Math.floor(w / cols) - 24;
  }

  function bandOf(info) {
    if (info.mean === null || info.std === null) return null;
    const d = info.threshold_sigma * info.std;
    return [info.mean - d, info.mean + d];
  }

  function markerPlugin(k) {
    return {
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            const s = state.series.get(k);
            ctx.save();
            // Hard limits: horizontal orange lines, where they fall inside the view.
            for (const lim of [s.info.min, s.info.max]) {
              if (lim === null || lim === undefined) continue;
              const y = u.valToPos(lim, "y", true);
              if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
              ctx.strokeStyle = "#ffa657";
              ctx.lineWidth = 2;
              ctx.setLineDash([6, 3]);
              ctx.beginPath();
              ctx.moveTo(u.bbox.left, y);
              ctx.lineTo(u.bbox.left + u.bbox.width, y);
              ctx.stroke();
            }
            ctx.setLineDash([]);
            // Drift alarms: a red vertical line where each one fired, with its magnitude.
            const ms = state.markers.get(k);
            if (ms) {
              ctx.strokeStyle = "#ff7b72";
              ctx.fillStyle = "#ff7b72";
              ctx.lineWidth = 2;
              ctx.font = 12 * devicePixelRatio + "px sans-serif";
              let labelledAt = -Infinity;
              for (const m of [...ms.values()].sort((a, b) => a.t - b.t)) {
                const x = u.valToPos(m.t, "x", true);
                if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
                ctx.beginPath();
                ctx.moveTo(x, u.bbox.top);
                ctx.lineTo(x, u.bbox.top + u.bbox.height);
                ctx.stroke();
                // Alarms close together (two detectors, one fault) share one label.
                if (m.sigma === null || x - labelledAt < 48 * devicePixelRatio) continue;
                const label = (m.sigma >= 0 ? "+" : "") + m.sigma.toFixed(1) + "σ";
                const w = ctx.measureText(label).width;
                const lx = x + 4 + w > u.bbox.left + u.bbox.width ? x - 4 - w : x + 4;
                ctx.fillText(label, lx, u.bbox.top + 14 * devicePixelRatio);
                labelledAt = x;
              }
            }
            ctx.restore();
          },
        ],
      },
    };
  }

  function dataOf(s) {
    // The band and the mean span the whole window: the data series gets no value at the
    // window's two edges, the band and mean lines do.
    const band = bandOf(s.info);
    const right = Math.max(now(), s.t.length ? s.t[s.t.length - 1] + 1 : 0);
    const left = right - state.rangeS;
    const xs = [], ys = [];
    if (!s.t.length || s.t[0] > left) { xs.push(left); ys.push(null); }
    for (let i = 0; i < s.t.length; i++) { xs.push(s.t[i]); ys.push(s.v[i]); }
    xs.push(right);
    ys.push(null);
    const fill = (v) => new Array(xs.length).fill(v);
    return [xs, ys, fill(band ? band[1] : null), fill(band ? band[0] : null), fill(s.info.mean)];
  }

  function yRange(k) {
    return (u, min, max) => {
      const s = state.series.get(k);
      const band = bandOf(s.info);
      let lo = min, hi = max;
      if (band) { lo = Math.min(lo ?? band[0], band[0]); hi = Math.max(hi ?? band[1], band[1]); }
      if (lo === null || hi === null || !isFinite(lo) || !isFinite(hi)) return [0, 1];
      const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.05 || 1;
      return [lo - pad, hi + pad];
    };
  }

  function axisTime(v) {
    // One line per tick, in the browser's local time: seconds for short ranges, the day for
    // long ones.
    const d = new Date(v * 1000);
    const p2 = (n) => String(n).padStart(2, "0");
    const hm = p2(d.getHours()) + ":" + p2(d.getMinutes());
    if (state.rangeS <= 900) return hm + ":" + p2(d.getSeconds());
    if (state.rangeS <= 86400) return hm;
    return p2(d.getMonth() + 1) + "-" + p2(d.getDate()) + " " + hm;
  }

  function xRange(k) {
    // The right edge is now (a drift marker fires after the last bucket starts); the left
    // is the range's start, or the first data where there is less.
    return (u, min, max) => {
      const s = state.series.get(k);
      const right = Math.max(now(), max ?? 0);
      const first = s.t.length ? s.t[0] : right - state.rangeS;
      return [Math.max(right - state.rangeS, Math.min(first, right - 60)), right];
    };
  }

  function makeChart(s, k, width) {
    const opts = {
      width: width,
      height: 150,
      legend: { show: false },
      cursor: { y: false },
      scales: { x: { time: true, range: xRange(k) }, y: { range: yRange(k) } },
      axes: [
        { stroke: "#c9d1d9", grid: { stroke: "#30363d" }, ticks: { stroke: "#30363d" }, space: 64, values: (u, splits) => splits.map(axisTime) },
        { stroke: "#c9d1d9", grid: { stroke: "#30363d" }, ticks: { stroke: "#30363d" }, size: 56 },
      ],
      series: [
        {},
        { label: s.info.metric, stroke: "#58a6ff", width: 2, points: { show: false }, spanGaps: false },
        { label: "upper", stroke: "rgba(126,231,135,0.5)", width: 1, points: { show: false } },
        { label: "lower", stroke: "rgba(126,231,135,0.5)", width: 1, points: { show: false } },
        { label: "mean", stroke: "#8b949e", width: 1, dash: [5, 5], points: { show: false } },
      ],
      bands: [{ series: [2, 3], fill: "rgba(126,231,135,0.12)" }],
      plugins: [markerPlugin(k)],
    };
    return new uPlot(opts, dataOf(s), s.plot);
  }

  function buildTrends(d) {
    const box = $("trends");
    const width = chartWidth();
    const byPlc = new Map();
    for (const info of d.series) {
      if (!byPlc.has(info.plc)) byPlc.set(info.plc, []);
      byPlc.get(info.plc).push(info);
    }
    const fresh = state.series.size === 0;
    state.order = d.series.map((info) => key(info.plc, info.metric));
    if (fresh) box.textContent = "";
    for (const [plc, infos] of byPlc) {
      let grid = null;
      if (fresh) {
        grid = el("div", { class: "grid" });
        // A PLC's trends fold away (a phone scrolls less); open by default.
        box.append(el("details", { class: "plc-trends", open: "" }, el("summary", {}, el("h3", {}, plc)), grid));
      }
      for (const info of infos) {
        const k = key(info.plc, info.metric);
        let s = state.series.get(k);
        if (!s) {
          const last = el("span", { class: "last" }, "—");
          const limits = [];
          if (info.min !== null) limits.push("min " + fmtNum(info.min));
          if (info.max !== null) limits.push("max " + fmtNum(info.max));
          const caption = el(
            "figcaption",
            {},
            el("span", { class: "metric" }, info.metric + (info.unit ? " (" + info.unit + ")" : "")),
            " ",
            last,
            limits.length ? el("span", { class: "limits" }, " limits: " + limits.join(", ")) : null,
          );
          const plot = el("div", { class: "plot", role: "img", "aria-label": info.plc + " " + info.metric + " trend" });
          const fig = el("figure", { "data-series": k }, caption, plot);
          grid.append(fig);
          s = { info: info, t: [], v: [], plot: plot, last: last, chart: null };
          state.series.set(k, s);
        }
        s.info = info;
        // Bucket i of every series starts at t0 + i * step (the server's shared grid).
        s.t = [];
        s.v = [];
        info.data.v.forEach((v, j) => {
          if (v === null) return; // an empty bucket: a gap in the line
          s.t.push(d.t0 + (info.data.i0 + j) * d.step_s);
          s.v.push(v);
        });
        s.subBucket = null;
        s.subs = new Map();
        if (!s.chart) s.chart = makeChart(s, k, Math.max(200, s.plot.clientWidth || width));
        else s.chart.setData(dataOf(s));
        showLast(s);
      }
    }
  }

  function fitCharts() {
    for (const s of state.series.values()) {
      if (s.chart) s.chart.setSize({ width: Math.max(200, s.plot.clientWidth), height: 150 });
    }
  }

  function showLast(s) {
    // What the chart holds, as attributes: people read the canvas, tests read these.
    const fig = s.plot.parentNode;
    fig.dataset.points = String(s.t.length);
    fig.dataset.lastT = s.t.length ? String(s.t[s.t.length - 1]) : "";
    const ms = state.markers.get(key(s.info.plc, s.info.metric));
    fig.dataset.markers = String(ms ? ms.size : 0);
    for (let i = s.v.length - 1; i >= 0; i--) {
      if (s.v[i] !== null) {
        s.last.textContent = fmtNum(s.v[i]);
        const band = bandOf(s.info);
        s.last.classList.toggle("out", !!band && (s.v[i] < band[0] || s.v[i] > band[1]));
        return;
      }
    }
    s.last.textContent = "no data";
  }

  function addPoints(runs) {
    // Runs [t, i0, [v, ...]]: the 1 s buckets at second t of the series i0, i0 + 1, ...
    // (indexes into the page's series list; the server keeps the same order).
    for (const [t, i0, vs] of runs) vs.forEach((v, j) => addPoint(i0 + j, t, v));
  }

  function addPoint(i, t, v) {
    if (v === null) return;
    const k = state.order[i];
    const s = k === undefined ? undefined : state.series.get(k);
    if (!s) return;
    const step = state.step;
    const bucket = Math.floor(t / step) * step;
    const lastT = s.t.length ? s.t[s.t.length - 1] : -Infinity;
    if (bucket > lastT) {
      s.t.push(bucket);
      s.v.push(v);
      s.subBucket = bucket;
      s.subs = new Map([[t, v]]);
    } else if (bucket === lastT) {
      if (s.subBucket !== bucket) { s.subBucket = bucket; s.subs = new Map(); }
      s.subs.set(t, v);
      let sum = 0;
      for (const x of s.subs.values()) sum += x;
      s.v[s.v.length - 1] = sum / s.subs.size;
    } else {
      return; // an older bucket: the page's data already has it
    }
    const oldest = now() - state.rangeS;
    while (s.t.length && s.t[0] < oldest) { s.t.shift(); s.v.shift(); }
    state.dirty.add(k);
  }

  function addMarkers(markers) {
    // An update carries the markers only when they changed.
    if (!markers) return;
    for (const m of markers) {
      const k = key(m.plc, m.metric);
      if (!state.markers.has(k)) state.markers.set(k, new Map());
      state.markers.get(k).set(m.t, m);
      state.dirty.add(k);
    }
  }

  function redraw() {
    for (const k of state.dirty) {
      const s = state.series.get(k);
      if (s && s.chart) { s.chart.setData(dataOf(s)); showLast(s); }
    }
    state.dirty.clear();
  }

  // -- status ------------------------------------------------------------------------------
  function table(caption, headers, rows) {
    if (!rows.length) return el("p", { class: "empty" }, "none");
    const head = el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)));
    const body = rows.map((cells) => {
      const tr = el("tr", {});
      cells.forEach((c, i) => tr.append(i === 0 ? el("th", { scope: "row" }, c) : el("td", {}, c)));
      return tr;
    });
    return el("div", { class: "table-wrap" }, el("table", {}, el("caption", { class: "sr-only" }, caption), el("thead", {}, head), el("tbody", {}, ...body)));
  }

  function applyCollectors(collectors) {
    const t = now();
    for (const c of collectors) {
      const row = document.querySelector('#plcs tr[data-plc="' + CSS.escape(c.plc) + '"]');
      if (!row) continue;
      const cell = row.querySelector(".state");
      cell.textContent = c.state + (c.errors ? " (" + c.errors + " errors)" : "");
      cell.className = "state state-" + c.state.replace(/[^a-z]/g, "");
      if (c.last_error) cell.title = c.last_error;
      state.lastGood.set(c.plc, c.age_s === null ? null : t - c.age_s);
    }
    tickAges();
  }

  function applyAges(ages) {
    // Every PLC's last sample age, in the order of the page's table (the plant file's):
    // collector rows come only when their state changed, the ages on every status update.
    const t = now();
    document.querySelectorAll("#plcs tr[data-plc]").forEach((row, i) => {
      const age = ages[i];
      if (age !== undefined) state.lastGood.set(row.dataset.plc, age === null ? null : t - age);
    });
    tickAges();
  }

  function tickAges() {
    const t = now();
    for (const [plc, at] of state.lastGood) {
      const row = document.querySelector('#plcs tr[data-plc="' + CSS.escape(plc) + '"]');
      if (row) row.querySelector(".age").textContent = at === null ? "never" : fmtAge(t - at);
    }
  }

  function responseText(r) {
    if (r.waiting_for && r.action) {
      const left = r.expires_at ? ", " + fmtLeft(r.expires_at - now()) + " left" : "";
      return "waiting for " + who(r.waiting_for) + " to approve " + r.action + left;
    }
    if (r.work_order) return "work order " + r.work_order + " opened; " + r.status;
    return r.status;
  }

  function applyResponses(resp) {
    state.responses = resp.items;
    const box = $("responses");
    box.textContent = "";
    if (resp.error) box.append(el("p", { class: "error", role: "alert" }, resp.error));
    if (resp.loading) box.append(el("p", { class: "empty" }, "reading from Temporal…"));
    else if (!resp.items.length && !resp.error) box.append(el("p", { class: "empty" }, "none"));
    for (const r of resp.items) {
      const head = (r.plc ? r.plc + " · " + r.metric : r.workflow_id) + (r.sigma !== null ? " · " + (r.sigma >= 0 ? "+" : "") + r.sigma.toFixed(1) + "σ" : "");
      const links = el("p", { class: "links" }, safeLink(r.history, "Temporal history"));
      if (r.work_order) links.append(" · ", safeLink("#wo-" + r.work_order, "work order " + r.work_order));
      box.append(
        el(
          "article",
          { class: "response", "data-workflow": r.workflow_id },
          el("h3", {}, head),
          el("p", { class: "status" }, responseText(r)),
          r.summary ? el("p", { class: "summary" }, r.summary) : null,
          links,
        ),
      );
    }
  }

  function tickResponses() {
    document.querySelectorAll("#responses article").forEach((node, i) => {
      const r = state.responses[i];
      if (r) node.querySelector(".status").textContent = responseText(r);
    });
  }

  function applyRecent(d) {
    $("writes").replaceChildren(
      table(
        "Recent PLC writes",
        ["Time", "PLC", "Action", "Before → written → read back", "Status", "By"],
        d.writes.map((w) => [fmtTime(w.at), w.plc, w.action + " (" + w.target + ")", fmtNum(w.before) + " → " + fmtNum(w.written) + " → " + fmtNum(w.read_back), w.status, who(w.by)]),
      ),
    );
    const wos = $("work-orders");
    wos.replaceChildren(
      table(
        "Recent work orders",
        ["Work order", "Time", "Title", "Priority", "Status", "Asset", "Workflow"],
        d.work_orders.map((w) => [w.id, fmtTime(w.at), w.title, w.priority, w.status, w.asset || "—", w.history ? safeLink(w.history, "history") : "—"]),
      ),
    );
    wos.querySelectorAll("tbody tr").forEach((tr, i) => {
      const w = d.work_orders[i];
      tr.id = "wo-" + w.id;
      if (w.description) tr.title = w.description;
    });
    const headers = ["Time", "Channel", "To", "Message"];
    if (d.message_state) headers.push("Delivery");
    $("messages").replaceChildren(
      table(
        "Messages sent",
        headers,
        d.messages.map((m) => {
          const row = [fmtTime(m.at), m.channel, who(m.to), el("span", { class: "body" }, m.body)];
          if (d.message_state) row.push(m.state || "—");
          return row;
        }),
      ),
    );
  }

  function applyStatus(d) {
    // Updates carry the status sections only every second or two, and only what changed;
    // points come in all.
    state.skew = d.now - Date.now() / 1000;
    if (d.collectors) applyCollectors(d.collectors);
    if (d.ages) applyAges(d.ages);
    if (d.responses) applyResponses(d.responses);
    if (d.writes) applyRecent(d);
  }

  // -- loading and live updates --------------------------------------------------------------
  async function load() {
    const r = await fetch("/board/data?range=" + encodeURIComponent(state.range) + "&width=" + chartWidth(), { credentials: "same-origin" });
    if (r.status === 401 || r.status === 403) { location.reload(); return; }
    if (!r.ok) throw new Error("board data: HTTP " + r.status);
    const d = await r.json();
    state.rangeS = d.range_s;
    state.step = d.step_s;
    $("trends").dataset.step = String(d.step_s);
    state.markers.clear();
    addMarkers(d.markers);
    applyStatus(d);
    buildTrends(d);
    // The first charts were sized before the grid had all its cards: fit them once laid out.
    requestAnimationFrame(fitCharts);
    state.dirty.clear();
  }

  function connect() {
    const source = new EventSource("/board/events");
    source.addEventListener("update", (e) => {
      const d = JSON.parse(e.data);
      state.lastEvent = Date.now();
      addPoints(d.p);
      addMarkers(d.markers);
      applyStatus(d);
      requestAnimationFrame(redraw);
    });
    source.addEventListener("error", () => {
      // The server ends a stream when it stops or the token must be checked again, and the
      // browser reconnects; a closed source means it was refused (a revoked token): show
      // the sign-in page.
      if (source.readyState === EventSource.CLOSED) location.reload();
    });
  }

  function tick() {
    const live = $("live");
    const ago = (Date.now() - state.lastEvent) / 1000;
    if (!state.lastEvent) live.textContent = "connecting…";
    else if (ago < 6) { live.textContent = "live"; live.className = "live ok"; }
    else { live.textContent = "no update for " + Math.round(ago) + " s"; live.className = "live stale"; }
    tickAges();
    tickResponses();
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      fitCharts();
    }, 150);
  });

  $("range").addEventListener("change", (e) => {
    state.range = e.target.value;
    load().catch((err) => console.error(err));
  });

  load()
    .then(connect)
    .catch((err) => console.error(err));
  setInterval(tick, 1000);
})();

// wattline pages: live gauges and fleet power from server-sent events, uPlot charts with zoom,
// usage patterns, confirmations. No build step; runs under the strict CSP (no inline script).
(function () {
  "use strict";
  var W = (window.__wattline = { gaugeUpdates: 0, lastReading: null, chartsDrawnMs: null, chartPoints: 0 });

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }

  // ---- gauges -------------------------------------------------------------------------
  function arc(frac) {
    // Semicircle from (10,60) through the top to (110,60), radius 50, centre (60,60).
    var f = Math.max(0, Math.min(1, frac));
    var a = Math.PI * (1 - f);
    var x = 60 + 50 * Math.cos(a), y = 60 - 50 * Math.sin(a);
    return "M10 60 A50 50 0 0 1 " + x.toFixed(2) + " " + y.toFixed(2);
  }
  function setGauge(fig, value) {
    var min = parseFloat(fig.dataset.min), max = parseFloat(fig.dataset.max);
    var key = fig.dataset.key;
    var el = document.getElementById("g-" + key);
    if (el) el.textContent = value === null || value === undefined ? "–" : String(value);
    var bar = fig.querySelector(".bar");
    if (bar && typeof value === "number") bar.setAttribute("d", arc((value - min) / (max - min)));
    fig.dataset.value = value;
  }
  function startGauges() {
    var box = document.querySelector(".gauges[data-live]");
    if (!box || !window.EventSource) return;
    var es = new EventSource(box.dataset.live);
    es.addEventListener("reading", function (ev) {
      var r = JSON.parse(ev.data);
      box.querySelectorAll(".gauge").forEach(function (fig) { setGauge(fig, r[fig.dataset.key]); });
      var t = document.getElementById("g-time");
      if (t) t.textContent = new Date(r.t_ms).toLocaleString();
      W.gaugeUpdates += 1;
      W.lastReading = r;
      box.dataset.tMs = r.t_ms;
    });
    es.addEventListener("event", function (ev) {
      var e = JSON.parse(ev.data), list = document.getElementById("timeline");
      if (!list) return;
      var li = document.createElement("li");
      li.textContent = new Date(e.t_ms).toLocaleString() + " " + e.code + " " + (e.detail || "");
      list.insertBefore(li, list.firstChild);
    });
  }

  function startFleet() {
    var table = document.querySelector("[data-live-fleet]");
    if (!table || !window.EventSource) return;
    var es = new EventSource(table.dataset.liveFleet);
    es.addEventListener("reading", function (ev) {
      var r = JSON.parse(ev.data);
      var cell = document.querySelector('[data-live-p="' + CSS.escape(r.meter) + '"]');
      if (cell) { cell.textContent = Math.round(r.p); cell.classList.add("fresh"); }
      W.gaugeUpdates += 1;
    });
  }

  // ---- charts -------------------------------------------------------------------------
  var plots = [];
  function axes(unit) {
    var grid = { stroke: css("--grid"), width: 1 };
    return [
      { stroke: css("--muted"), grid: grid, ticks: grid },
      { stroke: css("--muted"), grid: grid, ticks: grid, label: unit, size: 60 },
    ];
  }
  function opts(el, unit, series, bars) {
    var width = Math.max(280, el.clientWidth || 600);
    var o = {
      width: width,
      height: width < 500 ? 180 : 220,
      axes: axes(unit),
      cursor: { drag: { x: true, y: false } },
      series: [{}].concat(series),
      legend: { live: true },
    };
    if (bars) {
      o.series.forEach(function (s, i) {
        if (i > 0) s.paths = uPlot.paths.bars({ size: [0.7, 60], align: 0 });
      });
      o.bucket = bars;
    }
    return o;
  }
  function line(label, color) { return { label: label, stroke: css(color), width: 1 }; }
  function barS(label, color) { return { label: label, stroke: css(color), fill: css(color) }; }

  function draw(el, o, data) {
    el.innerHTML = "";
    var p = new uPlot(o, data, el);
    // Bars are one bucket wide: show half a bucket either side of the data (uPlot's automatic
    // range pads a lone month by years).
    var t = data[0];
    if (o.bucket && t.length) p.setScale("x", { min: t[0] - o.bucket / 2, max: t[t.length - 1] + o.bucket / 2 });
    plots.push(p);
    W.chartPoints += t.length;
  }

  // `span` (optional): a chosen period {from_ms, to_ms}; it overrides `days` for every chart.
  function loadCharts(days, span) {
    var box = document.querySelector(".charts[data-meter]");
    if (!box || !window.uPlot) return Promise.resolve();
    var t0 = performance.now();
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    W.chartPoints = 0;
    var meter = encodeURIComponent(box.dataset.meter);
    var jobs = [];
    var cache = {};
    function fetchKind(kind, d) {
      var range = span ? "&from_ms=" + span.from_ms + "&to_ms=" + span.to_ms : "&days=" + d;
      var key = kind + range;
      if (!cache[key]) {
        cache[key] = fetch("/web/meters/" + meter + "/series.json?kind=" + kind + range, { credentials: "same-origin" })
          .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
      }
      return cache[key];
    }
    box.querySelectorAll(".plot[data-chart]").forEach(function (el) {
      var kind = el.dataset.chart, d = el.dataset.days || days;
      if (kind === "power") {
        jobs.push(fetchKind("power", d).then(function (s) {
          draw(el, opts(el, "W / var", [line("P W", "--c1"), line("Q var", "--c2")]), [s.t, s.p_w, s.q_var]);
        }));
      } else if (kind === "thd") {
        jobs.push(fetchKind("power", d).then(function (s) {
          if (!s.thd_pct) { el.textContent = "THD is plotted from raw readings (choose a shorter range)."; return; }
          draw(el, opts(el, "%", [line("THD %", "--c3")]), [s.t, s.thd_pct]);
        }));
      } else if (kind === "hourly" || kind === "daily" || kind === "monthly") {
        var dd = kind === "hourly" ? Math.min(d, 31) : kind === "daily" ? Math.max(d, 31) : d;
        jobs.push(fetchKind(kind, dd).then(function (s) {
          if (!s.t.length) { el.textContent = "No energy rollups in this range yet."; return; }
          var bucket = kind === "hourly" ? 3600 : kind === "daily" ? 86400 : 31 * 86400;
          draw(el, opts(el, "kWh", [barS("import kWh", "--c1"), barS("export kWh", "--c4")], bucket), [s.t, s.import_kwh, s.export_kwh]);
        }));
      }
    });
    return Promise.all(jobs).then(function () {
      W.chartsDrawnMs = performance.now();
      W.chartsMs = W.chartsDrawnMs - t0;
      document.body.dataset.chartsDrawn = "1";
    }).catch(function (e) {
      W.chartError = String(e);
      document.body.dataset.chartsDrawn = "error";
    });
  }

  function startCharts() {
    var sel = document.getElementById("range-days");
    var fromUrl = new URLSearchParams(location.search).get("days");
    if (sel && fromUrl) {
      var o = document.createElement("option");
      o.value = fromUrl; o.textContent = "last " + fromUrl + " days";
      sel.appendChild(o); sel.value = fromUrl;
    }
    var days = sel ? sel.value : 7;
    loadCharts(days);
    if (sel) sel.addEventListener("change", function () { loadCharts(sel.value); });
    // A chosen period (customer history): local days, the `to` day included.
    var form = document.getElementById("range-form");
    var from = document.getElementById("range-from"), to = document.getElementById("range-to");
    var note = document.getElementById("range-note");
    if (form && from && to) form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var a = from.value ? new Date(from.value + "T00:00").getTime() : NaN;
      var b = to.value ? new Date(to.value + "T00:00").getTime() + 86400000 : NaN;
      if (!(a < b)) {
        if (note) note.textContent = "Choose a start day on or before the end day.";
        return;
      }
      if (note) note.textContent = "Showing " + from.value + " to " + to.value + ".";
      loadCharts(sel ? sel.value : 7, { from_ms: a, to_ms: b });
    });
  }

  function startProfile() {
    var box = document.querySelector("[data-profile]");
    if (!box) return;
    fetch(box.dataset.profile, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (p) {
      var set = function (id, v) { var e = document.getElementById(id); if (e) e.textContent = v; };
      set("p-weekday", p.weekday_kwh.toFixed(2) + " kWh/day");
      set("p-weekend", p.weekend_kwh.toFixed(2) + " kWh/day");
      set("p-peak", p.peak_share_pct.toFixed(1) + " %");
      set("p-peak-hours", "(" + p.peak_hours[0] + ":00–" + p.peak_hours[1] + ":00)");
      set("p-impexp", p.import_kwh.toFixed(1) + " / " + p.export_kwh.toFixed(1) + " kWh");
      var el = box.querySelector('[data-chart="profile"]');
      if (el && window.uPlot) {
        var hours = []; for (var h = 0; h < 24; h++) hours.push(h);
        var o = opts(el, "kWh", [barS("kWh", "--c1")], 1);
        o.scales = { x: { time: false } };
        o.axes[0].values = function (u, v) { return v.map(function (x) { return x + "h"; }); };
        draw(el, o, [hours, p.hour_kwh]);
      }
    });
  }

  // ---- forms --------------------------------------------------------------------------
  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if (f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm)) ev.preventDefault();
  });
  // A refused htmx request shows the server's message instead of failing silently.
  document.addEventListener("htmx:responseError", function (ev) {
    var msg = "Request failed";
    try { msg = JSON.parse(ev.detail.xhr.responseText).error.message; } catch (e) { /* not JSON */ }
    var box = document.getElementById("commands") || document.body;
    var p = document.createElement("p");
    p.className = "error"; p.setAttribute("role", "alert"); p.textContent = msg;
    box.insertBefore(p, box.firstChild);
  });

  document.addEventListener("DOMContentLoaded", function () {
    startGauges();
    startFleet();
    startCharts();
    startProfile();
  });
})();

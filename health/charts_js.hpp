// The charts of a run's metrics log (health/metrics.hpp), drawn in the browser as inline SVG: one
// script for both pages that show them, `xy-node report`'s HTML file (apps/cmd_report.cpp) and the
// status page (health/status_server.cpp), so that they draw the same thing the same way. No
// network, no library.
//
// xyCharts.render(root, lines) fills `root` with a summary table (#xy-summary, a row per key with
// data-key) and the charts: loss (train and each evaluation set), learning rate, gradient norm,
// tokens/s and the time split of a step; restarts and resumes are vertical lines. Each chart is a
// div.xy-chart#xy-chart-NAME whose data-series attribute holds the points it drew ({series name:
// [[step, value], ...]}: all of them up to 2000 a series, else every k-th and the last), data-points
// each series' full count and data-markers its vertical lines; tests read them back
// (tests/report_test.sh, tests/status_page_test.sh). window.xyCharts.model is the last model.
#pragma once

namespace xy {

inline const char* charts_css() {
  return R"CSS(
.xy-summary{border-collapse:collapse;margin:0.5em 0 1em}
.xy-summary th,.xy-summary td{border:1px solid #ccc;padding:2px 10px;text-align:left}
.xy-grid{display:flex;flex-wrap:wrap;gap:12px}
.xy-chart{border:1px solid #ddd;padding:4px 6px}
.xy-chart h3{font:bold 13px sans-serif;margin:2px 0}
.xy-chart svg{font:10px sans-serif}
.xy-chart .xy-empty{fill:#999}
)CSS";
}

inline const char* charts_js() {
  return R"JS(
(function () {
  'use strict';
  const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  const SVG = 'http://www.w3.org/2000/svg';
  const W = 440, H = 210, L = 58, R = 10, T = 22, B = 24;
  function num(v) { return typeof v === 'number' && isFinite(v); }
  function el(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(v) {
    if (!num(v)) return '-';
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return String(+v.toPrecision(4));
  }
  function duration(s) {
    if (!num(s)) return '-';
    const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), x = Math.floor(s % 60);
    return h + ':' + String(m).padStart(2, '0') + ':' + String(x).padStart(2, '0');
  }
  function ticks(lo, hi, n) {
    const span = hi - lo, raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(f => f * mag).find(s => span / s <= n) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // The lines of a metrics log -> what the charts and the summary show.
  function model(lines) {
    const steps = [], evals = {}, markers = [], pending = [];
    let last = 0, restarts = 0, t0 = Infinity, t1 = -Infinity;
    for (const l of lines) {
      if (!l || typeof l !== 'object') continue;
      if (num(l.time)) { t0 = Math.min(t0, l.time); t1 = Math.max(t1, l.time); }
      if (l.event !== undefined) {
        if (l.event === 'restart') {
          restarts++;
          pending.push('restart ' + (l.attempt !== undefined ? l.attempt + (l.of !== undefined ? '/' + l.of : '') : '') +
                       (l.reason ? ': ' + l.reason : ''));
        } else if (l.event === 'start') {
          const at = num(l.step) ? l.step : last;
          for (const label of pending.splice(0)) markers.push({step: at, label: label, kind: 'restart'});
          if (at > 0 && !markers.some(m => m.step === at)) markers.push({step: at, label: 'resumed at step ' + at, kind: 'resume'});
        }
        continue;
      }
      if (l.eval !== undefined) {
        if (num(l.step)) (evals[l.eval] = evals[l.eval] || []).push(l);
        continue;
      }
      if (num(l.step)) { steps.push(l); last = l.step; }
    }
    for (const label of pending) markers.push({step: last, label: label, kind: 'restart'});
    const series = (rows, key) => rows.filter(r => num(r[key])).map(r => [r.step, r[key]]);
    const loss = {train: series(steps, 'loss')};
    for (const name of Object.keys(evals).sort()) loss['eval/' + name] = series(evals[name], 'loss');
    const split = {};
    for (const k of ['compute_s', 'wait_optimizer_s', 'exposed_comm_s', 'end_of_step_s', 'wait_batch_s'])
      split[k] = series(steps, k);
    let best = null;
    for (const name in evals) for (const e of evals[name])
      if (num(e.loss) && (!best || e.loss < best.loss)) best = {loss: e.loss, name: name, step: e.step};
    const lastOf = key => { for (let i = steps.length - 1; i >= 0; i--) if (num(steps[i][key])) return steps[i][key]; return null; };
    return {
      charts: [
        {id: 'loss', title: 'loss', series: loss},
        {id: 'lr', title: 'learning rate', series: {lr: series(steps, 'lr')}},
        {id: 'grad_norm', title: 'gradient norm', series: {grad_norm: series(steps, 'grad_norm')}},
        {id: 'tokens_per_s', title: 'tokens/s', series: {tokens_per_s: series(steps, 'tokens_per_s')}},
        {id: 'time_split', title: 'time per step (s)', series: split,
         labels: {compute_s: 'compute', wait_optimizer_s: 'wait optimizer', exposed_comm_s: 'exposed comm',
                  end_of_step_s: 'end of step', wait_batch_s: 'batch'}},
      ],
      markers: markers,
      summary: [
        ['steps', steps.length ? String(last) : '-'],
        ['tokens', lastOf('tokens') === null ? '-' : String(lastOf('tokens'))],
        ['final loss', fmt(lastOf('loss'))],
        ['best eval loss', best ? fmt(best.loss) + ' (' + best.name + ', step ' + best.step + ')' : '-'],
        ['restarts', String(restarts)],
        ['wall time', t1 >= t0 ? duration(t1 - t0) : '-'],
      ],
    };
  }

  function chart(c, markers) {
    const div = document.createElement('div');
    div.className = 'xy-chart';
    div.id = 'xy-chart-' + c.id;
    // What is drawn: every point up to 2000 per series, else every k-th and the last (a long run's
    // page would otherwise carry megabytes of attributes and take a minute to lay out).
    const drawn = {}, counts = {};
    for (const n in c.series) {
      const pts = c.series[n], k = Math.max(1, Math.ceil(pts.length / 2000));
      drawn[n] = k === 1 ? pts : pts.filter((p, i) => i % k === 0 || i === pts.length - 1);
      counts[n] = pts.length;
    }
    div.dataset.series = JSON.stringify(drawn);
    div.dataset.points = JSON.stringify(counts);
    div.dataset.markers = JSON.stringify(markers);
    const h = document.createElement('h3');
    h.textContent = c.title;
    div.appendChild(h);
    const svg = el('svg', {width: W, height: H, viewBox: '0 0 ' + W + ' ' + H});
    div.appendChild(svg);
    const names = Object.keys(drawn).filter(n => drawn[n].length);
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const n of names) for (const p of drawn[n]) {
      x0 = Math.min(x0, p[0]); x1 = Math.max(x1, p[0]); y0 = Math.min(y0, p[1]); y1 = Math.max(y1, p[1]);
    }
    if (!names.length) {
      svg.appendChild(el('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'xy-empty'}, 'no data'));
      return div;
    }
    for (const m of markers) { x0 = Math.min(x0, m.step); x1 = Math.max(x1, m.step); }
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.05 || 0.5; y1 += Math.abs(y1) * 0.05 || 0.5; }
    const pad = (y1 - y0) * 0.04; y0 -= pad; y1 += pad;
    const X = v => L + (v - x0) / (x1 - x0) * (W - L - R), Y = v => H - B - (v - y0) / (y1 - y0) * (H - T - B);
    svg.appendChild(el('rect', {x: L, y: T, width: W - L - R, height: H - T - B, fill: 'none', stroke: '#bbb'}));
    for (const v of ticks(y0, y1, 5)) {
      svg.appendChild(el('line', {x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: '#eee'}));
      svg.appendChild(el('text', {x: L - 4, y: Y(v) + 3, 'text-anchor': 'end'}, fmt(v)));
    }
    for (const v of ticks(x0, x1, 6)) {
      svg.appendChild(el('line', {x1: X(v), x2: X(v), y1: H - B, y2: H - B + 4, stroke: '#999'}));
      svg.appendChild(el('text', {x: X(v), y: H - B + 14, 'text-anchor': 'middle'}, fmt(v)));
    }
    for (const m of markers) {
      const line = el('line', {x1: X(m.step), x2: X(m.step), y1: T, y2: H - B, stroke: m.kind === 'restart' ? '#d00' : '#888',
                               'stroke-dasharray': '4 3', class: 'xy-marker'});
      line.appendChild(el('title', {}, m.label));
      svg.appendChild(line);
    }
    let legend = L + 6;
    names.forEach((n, i) => {
      const pts = drawn[n], d = pts.map(p => X(p[0]).toFixed(1) + ',' + Y(p[1]).toFixed(1));
      const color = COLORS[i % COLORS.length];
      svg.appendChild(el(pts.length > 1 ? 'polyline' : 'circle', pts.length > 1
          ? {points: d.join(' '), fill: 'none', stroke: color, 'stroke-width': 1.4, 'data-name': n}
          : {cx: X(pts[0][0]), cy: Y(pts[0][1]), r: 3, fill: color, 'data-name': n}));
      const label = (c.labels && c.labels[n]) || n;
      svg.appendChild(el('text', {x: legend, y: 14, fill: color}, label));
      legend += label.length * 5.6 + 12;
    });
    return div;
  }

  function render(root, lines) {
    const m = model(lines);
    root.textContent = '';
    const table = document.createElement('table');
    table.className = 'xy-summary';
    table.id = 'xy-summary';
    for (const [k, v] of m.summary) {
      const tr = document.createElement('tr');
      tr.dataset.key = k;
      const th = document.createElement('th'), td = document.createElement('td');
      th.textContent = k; td.textContent = v;
      tr.appendChild(th); tr.appendChild(td); table.appendChild(tr);
    }
    root.appendChild(table);
    const grid = document.createElement('div');
    grid.className = 'xy-grid';
    for (const c of m.charts) grid.appendChild(chart(c, m.markers));
    root.appendChild(grid);
    window.xyCharts.model = m;
    return m;
  }

  // A metrics.jsonl's text -> its lines (a line being written is not JSON yet: left out).
  function parse(text) {
    const out = [];
    for (const s of text.split('\n')) {
      if (!s.trim()) continue;
      try { out.push(JSON.parse(s)); } catch (e) { }
    }
    return out;
  }

  window.xyCharts = {render: render, model: null, parse: parse, build: model};
})();
)JS";
}

}  // namespace xy

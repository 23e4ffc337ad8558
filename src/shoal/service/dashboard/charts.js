// Small hand-written line charts on <canvas>: no library, no build step.
"use strict";

const PALETTE = ["#1f6feb", "#2e8b57", "#d97706", "#c0392b", "#7c3aed", "#0891b2", "#be185d",
  "#4b5563", "#65a30d", "#b45309", "#0f766e", "#9333ea"];
const FIXED = { "2xx": "#2e8b57", "3xx": "#1f6feb", "4xx": "#d97706", "5xx": "#c0392b",
  "1xx": "#6b7280", "in flight": "#1f6feb", "queued": "#d97706", "pages/s": "#1f6feb" };

function colorFor(name, i) {
  return FIXED[name] || PALETTE[i % PALETTE.length];
}

// series: [{name, values: [numbers]}], all the same length (one point per tick)
function drawChart(canvas, series, { maxPoints = 120 } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 40, right = 8, top = 8, bottom = 22;
  const pw = w - left - right, ph = h - top - bottom;
  // the x axis grows with the data (at least a minute), then scrolls
  const longest = Math.max(0, ...series.map((s) => s.values.length));
  const points = Math.min(maxPoints, Math.max(60, longest));
  let max = 0;
  for (const s of series) for (const v of s.values.slice(-points)) max = Math.max(max, v);
  max = niceStep(max / 4) * 4;
  ctx.font = "10px system-ui, sans-serif";
  ctx.strokeStyle = "#e3e6ea";
  ctx.fillStyle = "#6b7280";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + ph - (ph * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
    ctx.fillText(formatNumber((max * i) / 4), 2, y + 3);
  }
  series.forEach((s, i) => {
    const values = s.values.slice(-points);
    if (!values.length) return;
    ctx.strokeStyle = colorFor(s.name, i);
    ctx.lineWidth = 1.8;
    ctx.beginPath();
    values.forEach((v, j) => {
      const x = left + (pw * j) / Math.max(1, points - 1);
      const y = top + ph - (max ? (ph * v) / max : 0);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
  let x = left;
  series.forEach((s, i) => {
    ctx.fillStyle = colorFor(s.name, i);
    ctx.fillRect(x, h - 12, 8, 8);
    ctx.fillStyle = "#1d2330";
    const label = s.name;
    ctx.fillText(label, x + 11, h - 4);
    x += ctx.measureText(label).width + 24;
  });
  if (!series.length) {
    ctx.fillStyle = "#6b7280";
    ctx.fillText("nothing yet", left + pw / 2 - 25, top + ph / 2);
  }
}

function niceStep(v) {
  if (v <= 0) return 0.25;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function formatNumber(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : String(+v.toFixed(v < 1 ? 2 : 1));
}

window.shoalCharts = { drawChart, formatNumber };

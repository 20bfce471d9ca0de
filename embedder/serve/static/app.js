// The embedder web map: a plain-JS XYZ tile map (pan, zoom) and an SVG time-series plot.
// No external libraries: everything here is served by `embedder serve`.
"use strict";

const TILE = 256;
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const state = { lon: 0, lat: 0, zoom: 2, dates: [], info: null, click: null };
const $ = (id) => document.getElementById(id);

// --- Web Mercator ----------------------------------------------------------------------------
function worldSize(z) { return TILE * Math.pow(2, z); }
function project(lon, lat, z) {
  const s = Math.sin(Math.max(-85.05, Math.min(85.05, lat)) * Math.PI / 180);
  const w = worldSize(z);
  return [(lon + 180) / 360 * w, (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * w];
}
function unproject(x, y, z) {
  const w = worldSize(z);
  const lon = x / w * 360 - 180;
  const n = Math.PI - 2 * Math.PI * y / w;
  return [lon, 180 / Math.PI * Math.atan(Math.sinh(n))];
}

// --- date / window control -------------------------------------------------------------------
function iso(d) { return d.toISOString().slice(0, 10); }
function timeQuery() {
  const mode = $("mode").value;
  const d = $("date").value;
  $("custom").hidden = mode !== "custom";
  if (!d && mode !== "custom") return null;
  if (mode === "date") { $("window-label").textContent = ""; return "date=" + d; }
  let start, end;
  if (mode === "custom") {
    start = $("start").value; end = $("end").value;
    if (!start || !end || end < start) return null;
  } else {
    const t = new Date(d + "T00:00:00Z");
    let y = t.getUTCFullYear(), m = t.getUTCMonth();
    if (mode === "month") {
      start = iso(new Date(Date.UTC(y, m, 1))); end = iso(new Date(Date.UTC(y, m + 1, 0)));
    } else {  // meteorological season: DJF, MAM, JJA, SON
      const m0 = m - ((m + 1) % 3);  // Dec -> Dec, Jan -> Dec of last year, Mar -> Mar ...
      start = iso(new Date(Date.UTC(y, m0, 1))); end = iso(new Date(Date.UTC(y, m0 + 3, 0)));
    }
  }
  $("window-label").textContent = "mean " + start + " .. " + end;
  return "start=" + start + "&end=" + end;
}

// --- tiles -----------------------------------------------------------------------------------
function render() {
  const map = $("map"), layer = $("tiles");
  const W = map.clientWidth, H = map.clientHeight;
  const z = state.zoom;
  const [cx, cy] = project(state.lon, state.lat, z);
  const x0 = cx - W / 2, y0 = cy - H / 2;
  const q = timeQuery();
  const n = Math.pow(2, z);
  const wanted = new Map();
  if (q) {
    for (let tx = Math.floor(x0 / TILE); tx <= Math.floor((x0 + W) / TILE); tx++) {
      for (let ty = Math.floor(y0 / TILE); ty <= Math.floor((y0 + H) / TILE); ty++) {
        if (ty < 0 || ty >= n) continue;
        const wx = ((tx % n) + n) % n;
        const src = `/tiles/${z}/${wx}/${ty}.png?${q}`;
        wanted.set(`${tx}/${ty}/${src}`, [tx, ty, src]);
      }
    }
  }
  for (const img of Array.from(layer.children)) {
    if (!wanted.has(img.dataset.key)) layer.removeChild(img);
  }
  const have = new Set(Array.from(layer.children).map((i) => i.dataset.key));
  for (const [key, [tx, ty, src]] of wanted) {
    let img;
    if (!have.has(key)) {
      img = document.createElement("img");
      img.dataset.key = key;
      img.alt = "";
      img.className = "tile";
      img.addEventListener("load", () => img.classList.add("loaded"));
      img.src = src;
      layer.appendChild(img);
    } else {
      img = layer.querySelector(`img[data-key="${CSS.escape(key)}"]`);
    }
    img.style.left = Math.round(tx * TILE - x0) + "px";
    img.style.top = Math.round(ty * TILE - y0) + "px";
  }
  const mk = $("marker");
  if (state.click) {
    const [mx, my] = project(state.click[0], state.click[1], z);
    mk.style.left = (mx - x0) + "px"; mk.style.top = (my - y0) + "px"; mk.hidden = false;
  }
}

function zoomAt(dz, px, py) {
  const map = $("map");
  const z1 = Math.max(0, Math.min(20, state.zoom + dz));
  if (z1 === state.zoom) return;
  const W = map.clientWidth, H = map.clientHeight;
  const [cx, cy] = project(state.lon, state.lat, state.zoom);
  const ax = cx - W / 2 + px, ay = cy - H / 2 + py;           // anchor in world px at old zoom
  const [alon, alat] = unproject(ax, ay, state.zoom);
  const [bx, by] = project(alon, alat, z1);                    // anchor at new zoom
  [state.lon, state.lat] = unproject(bx - px + W / 2, by - py + H / 2, z1);
  state.zoom = z1;
  render();
}

function lonlatAt(px, py) {
  const map = $("map");
  const [cx, cy] = project(state.lon, state.lat, state.zoom);
  return unproject(cx - map.clientWidth / 2 + px, cy - map.clientHeight / 2 + py, state.zoom);
}

function setupMap() {
  const map = $("map");
  let drag = null;
  map.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, moved: false, lon: state.lon, lat: state.lat };
    map.setPointerCapture(e.pointerId);
  });
  map.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; map.classList.add("dragging"); }
    if (!drag.moved) return;
    const [cx, cy] = project(drag.lon, drag.lat, state.zoom);
    [state.lon, state.lat] = unproject(cx - dx, cy - dy, state.zoom);
    render();
  });
  map.addEventListener("pointerup", (e) => {
    map.classList.remove("dragging");
    if (drag && !drag.moved && e.target.tagName !== "BUTTON") {
      const r = map.getBoundingClientRect();
      const [lon, lat] = lonlatAt(e.clientX - r.left, e.clientY - r.top);
      state.click = [lon, lat];
      render();
      plotPoint(lon, lat);
    }
    drag = null;
  });
  map.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = map.getBoundingClientRect();
    zoomAt(e.deltaY < 0 ? 1 : -1, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  map.addEventListener("keydown", (e) => {
    if (e.key === "+" || e.key === "=") zoomAt(1, map.clientWidth / 2, map.clientHeight / 2);
    if (e.key === "-") zoomAt(-1, map.clientWidth / 2, map.clientHeight / 2);
  });
  $("zoom-in").addEventListener("pointerdown", (e) => e.stopPropagation());
  $("zoom-out").addEventListener("pointerdown", (e) => e.stopPropagation());
  $("zoom-in").addEventListener("click", () => zoomAt(1, map.clientWidth / 2, map.clientHeight / 2));
  $("zoom-out").addEventListener("click", () => zoomAt(-1, map.clientWidth / 2, map.clientHeight / 2));
  window.addEventListener("resize", render);
  for (const id of ["mode", "date", "start", "end"]) $(id).addEventListener("change", render);
}

function fitBbox(b) {  // b = [lon0, lat0, lon1, lat1]
  const map = $("map");
  state.lon = (b[0] + b[2]) / 2; state.lat = (b[1] + b[3]) / 2;
  for (let z = 20; z >= 0; z--) {
    const [x0, y1] = project(b[0], b[1], z), [x1, y0] = project(b[2], b[3], z);
    if (x1 - x0 <= map.clientWidth * 0.9 && y1 - y0 <= map.clientHeight * 0.9) { state.zoom = z; return; }
  }
  state.zoom = 0;
}

// --- time-series plot ------------------------------------------------------------------------
function svgEl(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function drawPlot(series) {
  const W = 560, H = 300, L = 44, R = 10, T = 12, B = 34;
  const plot = $("plot");
  plot.innerHTML = "";
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, id: "series-plot", role: "img",
                             "aria-label": "embedding time series" });
  const times = series.dates.map((d) => Date.parse(d + "T00:00:00Z"));
  const vals = series.embedding.flat();
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 === t0) { t0 -= 86400e3 * 15; t1 += 86400e3 * 15; }
  let v0 = Math.min(0, ...vals), v1 = Math.max(...vals);
  if (v1 <= v0) v1 = v0 + 1;
  const sx = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
  const sy = (v) => H - B - (v - v0) / (v1 - v0) * (H - T - B);
  for (let k = 0; k <= 4; k++) {  // horizontal grid and value labels
    const v = v0 + (v1 - v0) * k / 4;
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid" }));
    svg.appendChild(svgEl("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end" }, v.toFixed(1)));
  }
  for (let k = 0; k <= 4; k++) {  // date labels
    const t = t0 + (t1 - t0) * k / 4;
    svg.appendChild(svgEl("text", { x: sx(t), y: H - B + 16, "text-anchor": "middle" }, iso(new Date(t))));
  }
  svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  svg.appendChild(svgEl("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  for (let f = 0; f < 7; f++) {
    const pts = times.map((t, i) => `${sx(t).toFixed(1)},${sy(series.embedding[i][f]).toFixed(1)}`).join(" ");
    svg.appendChild(svgEl("polyline", { points: pts, fill: "none", stroke: COLOURS[f], "stroke-width": 1.5,
                                        class: "series", "data-feature": f }));
    for (let i = 0; i < times.length; i++) {
      const flagged = series.flags[i] & ~1;  // any quality bit beyond VALID: hollow dot
      svg.appendChild(svgEl("circle", { cx: sx(times[i]), cy: sy(series.embedding[i][f]), r: 2,
                                        fill: flagged ? "#fff" : COLOURS[f], stroke: COLOURS[f] }));
    }
  }
  plot.appendChild(svg);
  $("legend").innerHTML = COLOURS.map((c, f) => `<span><i style="background:${c}"></i>f${f}</span>`).join("")
    + "<span class='muted'>hollow dot: quality flag set</span>";
}

async function plotPoint(lon, lat) {
  $("status").textContent = `loading ${lon.toFixed(5)}, ${lat.toFixed(5)} ...`;
  try {
    const r = await fetch(`/api/probe?lon=${lon.toFixed(6)}&lat=${lat.toFixed(6)}`);
    const s = await r.json();
    if (!r.ok) { $("status").textContent = "error: " + (s.detail && JSON.stringify(s.detail)); return; }
    if (s.status !== "ok") {
      $("status").textContent = `no data at ${lon.toFixed(5)}, ${lat.toFixed(5)}: ${s.reason}`;
      $("plot").innerHTML = ""; $("legend").innerHTML = "";
      return;
    }
    $("status").innerHTML = `${lon.toFixed(5)}, ${lat.toFixed(5)} &middot; ${s.zone} row ${s.row} col ${s.col}`
      + ` &middot; ${s.dates.length} dates &middot; <a href="/api/probe?lon=${lon.toFixed(6)}&lat=${lat.toFixed(6)}&format=csv">CSV</a>`;
    drawPlot(s);
  } catch (err) {
    $("status").textContent = "request failed: " + err;
  }
}

// --- start -----------------------------------------------------------------------------------
async function main() {
  setupMap();
  const info = await (await fetch("/api/info")).json();
  state.info = info;
  $("store-name").textContent = info.url;
  const sel = $("date");
  for (const d of info.dates) sel.appendChild(new Option(d, d));
  if (info.dates.length) {
    sel.value = info.dates[Math.floor(info.dates.length / 2)];
    $("start").value = info.dates[0];
    $("end").value = info.dates[Math.min(info.dates.length - 1, 5)];
  }
  const boxes = Object.values(info.zones).map((z) => z.bbox);
  if (boxes.length) {
    fitBbox([Math.min(...boxes.map((b) => b[0])), Math.min(...boxes.map((b) => b[1])),
             Math.max(...boxes.map((b) => b[2])), Math.max(...boxes.map((b) => b[3]))]);
  }
  render();
  document.body.dataset.ready = "1";
}

main();

// driftbench dashboards. Every page reads the same JSON API the README documents;
// every name, tag or error from an upload is inserted as text (textContent), never
// as HTML. When a page has drawn, <body data-ready> counts its draws (tests wait on it).
'use strict';

const body = document.body;
// The server's own metric and verdict lists (workers/engine/metrics.py), never a copy.
const {metrics: METRICS, verdicts: VERDICTS} = JSON.parse(body.dataset.vocabulary);
const LOG_AXIS = {type: 'log', exponentformat: 'e'};

// The API's answer; on an error status, its own `detail` in words (a validation error's
// list of problems joined, a non-JSON body as its text).
async function api(path, options) {
  const response = await fetch(path, options);
  const text = await response.text();
  let payload;
  try {
    payload = JSON.parse(text);
  } catch {
    payload = {detail: text};
  }
  if (!response.ok) throw new Error(`${path.split('?')[0]}: ${detailText(payload.detail) || response.status}`);
  return payload;
}

function detailText(detail) {
  if (Array.isArray(detail)) {
    return detail.map((item) => `${(item.loc || []).slice(1).join('.')}: ${item.msg}`).join('; ');
  }
  return typeof detail === 'string' ? detail : JSON.stringify(detail);
}

// Text for Plotly's hover and tick labels, which render a subset of HTML: a layer named
// by an uploaded model must stay text.
function plotText(text) {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

// Reads never write: a finished run's comparison against a backend other than its
// reference is asked for once, explicitly, then read.
async function divergence(run, against, mode) {
  const id = run.id;
  if (against !== run.reference && run.status === 'done') {
    const stored = await api(`/api/runs/${id}/comparisons`);
    if (!stored.against.includes(against)) {
      await api(`/api/runs/${id}/comparisons`, {
        method: 'POST',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify({against}),
      });
    }
  }
  return api(`/api/runs/${id}/divergence?against=${encodeURIComponent(against)}&mode=${mode}`);
}

function showError(error) {
  const box = document.getElementById('error');
  box.textContent = error.message;
  box.hidden = false;
}

function ready() {
  body.dataset.ready = String(Number(body.dataset.ready || 0) + 1);
}

function cell(row, content, className) {
  const td = document.createElement('td');
  if (content instanceof Node) td.appendChild(content); else td.textContent = content ?? '';
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function link(href, text) {
  const a = document.createElement('a');
  a.href = href;
  a.textContent = text;
  return a;
}

function fillSelect(select, values, chosen) {
  const current = select.value || chosen;
  select.replaceChildren(...values.map((value) => {
    const option = document.createElement('option');
    option.value = value;
    option.textContent = value;
    return option;
  }));
  select.value = values.includes(current) ? current : values[0];
}

// A metric value for a log axis: "inf" and non-positive values have no place on it.
function plotted(value) {
  const number = typeof value === 'string' ? Number(value) : value;
  return number === null || !Number.isFinite(number) || number <= 0 ? null : number;
}

// The verdict's letter in a heatmap cell.
const VERDICT_MARK = {identical: '', rounding: 'r', 'reduced-precision': 'p', mismatch: 'M',
                      nonfinite: 'N'};
// The most values a layer's scatter draws (WebGL keeps a few hundred thousand smooth).
const SCATTER_POINTS = 200000;

// Numbers one way everywhere: 4 significant digits, in exponent form below 1e-3 and
// from 1e5 (never 0.000001301); integers and words as they are.
function formatNumber(value) {
  if (typeof value !== 'number' || Number.isInteger(value)) return String(value ?? '');
  const size = Math.abs(value);
  return size !== 0 && (size < 1e-3 || size >= 1e5) ? value.toExponential(3) : value.toPrecision(4);
}

// Rows a page of the large tables shows (MobileNetV2 on six backends is 900 rows).
const PAGE_ROWS = 50;

// A table of `rows` by `columns`, sorted by a click on a header (again: the other way)
// and shown PAGE_ROWS at a time; `decorate(row, tr)` styles each row.
function pagedTable(table, columns, rows, decorate) {
  const state = {column: null, descending: false, page: 0};
  let pager = table.nextElementSibling;
  if (!pager || !pager.classList.contains('pager')) {
    pager = document.createElement('p');
    pager.className = 'pager';
    table.after(pager);
  }
  // Numbers as numbers ("inf", "-inf" as the JSON writes them too); text as text.
  const value = (row, column) => {
    const v = row[column];
    const number = v === 'inf' ? Infinity : v === '-inf' ? -Infinity
      : typeof v === 'string' && v !== '' ? Number(v) : v;
    return typeof number === 'number' && !Number.isNaN(number) ? number : String(v ?? '');
  };
  const sorted = () => {
    if (state.column === null) return rows;
    const sign = state.descending ? -1 : 1;
    return [...rows].sort((a, b) => {
      const x = value(a, state.column);
      const y = value(b, state.column);
      if (typeof x === 'number' && typeof y === 'number') return x === y ? 0 : sign * (x < y ? -1 : 1);
      if (typeof x !== typeof y) return typeof x === 'number' ? -1 : 1;
      return sign * String(x).localeCompare(String(y));
    });
  };
  const render = () => {
    const headRow = document.createElement('tr');
    for (const column of columns) {
      const th = document.createElement('th');
      const arrow = state.column === column ? (state.descending ? ' ▼' : ' ▲') : '';
      th.textContent = column + arrow;
      th.className = 'sortable';
      th.onclick = () => {
        state.descending = state.column === column ? !state.descending : false;
        state.column = column;
        state.page = 0;
        render();
      };
      headRow.appendChild(th);
    }
    table.querySelector('thead').replaceChildren(headRow);
    const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    state.page = Math.min(state.page, pages - 1);
    const tbody = table.querySelector('tbody');
    tbody.replaceChildren();
    for (const row of sorted().slice(state.page * PAGE_ROWS, (state.page + 1) * PAGE_ROWS)) {
      const tr = document.createElement('tr');
      columns.forEach((column) => cell(tr, formatNumber(row[column])));
      decorate(row, tr);
      tbody.appendChild(tr);
    }
    const previous = document.createElement('button');
    previous.textContent = '‹ previous';
    previous.disabled = state.page === 0;
    previous.onclick = () => { state.page -= 1; render(); };
    const next = document.createElement('button');
    next.textContent = 'next ›';
    next.disabled = state.page >= pages - 1;
    next.onclick = () => { state.page += 1; render(); };
    const where = document.createElement('span');
    where.textContent = ` page ${state.page + 1} of ${pages} (${rows.length} rows) `;
    pager.replaceChildren(previous, where, next);
  };
  render();
}

function worstVerdict(rows) {
  return rows.reduce((worst, row) =>
    VERDICTS.indexOf(row.verdict) > VERDICTS.indexOf(worst) ? row.verdict : worst, 'identical');
}

function draw(div, traces, layout) {
  return Plotly.react(div, traces, {margin: {t: 30}, legend: {orientation: 'h'}, ...layout},
                      {displaylogo: false, responsive: true});
}

async function indexPage() {
  const models = (await api('/api/models?limit=1000')).data;
  const runs = (await api('/api/runs?limit=1000')).data;
  const tbody = document.querySelector('#models tbody');
  for (const model of models) {
    const latest = runs.find((run) => run.model_id === model.id);
    const tr = document.createElement('tr');
    cell(tr, String(model.id));
    cell(tr, link(`/models/${model.id}`, model.name));
    cell(tr, model.tags.join(', '));
    cell(tr, model.architecture_label);
    cell(tr, String(model.layers.filter((layer) => layer.depth > 0).length));
    cell(tr, latest ? link(`/runs/${latest.id}`, `run ${latest.id} (${latest.status})`) : 'none');
    let worst = '';
    if (latest && latest.status === 'done') {
      worst = worstVerdict((await api(`/api/runs/${latest.id}/divergence`)).rows);
    }
    cell(tr, worst, worst ? `verdict-${worst}` : '');
    tbody.appendChild(tr);
  }
  ready();
}

async function modelPage() {
  const id = body.dataset.model;
  const model = await api(`/api/models/${id}`);
  document.getElementById('model-name').textContent = model.name;
  document.getElementById('model-meta').textContent =
    `${model.architecture_label} · tags: ${model.tags.join(', ') || 'none'} · sha256 ${model.sha256.slice(0, 12)}`;
  const tbody = document.querySelector('#layers tbody');
  for (const layer of model.layers) {
    const tr = document.createElement('tr');
    [layer.depth, layer.name, layer.class_name, JSON.stringify(layer.output_shape), layer.params]
      .forEach((value) => cell(tr, String(value)));
    tbody.appendChild(tr);
  }
  document.getElementById('delete-model').onclick = async () => {
    if (!window.confirm(`Delete model ${model.name}, its runs and their stored outputs?`)) return;
    const response = await fetch(`/api/models/${id}`, {method: 'DELETE'});
    if (!response.ok) {
      const payload = await response.json().catch(() => ({}));
      showError(new Error(`delete: ${payload.detail || response.status}`));
      return;
    }
    window.location.assign('/');
  };
  const runs = (await api(`/api/runs?model_id=${id}&limit=1000`)).data;
  const list = document.getElementById('runs');
  for (const run of runs) {
    const li = document.createElement('li');
    li.appendChild(link(`/runs/${run.id}`, `run ${run.id}: ${run.status}, ${run.backend_runs.length} backends`));
    list.appendChild(li);
  }
  const backends = (await api('/api/backends')).data.map((backend) => backend.id);
  const metric = document.getElementById('metric');
  const against = document.getElementById('against');
  fillSelect(metric, METRICS, 'rel_l2');
  fillSelect(against, backends, 'numpy-f64');
  const redraw = async () => {
    const traces = [];
    for (const backend of backends.filter((b) => b !== against.value)) {
      const drift = await api(`/api/models/${id}/drift?backend=${backend}&against=${against.value}&metric=${metric.value}`);
      if (drift.layers.length === 0) continue;
      const x = drift.layers.map((row) => row.layer);
      traces.push({name: `${backend} median`, x, y: drift.layers.map((r) => plotted(r.median)),
                   mode: 'lines+markers', legendgroup: backend});
      traces.push({name: `${backend} p95`, x, y: drift.layers.map((r) => plotted(r.p95)),
                   mode: 'lines', line: {dash: 'dot'}, fill: 'tonexty', legendgroup: backend});
    }
    await draw('chart', traces, {yaxis: {...LOG_AXIS, title: `${metric.value} vs ${against.value}`}});
    ready();
  };
  metric.onchange = against.onchange = () => redraw().catch(showError);
  await redraw();
}

function environmentText(backendRun) {
  const {weights_roundtrip: _, ...environment} = backendRun.environment;
  return JSON.stringify(environment, null, 1);
}

// The probe link as text and as a QR code; the SVG is shown as an image, never as markup.
async function probeLink(id) {
  const probe = await api(`/api/runs/${id}/probe`, {method: 'POST'});
  const anchor = document.getElementById('probe-link');
  anchor.href = probe.url;
  anchor.textContent = probe.url;
  document.getElementById('probe-expiry').textContent = `(valid until ${probe.expires_at})`;
  const qr = document.createElement('img');
  qr.alt = 'QR code of the probe link';
  qr.src = `data:image/svg+xml;base64,${btoa(probe.qr_svg)}`;
  document.getElementById('probe-qr').replaceChildren(qr);
}

async function runPage() {
  const id = body.dataset.run;
  const metric = document.getElementById('metric');
  const against = document.getElementById('against');
  fillSelect(metric, METRICS, 'rel_l2');
  document.getElementById('browser-link').href = `/runs/${id}/browser`;
  let run = await api(`/api/runs/${id}`);
  const model = await api(`/api/models/${run.model_id}`);
  const modelLink = document.getElementById('model-link');
  modelLink.href = `/models/${model.id}`;
  modelLink.textContent = model.name;

  const renderBackends = () => {
    document.getElementById('status').textContent = run.status + (run.error ? `: ${run.error}` : '');
    const tbody = document.querySelector('#backends tbody');
    tbody.replaceChildren();
    for (const b of run.backend_runs) {
      const tr = document.createElement('tr');
      cell(tr, b.backend);
      cell(tr, b.status);
      const expired = b.outputs_expired_at && `outputs expired ${b.outputs_expired_at.slice(0, 10)}`;
      cell(tr, [b.reason, expired].filter(Boolean).join('; '));
      cell(tr, b.deterministic === null ? '' : (b.deterministic ? 'bit-for-bit' : 'NOT deterministic'));
      cell(tr, b.repeat_spread === null ? '' : String(b.repeat_spread));
      const trip = b.environment.weights_roundtrip;
      cell(tr, trip ? (trip.identical ? `identical (${trip.checked})` : `${trip.differing.length} weights changed`) : '');
      cell(tr, b.timings.accumulated === undefined ? '' : b.timings.accumulated.toFixed(3));
      const pre = document.createElement('pre');
      pre.textContent = environmentText(b);
      cell(tr, pre);
      tbody.appendChild(tr);
    }
  };

  const renderChart = async (mode, div) => {
    const data = await divergence(run, against.value, mode);
    const traces = Object.keys(data.drift_start).map((backend) => {
      const rows = data.rows.filter((row) => row.backend === backend);
      const start = data.drift_start[backend];
      return {
        name: backend, x: rows.map((r) => r.layer), y: rows.map((r) => plotted(r[metric.value])),
        mode: 'lines+markers',
        marker: {size: rows.map((r) => (start && r.layer === start.layer ? 14 : 6)),
                 symbol: rows.map((r) => (start && r.layer === start.layer ? 'x' : 'circle'))},
        text: rows.map((r) => (r.explained_by ? `${r.verdict}; ${r.explained_by}` : r.verdict)),
      };
    });
    await draw(div, traces, {yaxis: {...LOG_AXIS, title: `${metric.value} vs ${against.value}`}});
    return data;
  };

  const renderTable = (data) => {
    renderDriftStarts(document.getElementById('drift-starts'), data);
    const columns = ['backend', 'layer', 'class_name', 'n_diff', 'mean_abs', 'max_abs', 'rel_l2',
                     'max_ulp', 'cosine', 'sqnr_db', 'verdict', 'local_rel_l2', 'explained_by'];
    pagedTable(document.getElementById('divergence'), columns, data.rows, (row, tr) => {
      tr.className = `verdict-${row.verdict}`;
      tr.title = diagnosisText(row);
    });
  };

  const renderHeatmap = async (data) => {
    const backends = Object.keys(data.drift_start);
    // Layers in the model's order (a port may have uploaded only some, and rows come
    // back by backend).
    const depths = new Map(data.rows.map((row) => [row.layer, row.depth]));
    const layers = [...depths.keys()].sort((a, b) => depths.get(a) - depths.get(b));
    const at = new Map(data.rows.map((row) => [`${row.backend}\u0000${row.layer}`, row]));
    const z = [];
    const text = [];
    const hover = [];
    for (const backend of backends) {
      z.push(layers.map((layer) => {
        const value = plotted(at.get(`${backend}\u0000${layer}`)?.[metric.value]);
        return value === null ? null : Math.log10(value);
      }));
      text.push(layers.map((layer) => VERDICT_MARK[at.get(`${backend}\u0000${layer}`)?.verdict] ?? ''));
      hover.push(layers.map((layer) => {
        const row = at.get(`${backend}\u0000${layer}`);
        return row ? `${plotText(backend)} · ${plotText(layer)} (${plotText(row.class_name)})`
          + `<br>${metric.value} ${formatNumber(row[metric.value])}`
          + `<br>${row.verdict}${row.explained_by ? `; ${row.explained_by}` : ''}` : '';
      }));
    }
    const every = Math.ceil(layers.length / 40);
    const ticks = layers.map((_, i) => i).filter((i) => i % every === 0);
    const shapes = backends.flatMap((backend, y) => {
      const start = data.drift_start[backend];
      if (!start) return [];
      const x = layers.indexOf(start.layer);
      return [{type: 'rect', x0: x - 0.5, x1: x + 0.5, y0: y - 0.5, y1: y + 0.5,
               line: {color: '#111', width: 3}}];
    });
    await draw('heatmap', [{
      type: 'heatmap', x: layers.map((_, i) => i), y: backends.map(plotText), z, text,
      texttemplate: layers.length <= 60 ? '%{text}' : '', customdata: hover,
      hovertemplate: '%{customdata}<extra></extra>', colorscale: 'YlOrRd', reversescale: true,
      colorbar: {title: {text: `log10 ${metric.value}`}}, xgap: 1, ygap: 1,
    }], {
      shapes,
      height: 120 + 36 * backends.length,
      // A large model (MobileNetV2: 155 layers) names every k-th layer, at most 40.
      xaxis: {tickvals: ticks, ticktext: ticks.map((i) => plotText(layers[i])), tickangle: -60,
              tickfont: {size: 9}},
      yaxis: {automargin: true},
    });
    const div = document.getElementById('heatmap');
    div.removeAllListeners?.('plotly_click');
    div.on('plotly_click', (event) => {
      const point = event.points[0];
      const row = at.get(`${backends[point.pointIndex[0]]}\u0000${layers[point.x]}`);
      if (row) showLayer(row).catch(showError);
    });
  };

  const showLayer = async (row) => {
    document.getElementById('layer-detail').hidden = false;
    document.getElementById('detail-title').textContent =
      `${row.backend} · ${row.layer} (${row.class_name}) vs ${row.against}: ${row.verdict}`;
    document.getElementById('detail-diagnosis').textContent =
      [row.explained_by ? `explained by ${row.explained_by}` : '', diagnosisText(row)]
        .filter(Boolean).join('\n');
    const numbers = document.querySelector('#detail-numbers tbody');
    numbers.replaceChildren();
    for (const name of [...METRICS, 'verdict', 'local_rel_l2', 'local_bound', 'local_verdict',
                        'precision_bound', 'explained_by']) {
      const tr = document.createElement('tr');
      cell(tr, name);
      cell(tr, formatNumber(row[name]));
      numbers.appendChild(tr);
    }
    const edges = row.histogram.edges;
    const centres = edges.slice(0, -1).map((edge, i) => (edge + edges[i + 1]) / 2);
    await draw('detail-histogram', [{type: 'bar', x: centres, y: row.histogram.counts,
                                     name: 'values'}],
               {title: {text: `error ${row.backend} − ${row.against}`}, bargap: 0,
                xaxis: {title: 'error'}, yaxis: {title: 'values'}});
    const expired = run.backend_runs.some((b) => [row.backend, row.against].includes(b.backend)
                                             && b.outputs_expired_at);
    if (expired) {
      await draw('detail-scatter', [], {title: {text: 'outputs expired: no values to plot'}});
    } else {
      const [candidate, reference] = await Promise.all([
        fetchLayer(id, row.backend, row.layer, row.mode), fetchLayer(id, row.against, row.layer, row.mode)]);
      const count = Math.min(candidate.length, reference.length, SCATTER_POINTS);
      await draw('detail-scatter', [{type: 'scattergl', mode: 'markers', marker: {size: 4},
                                     x: Array.from(reference.subarray(0, count)),
                                     y: Array.from(candidate.subarray(0, count))}],
                 {title: {text: `${row.against} (x) vs ${row.backend} (y)`}});
    }
    ready();
  };

  const redraw = async () => {
    // A new reference is compared from stored outputs: once those expired, only the
    // run's own reference (compared when it finished) is left to choose.
    const done = run.backend_runs
      .filter((b) => b.status === 'done' && (!b.outputs_expired_at || b.backend === run.reference))
      .map((b) => b.backend);
    if (done.length > 0) {
      fillSelect(against, done, run.reference);
    }
    if (run.status === 'done' && done.includes(against.value)) {
      const accumulated = await renderChart('accumulated', 'chart');
      renderTable(accumulated);
      await renderHeatmap(accumulated);
      if (run.modes.includes('isolated')) await renderChart('isolated', 'chart-isolated');
    }
    ready();
  };
  metric.onchange = against.onchange = () => redraw().catch(showError);
  document.getElementById('probe-button').onclick = () => probeLink(id).catch(showError);
  document.getElementById('feeds-link').href = `/api/runs/${id}/feeds`;
  document.getElementById('external').onsubmit = async (event) => {
    event.preventDefault();
    try {
      const stored = await send(`/api/runs/${id}/external`, new FormData(event.target));
      const start = stored.drift_start;
      document.getElementById('external-result').textContent =
        `${stored.backend}: ${stored.compared_layers} layers compared (${stored.mode}); `
        + (start ? `drift starts at ${start.layer} (${start.verdict}`
          + `${start.explained_by ? `, explained by ${start.explained_by}` : ''})` : 'every layer within rounding');
      run = await api(`/api/runs/${id}`);
      renderBackends();
      await redraw();
    } catch (error) {
      showError(error);
    }
  };
  const compareWith = document.getElementById('compare-with');
  for (const choice of (await comparableRuns(run)).filter((c) => c.id !== run.id)) {
    const option = document.createElement('option');
    option.value = String(choice.id);
    option.textContent = choice.label;
    compareWith.appendChild(option);
  }
  document.getElementById('compare-button').onclick = () => {
    if (compareWith.value) window.location.assign(`/compare?before=${id}&after=${compareWith.value}`);
  };
  renderBackends();
  await redraw();
  while (run.status !== 'done' && run.status !== 'failed') {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    run = await api(`/api/runs/${id}`);
    renderBackends();
    await redraw();
  }
}

// A row's tested causes, best first: what the table's tooltip and the diagnosis lists show.
function diagnosisText(row) {
  const lines = [];
  if (row.precision_bound != null && row.local_rel_l2 != null) {
    lines.push(`own error ${Number(row.local_rel_l2).toPrecision(3)}; `
      + `the backend's precision allows ${Number(row.precision_bound).toPrecision(3)}`);
  }
  for (const d of (row.diagnosis || []).slice(0, 5)) {
    lines.push(`${d.hypothesis}${d.variant ? ` (${d.variant})` : ''}: `
      + `rel_l2 ${Number(d.rel_l2).toPrecision(3)}${d.explains ? ', explains' : ''}`);
  }
  return lines.join('\n');
}

// Per backend, where drift starts and why: the first thing a reader of a run wants.
function renderDriftStarts(list, data) {
  list.replaceChildren();
  for (const [backend, start] of Object.entries(data.drift_start)) {
    const li = document.createElement('li');
    if (!start) {
      li.textContent = `${backend}: every layer within rounding`;
    } else {
      const row = data.rows.find((r) => r.backend === backend && r.layer === start.layer);
      li.textContent = `${backend}: drift starts at ${start.layer} (${start.verdict})`
        + (start.explained_by ? `, explained by ${start.explained_by}` : '');
      li.title = row ? diagnosisText(row) : '';
      li.className = `verdict-${start.verdict}`;
    }
    list.appendChild(li);
  }
}

// A .npy file's float32 or float64 values (little endian, C order), as the outputs
// endpoint writes them (the float64 reference is float64).
function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const major = bytes[6];
  const view = new DataView(buffer);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const offset = (major === 1 ? 10 : 12) + headerLength;
  const header = new TextDecoder().decode(bytes.slice(offset - headerLength, offset));
  if (header.includes("'<f4'")) return new Float32Array(buffer.slice(offset));
  if (header.includes("'<f8'")) return new Float64Array(buffer.slice(offset));
  throw new Error(`unexpected .npy dtype: ${header}`);
}

async function fetchLayer(id, backend, layer, mode = 'accumulated') {
  const query = new URLSearchParams({backend, layer, mode});
  const response = await fetch(`/api/runs/${id}/output?${query}`);
  if (!response.ok) {
    const payload = await response.json().catch(() => ({}));
    throw new Error(`outputs of ${backend}/${layer}: ${payload.detail || `HTTP ${response.status}`}`);
  }
  return parseNpy(await response.arrayBuffer());
}

async function browserPage() {
  const id = body.dataset.run;
  const run = await api(`/api/runs/${id}`);
  const done = run.backend_runs.filter((b) => b.status === 'done').map((b) => b.backend);
  const browsers = done.filter((backend) => backend.startsWith('tfjs-'));
  if (!done.includes('keras-cpu') || browsers.length === 0) {
    throw new Error(`run ${id} needs keras-cpu and at least one TF.js backend finished`);
  }
  const metric = document.getElementById('metric');
  const layerSelect = document.getElementById('layer');
  fillSelect(metric, METRICS, 'rel_l2');
  const data = await divergence(run, 'keras-cpu', 'accumulated');
  const layers = [...new Set(data.rows.map((row) => row.layer))];
  fillSelect(layerSelect, layers, layers[layers.length - 1]);
  const redrawChart = async () => {
    const traces = browsers.map((backend) => {
      const rows = data.rows.filter((row) => row.backend === backend);
      return {name: backend, x: rows.map((r) => r.layer), y: rows.map((r) => plotted(r[metric.value])),
              mode: 'lines+markers'};
    });
    await draw('chart', traces, {yaxis: {...LOG_AXIS, title: `${metric.value} vs keras-cpu`}});
  };
  renderDriftStarts(document.getElementById('drift-starts'), {
    drift_start: Object.fromEntries(browsers.map((b) => [b, data.drift_start[b] ?? null])),
    rows: data.rows,
  });
  const diagnosed = document.querySelector('#diagnosis tbody');
  for (const row of data.rows.filter((r) => browsers.includes(r.backend) && r.explained_by)) {
    const tr = document.createElement('tr');
    tr.className = `verdict-${row.verdict}`;
    [row.backend, row.layer, row.verdict, Number(row.local_rel_l2).toPrecision(4), row.explained_by,
     diagnosisText(row)].forEach((value) => cell(tr, value));
    diagnosed.appendChild(tr);
  }
  const redrawLayer = async () => {
    const layer = layerSelect.value;
    const keras = await fetchLayer(id, 'keras-cpu', layer);
    const scatter = [];
    const histograms = [];
    for (const backend of browsers) {
      const browser = await fetchLayer(id, backend, layer);
      scatter.push({name: backend, x: Array.from(keras), y: Array.from(browser), mode: 'markers',
                    type: 'scattergl', marker: {size: 4}});
      histograms.push({name: backend, x: Array.from(browser, (v, i) => v - keras[i]),
                       type: 'histogram', opacity: 0.6});
    }
    await draw('scatter', scatter, {title: {text: `${layer}: keras-cpu (x) vs browser (y)`}});
    await draw('histogram', histograms, {barmode: 'overlay',
                                         title: {text: `${layer}: browser − keras-cpu`}});
  };
  metric.onchange = () => redrawChart().then(ready).catch(showError);
  await redrawChart();
  const expired = run.backend_runs.find((b) => b.outputs_expired_at
    && (b.backend === 'keras-cpu' || browsers.includes(b.backend)));
  if (expired) {
    // The metrics above are rows in the database; the per-value views need the arrays.
    layerSelect.disabled = true;
    showError(new Error(`outputs expired: the layer outputs of ${expired.backend} were deleted `
      + `on ${expired.outputs_expired_at.slice(0, 10)}, so there are no values to plot per layer`));
  } else {
    layerSelect.onchange = () => redrawLayer().then(ready).catch(showError);
    await redrawLayer();
  }
  ready();
}

async function depthPage() {
  const models = (await api('/api/models?limit=1000')).data;
  const labels = new Map(models.map((model) => [model.architecture, model.architecture_label]));
  const architecture = document.getElementById('architecture');
  const metric = document.getElementById('metric');
  const against = document.getElementById('against');
  const backends = (await api('/api/backends')).data.map((backend) => backend.id);
  const wanted = new URLSearchParams(location.search).get('architecture');
  fillSelect(architecture, [...labels.keys()], wanted);
  [...architecture.options].forEach((option) => {
    option.textContent = `${labels.get(option.value)} (${option.value})`;
  });
  fillSelect(metric, METRICS, 'rel_l2');
  fillSelect(against, backends, 'numpy-f64');
  const redraw = async () => {
    const curves = [];
    const growth = [];
    for (const backend of backends.filter((b) => b !== against.value)) {
      const drift = await api(`/api/drift/depth?architecture=${architecture.value}&backend=${backend}&against=${against.value}&metric=${metric.value}`);
      if (drift.depths.length === 0) continue;
      const x = drift.depths.map((row) => row.depth);
      curves.push({name: `${backend} (${drift.models} models)`, x,
                   y: drift.depths.map((row) => plotted(row.mean)), mode: 'lines+markers'});
      growth.push({name: backend, x, y: drift.depths.map((row) => row.growth), type: 'bar'});
    }
    await draw('chart', curves, {xaxis: {title: 'depth'},
                                 yaxis: {...LOG_AXIS, title: `mean ${metric.value}`}});
    await draw('growth', growth, {xaxis: {title: 'depth'},
                                  yaxis: {title: 'growth factor from depth − 1'}});
    ready();
  };
  architecture.onchange = metric.onchange = against.onchange = () => redraw().catch(showError);
  if (labels.size > 0) await redraw(); else ready();
}

// A POST whose body is a FormData (file uploads) or JSON; the API's refusal as an Error.
async function send(path, payload) {
  const options = payload instanceof FormData
    ? {method: 'POST', body: payload}
    : {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(payload)};
  return api(path, options);
}

function seconds(start, end) {
  if (!start) return '';
  const from = Date.parse(start);
  const to = end ? Date.parse(end) : Date.now();
  return `${((to - from) / 1000).toFixed(1)} s`;
}

// Upload a model, make inputs, choose backends, start, watch: the API's steps as a form.
async function newRunPage() {
  const state = {model: null, inputs: null};
  const backends = (await api('/api/backends')).data;
  const models = (await api('/api/models?limit=1000')).data;
  const select = document.getElementById('model-select');
  for (const model of models) {
    const option = document.createElement('option');
    option.value = String(model.id);
    option.textContent = `${model.id}: ${model.name}`;
    select.appendChild(option);
  }
  const showModel = (model) => {
    state.model = model;
    state.inputs = null;
    document.getElementById('model-summary').textContent =
      `${model.name}: ${model.layers.filter((l) => l.depth > 0).length} layers, ${model.architecture_label}`;
    const layerRows = document.querySelector('#model-layers tbody');
    layerRows.replaceChildren();
    for (const layer of model.layers) {
      const tr = document.createElement('tr');
      [layer.depth, layer.name, layer.class_name, JSON.stringify(layer.output_shape), layer.params]
        .forEach((value) => cell(tr, String(value)));
      layerRows.appendChild(tr);
    }
    document.getElementById('layers-details').hidden = false;
    const support = document.querySelector('#support tbody');
    support.replaceChildren();
    for (const backend of backends) {
      const tr = document.createElement('tr');
      const why = model.backend_support[backend.id] ?? (backend.available ? null : backend.reason);
      cell(tr, backend.id);
      cell(tr, why ? `no: ${why}` : 'yes', why ? 'unavailable' : '');
      support.appendChild(tr);
    }
    document.getElementById('support').hidden = false;
    document.getElementById('inputs-step').hidden = false;
    document.getElementById('run-step').hidden = true;
    renderChoices();
  };
  const renderChoices = () => {
    const box = document.getElementById('backend-choices');
    box.replaceChildren();
    for (const backend of backends) {
      const why = state.model.backend_support[backend.id] ?? (backend.available ? null : backend.reason);
      const label = document.createElement('label');
      const input = document.createElement('input');
      input.type = 'checkbox';
      input.name = 'backend';
      input.value = backend.id;
      input.disabled = Boolean(why);
      input.checked = !why && backend.by_default && backend.id !== 'numpy-f64';
      label.append(input, ` ${backend.id}`);
      label.title = why || `${backend.precision}; ${Object.entries(backend.versions).map(([k, v]) => `${k} ${v}`).join(', ')}`;
      if (why) label.className = 'unavailable';
      box.appendChild(label);
    }
    fillSelect(document.getElementById('reference'),
               backends.filter((b) => b.available).map((b) => b.id), 'numpy-f64');
  };
  const upload = async (file) => {
    const form = new FormData();
    form.append('file', file, file.name);
    showModel(await send('/api/models', form));
  };
  const zone = document.getElementById('drop-zone');
  zone.addEventListener('dragover', (event) => { event.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('over');
    const [file] = event.dataTransfer.files;
    if (file) upload(file).catch(showError);
  });
  document.getElementById('model-file').onchange = (event) => {
    const [file] = event.target.files;
    if (file) upload(file).catch(showError);
  };
  select.onchange = () => {
    if (select.value) api(`/api/models/${select.value}`).then(showModel).catch(showError);
  };
  const inputsMade = (inputs) => {
    state.inputs = inputs;
    document.getElementById('inputs-summary').textContent =
      `input set ${inputs.id}: ${Object.entries(inputs.shapes).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(', ')}`;
    document.getElementById('run-step').hidden = false;
  };
  document.getElementById('generator').onsubmit = (event) => {
    event.preventDefault();
    const fields = new FormData(event.target);
    const spec = {kind: fields.get('kind'), batch: Number(fields.get('batch')), seed: Number(fields.get('seed'))};
    if (spec.kind === 'uniform' || spec.kind === 'randint') Object.assign(spec, {low: Number(fields.get('low')), high: Number(fields.get('high'))});
    if (spec.kind === 'normal') Object.assign(spec, {mean: Number(fields.get('mean')), std: Number(fields.get('std'))});
    send(`/api/models/${state.model.id}/inputs`, spec).then(inputsMade).catch(showError);
  };
  document.getElementById('inputs-file').onchange = (event) => {
    const [file] = event.target.files;
    if (!file) return;
    const form = new FormData();
    form.append('file', file, file.name);
    send(`/api/models/${state.model.id}/inputs`, form).then(inputsMade).catch(showError);
  };
  document.getElementById('start').onclick = async () => {
    try {
      const chosen = [...document.querySelectorAll('input[name=backend]:checked')].map((i) => i.value);
      const modes = ['accumulated', 'isolated'].filter((m) => document.getElementById(`mode-${m}`).checked);
      const run = await send('/api/runs', {
        model_id: state.model.id, input_set_id: state.inputs.id, backends: chosen,
        reference: document.getElementById('reference').value, modes,
        repeats: Number(document.getElementById('repeats').value),
      });
      await watch(run.id);
    } catch (error) {
      showError(error);
    }
  };
  ready();
}

// Per backend: queued, running (with the time it has taken), done or failed with why.
async function watch(id) {
  document.getElementById('progress-step').hidden = false;
  const anchor = document.getElementById('run-link');
  anchor.href = `/runs/${id}`;
  anchor.textContent = String(id);
  for (;;) {
    const run = await api(`/api/runs/${id}`);
    document.getElementById('run-status').textContent = run.status + (run.error ? `: ${run.error}` : '');
    const tbody = document.querySelector('#progress tbody');
    tbody.replaceChildren();
    for (const b of run.backend_runs) {
      const tr = document.createElement('tr');
      cell(tr, b.backend);
      cell(tr, b.status, `status-${b.status}`);
      cell(tr, seconds(b.started_at, b.finished_at));
      cell(tr, b.reason || '');
      tbody.appendChild(tr);
    }
    if (run.status === 'done' || run.status === 'failed') break;
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
  ready();
}

// Runs whose layers line up with `run`'s: those of models with the same architecture.
async function comparableRuns(run) {
  const models = (await api('/api/models?limit=1000')).data;
  const architecture = models.find((model) => model.id === run.model_id)?.architecture;
  const names = new Map(models.filter((m) => m.architecture === architecture).map((m) => [m.id, m.name]));
  const runs = (await api('/api/runs?limit=1000')).data;
  return runs.filter((r) => names.has(r.model_id) && r.status === 'done')
    .map((r) => ({id: r.id, label: `run ${r.id} of ${names.get(r.model_id)} (${r.created_at.slice(0, 16)})`}));
}

// Metrics where a larger value is closer agreement.
const HIGHER_IS_BETTER = new Set(['cosine', 'sqnr_db', 'argmax_agree']);

// Better or worse for one layer: a verdict that moved decides; else a factor of 2.
function change(before, after, metric) {
  const severity = (row) => VERDICTS.indexOf(row.verdict);
  if (severity(after) !== severity(before)) return severity(after) < severity(before) ? 'better' : 'worse';
  const a = Number(before[metric]);
  const b = Number(after[metric]);
  if (!(Number.isFinite(a) && Number.isFinite(b)) || a === b) return 'same';
  // sqnr_db is already logarithmic: 6 dB is a factor of 2 in the error.
  if (metric === 'sqnr_db') return b - a >= 6 ? 'better' : a - b >= 6 ? 'worse' : 'same';
  const ratio = HIGHER_IS_BETTER.has(metric) ? a / b : b / a;
  if (a === 0 || b === 0) return (HIGHER_IS_BETTER.has(metric) ? b > a : b < a) ? 'better' : 'worse';
  return ratio <= 0.5 ? 'better' : ratio >= 2 ? 'worse' : 'same';
}

async function comparePage() {
  const beforeSelect = document.getElementById('before');
  const afterSelect = document.getElementById('after');
  const metric = document.getElementById('metric');
  const mode = document.getElementById('mode');
  const first = await api(`/api/runs/${body.dataset.before}`);
  const choices = await comparableRuns(first);
  for (const select of [beforeSelect, afterSelect]) {
    for (const choice of choices) {
      const option = document.createElement('option');
      option.value = String(choice.id);
      option.textContent = choice.label;
      select.appendChild(option);
    }
  }
  beforeSelect.value = body.dataset.before;
  afterSelect.value = body.dataset.after || String(choices.find((c) => String(c.id) !== body.dataset.before)?.id ?? '');
  fillSelect(metric, METRICS, 'rel_l2');
  const redraw = async () => {
    const [before, after] = await Promise.all([beforeSelect.value, afterSelect.value].map(
      (id) => api(`/api/runs/${id}/divergence?mode=${mode.value}`)));
    const key = (row) => `${row.backend}\u0000${row.depth}`;
    const earlier = new Map(before.rows.map((row) => [key(row), row]));
    const pairs = after.rows.filter((row) => earlier.has(key(row)))
      .map((row) => ({before: earlier.get(key(row)), after: row}));
    const tbody = document.querySelector('#changes tbody');
    tbody.replaceChildren();
    const counts = new Map();
    for (const pair of pairs) {
      const verdict = change(pair.before, pair.after, metric.value);
      const tally = counts.get(pair.after.backend) ?? {better: 0, worse: 0, same: 0};
      tally[verdict] += 1;
      counts.set(pair.after.backend, tally);
      const tr = document.createElement('tr');
      tr.className = `change-${verdict}`;
      const a = Number(pair.before[metric.value]);
      const b = Number(pair.after[metric.value]);
      [pair.after.backend, pair.after.depth, pair.after.layer, formatNumber(pair.before[metric.value]),
       formatNumber(pair.after[metric.value]), a ? formatNumber(b / a) : '',
       `${pair.before.verdict} → ${pair.after.verdict}`, verdict].forEach((v) => cell(tr, String(v)));
      tbody.appendChild(tr);
    }
    const summary = document.getElementById('summary');
    summary.replaceChildren();
    for (const [backend, tally] of counts) {
      const li = document.createElement('li');
      li.textContent = `${backend}: ${tally.better} better, ${tally.worse} worse, ${tally.same} the same`;
      summary.appendChild(li);
    }
    if (pairs.length === 0) {
      const li = document.createElement('li');
      li.textContent = 'no backend and layer in common';
      summary.appendChild(li);
    }
    const traces = [...counts.keys()].flatMap((backend) => {
      const mine = pairs.filter((p) => p.after.backend === backend);
      const x = mine.map((p) => p.after.layer);
      return [
        {name: `${backend} before (run ${beforeSelect.value})`, x, legendgroup: backend,
         y: mine.map((p) => plotted(p.before[metric.value])), mode: 'lines+markers', line: {dash: 'dot'}},
        {name: `${backend} after (run ${afterSelect.value})`, x, legendgroup: backend,
         y: mine.map((p) => plotted(p.after[metric.value])), mode: 'lines+markers'},
      ];
    });
    await draw('chart', traces, {yaxis: {...LOG_AXIS, title: metric.value}});
    ready();
  };
  beforeSelect.onchange = afterSelect.onchange = metric.onchange = mode.onchange =
    () => redraw().catch(showError);
  await redraw();
}

const PAGES = {index: indexPage, model: modelPage, run: runPage, browser: browserPage,
               depth: depthPage, new: newRunPage, compare: comparePage};
(PAGES[body.dataset.page] || (async () => ready()))().catch((error) => { showError(error); ready(); });

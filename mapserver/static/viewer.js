// The OneMap viewer: a city base map (e-map, imagery with its annotation, or none), the
// catalog's raster layers over it and its vector layers on top, each in the style the
// catalog keeps for it, with its legend. The view, the base and the layers are in the URL.
(async function () {
  // Signed in or not, the browser's session cookie says who asks (session.js shows who).
  const get = url => fetch(url, { credentials: 'same-origin' });
  const json = async url => { const r = await get(url); return r.ok ? r.json() : null; };

  const params = new URLSearchParams(location.search);
  const placed = Boolean(location.hash); // a permalink's view, before the map writes one
  const [catalog, based] = await Promise.all([json('/layers'), json('/basemaps')]);
  const all = catalog ? catalog.layers : [];
  const basemaps = based ? based.basemaps : [];
  const byId = Object.fromEntries(all.map(l => [l.id, l]));
  const inBase = new Set(basemaps.flatMap(b => b.layers));
  const vectors = all.filter(l => l.kind === 'vector' && l.feature_count > 0);
  const rasters = all.filter(l => l.kind === 'raster' && l.raster && l.raster.times.length);

  // What is shown: from the URL, else every layer that no base map draws already.
  const bases = ['emap', 'imagery'].filter(id => basemaps.some(b => b.id === id));
  const state = {
    base: params.get('base') || bases[0] || 'none',
    annotation: params.get('annotation') !== '0',
    shown: new Set(params.has('layers') ? params.get('layers').split(',').filter(Boolean)
      : [...vectors, ...rasters].filter(l => !inBase.has(l.id)).map(l => l.id)),
    opacity: {},
    // Top first: a permalink's layers in its order, above the others.
    order: (ids => [...ids.filter(id => vectors.some(l => l.id === id)),
                    ...vectors.map(l => l.id).filter(id => !ids.includes(id))])(
      (params.get('layers') || '').split(',')),
    times: {},
  };

  const list = document.getElementById('layers');
  if (!vectors.length && !rasters.length && !basemaps.length) {
    list.innerHTML = '<li>No layers yet. Load one with <code>onemap ingest vector</code> ' +
      'or <code>onemap ingest raster</code>, or publish one from the <a href="/portal">portal</a>.</li>';
  }
  const baseDocs = {};
  await Promise.all(basemaps.map(async b => { baseDocs[b.id] = await json(`/basemaps/${b.id}/style.json`); }));

  const map = new maplibregl.Map({
    container: 'map', style: await compose(), hash: true, attributionControl: false,
    // Chinese names from OneMap's own CJK glyphs, the same in every browser.
    localIdeographFontFamily: false,
  });
  window.onemapMap = map;
  map.addControl(new maplibregl.NavigationControl());
  map.addControl(new maplibregl.ScaleControl());
  const credits = attribution();
  map.addControl(credits, 'bottom-right');
  const start = baseDocs[state.base] || baseDocs[bases[0]];
  const first = start && start.metadata['onemap:bounds'];
  if (!placed) {
    const extent = first || (vectors[0] || rasters[0] || {}).extent;
    if (extent) map.fitBounds(extent, { padding: 20, animate: false });
  }

  // A style of the base, the rasters and the vector layers shown, bottom to top.
  async function compose() {
    const doc = { version: 8, glyphs: `${location.origin}/fonts/{fontstack}/{range}.pbf`,
                  sprite: `${location.origin}/sprites/onemap`, sources: {}, layers: [] };
    const base = state.base !== 'none' && baseDocs[state.base];
    if (base) merge(doc, base, 'base');
    else doc.layers.push({ id: 'background', type: 'background', paint: { 'background-color': '#f4f1ea' } });
    for (const layer of rasters.filter(l => state.shown.has(l.id))) {
      const id = `raster-${layer.id}`;
      doc.sources[id] = { type: 'raster', tiles: [rasterUrl(layer)], tileSize: 256,
                          bounds: layer.extent, maxzoom: layer.maxzoom };
      doc.layers.push({ id, type: 'raster', source: id, paint: {
        'raster-opacity': (state.opacity[layer.id] ?? 1) * (layer.raster.elevation ? 0.5 : 1) } });
    }
    const ids = state.order.filter(id => state.shown.has(id)).reverse();
    if (ids.length) {
      const thematic = await json(`/styles/${ids.join(',')}/style.json`);
      if (thematic) {
        for (const l of thematic.layers) if (l['source-layer']) fade(l, state.opacity[l['source-layer']] ?? 1);
        merge(doc, thematic, 'onemap', true);
      }
    }
    if (state.base === 'imagery' && state.annotation && baseDocs.annotation) merge(doc, baseDocs.annotation, 'annotation');
    return doc;
  }
  function merge(doc, other, prefix, keepIds) {
    for (const [name, source] of Object.entries(other.sources)) doc.sources[`${prefix}-${name}`] = source;
    for (const l of other.layers) {
      if (l.type === 'background' && prefix === 'onemap') continue;
      doc.layers.push({ ...l, id: keepIds ? l.id : `${prefix}-${l.id}`,
                        ...(l.source ? { source: `${prefix}-${l.source}` } : {}) });
    }
  }
  function fade(l, opacity) {
    if (opacity === 1) return;
    const prop = { fill: ['fill-opacity'], line: ['line-opacity'], circle: ['circle-opacity', 'circle-stroke-opacity'],
                   symbol: ['text-opacity', 'icon-opacity'], 'fill-extrusion': ['fill-extrusion-opacity'],
                   heatmap: ['heatmap-opacity'] }[l.type] || [];
    l.paint = l.paint || {};
    for (const p of prop) {
      const v = l.paint[p] ?? 1;
      if (typeof v === 'number') l.paint[p] = v * opacity;
    }
  }
  function rasterUrl(layer) {
    const q = new URLSearchParams({ datetime: state.times[layer.id] || [...layer.raster.times].sort().pop() });
    if (layer.raster.elevation) q.set('algorithm', 'hillshade');
    const fmt = layer.raster.elevation ? 'png' : 'webp';
    return `${location.origin}/tiles/${layer.id}/WebMercatorQuad/{z}/{x}/{y}.${fmt}?${q}`;
  }
  let pending = Promise.resolve();
  function redraw() {
    remember();
    pending = pending.then(async () => { map.setStyle(await compose()); credits.update(); });
    return pending;
  }
  // The permalink: base, annotation and layers in the query, the view in the hash.
  function remember() {
    const q = new URLSearchParams();
    q.set('base', state.base);
    if (!state.annotation) q.set('annotation', '0');
    q.set('layers', state.order.filter(id => state.shown.has(id)).concat(
      rasters.filter(l => state.shown.has(l.id)).map(l => l.id)).join(','));
    history.replaceState(null, '', `${location.pathname}?${q}${location.hash}`);
  }

  // The base switcher.
  const switcher = document.getElementById('bases');
  const choices = [...bases.map(id => [id, basemaps.find(b => b.id === id).title]), ['none', 'None']];
  for (const [id, title] of choices) {
    const label = document.createElement('label');
    label.innerHTML = '<input type="radio" name="base"> <span></span>';
    label.querySelector('span').textContent = title;
    const input = label.querySelector('input');
    input.value = id;
    input.checked = state.base === id;
    input.addEventListener('change', () => chooseBase(id));
    switcher.appendChild(label);
  }
  if (baseDocs.annotation) {
    const label = document.createElement('label');
    label.className = 'annotation';
    label.innerHTML = '<input type="checkbox"> Labels over imagery';
    const box = label.querySelector('input');
    box.checked = state.annotation;
    box.addEventListener('change', () => { state.annotation = box.checked; redraw(); });
    switcher.appendChild(label);
  }
  const overImagery = () => {
    const label = switcher.querySelector('label.annotation');
    if (label) label.hidden = state.base !== 'imagery';
  };
  overImagery();
  function chooseBase(id) {
    state.base = id;
    overImagery();
    redraw();
    // A base that does not cover the view takes the view to where it is.
    const bounds = baseDocs[id] && baseDocs[id].metadata['onemap:bounds'];
    const view = map.getBounds();
    if (bounds && (bounds[0] > view.getEast() || bounds[2] < view.getWest() ||
                   bounds[1] > view.getNorth() || bounds[3] < view.getSouth()))
      map.fitBounds(bounds, { padding: 20, animate: false });
  }

  // The layer list: vector layers in drawing order (top first), then rasters.
  function entry(layer) {
    const li = document.createElement('li');
    li.dataset.layer = layer.id;
    li.innerHTML = '<label><input type="checkbox"> <a></a></label>' +
      '<span class="tools"><input type="range" min="0" max="100" title="opacity">' +
      '<button class="up" title="draw above the layer over it">▲</button>' +
      '<button class="down" title="draw below the layer under it">▼</button></span><div class="meta"></div>';
    li.querySelector('a').textContent = layer.title;
    const box = li.querySelector('input[type=checkbox]');
    box.checked = state.shown.has(layer.id);
    box.addEventListener('change', () => {
      if (box.checked) state.shown.add(layer.id); else state.shown.delete(layer.id);
      redraw();
    });
    const slider = li.querySelector('input[type=range]');
    slider.value = 100;
    slider.addEventListener('change', () => { state.opacity[layer.id] = slider.value / 100; redraw(); });
    li.querySelector('a').addEventListener('click', e => {
      e.preventDefault();
      if (layer.extent) map.fitBounds(layer.extent, { padding: 20 });
    });
    return li;
  }
  function listVectors() {
    for (const id of state.order) list.appendChild(items[id]);
    for (const layer of rasters) list.appendChild(items[layer.id]);
  }
  const items = {};
  for (const layer of vectors) {
    const li = items[layer.id] = entry(layer);
    li.querySelector('.meta').textContent =
      `${layer.id} · ${layer.geometry_type || ''} · ${layer.feature_count} features` +
      (layer.department ? ` · ${layer.department_name || layer.department}` : '');
    for (const [cls, step] of [['up', -1], ['down', 1]]) {
      li.querySelector(`.${cls}`).addEventListener('click', () => {
        const i = state.order.indexOf(layer.id), j = i + step;
        if (j < 0 || j >= state.order.length) return;
        [state.order[i], state.order[j]] = [state.order[j], state.order[i]];
        listVectors();
        redraw();
      });
    }
    legendOf(layer, li);
  }
  for (const layer of rasters) {
    const li = items[layer.id] = entry(layer);
    li.querySelectorAll('button').forEach(b => b.remove());
    const times = [...layer.raster.times].sort().reverse();
    li.querySelector('.meta').textContent =
      `${layer.id} · ${layer.raster.elevation ? 'elevation' : 'imagery'} · ` +
      `${layer.raster.bands.length} band(s) · ${times.length} time slice(s)`;
    if (times.length > 1) {
      const select = document.createElement('select');
      select.className = 'time';
      select.title = 'time slice';
      for (const t of times) select.add(new Option(t.slice(0, 10), t));
      select.addEventListener('change', () => { state.times[layer.id] = select.value; redraw(); });
      li.appendChild(select);
    }
  }
  listVectors();
  remember();

  // Each layer's legend, read from the same style that draws it.
  async function legendOf(layer, li) {
    const legend = await json(`/styles/${layer.id}/legend.json`);
    if (!legend) return;
    const ul = document.createElement('ul');
    ul.className = 'legend';
    for (const entry of legend.entries) {
      const items = entry.items.filter(i => typeof i.colour === 'string');
      if (entry.field) {
        const head = document.createElement('li');
        head.className = 'field';
        head.textContent = title(layer, entry.field);
        ul.appendChild(head);
      }
      for (const item of items) {
        const row = document.createElement('li');
        const chip = document.createElement('span');
        chip.className = `chip ${entry.symbol}`;
        chip.style.background = item.colour;
        row.appendChild(chip);
        row.append(item.label || '');
        ul.appendChild(row);
      }
    }
    li.appendChild(ul);
  }
  function title(layer, field) {
    const f = layer && (layer.fields || []).find(x => x.name === field);
    return (f && f.title) || field;
  }

  // Each credit once, for the base and the layers shown.
  function attribution() {
    const div = document.createElement('div');
    div.className = 'maplibregl-ctrl maplibregl-ctrl-attrib onemap-credits';
    return {
      onAdd() { this.update(); return div; },
      onRemove() { div.remove(); },
      update() {
        const base = basemaps.find(b => b.id === state.base);
        const ids = [...(base ? base.layers : []), ...state.shown];
        if (state.base === 'imagery' && state.annotation && baseDocs.annotation)
          ids.push(...basemaps.find(b => b.id === 'annotation').layers);
        const credits = new Set(ids.flatMap(id => ((byId[id] || {}).attribution || '').split(/;\s*/)).filter(Boolean));
        div.textContent = [...credits, 'MapLibre'].join(' | ');
      },
    };
  }

  // Search: layers of the catalog, features by name, city codes.
  const search = document.getElementById('search');
  const found = document.getElementById('found');
  let marker = null;
  let typed = 0;
  search.addEventListener('input', () => {
    const mine = ++typed;
    setTimeout(() => { if (mine === typed) lookFor(search.value.trim(), mine); }, 250);
  });
  async function lookFor(text, mine) {
    found.innerHTML = '';
    if (text.length < 2) return;
    const hits = [];
    const lower = text.toLowerCase();
    for (const l of [...vectors, ...rasters])
      if (l.title.toLowerCase().includes(lower) || l.id.includes(lower))
        hits.push({ label: l.title, kind: 'layer', go: () => { showLayer(l.id); if (l.extent) map.fitBounds(l.extent, { padding: 20 }); } });
    const asks = [];
    if (/^[0-9A-Z]{12,20}$|^[a-z]+:\S+$/.test(text)) {
      asks.push(json(`/codes/${encodeURIComponent(text)}`).then(c => {
        if (c && c.position) hits.unshift({ label: `${c.code} · ${c.kind}`, kind: 'code', go: () => goTo(c.position.coordinates) });
      }));
    }
    // Features by name: the layers shown first, then the others, a few from each.
    const named = vectors.filter(v => (v.fields || []).some(f => f.name === 'name'));
    const asked = [...named.filter(l => state.shown.has(l.id)), ...named.filter(l => !state.shown.has(l.id))];
    for (const l of asked.slice(0, 10)) {
      asks.push(json(`/collections/${l.id}/items?q=${encodeURIComponent(text)}&limit=5`).then(fc => {
        for (const f of (fc && fc.features) || []) {
          const name = f.properties.name;
          if (!f.geometry || !name || !String(name).toLowerCase().includes(lower)) continue;
          if (hits.some(h => h.label === String(name) && h.kind === l.title)) continue; // one per street
          hits.push({ label: String(name), kind: l.title, go: () => { showLayer(l.id); fitFeature(f); } });
        }
      }));
    }
    await Promise.all(asks);
    if (mine !== typed) return;
    for (const hit of hits.slice(0, 20)) {
      const li = document.createElement('li');
      li.innerHTML = '<a href="#"></a> <span class="kind"></span>';
      li.querySelector('a').textContent = hit.label;
      li.querySelector('.kind').textContent = hit.kind;
      li.querySelector('a').addEventListener('click', e => { e.preventDefault(); hit.go(); });
      found.appendChild(li);
    }
    if (!hits.length) found.innerHTML = '<li class="none">Nothing found</li>';
  }
  function showLayer(id) {
    if (state.shown.has(id)) return;
    state.shown.add(id);
    items[id].querySelector('input[type=checkbox]').checked = true;
    redraw();
  }
  function goTo(lngLat) {
    if (marker) marker.remove();
    marker = new maplibregl.Marker().setLngLat(lngLat).addTo(map);
    map.flyTo({ center: lngLat, zoom: Math.max(map.getZoom(), 17) });
  }
  function fitFeature(f) {
    const coords = JSON.stringify(f.geometry.coordinates).match(/-?\d+(\.\d+)?(e-?\d+)?/g).map(Number);
    const xs = coords.filter((_, i) => i % 2 === 0), ys = coords.filter((_, i) => i % 2 === 1);
    const box = [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
    if (box[0] === box[2] && box[1] === box[3]) goTo([box[0], box[1]]);
    else map.fitBounds(box, { padding: 40, maxZoom: 18 });
  }

  // A feature's attributes under its fields' titles; a few pixels of slack, topmost wins.
  const near = p => map.queryRenderedFeatures([[p.x - 4, p.y - 4], [p.x + 4, p.y + 4]])
    .filter(f => f.source === 'onemap-onemap');
  map.on('mousemove', e => { map.getCanvas().style.cursor = near(e.point).length ? 'pointer' : ''; });
  // Where a click lands: the polygons of the areal layers (districts, streets, grid cells)
  // that hold it, through the locate process, under the caller's grants.
  const areal = all.filter(l => l.kind === 'vector' && /Polygon/.test(l.geometry_type || '')
    && l.feature_count > 0 && l.feature_count <= 5000 && l.extent)
    .sort((a, b) => a.feature_count - b.feature_count);
  async function locate(lngLat) {
    const { lng, lat } = lngLat;
    const here = areal.filter(l => l.extent[0] <= lng && lng <= l.extent[2]
      && l.extent[1] <= lat && lat <= l.extent[3]).slice(0, 4);
    const found = await Promise.all(here.map(async l => {
      const r = await fetch('/processes/locate/execution', {
        method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ inputs: { layer: l.id, point: [lngLat.lng, lngLat.lat] } }) });
      const f = r.ok ? (await r.json()).result.features[0] : null;
      if (!f) return null;
      const p = f.properties;
      return [l.title, p.name || p.title || Object.values(p)[0] || f.id];
    }));
    const rows = found.filter(Boolean);
    const div = document.createElement('div');
    div.className = 'popup';
    div.dataset.locate = '';
    const h = document.createElement('h3');
    h.textContent = `${lngLat.lat.toFixed(5)}, ${lngLat.lng.toFixed(5)}`;
    div.appendChild(h);
    const table = document.createElement('table');
    for (const [what, name] of rows.length ? rows : [['Here', 'outside every area layer']]) {
      const tr = table.insertRow();
      tr.insertCell().textContent = what;
      tr.insertCell().textContent = name;
    }
    div.appendChild(table);
    div.appendChild(tools(lngLat));
    new maplibregl.Popup({ maxWidth: '420px' }).setLngLat(lngLat).setDOMContent(div).addTo(map);
  }

  // From a clicked point: the nearest features of a layer and a buffer, through the
  // nearest and buffer processes, drawn over the map until the next run.
  const nearable = all.filter(l => l.kind === 'vector' && l.feature_count > 0);
  const shown = { type: 'FeatureCollection', features: [] };
  function overlay() {
    if (!map.getSource('onemap-analysis')) {
      map.addSource('onemap-analysis', { type: 'geojson', data: shown });
      map.addLayer({ id: 'analysis-fill', type: 'fill', source: 'onemap-analysis',
        filter: ['==', ['geometry-type'], 'Polygon'],
        paint: { 'fill-color': '#1f78b4', 'fill-opacity': 0.2 } });
      map.addLayer({ id: 'analysis-line', type: 'line', source: 'onemap-analysis',
        paint: { 'line-color': '#1f78b4', 'line-width': 2, 'line-dasharray': [2, 1] } });
      map.addLayer({ id: 'analysis-point', type: 'circle', source: 'onemap-analysis',
        filter: ['==', ['geometry-type'], 'Point'],
        paint: { 'circle-radius': 7, 'circle-color': 'rgba(0,0,0,0)',
                 'circle-stroke-color': '#e31a1c', 'circle-stroke-width': 2.5 } });
    } else map.getSource('onemap-analysis').setData(shown);
  }
  map.on('styledata', () => { if (shown.features.length && !map.getSource('onemap-analysis')) overlay(); });
  async function run(id, inputs) {
    const r = await fetch(`/processes/${id}/execution`, {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ inputs }) });
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    return body.result;
  }
  function tools(lngLat) {
    const at = [lngLat.lng, lngLat.lat];
    const box = document.createElement('div');
    box.className = 'tools';
    box.innerHTML = '<div><button type="button" data-nearest>Nearest</button> 5 of <select></select></div>'
      + '<div><button type="button" data-buffer>Within</button> <input type="number" min="1" max="50000" value="500"> m</div>'
      + '<ol class="result"></ol>';
    const select = box.querySelector('select');
    const order = [...nearable.filter(l => state.shown.has(l.id)), ...nearable.filter(l => !state.shown.has(l.id))];
    for (const l of order) select.add(new Option(l.title, l.id));
    const out = box.querySelector('.result');
    const say = text => { out.innerHTML = ''; const li = document.createElement('li'); li.className = 'note'; li.textContent = text; out.appendChild(li); };
    box.querySelector('[data-nearest]').addEventListener('click', async () => {
      const layer = byId[select.value];
      try {
        const fc = await run('nearest', { layer: select.value, point: at, n: 5 });
        out.innerHTML = '';
        for (const f of fc.features) {
          const li = document.createElement('li');
          const p = f.properties;
          li.textContent = `${p.name || p.title || f.id} — ${Math.round(p.distance_m)} m`;
          out.appendChild(li);
        }
        if (!fc.features.length) say(`no feature of ${layer.title} here`);
        // Each feature, and from a point feature a line to the click.
        shown.features = fc.features.flatMap(f => f.geometry && f.geometry.type === 'Point'
          ? [f, { type: 'Feature', properties: {}, geometry: { type: 'LineString', coordinates: [at, f.geometry.coordinates] } }]
          : [f]);
        overlay();
      } catch (err) { say(err.message); }
    });
    box.querySelector('[data-buffer]').addEventListener('click', async () => {
      const metres = Number(box.querySelector('input').value);
      try {
        const f = await run('buffer', { geometry: { type: 'Point', coordinates: at }, distance: metres });
        say(`${metres} m around here: ${(f.properties.area_m2 / 1e6).toFixed(3)} km²`);
        shown.features = [f];
        overlay();
      } catch (err) { say(err.message); }
    });
    return box;
  }
  map.on('click', e => {
    const hits = near(e.point);
    if (!hits.length) { if (areal.length) locate(e.lngLat); return; }
    const f = hits[0];
    const layer = byId[f.sourceLayer];
    const div = document.createElement('div');
    div.className = 'popup';
    const h = document.createElement('h3');
    h.textContent = layer ? layer.title : f.sourceLayer;
    div.appendChild(h);
    const table = document.createElement('table');
    for (const [k, v] of Object.entries(f.properties)) {
      if (k === '_count') continue;
      const tr = table.insertRow();
      tr.insertCell().textContent = k === '_id' ? 'id' : title(layer, k);
      tr.insertCell().textContent = v;
    }
    div.appendChild(table);
    new maplibregl.Popup({ maxWidth: '420px' }).setLngLat(e.lngLat).setDOMContent(div).addTo(map);
  });
})();

// The OneMap viewer: every layer of the catalog in one MapLibre style.
(async function () {
  const res = await fetch('/layers');
  const all = (await res.json()).layers;
  const layers = all.filter(l => l.kind === 'vector' && l.feature_count > 0);
  const rasters = all.filter(l => l.kind === 'raster' && l.raster && l.raster.times.length);
  const list = document.getElementById('layers');
  if (!layers.length && !rasters.length) {
    list.innerHTML = '<li>No layers yet. Load one with <code>onemap ingest vector</code> ' +
      'or <code>onemap ingest raster</code>.</li>';
    return;
  }
  const ids = layers.map(l => l.id).join(',');
  const style = ids ? `/styles/${ids}/style.json` : { version: 8, sources: {}, layers: [] };
  const map = new maplibregl.Map({ container: 'map', style, hash: true });
  map.addControl(new maplibregl.NavigationControl());
  map.addControl(new maplibregl.ScaleControl());
  map.on('load', () => rasters.forEach(addRaster));
  const first = layers[0] || rasters[0];

  // Imagery over the background and under the vector layers; elevation as hillshade. A time slice is a URL
  // parameter, so switching slices swaps the source.
  function rasterUrl(layer, time) {
    const q = new URLSearchParams({ datetime: time });
    if (layer.raster.elevation) q.set('algorithm', 'hillshade');
    const fmt = layer.raster.elevation ? 'png' : 'webp';
    return `/tiles/${layer.id}/WebMercatorQuad/{z}/{x}/{y}.${fmt}?${q}`;
  }
  function showRaster(layer, time, visible) {
    const id = `raster-${layer.id}`;
    if (map.getLayer(id)) map.removeLayer(id);
    if (map.getSource(id)) map.removeSource(id);
    map.addSource(id, { type: 'raster', tiles: [rasterUrl(layer, time)], tileSize: 256,
                        bounds: layer.extent, maxzoom: layer.maxzoom,
                        attribution: layer.attribution || '' });
    // Over the background, under the first vector layer.
    const below = map.getStyle().layers.find(s => s.source === 'onemap');
    map.addLayer({ id, type: 'raster', source: id,
                   layout: { visibility: visible ? 'visible' : 'none' },
                   paint: { 'raster-opacity': layer.raster.elevation ? 0.5 : 1 } },
                 below ? below.id : undefined);
  }
  function addRaster(layer) {
    const times = [...layer.raster.times].sort().reverse();
    const li = document.createElement('li');
    li.innerHTML = `<label><input type="checkbox" checked> <a></a></label>` +
      `<select class="time" title="time slice"></select><div class="meta"></div>`;
    li.querySelector('a').textContent = layer.title;
    const select = li.querySelector('select');
    for (const t of times) select.add(new Option(t.slice(0, 10), t));
    if (times.length < 2) select.hidden = true;
    li.querySelector('.meta').textContent =
      `${layer.id} · ${layer.raster.elevation ? 'elevation' : 'imagery'} · ` +
      `${layer.raster.bands.length} band(s) · ${times.length} time slice(s)`;
    const box = li.querySelector('input');
    box.addEventListener('change', e => map.setLayoutProperty(
      `raster-${layer.id}`, 'visibility', e.target.checked ? 'visible' : 'none'));
    select.addEventListener('change', () => showRaster(layer, select.value, box.checked));
    li.querySelector('a').addEventListener('click', e => {
      e.preventDefault();
      if (layer.extent) map.fitBounds(layer.extent, { padding: 20 });
    });
    list.appendChild(li);
    showRaster(layer, times[0], true);
  }
  if (!location.hash && first.extent) map.fitBounds(first.extent, { padding: 20, animate: false });

  const styleIds = id => map.getStyle().layers.filter(s => s['source-layer'] === id).map(s => s.id);
  for (const layer of layers) {
    const li = document.createElement('li');
    li.innerHTML = `<label><input type="checkbox" checked> <a></a></label>` +
      `<div class="meta"></div>`;
    li.querySelector('a').textContent = layer.title;
    li.querySelector('.meta').textContent =
      `${layer.id} · ${layer.geometry_type || ''} · ${layer.feature_count} features` +
      (layer.department ? ` · ${layer.department_name || layer.department}` : '');
    li.querySelector('input').addEventListener('change', e => {
      for (const s of styleIds(layer.id))
        map.setLayoutProperty(s, 'visibility', e.target.checked ? 'visible' : 'none');
    });
    li.querySelector('a').addEventListener('click', e => {
      e.preventDefault();
      if (layer.extent) map.fitBounds(layer.extent, { padding: 20 });
    });
    list.appendChild(li);
    legendOf(layer, li);
  }

  // Each layer's legend, read from the same style that draws it.
  async function legendOf(layer, li) {
    const r = await fetch(`/styles/${layer.id}/legend.json`);
    if (!r.ok) return;
    const legend = await r.json();
    const ul = document.createElement('ul');
    ul.className = 'legend';
    for (const entry of legend.entries) {
      const items = entry.items.filter(i => typeof i.colour === 'string');
      if (entry.field) {
        const head = document.createElement('li');
        head.className = 'field';
        head.textContent = entry.field;
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

  // A few pixels of slack, so a thin road or a small lamp is easy to hit; topmost wins.
  const near = p => map.queryRenderedFeatures([[p.x - 4, p.y - 4], [p.x + 4, p.y + 4]])
    .filter(f => f.source === 'onemap');
  map.on('mousemove', e => {
    map.getCanvas().style.cursor = near(e.point).length ? 'pointer' : '';
  });
  map.on('click', e => {
    const hits = near(e.point);
    if (!hits.length) return;
    const f = hits[0];
    const table = document.createElement('table');
    const rows = [['layer', f.sourceLayer], ...Object.entries(f.properties)];
    for (const [k, v] of rows) {
      const tr = table.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().textContent = v;
    }
    const div = document.createElement('div');
    div.className = 'popup';
    div.appendChild(table);
    new maplibregl.Popup({ maxWidth: '420px' }).setLngLat(e.lngLat).setDOMContent(div).addTo(map);
  });
})();

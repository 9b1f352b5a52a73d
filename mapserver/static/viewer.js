// The OneMap viewer: every layer of the catalog in one MapLibre style.
(async function () {
  const res = await fetch('/layers');
  const layers = (await res.json()).layers.filter(l => l.kind === 'vector' && l.feature_count > 0);
  const list = document.getElementById('layers');
  if (!layers.length) {
    list.innerHTML = '<li>No layers yet. Load one with <code>onemap ingest vector</code>.</li>';
    return;
  }
  const ids = layers.map(l => l.id).join(',');
  const map = new maplibregl.Map({ container: 'map', style: `/styles/${ids}/style.json`, hash: true });
  map.addControl(new maplibregl.NavigationControl());
  map.addControl(new maplibregl.ScaleControl());
  const first = layers[0];
  if (!location.hash && first.extent) map.fitBounds(first.extent, { padding: 20, animate: false });

  const styleIds = id => map.getStyle().layers.filter(s => s['source-layer'] === id).map(s => s.id);
  for (const layer of layers) {
    const li = document.createElement('li');
    li.innerHTML = `<label><input type="checkbox" checked> <a></a></label>` +
      `<div class="meta"></div>`;
    li.querySelector('a').textContent = layer.title;
    li.querySelector('.meta').textContent =
      `${layer.id} · ${layer.geometry_type || ''} · ${layer.feature_count} features` +
      (layer.department ? ` · ${layer.department}` : '');
    li.querySelector('input').addEventListener('change', e => {
      for (const s of styleIds(layer.id))
        map.setLayoutProperty(s, 'visibility', e.target.checked ? 'visible' : 'none');
    });
    li.querySelector('a').addEventListener('click', e => {
      e.preventDefault();
      if (layer.extent) map.fitBounds(layer.extent, { padding: 20 });
    });
    list.appendChild(li);
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

// Copy-paste snippets that show OneMap's maps in another system's page: one style URL
// (a base map's, or the chosen layers' over it), with the embedding key in it.
(async function () {
  const json = async url => { const r = await fetch(url); return r.ok ? r.json() : null; };
  const [catalog, based] = await Promise.all([json('/layers'), json('/basemaps')]);
  const layers = (catalog ? catalog.layers : []).filter(l => l.kind === 'vector' && l.feature_count > 0);
  const bases = (based ? based.basemaps : []).filter(b => b.kind !== 'labels');
  const chosen = { base: bases.length ? bases[0].id : '', layers: new Set() };

  const baseBox = document.getElementById('bases');
  for (const b of [...bases, { id: '', title: 'None' }]) {
    const label = document.createElement('label');
    label.innerHTML = '<input type="radio" name="base"> <span></span>';
    label.querySelector('span').textContent = b.title;
    const input = label.querySelector('input');
    input.value = b.id;
    input.checked = b.id === chosen.base;
    input.addEventListener('change', () => { chosen.base = b.id; show(); });
    baseBox.appendChild(label);
  }
  const list = document.getElementById('layers');
  for (const l of layers) {
    const li = document.createElement('li');
    li.innerHTML = '<label><input type="checkbox"> <span></span></label>';
    li.querySelector('span').textContent = `${l.title} (${l.id})`;
    li.querySelector('input').value = l.id;
    li.querySelector('input').addEventListener('change', e => {
      if (e.target.checked) chosen.layers.add(l.id); else chosen.layers.delete(l.id);
      show();
    });
    list.appendChild(li);
  }
  const keyBox = document.getElementById('key');
  keyBox.addEventListener('input', show);

  let preview = null;
  function styleUrls() {
    const key = keyBox.value.trim();
    const q = key ? `?key=${encodeURIComponent(key)}` : '';
    const urls = [];
    if (chosen.base) urls.push(`${location.origin}/basemaps/${chosen.base}/style.json${q}`);
    if (chosen.layers.size) urls.push(`${location.origin}/styles/${[...chosen.layers].join(',')}/style.json${q}`);
    return urls;
  }
  function show() {
    const urls = styleUrls();
    const [first, ...rest] = urls;
    const more = rest.map(u => `
map.on('load', async () => {
  // The layers over the base: their sources and style layers, added to the map.
  const style = await (await fetch('${u}')).json();
  for (const [id, source] of Object.entries(style.sources)) map.addSource('layers-' + id, source);
  for (const layer of style.layers)
    if (layer.type !== 'background') map.addLayer({ ...layer, source: 'layers-' + layer.source });
});`).join('');
    document.getElementById('maplibre').textContent = first ? `<link rel="stylesheet" href="${location.origin}/static/vendor/maplibre-gl.css">
<script src="${location.origin}/static/vendor/maplibre-gl.js"></script>
<div id="map" style="width: 100%; height: 480px"></div>
<script>
const map = new maplibregl.Map({
  container: 'map',
  style: '${first}',
});${more}
</script>` : 'Choose a base map or a layer.';
    document.getElementById('openlayers').textContent = first ? `<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/ol@10/ol.css">
<script src="https://cdn.jsdelivr.net/npm/ol@10/dist/ol.js"></script>
<script src="https://cdn.jsdelivr.net/npm/ol-mapbox-style@12/dist/olms.js"></script>
<div id="map" style="width: 100%; height: 480px"></div>
<script>
const map = new ol.Map({ target: 'map' });
${urls.map(u => `olms.apply(map, '${u}');`).join('\n')}
</script>` : '';
    // The same as a preview (without the key: this page reads as its own visitor).
    if (preview) preview.remove();
    preview = null;
    const plain = urls.map(u => u.replace(/\?key=.*$/, ''));
    if (!plain.length) return;
    const div = document.createElement('div');
    div.className = 'map';
    document.getElementById('preview').appendChild(div);
    const map = new maplibregl.Map({ container: div, style: plain[0], localIdeographFontFamily: false });
    map.on('load', async () => {
      for (const u of plain.slice(1)) {
        const style = await (await fetch(u)).json();
        for (const [id, source] of Object.entries(style.sources)) map.addSource('layers-' + id, source);
        for (const layer of style.layers)
          if (layer.type !== 'background') map.addLayer({ ...layer, source: 'layers-' + layer.source });
      }
    });
    preview = div;
    window.embedPreview = map;
  }
  show();
})();

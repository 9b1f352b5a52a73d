// Small maps on the catalog pages: the layer's own tiles for context, this page's
// features (data-geojson) highlighted on top.
// A page with no layer of its own (the catalog's records) draws on a plain ground.
const PLAIN = { version: 8, sources: {}, layers: [
  { id: 'ground', type: 'background', paint: { 'background-color': '#eef2f0' } }] };
for (const el of document.querySelectorAll('.map')) {
  const map = new maplibregl.Map({ container: el, style: el.dataset.tiles || PLAIN });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }));
  if (el.dataset.bounds) map.fitBounds(JSON.parse(el.dataset.bounds), { padding: 20, animate: false });
  if (el.dataset.geojson) {
    const url = new URL(el.dataset.geojson, location.href);
    url.searchParams.set('f', 'json');
    map.on('load', async () => {
      const data = await (await fetch(url)).json();
      map.addSource('page', { type: 'geojson', data });
      map.addLayer({ id: 'page-fill', source: 'page', type: 'fill', filter: ['==', ['geometry-type'], 'Polygon'],
        paint: { 'fill-color': '#ffd700', 'fill-opacity': 0.5 } });
      map.addLayer({ id: 'page-line', source: 'page', type: 'line',
        paint: { 'line-color': '#c01c28', 'line-width': 2.5 } });
      map.addLayer({ id: 'page-point', source: 'page', type: 'circle', filter: ['==', ['geometry-type'], 'Point'],
        paint: { 'circle-color': '#c01c28', 'circle-radius': 6, 'circle-stroke-color': '#fff', 'circle-stroke-width': 2 } });
      const features = data.type === 'Feature' ? [data] : data.features;
      const b = new maplibregl.LngLatBounds();
      const walk = c => (typeof c[0] === 'number' ? b.extend(c) : c.forEach(walk));
      for (const f of features) if (f.geometry) walk(f.geometry.coordinates);
      if (!b.isEmpty()) map.fitBounds(b, { padding: 40, maxZoom: 17, animate: false });
    });
  }
}

// The planner's page: pick a site, set the device's needs, see which poles can take it.
(async function () {
  const form = document.getElementById('needs');
  const answer = document.getElementById('answer');
  const models = await (await fetch('/registry/models')).json().catch(() => ({ models: [] }));
  for (const m of models.models || [])
    form.model.add(new Option(`${m.model} (${m.power_w} W${m.network ? ', ' + m.network : ''})`, m.id));
  form.model.addEventListener('change', () => {
    document.getElementById('manual').disabled = !!form.model.value;
  });

  const layers = (await (await fetch('/layers')).json()).layers;
  const carriers = layers.find(l => l.id === 'carriers');
  const ids = layers.filter(l => ['roads', 'carriers', 'fronts'].includes(l.id)).map(l => l.id);
  const map = new maplibregl.Map({
    container: 'map', hash: true,
    style: ids.length ? `/styles/${ids.join(',')}/style.json` : { version: 8, sources: {}, layers: [] } });
  window.onemapPlanner = map;
  map.addControl(new maplibregl.NavigationControl());
  map.addControl(new maplibregl.ScaleControl());
  if (!carriers) {
    answer.innerHTML = '<p>No carriers layer yet: load a ledger with <code>onemap ingest ledger</code>.</p>';
    return;
  }
  if (!location.hash && carriers.extent) map.fitBounds(carriers.extent, { padding: 20, animate: false });

  const empty = { type: 'FeatureCollection', features: [] };
  map.on('load', () => {
    map.addSource('plan', { type: 'geojson', data: empty });
    map.addLayer({ id: 'plan-radius', type: 'fill', source: 'plan', filter: ['==', 'role', 'radius'],
                   paint: { 'fill-color': '#1a5fb4', 'fill-opacity': 0.08 } });
    map.addLayer({ id: 'plan-poles', type: 'circle', source: 'plan', filter: ['!=', 'role', 'radius'],
                   paint: { 'circle-radius': ['case', ['==', ['get', 'role'], 'candidate'], 7, 4],
                            'circle-color': ['match', ['get', 'role'], 'candidate', '#26a269',
                                             'site', '#1a5fb4', '#9a9996'],
                            'circle-stroke-color': '#fff', 'circle-stroke-width': 1.5 } });
  });

  // The radius as a polygon, for the eye only (the server measures on the ellipsoid).
  function circle([lon, lat], m) {
    const k = 111320, ring = [];
    for (let i = 0; i <= 64; i++) {
      const a = 2 * Math.PI * i / 64;
      ring.push([lon + m * Math.sin(a) / (k * Math.cos(lat * Math.PI / 180)), lat + m * Math.cos(a) / k]);
    }
    return { type: 'Polygon', coordinates: [ring] };
  }
  const point = (c, props) => ({ type: 'Feature', geometry: { type: 'Point', coordinates: c }, properties: props });
  const text = s => String(s).replace(/[&<>"]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

  let site = null;
  async function lookup() {
    if (!site) return;
    const q = new URLSearchParams({ lon: site[0], lat: site[1], radius: form.radius.value });
    if (form.height.value) q.set('height', form.height.value);
    if (form.model.value) q.set('model', form.model.value);
    else for (const k of ['power_w', 'network', 'load_kg']) if (form[k].value) q.set(k, form[k].value);
    if (!form.model.value && form.needs_24h.checked) q.set('needs_24h', 'true');
    const res = await fetch(`/registry/reuse?${q}`);
    const body = await res.json();
    if (!res.ok) { answer.innerHTML = `<p class="error">${text(body.detail || res.statusText)}</p>`; return; }
    const features = [
      { type: 'Feature', geometry: circle(site, +form.radius.value), properties: { role: 'radius' } },
      point(site, { role: 'site' }),
      ...body.candidates.map(c => point([c.lon, c.lat], { role: 'candidate', code: c.code })),
    ];
    map.getSource('plan').setData({ type: 'FeatureCollection', features });
    const free = c => `${c.power_free_w} W, ${c.ports_free} port(s), slots ` +
      c.free_slots.map(s => `#${s.slot} ${s.height_min}–${s.height_max} m/${s.load_kg} kg`).join(', ');
    const me = await OneMap.session;
    // A signed-in department reserves a free slot; the pole's owner decides in the portal.
    const reserve = c => (me.signed_in ? c.free_slots.map(s =>
      `<button class="reserve" data-carrier="${text(c.code)}" data-slot="${s.slot}">Reserve slot #${s.slot}</button>`).join(' ')
      : `<small><a href="/login?next=/planner">Sign in</a> to reserve a slot</small>`);
    answer.innerHTML =
      `<h2>${body.candidates.length} pole(s) can take it</h2><ol class="poles">` +
      body.candidates.map(c => `<li><a href="/codes/${c.code}">${c.code}</a> ${text(c.kind)}, ` +
        `${Math.round(c.distance_m)} m<br><small>${text(free(c))}</small><br>${reserve(c)}</li>`).join('') + '</ol>' +
      (body.excluded.length ? `<h2>${body.excluded.length} excluded</h2><ul class="poles">` +
        body.excluded.slice(0, 30).map(e => `<li>${e.code}, ${Math.round(e.distance_m)} m: ` +
          `<small>${text(e.reasons.join('; '))}</small></li>`).join('') + '</ul>' : '');
  }
  answer.addEventListener('click', async e => {
    const b = e.target.closest('button.reserve');
    if (!b) return;
    b.disabled = true;
    const r = await OneMap.send('/registry/reservations', { method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ carrier: b.dataset.carrier, slot: +b.dataset.slot,
        ...(form.model.value ? { model: form.model.value } : {}), note: 'from the planner' }) });
    const done = await r.json();
    b.outerHTML = r.ok ? `<span class="reserved" data-reservation="${done.id}">Slot #${done.slot} requested: ` +
      `the owner decides (<a href="/portal#reservations">portal</a>)</span>`
      : `<span class="error">${text(done.detail || r.status)}</span>`;
  });
  map.on('click', e => { site = [e.lngLat.lng, e.lngLat.lat]; lookup(); });
  form.addEventListener('change', lookup);
})();

// The department portal: my layers (state, level, sharing, readers; edit, reclassify,
// withdraw, restore), publishing (upload, the job's progress and report, a preview map),
// sharing requests in and out, grants, pole reservations and the audit of my layers.
// Every change goes through OneMap.send (session.js), which adds the CSRF token.
(async function () {
  const $ = sel => document.querySelector(sel);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  };
  const when = t => (t ? new Date(t).toLocaleString() : '');
  const fill = (table, head, rows) => {
    const body = table.tBodies[0] || table.appendChild(el('tbody'));
    if (head && table.tHead) table.tHead.remove();
    if (head) table.prepend(el('thead', {}, el('tr', {}, head.map(h => el('th', {}, h)))));
    body.replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'hint' }, 'None.'))]));
  };
  async function send(url, method, body) {
    const r = await OneMap.send(url, { method, headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body) });
    if (!r.ok) { const p = await r.json().catch(() => ({})); alert(p.detail || `${r.status}`); return null; }
    return r.json();
  }

  const me = await OneMap.session;
  if (!me.signed_in) { $('#signed-out').hidden = false; return; }
  $('#body').hidden = false;
  let view = null;

  async function load() {
    const r = await fetch('/portal/overview', { headers: { Accept: 'application/json' } });
    view = await r.json();
    $('#level').replaceChildren(...view.levels.map(l => el('option', { value: l, selected: l === 'internal' }, l)));
    layers(); requests(); grants(); reservations(); audit();
    const ask = await (await fetch('/requestable')).json();
    fill($('#requestable'), ['Layer', 'Department', 'Level', 'Fields', 'Purpose', ''], ask.layers.map(l => {
      const purpose = el('input', { size: 30, placeholder: 'what it is for', 'data-ask': l.id });
      return el('tr', {}, el('td', {}, el('strong', {}, l.title), ` (${l.id})`), el('td', {}, l.department_name || l.department),
        el('td', {}, l.level), el('td', { class: 'hint' }, l.fields.map(f => f.title || f.name).join(', ')),
        el('td', {}, purpose), el('td', {}, el('button', { 'data-ask-button': l.id, onclick: async () => {
          if (await send('/requests', 'POST', { layer: l.id, purpose: purpose.value })) load();
        } }, 'Ask')));
    }));
  }

  function layers() {
    fill($('#layer-table'), null, view.layers.map(l => {
      const withdrawn = Boolean(l.withdrawn_at);
      const level = el('select', { 'data-level': l.id, onchange: async e => {
        if (await send(`/layers/${l.id}`, 'PATCH', { level: e.target.value })) load();
      } }, view.levels.map(v => el('option', { value: v, selected: v === l.level }, v)));
      const sharing = el('select', { 'data-sharing': l.id, onchange: async e => {
        if (await send(`/layers/${l.id}`, 'PATCH', { sharing_type: e.target.value })) load();
      } }, ['unconditional', 'conditional', 'not_shared'].map(v => el('option', { value: v, selected: v === l.sharing_type }, v)));
      const readers = l.readers.map(r => `${r.principal} (${r.department || '-'}): ${r.requests}`).join('; ');
      return el('tr', { 'data-layer': l.id },
        el('td', {}, el('a', { href: `/?layers=${l.id}` }, l.title), el('br'), el('span', { class: 'hint' }, l.id)),
        el('td', {}, l.kind), el('td', { class: withdrawn ? 'state-failed' : 'state-successful' }, withdrawn ? 'withdrawn' : 'live'),
        el('td', {}, level), el('td', {}, sharing), el('td', { class: 'num' }, l.feature_count ?? ''),
        el('td', { class: 'num' }, l.version), el('td', { class: 'hint' }, readers || 'nobody yet'),
        el('td', {}, el('button', { class: 'quiet', onclick: () => edit(l) }, 'Edit'),
          el('button', { class: 'quiet', 'data-withdraw': l.id, onclick: async () => {
            if (!withdrawn && !confirm(`Withdraw ${l.title}? It is served to no one until restored; nothing is deleted.`)) return;
            if (await send(`/layers/${l.id}/${withdrawn ? 'restore' : 'withdraw'}`, 'POST')) load();
          } }, withdrawn ? 'Restore' : 'Withdraw')));
    }));
  }

  function edit(l) {
    const box = $('#editor');
    const input = (name, value, size = 40) => el('input', { name, value: value || '', size });
    const rows = l.fields.map(f => el('tr', { 'data-field': f.name }, el('td', {}, f.name), el('td', {}, f.type),
      el('td', {}, input('title', f.title, 20)), el('td', {}, input('unit', f.unit, 6)),
      el('td', {}, input('description', f.description, 40))));
    const title = input('title', l.title), description = el('textarea', { rows: 2, cols: 60 }, l.description || '');
    const keywords = input('keywords', (l.keywords || []).join(', '));
    box.replaceChildren(el('h3', {}, `Edit ${l.id}`),
      el('p', {}, el('label', {}, 'Title ', title), el('label', {}, 'Keywords ', keywords)),
      el('p', {}, el('label', {}, 'Description ', description)),
      el('table', {}, el('thead', {}, el('tr', {}, ['Field', 'Type', 'Title', 'Unit', 'Description'].map(h => el('th', {}, h)))),
        el('tbody', {}, rows)),
      el('p', {}, el('button', { id: 'save-layer', onclick: async () => {
        const fields = {};
        for (const tr of rows) {
          fields[tr.dataset.field] = Object.fromEntries([...tr.querySelectorAll('input')].map(i => [i.name, i.value]));
        }
        const done = await send(`/layers/${l.id}`, 'PATCH', { title: title.value, description: description.value,
          keywords: keywords.value.split(',').map(k => k.trim()).filter(Boolean), fields });
        if (done) { box.hidden = true; load(); }
      } }, 'Save'), ' ', el('button', { class: 'quiet', onclick: () => { box.hidden = true; } }, 'Cancel')));
    box.hidden = false;
  }

  function requests() {
    const masks = l => el('select', { 'data-mask': l }, ['', 'hide', 'middle', 'full'].map(v =>
      el('option', { value: v }, v ? (v === 'hide' ? 'hidden' : `masked (${v})`) : 'shown')));
    fill($('#incoming'), ['Layer', 'Department', 'Purpose', 'Asked', 'State', ''], view.requests.incoming.map(r => {
      const layer = view.layers.find(l => l.id === r.layer_id);
      const choose = r.state === 'pending' && layer ? el('div', { class: 'hint' }, 'Fields: ',
        layer.fields.filter(f => !f.key).map(f => el('label', {}, `${f.title || f.name} `, masks(f.name)))) : null;
      const decide = async approve => {
        const body = { approve, hidden: [], masked: {} };
        if (choose) for (const s of choose.querySelectorAll('select')) {
          if (s.value === 'hide') body.hidden.push(s.dataset.mask);
          else if (s.value) body.masked[s.dataset.mask] = s.value;
        }
        if (!approve) body.reason = prompt('Why is it refused?') || '';
        if (await send(`/requests/${r.id}/decision`, 'POST', body)) load();
      };
      return el('tr', { 'data-request': r.id }, el('td', {}, r.layer_title), el('td', {}, r.department_id),
        el('td', {}, r.purpose, choose), el('td', {}, `${r.requested_by}, ${when(r.created_at)}`),
        el('td', { class: `state-${r.state}` }, r.state, r.reason ? ` (${r.reason})` : ''),
        el('td', {}, r.state === 'pending' ? [el('button', { 'data-approve': r.id, onclick: () => decide(true) }, 'Approve'),
          el('button', { class: 'quiet', 'data-refuse': r.id, onclick: () => decide(false) }, 'Refuse')] : ''));
    }));
    fill($('#outgoing'), ['Layer', 'Owner', 'Purpose', 'Asked', 'State', ''], view.requests.outgoing.map(r =>
      el('tr', { 'data-request': r.id }, el('td', {}, r.state === 'approved' ? el('a', { href: `/?layers=${r.layer_id}` }, r.layer_title) : r.layer_title),
        el('td', {}, r.owner), el('td', {}, r.purpose), el('td', {}, when(r.created_at)),
        el('td', { class: `state-${r.state}` }, r.state, r.reason ? ` (${r.reason})` : ''),
        el('td', {}, r.state === 'pending' ? el('button', { class: 'quiet', onclick: async () => {
          if (await send(`/requests/${r.id}`, 'DELETE')) load();
        } }, 'Withdraw') : ''))));
  }

  function grants() {
    const limits = g => [g.hidden_fields.length ? `hidden: ${g.hidden_fields.join(', ')}` : '',
      Object.keys(g.masked_fields || {}).length ? `masked: ${Object.keys(g.masked_fields).join(', ')}` : '',
      g.area_id ? `area ${g.area_id}` : '', g.filter ? `filter ${g.filter}` : ''].filter(Boolean).join('; ') || 'none';
    fill($('#given'), ['Layer', 'To', 'Rights', 'Limits'], view.grants.given.map(g => el('tr', {},
      el('td', {}, g.layer_pattern), el('td', {}, g.department_id || g.principal || 'everyone'),
      el('td', {}, [g.can_read && 'read', g.can_publish && 'publish'].filter(Boolean).join(', ')), el('td', {}, limits(g)))));
    fill($('#received'), ['Layers', 'Rights', 'Limits'], view.grants.received.map(g => el('tr', {},
      el('td', {}, g.layer_pattern), el('td', {}, [g.can_read && 'read', g.can_publish && 'publish'].filter(Boolean).join(', ')),
      el('td', {}, limits(g)))));
  }

  function reservations() {
    fill($('#reservation-table'), ['Pole', 'Slot', 'By', 'Owner', 'Note', 'Asked', 'State', ''], view.reservations.map(r =>
      el('tr', { 'data-reservation': r.id }, el('td', {}, el('a', { href: `/codes/${r.carrier}` }, r.carrier)), el('td', {}, r.slot),
        el('td', {}, r.department), el('td', {}, r.owner || ''), el('td', {}, r.note || ''), el('td', {}, when(r.requested_at)),
        el('td', { class: `state-${r.status}` }, r.status),
        el('td', {}, r.status === 'requested' && r.owner === me.department
          ? ['approve', 'refuse'].map(d => el('button', { class: d === 'refuse' ? 'quiet' : null, [`data-${d}-reservation`]: r.id,
            onclick: async () => { if (await send(`/registry/reservations/${r.id}`, 'POST', { decision: d })) load(); } },
          d === 'approve' ? 'Approve' : 'Refuse')) : ''))));
  }

  function audit() {
    fill($('#audit-table'), ['When', 'Who', 'Department', 'What', 'Layers', 'Status'], view.audit.map(a => el('tr', {},
      el('td', {}, when(a.at)), el('td', {}, a.principal), el('td', {}, a.department || ''),
      el('td', {}, `${a.method} ${a.path || a.action}`), el('td', {}, (a.layers || []).join(', ')), el('td', {}, a.status))));
  }

  // Publishing: a CSV's header becomes a table of field types to choose.
  $('#file').addEventListener('change', async e => {
    const f = e.target.files[0];
    const box = $('#field-types');
    box.hidden = true;
    if (!$('#layer-id').value && f) $('#layer-id').value = f.name.toLowerCase().replace(/\.[^.]*$/, '').replace(/[^a-z0-9_]+/g, '_').replace(/^[^a-z]+/, '').slice(0, 63);
    if (!f || !/\.csv$/i.test(f.name)) return;
    const head = (await f.slice(0, 64 * 1024).text()).split(/\r?\n/)[0].split(',').map(s => s.trim().replace(/^"|"$/g, ''));
    const types = ['', 'string', 'integer', 'number', 'boolean', 'date', 'datetime'];
    box.querySelector('tbody').replaceChildren(...head.filter(h => !/^(lon|lng|long|longitude|lat|latitude|x|y)$/i.test(h)).map(h =>
      el('tr', { 'data-field': h }, el('td', {}, h),
        el('td', {}, el('select', { name: 'type' }, types.map(t => el('option', { value: t }, t || 'as guessed')))),
        el('td', {}, el('input', { name: 'title', size: 16 })), el('td', {}, el('input', { name: 'unit', size: 6 })))));
    box.hidden = false;
  });

  $('#publish-form').addEventListener('submit', async e => {
    e.preventDefault();
    const form = new FormData(e.target);
    const fields = {};
    for (const tr of document.querySelectorAll('#field-types tbody tr')) {
      const said = Object.fromEntries([...tr.querySelectorAll('select, input')].map(i => [i.name, i.value]).filter(([, v]) => v));
      if (Object.keys(said).length) fields[tr.dataset.field] = said;
    }
    if (Object.keys(fields).length) form.set('fields', JSON.stringify(fields));
    for (const [k, v] of [...form.entries()]) if (v === '') form.delete(k);
    $('#publish-button').disabled = true;
    const r = await OneMap.send('/layers', { method: 'POST', body: form, headers: { Accept: 'application/json' } });
    $('#publish-button').disabled = false;
    const answer = await r.json();
    if (!r.ok) { alert(answer.detail || r.status); return; }
    watch(answer.id, form.get('layer'));
  });

  async function watch(id, layer) {
    $('#job').hidden = false;
    $('#job').dataset.job = id;
    $('#job-state').textContent = 'accepted';
    $('#preview').hidden = true;
    $('#job-report').replaceChildren();
    for (;;) {
      const job = await (await fetch(`/jobs/${id}`)).json();
      $('#job-state').textContent = job.state;
      $('#job-state').className = `state-${job.state}`;
      $('#job-progress').value = job.progress;
      $('#job-message').textContent = job.message || '';
      if (['successful', 'failed', 'dismissed'].includes(job.state)) { report(job, layer); break; }
      await new Promise(done => setTimeout(done, 500));
    }
  }

  function report(job, layer) {
    const res = job.result;
    if (!res) return;
    const counts = ['read', 'inserted', 'changed', 'unchanged', 'closed', 'repaired', 'rejected']
      .filter(k => res[k] !== undefined).map(k => `${k} ${res[k]}`).join(' · ');
    const issues = (res.issues || []).map(i => el('li', { 'data-issue': i.feature }, `feature ${i.feature}${i.id ? ` (${i.id})` : ''}: ${i.action}: ${i.reason}`));
    $('#job-report').replaceChildren(el('p', {}, counts), issues.length ? el('ul', { class: 'report' }, issues) : '',
      res.issues_total > (res.issues_shown || 0) ? el('p', { class: 'hint' }, `and ${res.issues_total - res.issues_shown} more`) : '');
    load();
    const box = $('#preview');
    box.hidden = false;
    const map = new maplibregl.Map({ container: box, style: `/styles/${layer}/style.json`, attributionControl: false });
    window.onemapPreview = map;
    map.once('load', async () => {
      const l = await (await fetch(`/layers/${layer}`)).json();
      if (l.extent) map.fitBounds([[l.extent[0], l.extent[1]], [l.extent[2], l.extent[3]]], { padding: 30, animate: false });
    });
  }

  load();
})();

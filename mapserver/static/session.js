// Who this browser is signed in as, on every page: an element with id "who" shows the
// principal and a sign-out button, or a sign-in link back to this page. Pages call
// OneMap.send(url, options) for changes: it adds the session's CSRF token.
window.OneMap = window.OneMap || {};
OneMap.session = fetch('/session', { headers: { Accept: 'application/json' } })
  .then(r => (r.ok ? r.json() : { signed_in: false })).catch(() => ({ signed_in: false }));
OneMap.send = async (url, options = {}) => {
  const s = await OneMap.session;
  const headers = new Headers(options.headers || {});
  if (s.csrf) headers.set(s.csrf_header || 'X-CSRF-Token', s.csrf);
  return fetch(url, { ...options, headers, credentials: 'same-origin' });
};
OneMap.session.then(s => {
  const box = document.getElementById('who');
  if (!box) return;
  box.textContent = '';
  const here = location.pathname + location.search + location.hash;
  if (!s.signed_in) {
    box.append('Public view · ');
    const a = document.createElement('a');
    a.href = '/login?next=' + encodeURIComponent(here);
    a.id = 'signin';
    a.textContent = 'Sign in';
    box.append(a);
    return;
  }
  const name = document.createElement('strong');
  name.textContent = s.principal;
  box.append('Signed in as ', name, s.department ? ` (${s.department})` : '', ' · ');
  const portal = document.createElement('a');
  portal.href = '/portal';
  portal.textContent = 'Portal';
  box.append(portal, ' · ');
  const out = document.createElement('a');
  out.href = '#';
  out.id = 'signout';
  out.textContent = 'Sign out';
  out.addEventListener('click', async e => {
    e.preventDefault();
    await OneMap.send('/logout', { method: 'POST', headers: { Accept: 'application/json' } });
    location.reload();
  });
  box.append(out);
});

// Recipe (a): plain fetch + FormData. No progress events (use XMLHttpRequest for those).
async function uploadToOss(file) {
  const res = await fetch(APP_SERVER + '/', { cache: 'no-store' });
  if (!res.ok) throw new Error('no token: HTTP ' + res.status);
  const t = await res.json();
  const form = new FormData();
  for (const [name, value] of Object.entries(t.fields)) form.append(name, value);
  form.append('key', t.dir + file.name);
  if (t.contentTypes) form.append('x-oss-content-type', file.type);
  form.append('file', file);                       // always last
  const oss = await fetch(t.url, { method: t.method, body: form });
  const body = await oss.text();
  if (oss.status === 203 || !oss.ok) {             // 203: stored, but the callback failed
    const xml = new DOMParser().parseFromString(body, 'application/xml');
    const text = tag => xml.getElementsByTagName(tag)[0]?.textContent ?? '';
    throw new Error(`HTTP ${oss.status} ${text('Code')}: ${text('Message')}`);
  }
  return JSON.parse(body);                         // the app server's callback answer
}

document.getElementById('file').addEventListener('change', async (ev) => {
  try {
    show('result', JSON.stringify(await uploadToOss(ev.target.files[0])));
  } catch (err) {
    show('error', err.message);
  }
});

// Recipe (c): Uppy 6 with @uppy/xhr-upload (ES module build). A pre-processor fetches a token
// per file and turns its fields into the file's form fields; onAfterResponse turns a 203
// (stored, callback failed) into an error, which Uppy would otherwise report as "expects a
// JSON response".
import { Uppy, XHRUpload } from '/npm/uppy6/dist/uppy.min.mjs';   // or from 'uppy' / '@uppy/...'

function ossError(xhr) {
  const xml = new DOMParser().parseFromString(xhr.responseText, 'application/xml');
  const text = tag => xml.getElementsByTagName(tag)[0]?.textContent ?? '';
  return new Error(`HTTP ${xhr.status} ${text('Code')}: ${text('Message')}`);
}

const uppy = new Uppy();
uppy.use(XHRUpload, {
  endpoint: '/',                                   // replaced per file below
  formData: true,
  fieldName: 'file',
  shouldRetry: (xhr) => xhr.status === 0 || xhr.status >= 500,   // never re-send after a 203
  onAfterResponse(xhr) {
    if (xhr.status === 203 || xhr.status >= 300) throw ossError(xhr);
  },
});
uppy.addPreProcessor(async (fileIDs) => {
  for (const id of fileIDs) {
    const file = uppy.getFile(id);
    const t = await (await fetch(APP_SERVER + '/', { cache: 'no-store' })).json();
    const fields = { ...t.fields, key: t.dir + file.name };
    if (t.contentTypes) fields['x-oss-content-type'] = file.type;
    uppy.setFileMeta(id, fields);
    uppy.setFileState(id, { xhrUpload: { endpoint: t.url, method: t.method,
                                         allowedMetaFields: Object.keys(fields) } });
  }
});
uppy.on('upload-success', (file, response) => show('result', JSON.stringify(response.body)));
uppy.on('upload-error', (file, error) => show('error', error.message));

document.getElementById('file').addEventListener('change', (ev) => {
  const file = ev.target.files[0];
  uppy.addFile({ name: file.name, type: file.type, data: file });
  uppy.upload();
});

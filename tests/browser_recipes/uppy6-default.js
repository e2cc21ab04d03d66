// Not a recipe: recipe (c) without its onAfterResponse, to show what Uppy 6 makes of a 203 on
// its own (an error about the answer not being JSON, which hides the CallbackFailed).
import { Uppy, XHRUpload } from '/npm/uppy6/dist/uppy.min.mjs';

const uppy = new Uppy();
uppy.use(XHRUpload, { endpoint: '/', formData: true, fieldName: 'file' });
uppy.addPreProcessor(async (fileIDs) => {
  for (const id of fileIDs) {
    const file = uppy.getFile(id);
    const t = await (await fetch(APP_SERVER + '/', { cache: 'no-store' })).json();
    const fields = { ...t.fields, key: t.dir + file.name };
    uppy.setFileMeta(id, fields);
    uppy.setFileState(id, { xhrUpload: { endpoint: t.url, method: t.method,
                                         allowedMetaFields: Object.keys(fields) } });
  }
});
uppy.on('upload-success', (file, response) => show('result', JSON.stringify(response)));
uppy.on('upload-error', (file, error) => show('error', error.message));
document.getElementById('file').addEventListener('change', (ev) => {
  const file = ev.target.files[0];
  uppy.addFile({ name: file.name, type: file.type, data: file });
  uppy.upload();
});

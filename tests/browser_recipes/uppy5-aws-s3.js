// Recipe (b): Uppy 5 with @uppy/aws-s3 and getUploadParameters. OSS PostObject has the shape
// of an S3 POST (url, fields, the file last). Uppy 5's own uploader counts any 2xx as success
// and drops the body, so a 203 (stored, callback failed) would look fine and the callback's
// answer would be lost: uploadPartBytes below reads both.
const { Uppy, AwsS3 } = window.Uppy;                // dist/uppy.min.js (or import from '@uppy/...')

function postToOss({ signature: { url, method = 'POST' }, body, onProgress, onComplete, signal }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    xhr.upload.addEventListener('progress', onProgress);
    signal?.addEventListener('abort', () => xhr.abort());
    xhr.onabort = () => reject(new DOMException('Aborted', 'AbortError'));
    xhr.onerror = () => reject(new Error('network error (or the bucket\'s CORS rule)'));
    xhr.onload = () => {
      if (xhr.status === 203 || xhr.status >= 300) {
        const xml = new DOMParser().parseFromString(xhr.responseText, 'application/xml');
        const text = tag => xml.getElementsByTagName(tag)[0]?.textContent ?? '';
        reject(new Error(`HTTP ${xhr.status} ${text('Code')}: ${text('Message')}`));
        return;
      }
      const etag = xhr.getResponseHeader('ETag');   // the bucket's CORS rule must expose ETag
      onComplete?.(etag);
      resolve({ ETag: etag, location: url, callback: JSON.parse(xhr.responseText || 'null') });
    };
    xhr.send(body);
  });
}

const uppy = new Uppy();
uppy.use(AwsS3, {
  shouldUseMultipart: false,
  async getUploadParameters(file) {
    const t = await (await fetch(APP_SERVER + '/', { cache: 'no-store' })).json();
    const fields = { ...t.fields, key: t.dir + file.name };
    if (t.contentTypes) fields['x-oss-content-type'] = file.type;
    return { method: t.method, url: t.url, fields };
  },
  uploadPartBytes: postToOss,
});
uppy.on('upload-success', (file, response) => show('result', JSON.stringify(response.body.callback)));
uppy.on('upload-error', (file, error) => show('error', error.message));

document.getElementById('file').addEventListener('change', (ev) => {
  const file = ev.target.files[0];
  uppy.addFile({ name: file.name, type: file.type, data: file });
  uppy.upload();
});

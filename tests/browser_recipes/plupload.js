// Recipe (d): plupload 2.3 (html5 runtime). A token is fetched before each upload starts; its
// fields become multipart_params. plupload reports a 203 (stored, callback failed) as
// FileUploaded, so that handler checks the status.
let token = null;
const uploader = new plupload.Uploader({
  runtimes: 'html5',
  browse_button: 'pick',
  url: APP_SERVER + '/',                           // replaced by the token's url
  multipart: true,
  file_data_name: 'file',
  send_file_name: false,                           // no extra "name" field in the form
});
uploader.bind('FilesAdded', async (up) => {
  token = await (await fetch(APP_SERVER + '/', { cache: 'no-store' })).json();
  up.start();
});
uploader.bind('BeforeUpload', (up, file) => {
  const params = { ...token.fields, key: token.dir + file.name };
  if (token.contentTypes) params['x-oss-content-type'] = file.type;
  up.setOption({ url: token.url, multipart_params: params });
});
function ossError(status, body) {
  const xml = new DOMParser().parseFromString(body || '', 'application/xml');
  const text = tag => xml.getElementsByTagName(tag)[0]?.textContent ?? '';
  return `HTTP ${status} ${text('Code')}: ${text('Message')}`;
}
uploader.bind('FileUploaded', (up, file, info) => {
  if (info.status === 203) show('error', ossError(info.status, info.response));
  else show('result', info.response);              // the app server's callback answer (JSON)
});
uploader.bind('Error', (up, err) => show('error', err.response ? ossError(err.status, err.response) : err.message));
uploader.init();

document.getElementById('file').addEventListener('change', (ev) => uploader.addFile(ev.target.files[0]));

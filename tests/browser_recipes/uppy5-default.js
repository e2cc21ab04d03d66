// Not a recipe: recipe (b) without its uploadPartBytes, to show why the recipe needs it
// (Uppy 5's own uploader reports a 203 as a success and drops the callback's answer).
const { Uppy, AwsS3 } = window.Uppy;
const uppy = new Uppy();
uppy.use(AwsS3, {
  shouldUseMultipart: false,
  async getUploadParameters(file) {
    const t = await (await fetch(APP_SERVER + '/', { cache: 'no-store' })).json();
    return { method: t.method, url: t.url, fields: { ...t.fields, key: t.dir + file.name } };
  },
});
uppy.on('upload-success', (file, response) => show('result', JSON.stringify(response)));
uppy.on('upload-error', (file, error) => show('error', error.message));
document.getElementById('file').addEventListener('change', (ev) => {
  const file = ev.target.files[0];
  uppy.addFile({ name: file.name, type: file.type, data: file });
  uppy.upload();
});

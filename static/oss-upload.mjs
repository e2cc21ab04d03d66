// OssUpload as an ES module: import OssUpload, { createClient } from './oss-upload.mjs'.
// The core is the classic script oss-upload.js (one global, also usable from file://); this
// module runs it once as a side-effect import and re-exports what it defined.
import './oss-upload.js';

const OssUpload = globalThis.OssUpload;
export default OssUpload;
export const { createClient, parseToken, parsePolicy, parseOssError, formatBytes, UploadError } = OssUpload;

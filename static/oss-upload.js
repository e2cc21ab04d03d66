/*
 * OssUpload: the browser core of a direct upload to Alibaba Cloud OSS (PostObject), without DOM.
 *
 *   var client = OssUpload.createClient({ tokenUrl: '/', ticket: function () { return t; } });
 *   client.getToken()                     -> Promise<token>   (reused while >= minLifetime s left)
 *   client.check(file, token)             -> null, or an OssUpload.UploadError (kind 'refused')
 *   client.upload(file, { name, key, signal, onProgress, token })
 *                                         -> Promise<{ key, status, body, json, token }>
 *   client.downloadUrl(key)               -> Promise<{ url, expires }>   (token.downloads only)
 *   client.forgetToken(), client.serverNow()
 *   OssUpload.parseOssError(xml), OssUpload.parsePolicy(base64), OssUpload.UploadError
 *
 * Every failure is an OssUpload.UploadError with .kind: 'refused' (size or type, before any
 * request), 'auth' (401), 'rate' (429, .retryAfter), 'server' (the app server refused a token or
 * a download URL), 'token' (an unusable token), 'network' (bucket or app server unreachable, or
 * CORS), 'oss' (an OSS error XML: .code, .ossMessage, .requestId), 'callback' (HTTP 203: the
 * object is stored but OSS's callback to the app server failed; .stored is true) and
 * 'cancelled' (the signal aborted the upload).
 *
 * Upload progress needs XMLHttpRequest (fetch cannot report it); JSON requests use fetch. A
 * classic script defining exactly one global, OssUpload, so it also runs from file://; the ES
 * module oss-upload.mjs re-exports it. No eval, no DOM writes: it works under a strict CSP.
 */
(function (root) {
  'use strict';

  if (root.OssUpload) { return; }   // loaded twice (a script tag and oss-upload.mjs): one core

  var DEFAULT_MIN_LIFETIME_S = 3;   // the sample refreshes its token when < 3 s remain

  /* ------------------------------------------------------------------ errors */

  function UploadError(kind, message, extra) {
    var e = new Error(message);
    Object.setPrototypeOf(e, UploadError.prototype);
    e.name = 'OssUploadError';
    e.kind = kind;
    e.status = 0;
    e.code = '';
    e.ossMessage = '';
    e.requestId = '';
    e.stored = false;
    if (extra) { Object.keys(extra).forEach(function (k) { e[k] = extra[k]; }); }
    return e;
  }
  UploadError.prototype = Object.create(Error.prototype);
  UploadError.prototype.constructor = UploadError;

  /* ------------------------------------------------------------------ parsing */

  function base64ToText(b64) {
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i += 1) { bytes[i] = bin.charCodeAt(i); }
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  }

  // What the browser must respect from the signed policy: the size range, the key prefix or
  // exact key, and the allowed content types (an "in" condition on $x-oss-content-type).
  function parsePolicy(policyB64) {
    var doc = JSON.parse(base64ToText(policyB64));
    var out = { minSize: 0, maxSize: Infinity, keyPrefix: null, exactKey: null, contentTypes: null,
      expiration: doc.expiration };
    var conditions = Array.isArray(doc.conditions) ? doc.conditions : [];
    conditions.forEach(function (c) {
      if (Array.isArray(c) && c.length === 3) {
        var op = String(c[0]).toLowerCase();
        var field = typeof c[1] === 'string' ? c[1].toLowerCase() : '';
        if (op === 'content-length-range') {
          out.minSize = Math.max(out.minSize, Number(c[1]) || 0);
          out.maxSize = Math.min(out.maxSize, Number(c[2]));
        } else if (op === 'starts-with' && field === '$key') {
          out.keyPrefix = String(c[2]);
        } else if (op === 'eq' && field === '$key') {
          out.exactKey = String(c[2]);
        } else if (op === 'in' && field === '$x-oss-content-type' && Array.isArray(c[2])) {
          out.contentTypes = c[2].map(String);
        }
      } else if (c && typeof c === 'object' && !Array.isArray(c)) {
        Object.keys(c).forEach(function (k) {
          if (k.toLowerCase() === 'key') { out.exactKey = String(c[k]); }
        });
      }
    });
    if (isNaN(out.maxSize)) { out.maxSize = Infinity; }
    return out;
  }

  // OSS error bodies: <Error><Code>…</Code><Message>…</Message><RequestId>…</RequestId>…</Error>.
  // Read with a regular expression (no DOMParser), so the core also runs in a worker.
  function parseOssError(text) {
    var out = { code: '', message: '', requestId: '', ec: '' };
    if (typeof text !== 'string' || text.indexOf('<') === -1) { return out; }
    function unescapeXml(s) {
      return s.replace(/<!\[CDATA\[([\s\S]*?)\]\]>/g, '$1').replace(/&(lt|gt|quot|apos|amp|#\d+|#x[0-9a-f]+);/gi,
        function (m, ent) {
          var map = { lt: '<', gt: '>', quot: '"', apos: '\'', amp: '&' };
          var low = ent.toLowerCase();
          if (map[low]) { return map[low]; }
          var n = low.charAt(1) === 'x' ? parseInt(low.slice(2), 16) : parseInt(low.slice(1), 10);
          return n > 0 && n <= 0x10ffff ? String.fromCodePoint(n) : m;
        });
    }
    function pick(tag) {
      var m = new RegExp('<' + tag + '>([\\s\\S]*?)</' + tag + '>').exec(text);
      return m ? unescapeXml(m[1]).trim() : '';
    }
    out.code = pick('Code');
    out.message = pick('Message');
    out.requestId = pick('RequestId');
    out.ec = pick('EC');
    return out;
  }

  function requireString(obj, name) {
    if (typeof obj[name] !== 'string' || obj[name] === '') {
      throw UploadError('token', 'The app server\u2019s token has no "' + name + '".');
    }
    return obj[name];
  }

  // A token as appserver.py issues it: url, method and fields (every form field but key and
  // file); an older server without "fields" gets them built from the sample's members.
  function parseToken(json) {
    if (!json || typeof json !== 'object') { throw UploadError('token', 'The app server did not send a token object.'); }
    var t = {
      raw: json,
      version: json['x-oss-signature-version'] ? 'v4' : 'v1',
      host: requireString(json, 'host'),
      policy: requireString(json, 'policy'),
      dir: typeof json.dir === 'string' ? json.dir : '',
      expire: parseInt(json.expire, 10),
      callback: typeof json.callback === 'string' && json.callback !== '' ? json.callback : null,
      downloads: json.downloads === true,
      securityToken: typeof json['x-oss-security-token'] === 'string' && json['x-oss-security-token'] !== ''
        ? json['x-oss-security-token'] : null
    };
    if (!isFinite(t.expire)) { throw UploadError('token', 'The app server\u2019s token has no valid "expire".'); }
    var target = typeof json.url === 'string' && json.url ? json.url : t.host;
    var url;
    try { url = new URL(target); } catch (e) { throw UploadError('token', 'The token\u2019s bucket URL is not a URL.'); }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw UploadError('token', 'The token\u2019s bucket URL must be http(s).');
    }
    t.url = url.href;
    t.method = typeof json.method === 'string' && json.method ? json.method.toUpperCase() : 'POST';
    if (json.fields && typeof json.fields === 'object') {
      t.fields = {};
      Object.keys(json.fields).forEach(function (k) {
        if (k !== 'key' && k !== 'file') { t.fields[k] = String(json.fields[k]); }
      });
    } else {
      t.fields = { policy: t.policy };
      if (t.version === 'v4') {
        ['x-oss-signature-version', 'x-oss-credential', 'x-oss-date', 'x-oss-signature'].forEach(function (k) {
          t.fields[k] = requireString(json, k);
        });
      } else {
        t.fields.OSSAccessKeyId = requireString(json, 'accessid');
        t.fields.Signature = requireString(json, 'signature');
      }
      if (t.securityToken) { t.fields['x-oss-security-token'] = t.securityToken; }
      t.fields.success_action_status = '200';
      if (t.callback) { t.fields.callback = t.callback; }
    }
    try { t.limits = parsePolicy(t.policy); } catch (e) {
      throw UploadError('token', 'The token\u2019s policy could not be decoded.');
    }
    if (typeof json.maxSize === 'number' && json.maxSize >= 0) {
      t.limits.maxSize = Math.min(t.limits.maxSize, json.maxSize);
    }
    // The policy's list is what OSS enforces, so it wins; the token's contentTypes covers a
    // server that lists them without pinning them in the policy.
    t.contentTypes = t.limits.contentTypes;
    if (t.contentTypes === null && Array.isArray(json.contentTypes)) {
      t.contentTypes = json.contentTypes.filter(function (x) { return typeof x === 'string'; });
    }
    t.sendContentType = t.contentTypes !== null;
    return t;
  }

  // "20231203T121212Z" -> Unix seconds (the V4 signing time, set by the server's clock).
  function parseV4Date(s) {
    var m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s || '');
    if (!m) { return NaN; }
    return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) / 1000;
  }

  function formatBytes(n) {
    var units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
    var fmt = new Intl.NumberFormat('en');
    if (n < 1024) { return fmt.format(n) + (n === 1 ? ' byte' : ' bytes'); }
    var i = 0;
    var v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    var s = (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + ' ' + units[i];
    return s + ' (' + fmt.format(n) + ' bytes)';
  }

  /* ------------------------------------------------------------------ client */

  function createClient(options) {
    var opts = options || {};
    var minLifetime = typeof opts.minLifetime === 'number' ? opts.minLifetime : DEFAULT_MIN_LIFETIME_S;
    var state = { token: null, url: null, pending: null, clockOffset: 0, clockSource: 'browser' };

    function value(v) { return typeof v === 'function' ? v() : v; }

    function tokenUrl() {
      var raw = value(opts.tokenUrl);
      var base = typeof location !== 'undefined' && /^https?:$/.test(location.protocol) ? location.href : undefined;
      var url;
      try { url = new URL(raw === undefined || raw === null ? '/' : String(raw), base); } catch (e) {
        throw UploadError('server', 'The app server URL is not a URL: ' + raw);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw UploadError('server', 'The app server URL must start with http:// or https://.');
      }
      return url;
    }

    function headers() {
      var ticket = value(opts.ticket);
      return ticket ? { Authorization: 'Bearer ' + ticket } : {};
    }

    function serverNow() { return Date.now() / 1000 + state.clockOffset; }

    function usable(t) { return !!t && t.expire >= serverNow() + minLifetime; }

    function retryAfterSeconds(response) {
      var v = (response.headers.get('Retry-After') || '').trim();
      if (/^\d+$/.test(v)) { return parseInt(v, 10); }
      var when = Date.parse(v);
      return isFinite(when) ? Math.max(1, Math.ceil(when / 1000 - serverNow())) : null;
    }

    // GET a JSON document from the app server; its 4xx/5xx become UploadErrors.
    function getJson(url, what) {
      var sentAt = Date.now();
      return fetch(url, { method: 'GET', cache: 'no-store', credentials: 'omit', redirect: 'error',
        headers: headers() })
        .catch(function () {
          throw UploadError('network', 'Could not reach the app server at ' + url + ' (is it running, and ' +
            'does it allow this page with Access-Control-Allow-Origin?).');
        })
        .then(function (response) {
          var receivedAt = Date.now();
          if (!response.ok) {
            return response.text().then(function (body) {
              var detail = '';
              try { detail = String(JSON.parse(body).Message || ''); } catch (e) { detail = ''; }
              var extra = { status: response.status, body: body, serverMessage: detail };
              if (response.status === 401) { throw UploadError('auth', 'Sign in to upload.', extra); }
              if (response.status === 429) {
                extra.retryAfter = retryAfterSeconds(response);
                throw UploadError('rate', 'Too many uploads started in a short time. ' + (extra.retryAfter !== null
                  ? 'Try again in ' + extra.retryAfter + ' second' + (extra.retryAfter === 1 ? '' : 's') + '.'
                  : 'Try again in a moment.'), extra);
              }
              throw UploadError('server', 'The app server refused ' + what + ': HTTP ' + response.status +
                (detail ? ' \u2013 ' + detail : '') + '.', extra);
            });
          }
          return response.json().catch(function () {
            throw UploadError('server', 'The app server\u2019s answer is not JSON.', { status: response.status });
          }).then(function (json) {
            return { json: json, response: response, midpoint: (sentAt + receivedAt) / 2000 };
          });
        });
    }

    /*
     * Remaining lifetime is measured against the server's clock, so a browser with a wrong clock
     * still works: the response's Date header (readable cross-origin only when the server exposes
     * it, as appserver.py does), else a V4 token's x-oss-date, else the browser's clock.
     */
    function fetchToken(url) {
      return getJson(url.href, 'a token').then(function (r) {
        var token = parseToken(r.json);
        var dateHeader = r.response.headers.get('Date');
        var serverTime = dateHeader ? Date.parse(dateHeader) / 1000 : NaN;
        var v4Date = parseV4Date(r.json['x-oss-date']);
        if (isFinite(serverTime)) {
          // Date has one-second resolution and is truncated: the real time is within [t, t+1).
          state.clockOffset = serverTime + 0.5 - r.midpoint;
          state.clockSource = 'server Date header';
        } else if (isFinite(v4Date)) {
          state.clockOffset = v4Date + 0.5 - r.midpoint;
          state.clockSource = 'token x-oss-date';
        } else {
          state.clockOffset = 0;
          state.clockSource = 'browser';
        }
        state.token = token;
        state.url = url.href;
        if (typeof opts.onToken === 'function') { opts.onToken(token); }
        return token;
      });
    }

    // A token with at least minLifetime seconds left; concurrent callers share one request.
    function getToken(getOpts) {
      var url;
      try { url = tokenUrl(); } catch (e) { return Promise.reject(e); }
      if (!(getOpts && getOpts.force) && state.url === url.href && usable(state.token)) {
        return Promise.resolve(state.token);
      }
      if (!state.pending || state.pendingUrl !== url.href) {
        var p = fetchToken(url);
        state.pending = p;
        state.pendingUrl = url.href;
        var clear = function () { if (state.pending === p) { state.pending = null; } };
        p.then(clear, clear);
      }
      return state.pending;
    }

    function forgetToken() { state.token = null; state.url = null; }

    // null when the file may be sent under this token, else why not (kind 'refused').
    function check(file, token) {
      var t = token || state.token;
      if (!t) { return null; }
      var type = file.type || '';
      if (t.contentTypes !== null && t.contentTypes.indexOf(type) === -1) {
        return UploadError('refused', 'Type ' + (type || 'unknown (the browser could not tell this file\u2019s type)') +
          ' is not allowed by the app server; ' + (t.contentTypes.length ? 'allowed: ' +
          t.contentTypes.join(', ') + '.' : 'it allows no type.'), { code: 'TypeNotAllowed' });
      }
      if (file.size > t.limits.maxSize) {
        return UploadError('refused', 'Too large: the file is ' + formatBytes(file.size) + '; the limit is ' +
          formatBytes(t.limits.maxSize) + '.', { code: 'TooLarge' });
      }
      if (file.size < t.limits.minSize) {
        return UploadError('refused', 'Too small: the file is ' + formatBytes(file.size) + '; the minimum is ' +
          formatBytes(t.limits.minSize) + '.', { code: 'TooSmall' });
      }
      return null;
    }

    function keyFor(file, token, uopts) {
      var key = typeof uopts.key === 'string' ? uopts.key
        : token.dir + (typeof uopts.name === 'string' ? uopts.name : file.name);
      var expanded = key.split('${filename}').join(file.name || '');
      var lim = token.limits;
      if (lim.keyPrefix !== null && expanded.indexOf(lim.keyPrefix) !== 0) {
        throw UploadError('refused', 'The object name ' + expanded + ' is outside the folder the policy allows (' +
          lim.keyPrefix + ').', { code: 'KeyNotAllowed' });
      }
      if (lim.exactKey !== null && expanded !== lim.exactKey) {
        throw UploadError('refused', 'The policy only allows the object name ' + lim.exactKey + '.',
          { code: 'KeyNotAllowed' });
      }
      return { key: key, expanded: expanded };
    }

    // Token fields in the server's order, then key, the type when the policy lists types, and
    // the file last (OSS ignores or rejects anything after "file").
    function buildForm(token, key, file) {
      var fd = new FormData();
      Object.keys(token.fields).forEach(function (k) { fd.append(k, token.fields[k]); });
      fd.append('key', key);
      if (token.sendContentType) { fd.append('x-oss-content-type', file.type); }
      fd.append('file', file, file.name);
      return fd;
    }

    function cancelled() { return UploadError('cancelled', 'The upload was cancelled.'); }

    function post(token, form, signal, onProgress) {
      return new Promise(function (resolve, reject) {
        if (signal && signal.aborted) { reject(cancelled()); return; }
        var xhr = new XMLHttpRequest();
        var onAbort = function () { xhr.abort(); };
        var done = function () { if (signal) { signal.removeEventListener('abort', onAbort); } };
        xhr.open(token.method, token.url, true);
        xhr.responseType = 'text';
        if (typeof onProgress === 'function') {
          xhr.upload.addEventListener('progress', function (ev) {
            if (ev.lengthComputable && ev.total > 0) { onProgress({ loaded: ev.loaded, total: ev.total }); }
          });
        }
        xhr.addEventListener('load', function () {
          done();
          resolve({ status: xhr.status, body: xhr.responseText, contentType: xhr.getResponseHeader('Content-Type') || '' });
        });
        var fail = function () {
          done();
          var origin = typeof location === 'undefined' || location.origin === 'null' ? 'null, a file:// page' : location.origin;
          reject(UploadError('network', 'Could not reach the bucket at ' + token.host + ', or it did not allow this ' +
            'page\u2019s origin (' + origin + '). The bucket needs a CORS rule that allows POST from this page\u2019s ' +
            'origin (see \u201cBucket CORS\u201d in the README).'));
        };
        xhr.addEventListener('error', fail);
        xhr.addEventListener('timeout', fail);
        xhr.addEventListener('abort', function () { done(); reject(cancelled()); });
        if (signal) { signal.addEventListener('abort', onAbort); }
        xhr.send(form);
      });
    }

    function result(res, key, token) {
      var out = { key: key, status: res.status, body: res.body || '', json: null, token: token };
      if (res.status === 200 || res.status === 201 || res.status === 204) {
        if (out.body.trim() !== '') { try { out.json = JSON.parse(out.body); } catch (e) { out.json = null; } }
        return out;
      }
      var err = parseOssError(res.body);
      var extra = { status: res.status, code: err.code, ossMessage: err.message, requestId: err.requestId,
        body: res.body, key: key };
      if (res.status === 203) {
        extra.stored = true;
        throw UploadError('callback', 'OSS stored ' + key + ', but its callback to the app server failed: ' +
          (err.code || 'CallbackFailed') + (err.message ? ': ' + err.message : '') + '.', extra);
      }
      // A refused signature or an expired policy: the next try must use a fresh token.
      if (res.status === 403 || err.code === 'InvalidAccessKeyId' || err.code === 'SignatureDoesNotMatch') { forgetToken(); }
      var msg = (err.code || 'HTTP ' + res.status) + (err.message ? ': ' + err.message : '') + ' (HTTP ' + res.status + ')' +
        (err.requestId ? ', request ID ' + err.requestId : '') + '.';
      if (err.code === 'AccessForbidden' && /CORS/i.test(err.message)) {
        msg += ' The bucket needs a CORS rule that allows POST from this page\u2019s origin.';
      }
      throw UploadError('oss', msg, extra);
    }

    // Gets (or reuses) a token, checks the file, posts it with progress; abort with uopts.signal.
    function upload(file, uploadOpts) {
      var uopts = uploadOpts || {};
      var signal = uopts.signal || null;
      var tokenPromise = uopts.token ? Promise.resolve(uopts.token) : getToken();
      return tokenPromise.then(function (token) {
        if (signal && signal.aborted) { throw cancelled(); }
        var refused = check(file, token);
        if (refused) { throw refused; }
        var names = keyFor(file, token, uopts);
        if (typeof uopts.onStart === 'function') { uopts.onStart({ key: names.expanded, token: token }); }
        return post(token, buildForm(token, names.key, file), signal, uopts.onProgress).then(function (res) {
          return result(res, names.expanded, token);
        });
      });
    }

    // A presigned GET for an uploaded object (when the token says downloads: true).
    function downloadUrl(key) {
      var url;
      try { url = tokenUrl(); } catch (e) { return Promise.reject(e); }
      url = new URL('download-url', url.href.replace(/[^/]*$/, ''));
      url.search = '?key=' + encodeURIComponent(key);
      return getJson(url.href, 'a download link').then(function (r) {
        if (!r.json || typeof r.json.url !== 'string') { throw UploadError('server', 'No download URL in the answer.'); }
        var href = new URL(r.json.url);
        if (href.protocol !== 'https:' && href.protocol !== 'http:') { throw UploadError('server', 'The download URL is not http(s).'); }
        return { url: href.href, expires: Number(r.json.expires) };
      });
    }

    return {
      getToken: getToken,
      forgetToken: forgetToken,
      check: check,
      upload: upload,
      downloadUrl: downloadUrl,
      buildForm: buildForm,
      serverNow: serverNow,
      clockSource: function () { return state.clockSource; },
      currentToken: function () { return usable(state.token) ? state.token : null; },
      lastToken: function () { return state.token; }
    };
  }

  root.OssUpload = Object.freeze({
    version: '1',
    createClient: createClient,
    parseToken: parseToken,
    parsePolicy: parsePolicy,
    parseOssError: parseOssError,
    formatBytes: formatBytes,
    UploadError: UploadError
  });
}(typeof globalThis !== 'undefined' ? globalThis : self));

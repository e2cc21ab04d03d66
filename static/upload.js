/*
 * Browser client for direct uploads to Alibaba Cloud OSS (PostObject).
 *
 * Flow: GET a token from the app server (fetch) -> POST a multipart form straight to the bucket
 * host (XMLHttpRequest, for upload progress) -> OSS stores the object, calls the app server back,
 * and relays the app server's JSON answer (200) or a CallbackFailed XML (203).
 *
 * Sign-in: the user's main application links here with #ticket=<ticket>. The ticket is moved
 * from the address bar into sessionStorage and sent as "Authorization: Bearer <ticket>" with
 * every token request. A 401 shows one "Sign in to upload" notice and disables the controls.
 *
 * A classic script: everything sits in this IIFE, so it leaves no globals and also runs from
 * file:// (where Chromium refuses ES modules). No eval, no inline handlers, no innerHTML, no
 * synchronous XHR, no inline styles: the page works under a strict Content-Security-Policy.
 */
(function () {
  'use strict';

  /* ------------------------------------------------------------------ constants */

  // The sample refreshes its token when fewer than 3 seconds remain.
  var EXPIRY_BUFFER_S = 3;
  // The sample's random-name alphabet (no look-alike characters) and length.
  var RANDOM_ALPHABET = 'ABCDEFGHJKMNPQRSTWXYZabcdefhijkmnprstwxyz2345678';
  var RANDOM_LENGTH = 10;
  // How many files upload at the same time.
  var PARALLEL_UPLOADS = 3;
  // Where the sign-in ticket is kept for this tab (sessionStorage: gone when the tab closes).
  var TICKET_STORAGE_KEY = 'oss-upload-ticket';
  // A ticket goes into an HTTP header: printable ASCII without spaces, and not absurdly long.
  var TICKET_SYNTAX = /^[\x21-\x7e]{1,1024}$/;
  var CORS_HINT = 'The bucket needs a CORS rule that allows POST from this page\u2019s origin ' +
    '(see \u201cBucket CORS\u201d in the README).';

  /* ------------------------------------------------------------------ elements */

  function byId(id) {
    var el = document.getElementById(id);
    if (!el) { throw new Error('upload.js: missing element #' + id); }
    return el;
  }

  var els = {
    serverField: byId('server-field'),
    serverUrl: byId('server-url'),
    serverConnect: byId('server-connect'),
    bucketHost: byId('bucket-host'),
    uploadDir: byId('upload-dir'),
    sizeLimit: byId('size-limit'),
    sigVersion: byId('sig-version'),
    contentTypes: byId('content-types'),
    signin: byId('signin'),
    signinDetail: byId('signin-detail'),
    acceptList: byId('accept-list'),
    dropzone: byId('dropzone'),
    chooseFiles: byId('choose-files'),
    fileInput: byId('file-input'),
    startUpload: byId('start-upload'),
    clearFinished: byId('clear-finished'),
    status: byId('status'),
    fileList: byId('file-list'),
    announcer: byId('announcer'),
    rowTemplate: byId('file-row')
  };

  /* ------------------------------------------------------------------ formatting */

  var numberFormat = new Intl.NumberFormat('en');

  function formatBytes(n) {
    var units = ['bytes', 'KB', 'MB', 'GB', 'TB'];
    if (n < 1024) { return numberFormat.format(n) + (n === 1 ? ' byte' : ' bytes'); }
    var i = 0;
    var v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + ' ' + units[i];
  }

  // "12.3 MB (12,912,345 bytes)": the exact count matters when a file is just over a limit.
  function formatBytesExact(n) {
    if (n < 1024) { return formatBytes(n); }
    return formatBytes(n) + ' (' + numberFormat.format(n) + ' bytes)';
  }

  function formatRate(bytesPerSecond) {
    if (!isFinite(bytesPerSecond) || bytesPerSecond <= 0) { return ''; }
    return formatBytes(Math.round(bytesPerSecond)).replace(/ bytes?$/, ' B') + '/s';
  }

  function plural(n, word) { return n + ' ' + word + (n === 1 ? '' : 's'); }

  /* ------------------------------------------------------------------ server URL */

  var servedByAppServer = location.protocol === 'http:' || location.protocol === 'https:';

  // A page served over http(s) always uses its own origin, whatever the URL or the page says:
  // a crafted link cannot point a user's files at someone else's bucket. Only a page opened from
  // disk (no origin of its own) takes the server URL from the field.
  function tokenUrl() {
    if (servedByAppServer) { return location.origin + '/'; }
    var raw = els.serverUrl.value.trim();
    var url;
    try { url = new URL(raw); } catch (e) { throw new UserError('Enter the app server URL, e.g. http://127.0.0.1:8080.'); }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new UserError('The app server URL must start with http:// or https://.');
    }
    return url.href;
  }

  function UserError(message) { this.name = 'UserError'; this.message = message; }
  UserError.prototype = Object.create(Error.prototype);
  UserError.prototype.constructor = UserError;

  // The app server answered 401: no ticket, or one it does not accept (malformed, expired).
  function SignInError(detail) {
    this.name = 'SignInError';
    this.message = 'Sign in to upload.';
    this.detail = detail || '';
  }
  SignInError.prototype = Object.create(Error.prototype);
  SignInError.prototype.constructor = SignInError;

  /* ------------------------------------------------------------------ sign-in ticket */

  var auth = { ticket: null, signedOut: false };

  function storeTicket(ticket) {
    try {
      if (ticket) { sessionStorage.setItem(TICKET_STORAGE_KEY, ticket); } else { sessionStorage.removeItem(TICKET_STORAGE_KEY); }
    } catch (e) { /* storage disabled: the ticket lives as long as the page */ }
  }

  function storedTicket() {
    try { return sessionStorage.getItem(TICKET_STORAGE_KEY); } catch (e) { return null; }
  }

  // Takes "ticket" out of the fragment (#ticket=...), keeps it for this tab, and rewrites the
  // address bar without it (same path and query; other fragment parameters stay), so it does
  // not linger in the history, in bookmarks or in a copied link. True when there was one.
  function takeTicketFromFragment() {
    var fragment = location.hash.replace(/^#/, '');
    if (fragment === '') { return false; }
    var params = new URLSearchParams(fragment);
    if (!params.has('ticket')) { return false; }
    var ticket = (params.get('ticket') || '').trim();
    params.delete('ticket');
    var rest = params.toString();
    try {
      history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    } catch (e) { /* the ticket is still taken; only the address bar keeps it */ }
    if (TICKET_SYNTAX.test(ticket)) {
      auth.ticket = ticket;
      storeTicket(ticket);
    }
    return true;
  }

  function loadTicket() {
    if (!takeTicketFromFragment() || !auth.ticket) {
      var kept = storedTicket();
      auth.ticket = kept && TICKET_SYNTAX.test(kept) ? kept : null;
    }
  }

  function tokenRequestHeaders() {
    return auth.ticket ? { Authorization: 'Bearer ' + auth.ticket } : {};
  }

  // One notice for the whole page (not an error per file); the upload controls are off meanwhile.
  function setSignedOut(signedOut, detail) {
    auth.signedOut = signedOut;
    els.signin.hidden = !signedOut;
    els.signinDetail.textContent = signedOut ? detail : '';
    els.chooseFiles.disabled = signedOut;
    els.fileInput.disabled = signedOut;
    els.dropzone.classList.toggle('is-disabled', signedOut);
    if (signedOut) { els.dropzone.setAttribute('aria-disabled', 'true'); } else { els.dropzone.removeAttribute('aria-disabled'); }
    if (!signedOut) {          // files that waited for the sign-in are simply ready again
      items.forEach(function (it) { if (it.state === 'ready' && it.message) { setState(it, 'ready', ''); } });
    }
    refresh();
  }

  function signInDetail(hadTicket, serverMessage) {
    var text = hadTicket
      ? 'Your sign-in for this page was not accepted; it may have expired. '
      : 'This page needs a sign-in from the application that sent you here. ';
    text += 'Open the upload page from that application again.';
    // Why a ticket was refused (expired, malformed) helps; "no ticket" would only repeat the above.
    if (hadTicket && serverMessage) { text += ' (The app server said: ' + serverMessage + ')'; }
    return text;
  }

  // Retry-After is seconds or an HTTP date (RFC 9110 10.2.3); null when absent or unreadable
  // (cross-origin, it is readable only when the server lists it in Access-Control-Expose-Headers).
  function retryAfterSeconds(response) {
    var value = (response.headers.get('Retry-After') || '').trim();
    if (/^\d+$/.test(value)) { return parseInt(value, 10); }
    var when = Date.parse(value);
    if (!isFinite(when)) { return null; }
    return Math.max(1, Math.ceil(when / 1000 - serverNow()));
  }

  /* ------------------------------------------------------------------ token + policy */

  function base64ToText(b64) {
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i += 1) { bytes[i] = bin.charCodeAt(i); }
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  }

  // Reads what the browser must respect from the signed policy: the size range, the key prefix
  // and the allowed content types (an "in" condition on $x-oss-content-type).
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
          // OSS compares the posted x-oss-content-type with each entry exactly. Two such
          // conditions must both hold: keep what is in both lists.
          var listed = c[2].map(String);
          out.contentTypes = out.contentTypes === null ? listed
            : out.contentTypes.filter(function (t) { return listed.indexOf(t) !== -1; });
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

  function requireString(obj, name) {
    if (typeof obj[name] !== 'string' || obj[name] === '') {
      throw new UserError('The app server\u2019s token has no "' + name + '".');
    }
    return obj[name];
  }

  // Validates one token as issued by appserver.py (V1 or V4, optional STS and callback).
  function parseToken(json) {
    if (!json || typeof json !== 'object') { throw new UserError('The app server did not send a token object.'); }
    var t = {
      version: json['x-oss-signature-version'] ? 'v4' : 'v1',
      accessId: requireString(json, 'accessid'),
      host: requireString(json, 'host'),
      policy: requireString(json, 'policy'),
      dir: typeof json.dir === 'string' ? json.dir : '',
      expire: parseInt(json.expire, 10),
      callback: typeof json.callback === 'string' && json.callback !== '' ? json.callback : null,
      securityToken: typeof json['x-oss-security-token'] === 'string' && json['x-oss-security-token'] !== ''
        ? json['x-oss-security-token'] : null
    };
    if (!isFinite(t.expire)) { throw new UserError('The app server\u2019s token has no valid "expire".'); }
    var hostUrl;
    try { hostUrl = new URL(t.host); } catch (e) { throw new UserError('The token\u2019s bucket host is not a URL.'); }
    if (hostUrl.protocol !== 'https:' && hostUrl.protocol !== 'http:') {
      throw new UserError('The token\u2019s bucket host must be an http(s) URL.');
    }
    t.postUrl = hostUrl.href;
    if (t.version === 'v4') {
      t.v4 = {
        signatureVersion: requireString(json, 'x-oss-signature-version'),
        credential: requireString(json, 'x-oss-credential'),
        date: requireString(json, 'x-oss-date'),
        signature: requireString(json, 'x-oss-signature')
      };
    } else {
      t.signature = requireString(json, 'signature');
    }
    try { t.limits = parsePolicy(t.policy); } catch (e) {
      throw new UserError('The token\u2019s policy could not be decoded.');
    }
    // The policy's list is what OSS enforces, so it wins; the token's "contentTypes" covers a
    // server that lists them without pinning them in the policy.
    t.sendContentType = t.limits.contentTypes !== null;
    t.contentTypes = t.limits.contentTypes;
    if (t.contentTypes === null && Array.isArray(json.contentTypes)) {
      t.contentTypes = json.contentTypes.filter(function (x) { return typeof x === 'string'; });
    }
    return t;
  }

  // "20231203T121212Z" -> Unix seconds (the V4 signing time, set by the server's clock).
  function parseV4Date(s) {
    var m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
    if (!m) { return NaN; }
    return Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) / 1000;
  }

  var tokenState = {
    token: null,
    clockOffset: 0,        // server clock minus browser clock, seconds
    clockSource: 'browser',
    pending: null,
    serverKey: null        // which server URL the cached token came from
  };

  function serverNow() { return Date.now() / 1000 + tokenState.clockOffset; }

  function tokenUsable(t) { return !!t && t.expire >= serverNow() + EXPIRY_BUFFER_S; }

  /*
   * Remaining lifetime is measured against the server's clock, so a browser with a wrong clock
   * still works. The best source is the response's Date header. A page served by the app server
   * can always read it (same origin). From file:// the token request is cross-origin, and Date
   * is NOT a CORS-safelisted response header: fetch() only exposes it when the app server sends
   * `Access-Control-Expose-Headers: Date` (appserver.py does; a proxy in front of it, or another
   * token server, may not). Without it we fall back to x-oss-date of a V4 token
   * (its signing time, taken from the server clock), and without that to the browser's clock.
   * In that last case a token fetched for a file is always used for that file, so a browser
   * clock far ahead of the server's costs an extra token request per file, never a loop.
   */
  function fetchToken() {
    var url = tokenUrl();
    var sentAt = Date.now();
    return fetch(url, { method: 'GET', cache: 'no-store', credentials: 'omit', redirect: 'error',
      headers: tokenRequestHeaders() })
      .catch(function () {
        throw new UserError('Could not reach the app server at ' + url + ' (is it running, and does it ' +
          'allow this page with Access-Control-Allow-Origin?).');
      })
      .then(function (response) {
        var receivedAt = Date.now();
        if (!response.ok) {
          return response.text().then(function (body) {
            var detail = '';
            try { detail = String(JSON.parse(body).Message || ''); } catch (e) { detail = ''; }
            if (response.status === 401) { throw new SignInError(detail); }
            if (response.status === 429) {
              var wait = retryAfterSeconds(response);
              throw new UserError('Too many uploads started in a short time. ' + (wait !== null
                ? 'Try again in ' + plural(wait, 'second') + '.' : 'Try again in a moment.'));
            }
            throw new UserError('The app server refused a token: HTTP ' + response.status +
              (detail ? ' \u2013 ' + detail : '') + '.');
          });
        }
        return response.json().catch(function () {
          throw new UserError('The app server\u2019s answer is not JSON.');
        }).then(function (json) {
          var token = parseToken(json);
          var midpoint = (sentAt + receivedAt) / 2000;
          var dateHeader = response.headers.get('Date');
          var serverTime = dateHeader ? Date.parse(dateHeader) / 1000 : NaN;
          if (isFinite(serverTime)) {
            // Date has one-second resolution and is truncated: the real time is within [t, t+1).
            tokenState.clockOffset = serverTime + 0.5 - midpoint;
            tokenState.clockSource = 'server Date header';
          } else if (token.v4 && isFinite(parseV4Date(token.v4.date))) {
            tokenState.clockOffset = parseV4Date(token.v4.date) + 0.5 - midpoint;
            tokenState.clockSource = 'token x-oss-date';
          } else {
            tokenState.clockOffset = 0;
            tokenState.clockSource = 'browser';
          }
          tokenState.token = token;
          tokenState.serverKey = url;
          if (auth.signedOut) { setSignedOut(false); }
          showToken(token);
          return token;
        });
      });
  }

  // Returns a token with at least EXPIRY_BUFFER_S seconds left; checked before every file.
  // Concurrent callers share one request.
  function ensureToken() {
    var key;
    try { key = tokenUrl(); } catch (e) { return Promise.reject(e); }
    if (tokenState.serverKey === key && tokenUsable(tokenState.token)) {
      return Promise.resolve(tokenState.token);
    }
    if (!tokenState.pending) {
      tokenState.pending = fetchToken().then(function (t) {
        tokenState.pending = null;
        return t;
      }, function (err) {
        tokenState.pending = null;
        throw err;
      });
    }
    return tokenState.pending;
  }

  function forgetToken() { tokenState.token = null; }

  function showToken(t) {
    els.bucketHost.textContent = t.host;
    els.uploadDir.textContent = t.dir || '(bucket root)';
    var lim = t.limits;
    if (lim.maxSize === Infinity) {
      els.sizeLimit.textContent = 'none in the policy';
    } else {
      els.sizeLimit.textContent = formatBytesExact(lim.maxSize);
    }
    els.contentTypes.textContent = t.contentTypes === null ? 'any'
      : t.contentTypes.length ? t.contentTypes.join(', ') : 'none';
    syncAcceptAttribute();
    els.sigVersion.textContent = t.version === 'v4' ? 'V4 (OSS4-HMAC-SHA256)' : 'V1 (HMAC-SHA1)';
    if (t.securityToken) { els.sigVersion.textContent += ', STS'; }
    if (t.callback) { els.sigVersion.textContent += ', with callback'; }
    // Re-check files that were waiting for the limits to be known.
    items.forEach(function (item) {
      if (item.state === 'ready') { applyLocalChecks(item, t); }
    });
    refresh();
  }

  /* ------------------------------------------------------------------ object names */

  function randomString(length) {
    var out = '';
    var n = RANDOM_ALPHABET.length;
    var limit = 256 - (256 % n);   // rejection sampling keeps the choice uniform
    var buf = new Uint8Array(length * 2);
    while (out.length < length) {
      crypto.getRandomValues(buf);
      for (var i = 0; i < buf.length && out.length < length; i += 1) {
        if (buf[i] < limit) { out += RANDOM_ALPHABET.charAt(buf[i] % n); }
      }
    }
    return out;
  }

  // As in the sample: from the last "." (inclusive), or nothing.
  function suffixOf(filename) {
    var pos = filename.lastIndexOf('.');
    return pos !== -1 ? filename.substring(pos) : '';
  }

  function nameMode() {
    var checked = document.querySelector('input[name="myradio"]:checked');
    return checked ? checked.value : 'local_name';
  }

  // The key sent to OSS, and the name shown to the user (OSS expands ${filename} itself).
  function objectKeyFor(item, token) {
    var key;
    if (nameMode() === 'random_name') {
      if (!item.randomPart) { item.randomPart = randomString(RANDOM_LENGTH); }
      key = token.dir + item.randomPart + suffixOf(item.file.name);
    } else {
      key = token.dir + '${filename}';
    }
    return { key: key, display: key.split('${filename}').join(item.file.name) };
  }

  /* ------------------------------------------------------------------ accept list */

  function acceptTokens() {
    return els.acceptList.value.split(',').map(function (s) { return s.trim().toLowerCase(); })
      .filter(function (s) { return s !== ''; });
  }

  function typeAllowed(file) {
    var tokens = acceptTokens();
    if (tokens.length === 0) { return true; }
    var name = file.name.toLowerCase();
    var type = (file.type || '').toLowerCase();
    return tokens.some(function (tok) {
      if (tok.charAt(0) === '.') { return name.length > tok.length && name.slice(-tok.length) === tok; }
      if (/\/\*$/.test(tok)) { return type.indexOf(tok.slice(0, -1)) === 0; }
      return type === tok;
    });
  }

  // The file chooser offers what the user's list allows, or else what the app server allows.
  function syncAcceptAttribute() {
    var tokens = acceptTokens();
    var serverTypes = tokenState.token ? tokenState.token.contentTypes : null;
    if (tokens.length) { els.fileInput.setAttribute('accept', tokens.join(',')); }
    else if (serverTypes && serverTypes.length) { els.fileInput.setAttribute('accept', serverTypes.join(',')); }
    else { els.fileInput.removeAttribute('accept'); }
  }

  /* ------------------------------------------------------------------ file items */

  var items = [];
  var nextId = 1;
  var active = 0;

  // States: ready -> queued -> uploading -> done | callback-failed | failed | cancelled; refused.
  var STATE_TEXT = {
    ready: 'Ready',
    queued: 'Waiting\u2026',
    uploading: 'Uploading\u2026',
    done: 'Uploaded',
    'callback-failed': 'Uploaded, but the callback to the app server failed',
    failed: 'Failed',
    cancelled: 'Cancelled',
    refused: 'Refused'
  };

  function createItem(file) {
    var frag = els.rowTemplate.content.cloneNode(true);
    var li = frag.querySelector('li');
    var item = {
      id: nextId++,
      file: file,
      state: 'ready',
      message: '',
      xhr: null,
      randomPart: null,
      attempt: 0,               // bumped by every start and by a cancel before the request
      cancelRequested: false,
      li: li,
      nameEl: li.querySelector('.file-name'),
      sizeEl: li.querySelector('.file-size'),
      progressEl: li.querySelector('progress'),
      rateEl: li.querySelector('.file-rate'),
      stateEl: li.querySelector('.file-state'),
      actionEl: li.querySelector('.file-action'),
      removeEl: li.querySelector('.file-remove'),
      resultEl: li.querySelector('.file-result'),
      resultTextEl: li.querySelector('.file-result-text'),
      detailEl: li.querySelector('.file-detail')
    };
    li.id = 'file-' + item.id;
    li.dataset.fileName = file.name;
    item.nameEl.textContent = file.name;
    item.nameEl.title = file.name;
    item.sizeEl.textContent = formatBytes(file.size);
    item.progressEl.id = 'progress-' + item.id;
    item.progressEl.setAttribute('aria-label', 'Upload progress of ' + file.name);
    item.actionEl.setAttribute('aria-label', 'Cancel ' + file.name);
    item.removeEl.setAttribute('aria-label', 'Remove ' + file.name);
    item.actionEl.addEventListener('click', function () { onItemAction(item); });
    item.removeEl.addEventListener('click', function () { removeItem(item); });
    return item;
  }

  // Type and size checks that need no network; size needs the policy of a known token.
  function applyLocalChecks(item, token) {
    if (!typeAllowed(item.file)) {
      setState(item, 'refused', 'Type ' + (item.file.type || 'unknown') + ' is not in the allowed list (' +
        acceptTokens().join(', ') + ').');
      return false;
    }
    if (token) {
      if (token.contentTypes !== null && token.contentTypes.indexOf(item.file.type) === -1) {
        setState(item, 'refused', 'Type ' + (item.file.type ||
          'unknown (the browser could not tell this file\u2019s type)') + ' is not allowed by the app server; ' +
          (token.contentTypes.length ? 'allowed: ' + token.contentTypes.join(', ') + '.' : 'it allows no type.'));
        return false;
      }
      var lim = token.limits;
      if (item.file.size > lim.maxSize) {
        setState(item, 'refused', 'Too large: the file is ' + formatBytesExact(item.file.size) +
          '; the limit is ' + formatBytesExact(lim.maxSize) + '.');
        return false;
      }
      if (item.file.size < lim.minSize) {
        setState(item, 'refused', 'Too small: the file is ' + formatBytesExact(item.file.size) +
          '; the minimum is ' + formatBytesExact(lim.minSize) + '.');
        return false;
      }
    }
    return true;
  }

  function addFiles(fileList) {
    var files = Array.prototype.slice.call(fileList || []);
    if (files.length === 0) { return; }
    if (auth.signedOut) { announce('Sign in to upload.'); return; }
    files.forEach(function (file) {
      var item = createItem(file);
      items.push(item);
      els.fileList.appendChild(item.li);
      setState(item, 'ready', '');
      applyLocalChecks(item, tokenState.token);
    });
    announce(plural(files.length, 'file') + ' added.');
    refresh();
  }

  function removeItem(item) {
    if (item.state === 'uploading' || item.state === 'queued') { return; }
    var idx = items.indexOf(item);
    if (idx !== -1) { items.splice(idx, 1); }
    var next = item.li.nextElementSibling || item.li.previousElementSibling;
    item.li.remove();
    // Keep keyboard focus inside the list instead of dropping it onto <body>.
    var target = next ? next.querySelector('button:not([hidden])') : els.chooseFiles;
    if (target) { target.focus(); }
    refresh();
  }

  function onItemAction(item) {
    if (item.state === 'uploading' || item.state === 'queued') {
      cancelItem(item);
    } else if (item.state === 'failed' || item.state === 'cancelled') {
      queueItem(item);
      runQueue();
    }
  }

  function cancelItem(item) {
    item.cancelRequested = true;
    if (item.xhr) {
      item.xhr.abort();   // the upload promise rejects; finishWithError sets the state
    } else {
      item.attempt += 1;  // a token request still in flight must not start this upload
      setState(item, 'cancelled', 'Cancelled before the upload started.');
      refresh();
    }
  }

  function queueItem(item) {
    item.cancelRequested = false;
    item.progressEl.value = 0;
    item.rateEl.textContent = '0%';
    item.resultEl.hidden = true;
    item.resultTextEl.textContent = '';
    item.detailEl.textContent = '';
    if (applyLocalChecks(item, tokenState.token)) { setState(item, 'queued', ''); }
  }

  function setState(item, state, message) {
    item.state = state;
    item.message = message || '';
    item.li.dataset.state = state;
    item.stateEl.textContent = STATE_TEXT[state] + (item.message ? ': ' + item.message : '');
    var action = item.actionEl;
    var name = item.file.name;
    var actionHadFocus = document.activeElement === action;
    if (state === 'uploading' || state === 'queued') {
      action.textContent = 'Cancel';
      action.setAttribute('aria-label', 'Cancel ' + name);
      action.dataset.action = 'cancel';
      action.hidden = false;
    } else if (state === 'failed' || state === 'cancelled') {
      action.textContent = 'Retry';
      action.setAttribute('aria-label', 'Retry ' + name);
      action.dataset.action = 'retry';
      action.hidden = false;
    } else {
      action.hidden = true;
    }
    item.removeEl.hidden = state === 'uploading' || state === 'queued';
    // A button that disappears under the keyboard focus hands it to its neighbour.
    if (actionHadFocus && action.hidden && !item.removeEl.hidden) { item.removeEl.focus(); }
    if (state === 'done' || state === 'callback-failed') {
      item.progressEl.value = 100;
      item.rateEl.textContent = '100%';
    }
  }

  /* ------------------------------------------------------------------ upload */

  function runQueue() {
    if (auth.signedOut) {      // no token without a sign-in: the files wait instead of failing
      items.forEach(function (it) { if (it.state === 'queued') { setState(it, 'ready', 'waiting for you to sign in'); } });
    }
    refresh();
    while (active < PARALLEL_UPLOADS) {
      var next = null;
      for (var i = 0; i < items.length; i += 1) {
        if (items[i].state === 'queued') { next = items[i]; break; }
      }
      if (!next) { break; }
      active += 1;
      uploadItem(next).then(done, done);
    }
    function done() { active -= 1; runQueue(); }
  }

  function uploadItem(item) {
    var attempt = ++item.attempt;
    var current = function () { return attempt === item.attempt; };
    setState(item, 'uploading', 'getting a token');
    refresh();
    return ensureToken().then(function (token) {
      if (!current()) { return null; }   // cancelled (and maybe restarted) meanwhile
      if (item.cancelRequested) { throw cancelledError(); }
      if (!applyLocalChecks(item, token)) { return null; }
      var names = objectKeyFor(item, token);
      var lim = token.limits;
      if (lim.keyPrefix !== null && names.key.indexOf(lim.keyPrefix) !== 0) {
        throw new UserError('The object name ' + names.display + ' is outside the folder the policy allows (' +
          lim.keyPrefix + ').');
      }
      if (lim.exactKey !== null && names.key !== lim.exactKey) {
        throw new UserError('The policy only allows the object name ' + lim.exactKey + '.');
      }
      item.objectName = names.display;
      setState(item, 'uploading', 'to ' + names.display);
      refresh();
      return postToOss(item, token, buildForm(token, names.key, item.file)).then(function (res) {
        return handleResponse(item, token, res);
      });
    }).catch(function (err) {
      if (current()) { finishWithError(item, err); }
    }).then(function () { refresh(); });
  }

  // Policy fields first, the file last (OSS ignores or rejects anything after "file").
  function buildForm(token, key, file) {
    var fd = new FormData();
    fd.append('key', key);
    fd.append('policy', token.policy);
    if (token.version === 'v4') {
      fd.append('x-oss-signature-version', token.v4.signatureVersion);
      fd.append('x-oss-credential', token.v4.credential);
      fd.append('x-oss-date', token.v4.date);
      fd.append('x-oss-signature', token.v4.signature);
    } else {
      fd.append('OSSAccessKeyId', token.accessId);
      fd.append('Signature', token.signature);
    }
    if (token.securityToken) { fd.append('x-oss-security-token', token.securityToken); }
    fd.append('success_action_status', '200');
    if (token.callback) { fd.append('callback', token.callback); }
    // OSS stores this as the object's type (it outranks the form's Content-Type and the file
    // part's type) and checks it against the policy's list. Only sent when the policy has one,
    // so the form is otherwise exactly as before.
    if (token.sendContentType) { fd.append('x-oss-content-type', file.type); }
    fd.append('file', file, file.name);
    return fd;
  }

  function cancelledError() {
    var e = new Error('cancelled');
    e.name = 'Cancelled';
    return e;
  }

  function networkError(token) {
    var e = new Error('Could not reach the bucket at ' + token.host + ', or it did not allow this page\u2019s ' +
      'origin (' + (location.origin === 'null' || location.protocol === 'file:' ? 'null, a file:// page' : location.origin) +
      '). ' + CORS_HINT);
    e.name = 'NetworkError';
    return e;
  }

  // XMLHttpRequest, only for upload progress (fetch cannot report it), wrapped in a Promise.
  function postToOss(item, token, form) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      var started = performance.now();
      var lastT = started;
      var lastLoaded = 0;
      var rate = 0;
      item.xhr = xhr;
      xhr.open('POST', token.postUrl, true);   // asynchronous, always
      xhr.responseType = 'text';
      xhr.upload.addEventListener('progress', function (ev) {
        if (!ev.lengthComputable || ev.total === 0) { return; }
        var now = performance.now();
        var dt = (now - lastT) / 1000;
        if (!rate && now > started) {
          rate = ev.loaded / ((now - started) / 1000);   // first estimate: the average so far
          lastT = now;
          lastLoaded = ev.loaded;
        } else if (dt > 0.25) {
          // Smoothed, so the number stays readable while the socket buffers fill and drain.
          rate = rate * 0.6 + ((ev.loaded - lastLoaded) / dt) * 0.4;
          lastT = now;
          lastLoaded = ev.loaded;
        }
        var pct = Math.min(100, Math.floor(ev.loaded * 100 / ev.total));
        item.progressEl.value = pct;
        var r = formatRate(rate);
        item.rateEl.textContent = pct + '%' + (r ? ' \u00b7 ' + r : '');
        item.li.dataset.progress = String(pct);
      });
      xhr.addEventListener('load', function () {
        item.xhr = null;
        resolve({ status: xhr.status, body: xhr.responseText, contentType: xhr.getResponseHeader('Content-Type') || '' });
      });
      xhr.addEventListener('error', function () { item.xhr = null; reject(networkError(token)); });
      xhr.addEventListener('timeout', function () { item.xhr = null; reject(networkError(token)); });
      xhr.addEventListener('abort', function () { item.xhr = null; reject(cancelledError()); });
      xhr.send(form);
    });
  }

  // OSS error bodies: <Error><Code>…</Code><Message>…</Message>…</Error>.
  function parseOssError(text) {
    var out = { code: '', message: '', requestId: '', ec: '' };
    if (!text) { return out; }
    var doc = new DOMParser().parseFromString(text, 'application/xml');
    if (doc.getElementsByTagName('parsererror').length) { return out; }
    function pick(tag) {
      var el = doc.getElementsByTagName(tag)[0];
      return el ? el.textContent.trim() : '';
    }
    out.code = pick('Code');
    out.message = pick('Message');
    out.requestId = pick('RequestId');
    out.ec = pick('EC');
    return out;
  }

  function showResult(item, text, detail) {
    item.resultTextEl.textContent = text;
    item.detailEl.textContent = detail || '';
    item.detailEl.hidden = !detail;
    item.resultEl.hidden = false;
  }

  function handleResponse(item, token, res) {
    if (res.status === 200 || res.status === 201 || res.status === 204) {
      var body = res.body || '';
      var pretty = '';
      if (body.trim() !== '') {
        try { pretty = JSON.stringify(JSON.parse(body), null, 2); } catch (e) { pretty = body; }
      }
      setState(item, 'done', item.objectName);
      showResult(item, 'Object name: ' + item.objectName +
        (token.callback ? (pretty ? '. The app server answered:' : '. The app server sent no answer.') : '.'), pretty);
      announce(item.file.name + ' uploaded.');
      return;
    }
    var err = parseOssError(res.body);
    var detail = (err.code || ('HTTP ' + res.status)) + (err.message ? ': ' + err.message : '');
    if (res.status === 203) {
      setState(item, 'callback-failed', detail);
      showResult(item, 'Object name: ' + item.objectName + '. OSS stored it, but its callback to the app ' +
        'server failed:', 'Code: ' + (err.code || '(none)') + '\nMessage: ' + (err.message || '(none)') +
        (err.requestId ? '\nRequest ID: ' + err.requestId : ''));
      announce(item.file.name + ' uploaded, but the callback to the app server failed.');
      return;
    }
    // A refused signature or an expired policy: the next try must use a fresh token.
    if (res.status === 403 || err.code === 'InvalidAccessKeyId' || err.code === 'SignatureDoesNotMatch') { forgetToken(); }
    var e = new Error(detail + ' (HTTP ' + res.status + ')' + (err.requestId ? ', request ID ' + err.requestId : '') + '.');
    e.name = 'OssError';
    if (err.code === 'AccessForbidden' && /CORS/i.test(err.message)) { e.message += ' ' + CORS_HINT; }
    throw e;
  }

  function finishWithError(item, err) {
    item.xhr = null;
    item.rateEl.textContent = item.progressEl.value + '%';   // no speed once nothing moves
    if (err && err.name === 'Cancelled') {
      setState(item, 'cancelled', 'Stopped by you; nothing more is sent.');
      announce(item.file.name + ' cancelled.');
      return;
    }
    if (err && err.name === 'SignInError') {
      // The page-wide notice says it once; the file waits for the next try.
      signInRequired(err);
      setState(item, 'ready', 'waiting for you to sign in');
      return;
    }
    var msg = err && err.message ? err.message : String(err);
    setState(item, 'failed', msg);
    announce(item.file.name + ' failed: ' + msg);
  }

  /* ------------------------------------------------------------------ status */

  function announce(text) {
    // Clearing first makes screen readers repeat identical messages.
    els.announcer.textContent = '';
    window.setTimeout(function () { els.announcer.textContent = text; }, 50);
  }

  var lastStatus = '';

  function refresh() {
    var counts = {};
    items.forEach(function (it) { counts[it.state] = (counts[it.state] || 0) + 1; });
    var c = function (s) { return counts[s] || 0; };
    var parts = [];
    if (items.length === 0) {
      parts.push('No files selected.');
    } else {
      parts.push(plural(items.length, 'file') + ':');
      var bits = [];
      if (c('uploading')) { bits.push(c('uploading') + ' uploading'); }
      if (c('queued')) { bits.push(c('queued') + ' waiting'); }
      if (c('ready')) { bits.push(c('ready') + ' ready'); }
      if (c('done')) { bits.push(c('done') + ' uploaded'); }
      if (c('callback-failed')) { bits.push(c('callback-failed') + ' uploaded without callback'); }
      if (c('failed')) { bits.push(c('failed') + ' failed'); }
      if (c('cancelled')) { bits.push(c('cancelled') + ' cancelled'); }
      if (c('refused')) { bits.push(c('refused') + ' refused'); }
      parts.push(bits.join(', ') + '.');
    }
    var text = parts.join(' ');
    if (text !== lastStatus) {
      els.status.textContent = text;
      lastStatus = text;
    }
    var busy = c('uploading') + c('queued') > 0;
    els.status.dataset.busy = busy ? 'true' : 'false';
    els.startUpload.disabled = c('ready') === 0 || auth.signedOut;
    els.clearFinished.disabled = (c('done') + c('callback-failed') + c('cancelled') + c('refused') + c('failed')) === 0;
  }

  /* ------------------------------------------------------------------ wiring */

  function startAll() {
    items.forEach(function (item) { if (item.state === 'ready') { queueItem(item); } });
    runQueue();
  }

  function clearFinished() {
    items.slice().forEach(function (item) {
      if (['done', 'callback-failed', 'cancelled', 'refused', 'failed'].indexOf(item.state) !== -1) {
        var idx = items.indexOf(item);
        items.splice(idx, 1);
        item.li.remove();
      }
    });
    refresh();
  }

  // Several files may meet the same 401 at once: the notice is set and announced once.
  function signInRequired(err) {
    forgetToken();
    var hadTicket = auth.ticket !== null;
    if (hadTicket) {           // refused: a reload must not send it again
      auth.ticket = null;
      storeTicket(null);
    }
    els.bucketHost.textContent = 'not known (sign in first)';
    if (!auth.signedOut) {
      setSignedOut(true, signInDetail(hadTicket, err.detail));
      announce('Sign in to upload.');
    }
  }

  function loadToken() {
    ensureToken().catch(function (err) {
      if (err && err.name === 'SignInError') { signInRequired(err); return; }
      els.bucketHost.textContent = 'not known (no token)';
      els.status.textContent = err.message;
      lastStatus = err.message;
    });
  }

  // The main application may send a new ticket to a page that is already open.
  window.addEventListener('hashchange', function () {
    if (takeTicketFromFragment() && auth.ticket) {
      forgetToken();
      loadToken();
    }
  });

  els.chooseFiles.addEventListener('click', function () { els.fileInput.click(); });
  els.fileInput.addEventListener('change', function () {
    addFiles(els.fileInput.files);
    els.fileInput.value = '';   // lets the same file be chosen again
  });
  els.startUpload.addEventListener('click', startAll);
  els.clearFinished.addEventListener('click', clearFinished);
  els.acceptList.addEventListener('input', syncAcceptAttribute);

  // Drop zone. Dragged files bypass the input's accept attribute; applyLocalChecks covers them.
  var dragDepth = 0;
  els.dropzone.addEventListener('dragenter', function (ev) {
    ev.preventDefault();
    if (auth.signedOut) { return; }   // nothing is taken until the user signs in
    dragDepth += 1;
    els.dropzone.classList.add('is-dragover');
  });
  els.dropzone.addEventListener('dragover', function (ev) {
    ev.preventDefault();
    if (ev.dataTransfer) { ev.dataTransfer.dropEffect = auth.signedOut ? 'none' : 'copy'; }
  });
  els.dropzone.addEventListener('dragleave', function () {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) { els.dropzone.classList.remove('is-dragover'); }
  });
  els.dropzone.addEventListener('drop', function (ev) {
    ev.preventDefault();
    dragDepth = 0;
    els.dropzone.classList.remove('is-dragover');
    if (ev.dataTransfer && ev.dataTransfer.files) { addFiles(ev.dataTransfer.files); }   // refused when signed out
  });
  // A file dropped next to the zone must not make the browser navigate away from the page.
  window.addEventListener('dragover', function (ev) { ev.preventDefault(); });
  window.addEventListener('drop', function (ev) { ev.preventDefault(); });

  loadTicket();
  if (servedByAppServer) {
    els.serverField.hidden = true;
    loadToken();
  } else {
    els.serverField.hidden = false;
    els.serverUrl.disabled = false;
    els.serverConnect.disabled = false;
    var reconnect = function () {
      forgetToken();
      tokenState.serverKey = null;
      els.bucketHost.textContent = 'not known yet';
      loadToken();
    };
    els.serverConnect.addEventListener('click', reconnect);
    els.serverUrl.addEventListener('change', reconnect);
    els.serverUrl.addEventListener('keydown', function (ev) { if (ev.key === 'Enter') { ev.preventDefault(); reconnect(); } });
  }
  syncAcceptAttribute();
  refresh();
}());

/*
 * The upload page's UI. The upload itself (token, policy checks, PostObject, errors) is the core
 * in oss-upload.js (the global OssUpload); this file only draws it.
 *
 * Sign-in: the user's main application links here with #ticket=<ticket>. The ticket is moved
 * from the address bar into sessionStorage and sent as "Authorization: Bearer <ticket>" with
 * every token request. A 401 shows one "Sign in to upload" notice and disables the controls.
 *
 * A classic script in an IIFE: it adds no globals and also runs from file:// (where Chromium
 * refuses ES modules). No eval, no inline handlers, no innerHTML, no inline styles: the page
 * works under a strict Content-Security-Policy.
 */
(function () {
  'use strict';

  var OssUpload = window.OssUpload;

  /* ------------------------------------------------------------------ constants */

  var RANDOM_ALPHABET = 'ABCDEFGHJKMNPQRSTWXYZabcdefhijkmnprstwxyz2345678';
  var RANDOM_LENGTH = 10;
  var PARALLEL_UPLOADS = 3;
  var TICKET_STORAGE_KEY = 'oss-upload-ticket';
  var TICKET_SYNTAX = /^[\x21-\x7e]{1,1024}$/;
  var FINISHED = ['done', 'callback-failed', 'cancelled', 'refused', 'failed'];

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
    total: byId('total'),
    totalProgress: byId('total-progress'),
    totalText: byId('total-text'),
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
    try { url = new URL(raw); } catch (e) { throw OssUpload.UploadError('server', 'Enter the app server URL, e.g. http://127.0.0.1:8080.'); }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw OssUpload.UploadError('server', 'The app server URL must start with http:// or https://.');
    }
    return url.href;
  }

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
  // address bar without it, so it does not linger in the history or a copied link.
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

  function setSignedOut(signedOut, detail) {
    auth.signedOut = signedOut;
    els.signin.hidden = !signedOut;
    els.signinDetail.textContent = signedOut ? detail : '';
    els.chooseFiles.disabled = signedOut;
    els.fileInput.disabled = signedOut;
    els.dropzone.classList.toggle('is-disabled', signedOut);
    if (signedOut) { els.dropzone.setAttribute('aria-disabled', 'true'); } else { els.dropzone.removeAttribute('aria-disabled'); }
    if (!signedOut) {
      items.forEach(function (it) { if (it.state === 'ready' && it.message) { setState(it, 'ready', ''); } });
    }
    refresh();
  }

  function signInDetail(hadTicket, serverMessage) {
    var text = hadTicket
      ? 'Your sign-in for this page was not accepted; it may have expired. '
      : 'This page needs a sign-in from the application that sent you here. ';
    text += 'Open the upload page from that application again.';
    if (hadTicket && serverMessage) { text += ' (The app server said: ' + serverMessage + ')'; }
    return text;
  }

  /* ------------------------------------------------------------------ the core */

  var client = OssUpload.createClient({
    tokenUrl: tokenUrl,
    ticket: function () { return auth.ticket; },
    onToken: function (t) {
      if (auth.signedOut) { setSignedOut(false); }
      showToken(t);
    }
  });

  function knownToken() { return client.lastToken(); }

  function showToken(t) {
    els.bucketHost.textContent = t.host;
    els.uploadDir.textContent = t.dir || '(bucket root)';
    els.sizeLimit.textContent = t.limits.maxSize === Infinity ? 'none in the policy' : formatBytesExact(t.limits.maxSize);
    els.contentTypes.textContent = t.contentTypes === null ? 'any'
      : t.contentTypes.length ? t.contentTypes.join(', ') : 'none';
    syncAcceptAttribute();
    els.sigVersion.textContent = t.version === 'v4' ? 'V4 (OSS4-HMAC-SHA256)' : 'V1 (HMAC-SHA1)';
    if (t.securityToken) { els.sigVersion.textContent += ', STS'; }
    if (t.callback) { els.sigVersion.textContent += ', with callback'; }
    // Files added before the limits were known are checked now.
    items.forEach(function (item) { if (item.state === 'ready') { applyLocalChecks(item, t); } });
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

  function suffixOf(filename) {
    var pos = filename.lastIndexOf('.');
    return pos !== -1 ? filename.substring(pos) : '';
  }

  function nameMode() {
    var checked = document.querySelector('input[name="myradio"]:checked');
    return checked ? checked.value : 'local_name';
  }

  // The name after the token's dir: OSS expands ${filename} itself, as in the sample.
  function objectNameFor(item) {
    if (nameMode() === 'random_name') {
      if (!item.randomPart) { item.randomPart = randomString(RANDOM_LENGTH); }
      return item.randomPart + suffixOf(item.file.name);
    }
    return '${filename}';
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

  function syncAcceptAttribute() {
    var tokens = acceptTokens();
    var t = knownToken();
    var serverTypes = t ? t.contentTypes : null;
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

  function isImage(file) { return /^image\/(png|jpeg|gif|webp|avif|bmp|svg\+xml)$/.test(file.type || ''); }

  function createItem(file) {
    var frag = els.rowTemplate.content.cloneNode(true);
    var li = frag.querySelector('li');
    var q = function (sel) { return li.querySelector(sel); };
    var item = {
      id: nextId++,
      file: file,
      state: 'ready',
      message: '',
      controller: null,
      randomPart: null,
      attempt: 0,
      loaded: 0,
      previewUrl: null,
      imageSize: null,
      li: li,
      thumbEl: q('.file-thumb'),
      nameEl: q('.file-name'),
      sizeEl: q('.file-size'),
      progressEl: q('progress'),
      rateEl: q('.file-rate'),
      stateEl: q('.file-state'),
      actionEl: q('.file-action'),
      removeEl: q('.file-remove'),
      resultEl: q('.file-result'),
      resultTextEl: q('.file-result-text'),
      factsEl: q('.file-facts'),
      objectEl: q('.file-object'),
      storedSizeEl: q('.file-stored-size'),
      dimsRowEl: q('.file-dims-row'),
      dimsEl: q('.file-dims'),
      downloadEl: q('.file-download'),
      linkEl: q('.file-link'),
      remoteEl: q('.file-remote'),
      rawEl: q('.file-raw'),
      detailEl: q('.file-detail')
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
    item.rawEl.querySelector('summary').setAttribute('aria-label', 'Details of ' + file.name);
    item.actionEl.addEventListener('click', function () { onItemAction(item); });
    item.removeEl.addEventListener('click', function () { removeItem(item); });
    if (isImage(file)) {
      item.previewUrl = URL.createObjectURL(file);
      item.thumbEl.alt = 'Preview of ' + file.name;
      item.thumbEl.addEventListener('load', function () {
        item.imageSize = { width: item.thumbEl.naturalWidth, height: item.thumbEl.naturalHeight };
        item.li.dataset.preview = 'loaded';
      });
      item.thumbEl.addEventListener('error', function () { item.thumbEl.hidden = true; });
      item.thumbEl.src = item.previewUrl;
      item.thumbEl.hidden = false;
      li.classList.add('has-thumb');
    }
    return item;
  }

  // Type and size checks that need no network: done as files are added, and again when a token
  // (with the policy's limits) arrives.
  function applyLocalChecks(item, token) {
    if (!typeAllowed(item.file)) {
      setState(item, 'refused', 'Type ' + (item.file.type || 'unknown') + ' is not in the allowed list (' +
        acceptTokens().join(', ') + ').');
      return false;
    }
    var refused = token ? client.check(item.file, token) : null;
    if (refused) {
      setState(item, 'refused', refused.message);
      return false;
    }
    return true;
  }

  function addFiles(fileList) {
    var files = Array.prototype.slice.call(fileList || []);
    if (files.length === 0) { return; }
    if (auth.signedOut) { announce('Sign in to upload.'); return; }
    var refusedBefore = items.filter(function (it) { return it.state === 'refused'; }).length;
    files.forEach(function (file) {
      var item = createItem(file);
      items.push(item);
      els.fileList.appendChild(item.li);
      setState(item, 'ready', '');
      applyLocalChecks(item, knownToken());
    });
    var refused = items.filter(function (it) { return it.state === 'refused'; }).length - refusedBefore;
    announce(plural(files.length, 'file') + ' added' + (refused ? ', ' + refused + ' refused.' : '.'));
    refresh();
  }

  function dropItem(item) {
    var idx = items.indexOf(item);
    if (idx !== -1) { items.splice(idx, 1); }
    if (item.previewUrl) { URL.revokeObjectURL(item.previewUrl); }
    item.li.remove();
  }

  function removeItem(item) {
    if (item.state === 'uploading' || item.state === 'queued') { return; }
    var next = item.li.nextElementSibling || item.li.previousElementSibling;
    dropItem(item);
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
    if (item.controller) {
      item.controller.abort();   // the upload rejects with kind 'cancelled'
    } else {
      item.attempt += 1;
      setState(item, 'cancelled', 'Cancelled before the upload started.');
      refresh();
    }
  }

  function clearResult(item) {
    item.resultEl.hidden = true;
    item.resultTextEl.textContent = '';
    item.factsEl.hidden = true;
    item.downloadEl.hidden = true;
    item.remoteEl.hidden = true;
    item.remoteEl.removeAttribute('src');
    item.linkEl.removeAttribute('href');
    item.rawEl.hidden = true;
    item.rawEl.open = false;
    item.detailEl.textContent = '';
  }

  function queueItem(item) {
    item.progressEl.value = 0;
    item.loaded = 0;
    item.rateEl.textContent = '0%';
    clearResult(item);
    if (applyLocalChecks(item, knownToken())) { setState(item, 'queued', ''); }
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
    if (actionHadFocus && action.hidden && !item.removeEl.hidden) { item.removeEl.focus(); }
    if (state === 'done' || state === 'callback-failed') {
      item.progressEl.value = 100;
      item.loaded = item.file.size;
      item.rateEl.textContent = '100%';
    }
  }

  /* ------------------------------------------------------------------ upload */

  function runQueue() {
    if (auth.signedOut) {
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

  function progressHandler(item) {
    var started = performance.now();
    var lastT = started;
    var lastLoaded = 0;
    var rate = 0;
    return function (p) {
      var now = performance.now();
      var dt = (now - lastT) / 1000;
      if (!rate && now > started) {
        rate = p.loaded / ((now - started) / 1000);
        lastT = now;
        lastLoaded = p.loaded;
      } else if (dt > 0.25) {
        rate = rate * 0.6 + ((p.loaded - lastLoaded) / dt) * 0.4;
        lastT = now;
        lastLoaded = p.loaded;
      }
      var pct = Math.min(100, Math.floor(p.loaded * 100 / p.total));
      item.progressEl.value = pct;
      item.loaded = Math.min(item.file.size, Math.round(item.file.size * p.loaded / p.total));
      var r = formatRate(rate);
      item.rateEl.textContent = pct + '%' + (r ? ' \u00b7 ' + r : '');
      item.li.dataset.progress = String(pct);
      refreshTotal();
    };
  }

  function uploadItem(item) {
    var attempt = ++item.attempt;
    var current = function () { return attempt === item.attempt; };
    var controller = new AbortController();
    item.controller = controller;
    setState(item, 'uploading', 'getting a token');
    refresh();
    return client.upload(item.file, {
      name: objectNameFor(item),
      signal: controller.signal,
      onStart: function (info) {
        if (!current()) { controller.abort(); return; }
        item.objectName = info.key;
        setState(item, 'uploading', 'to ' + info.key);
        refresh();
      },
      onProgress: progressHandler(item)
    }).then(function (res) {
      if (current()) { showDone(item, res); }
    }, function (err) {
      if (current()) { finishWithError(item, err); }
    }).then(function () {
      item.controller = null;
      refresh();
    });
  }

  function showRaw(item, text) {
    item.detailEl.textContent = text || '';
    item.rawEl.hidden = !text;
  }

  function showDone(item, res) {
    var answer = res.json && typeof res.json === 'object' ? res.json : null;
    var upload = answer && answer.upload && typeof answer.upload === 'object' ? answer.upload : {};
    setState(item, 'done', '');
    item.resultTextEl.textContent = res.token.callback
      ? (res.body.trim() ? 'The app server confirmed the upload.' : 'The app server sent no answer.') : '';
    item.resultTextEl.hidden = !item.resultTextEl.textContent;
    item.objectEl.textContent = res.key;
    var size = Number(upload.size);
    item.storedSizeEl.textContent = formatBytesExact(isFinite(size) && upload.size !== undefined && upload.size !== '' ? size : item.file.size);
    var w = parseInt(upload.width, 10);
    var h = parseInt(upload.height, 10);
    var dims = w > 0 && h > 0 ? { width: w, height: h } : item.imageSize;
    item.dimsRowEl.hidden = !dims;
    item.dimsEl.textContent = dims ? dims.width + ' \u00d7 ' + dims.height + ' px' : '';
    item.factsEl.hidden = false;
    var pretty = '';
    if (answer) { pretty = JSON.stringify(answer, null, 2); } else if (res.body.trim()) { pretty = res.body; }
    showRaw(item, pretty);
    item.resultEl.hidden = false;
    announce(item.file.name + ' uploaded.');
    if (res.token.downloads) { showDownload(item, res.key); }
  }

  function showDownload(item, key) {
    var attempt = item.attempt;
    client.downloadUrl(key).then(function (d) {
      if (attempt !== item.attempt) { return; }
      item.linkEl.href = d.url;
      item.linkEl.textContent = 'Download ' + item.file.name;
      item.downloadEl.hidden = false;
      if (isImage(item.file)) {
        item.remoteEl.alt = 'Stored copy of ' + item.file.name;
        item.remoteEl.src = d.url;
        item.remoteEl.hidden = false;
      }
      item.li.dataset.download = 'ready';
    }, function (err) {
      if (attempt !== item.attempt) { return; }
      item.linkEl.removeAttribute('href');
      item.linkEl.textContent = 'No download link: ' + err.message;
      item.downloadEl.hidden = false;
      item.li.dataset.download = 'failed';
    });
  }

  function finishWithError(item, err) {
    item.rateEl.textContent = item.progressEl.value + '%';
    var kind = err && err.kind;
    if (kind === 'cancelled') {
      setState(item, 'cancelled', 'Stopped by you; nothing more is sent.');
      announce(item.file.name + ' cancelled.');
      return;
    }
    if (kind === 'auth') {
      signInRequired(err);
      setState(item, 'ready', 'waiting for you to sign in');
      return;
    }
    if (kind === 'refused') {
      setState(item, 'refused', err.message);
      return;
    }
    if (kind === 'callback') {
      setState(item, 'callback-failed', (err.code || 'HTTP ' + err.status) + (err.ossMessage ? ': ' + err.ossMessage : ''));
      item.resultTextEl.textContent = 'OSS stored it, but its callback to the app server failed.';
      item.resultTextEl.hidden = false;
      item.objectEl.textContent = err.key;
      item.storedSizeEl.textContent = formatBytesExact(item.file.size);
      item.dimsRowEl.hidden = !item.imageSize;
      item.dimsEl.textContent = item.imageSize ? item.imageSize.width + ' \u00d7 ' + item.imageSize.height + ' px' : '';
      item.factsEl.hidden = false;
      showRaw(item, 'Code: ' + (err.code || '(none)') + '\nMessage: ' + (err.ossMessage || '(none)') +
        (err.requestId ? '\nRequest ID: ' + err.requestId : ''));
      item.resultEl.hidden = false;
      announce(item.file.name + ' uploaded, but the callback to the app server failed.');
      return;
    }
    var msg = err && err.message ? err.message : String(err);
    setState(item, 'failed', msg);
    if (kind === 'oss' && err.body) {
      showRaw(item, err.body);
      item.resultTextEl.hidden = true;
      item.factsEl.hidden = true;
      item.resultEl.hidden = false;
    }
    announce(item.file.name + ' failed: ' + msg);
  }

  /* ------------------------------------------------------------------ status */

  function announce(text) {
    els.announcer.textContent = '';
    window.setTimeout(function () { els.announcer.textContent = text; }, 50);
  }

  var lastStatus = '';
  var lastTotal = '';

  // One line across the files on their way or uploaded: bytes sent of bytes to send. Files
  // that failed or were cancelled leave the sum (their rows say so), so it can reach 100%.
  var COUNTED = ['queued', 'uploading', 'done', 'callback-failed'];

  function refreshTotal() {
    var counted = items.filter(function (it) { return COUNTED.indexOf(it.state) !== -1; });
    els.total.hidden = counted.length === 0;
    if (counted.length === 0) { return; }
    var total = 0;
    var sent = 0;
    counted.forEach(function (it) {
      total += it.file.size;
      sent += it.state === 'done' || it.state === 'callback-failed' ? it.file.size : Math.min(it.loaded, it.file.size);
    });
    var pct = total > 0 ? Math.floor(sent * 100 / total) : 100;
    var finished = counted.filter(function (it) { return it.state === 'done' || it.state === 'callback-failed'; }).length;
    els.totalProgress.value = pct;
    var text = 'Total: ' + pct + '% \u00b7 ' + formatBytes(sent) + ' of ' + formatBytes(total) + ' \u00b7 ' +
      finished + ' of ' + plural(counted.length, 'file') + ' uploaded';
    if (text !== lastTotal) { els.totalText.textContent = text; lastTotal = text; }
    els.total.dataset.percent = String(pct);
  }

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
    els.clearFinished.disabled = FINISHED.reduce(function (n, s) { return n + c(s); }, 0) === 0;
    refreshTotal();
  }

  /* ------------------------------------------------------------------ wiring */

  function startAll() {
    items.forEach(function (item) { if (item.state === 'ready') { queueItem(item); } });
    runQueue();
  }

  function clearFinished() {
    items.slice().forEach(function (item) {
      if (FINISHED.indexOf(item.state) !== -1) { dropItem(item); }
    });
    refresh();
  }

  function signInRequired(err) {
    client.forgetToken();
    var hadTicket = auth.ticket !== null;
    if (hadTicket) {
      auth.ticket = null;
      storeTicket(null);
    }
    els.bucketHost.textContent = 'not known (sign in first)';
    if (!auth.signedOut) {
      setSignedOut(true, signInDetail(hadTicket, err.serverMessage));
      announce('Sign in to upload.');
    }
  }

  function loadToken() {
    client.getToken().catch(function (err) {
      if (err && err.kind === 'auth') { signInRequired(err); return; }
      els.bucketHost.textContent = 'not known (no token)';
      els.status.textContent = err.message;
      lastStatus = err.message;
    });
  }

  window.addEventListener('hashchange', function () {
    if (takeTicketFromFragment() && auth.ticket) {
      client.forgetToken();
      loadToken();
    }
  });

  els.chooseFiles.addEventListener('click', function () { els.fileInput.click(); });
  els.fileInput.addEventListener('change', function () {
    addFiles(els.fileInput.files);
    els.fileInput.value = '';
  });
  els.startUpload.addEventListener('click', startAll);
  els.clearFinished.addEventListener('click', clearFinished);
  els.acceptList.addEventListener('input', syncAcceptAttribute);

  var dragDepth = 0;
  els.dropzone.addEventListener('dragenter', function (ev) {
    ev.preventDefault();
    if (auth.signedOut) { return; }
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
    if (ev.dataTransfer && ev.dataTransfer.files) { addFiles(ev.dataTransfer.files); }
  });
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
      client.forgetToken();
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

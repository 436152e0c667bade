// The portal's file manager (portal/files.rs): browse one account's files,
// upload (picker or drag and drop, several files, one progress bar, each
// file sent as the raw body of one request), download, delete, new folder,
// rename. Errors are shown as the one line the server answers.
(function () {
  'use strict';
  var root = document.getElementById('files');
  if (!root) { return; }
  var asset = root.dataset.asset;
  var account = root.dataset.account;
  var cwd = '';
  var tbody = document.querySelector('#listing tbody');
  var errorLine = document.getElementById('error');

  function q(params) {
    var all = { asset: asset, account: account };
    Object.keys(params).forEach(function (k) { all[k] = params[k]; });
    return new URLSearchParams(all).toString();
  }

  function showError(message) {
    errorLine.textContent = message;
    errorLine.hidden = !message;
  }

  function answerError(status, text) {
    try {
      var body = JSON.parse(text);
      if (body && body.error) { return body.error; }
    } catch (e) { /* not JSON */ }
    return 'request failed (HTTP ' + status + ')';
  }

  function size(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
  }

  function join(name) { return cwd + '/' + name; }

  function button(label, cls, action) {
    var b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.className = cls;
    b.addEventListener('click', action);
    return b;
  }

  function post(op, body) {
    body.asset = asset;
    body.account = account;
    return fetch('/files/' + op, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.text().then(function (text) {
        if (!r.ok) { throw new Error(answerError(r.status, text)); }
        return text;
      });
    });
  }

  function render(entries) {
    tbody.textContent = '';
    document.getElementById('cwd').textContent = cwd || '/';
    entries.forEach(function (e) {
      var tr = document.createElement('tr');
      tr.className = 'entry';
      tr.dataset.name = e.name;
      tr.dataset.dir = e.dir ? 'yes' : 'no';
      var name = document.createElement('td');
      if (e.dir) {
        var a = document.createElement('a');
        a.href = '#';
        a.className = 'open';
        a.textContent = e.name + '/';
        a.addEventListener('click', function (ev) { ev.preventDefault(); go(join(e.name)); });
        name.appendChild(a);
      } else {
        var d = document.createElement('a');
        d.className = 'download';
        d.href = '/files/download?' + q({ path: join(e.name) });
        d.setAttribute('download', e.name);
        d.textContent = e.name;
        name.appendChild(d);
      }
      var sz = document.createElement('td');
      sz.textContent = e.dir ? '' : size(e.size);
      var mt = document.createElement('td');
      mt.textContent = e.modified ? new Date(e.modified * 1000).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : '';
      var ops = document.createElement('td');
      ops.appendChild(button('Rename', 'rename', function () {
        var to = window.prompt('New name for ' + e.name, e.name);
        if (!to || to === e.name) { return; }
        post('rename', { path: join(e.name), to: to }).then(refresh, function (err) { showError(err.message); });
      }));
      ops.appendChild(document.createTextNode(' '));
      ops.appendChild(button('Delete', 'delete danger', function () {
        if (!window.confirm('Delete ' + e.name + '?')) { return; }
        post('delete', { path: join(e.name) }).then(refresh, function (err) { showError(err.message); });
      }));
      tr.appendChild(name);
      tr.appendChild(sz);
      tr.appendChild(mt);
      tr.appendChild(ops);
      tbody.appendChild(tr);
    });
    root.dataset.loaded = cwd || '/';
  }

  function go(path, keepError) {
    if (!keepError) { showError(''); }
    root.dataset.loaded = '';
    fetch('/files/list?' + q({ path: path }), { credentials: 'same-origin' })
      .then(function (r) {
        return r.text().then(function (text) {
          if (!r.ok) { throw new Error(answerError(r.status, text)); }
          return JSON.parse(text);
        });
      })
      .then(function (answer) { cwd = answer.path; render(answer.entries); },
            function (err) { showError(err.message); root.dataset.loaded = 'error'; });
  }

  function refresh() { go(cwd); }

  // Uploads: one file after another, each the raw body of one request.
  var progress = document.getElementById('progress');
  var bar = document.getElementById('progress-bar');
  var progressName = document.getElementById('progress-name');
  var progressText = document.getElementById('progress-text');

  function uploadOne(file) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open('POST', '/files/upload?' + q({ path: cwd, name: file.name }));
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = function (ev) {
        if (ev.lengthComputable) {
          bar.value = Math.floor(ev.loaded * 100 / ev.total);
          progressText.textContent = size(ev.loaded) + ' of ' + size(ev.total);
        }
      };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) { resolve(); }
        else { reject(new Error(file.name + ': ' + answerError(xhr.status, xhr.responseText))); }
      };
      xhr.onerror = function () { reject(new Error(file.name + ': the upload broke off')); };
      xhr.send(file);
    });
  }

  function uploadAll(files) {
    var list = Array.prototype.slice.call(files);
    if (!list.length) { return; }
    showError('');
    progress.hidden = false;
    root.dataset.uploading = 'yes';
    var chain = Promise.resolve();
    list.forEach(function (file, i) {
      chain = chain.then(function () {
        progressName.textContent = file.name + ' (' + (i + 1) + '/' + list.length + ')';
        bar.value = 0;
        return uploadOne(file);
      });
    });
    chain.then(function () {
      progressText.textContent = 'done';
      root.dataset.uploading = 'done';
      refresh();
    }, function (err) {
      showError(err.message);
      root.dataset.uploading = 'failed';
      go(cwd, true);
    });
  }

  document.getElementById('pick').addEventListener('change', function (ev) {
    uploadAll(ev.target.files);
    ev.target.value = '';
  });
  var drop = document.getElementById('drop');
  ['dragenter', 'dragover'].forEach(function (name) {
    drop.addEventListener(name, function (ev) { ev.preventDefault(); drop.classList.add('over'); });
  });
  ['dragleave', 'drop'].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove('over'); });
  });
  drop.addEventListener('drop', function (ev) {
    ev.preventDefault();
    uploadAll(ev.dataTransfer.files);
  });

  document.getElementById('up').addEventListener('click', function () {
    go(cwd.replace(/\/[^/]*$/, ''));
  });
  document.getElementById('mkdir').addEventListener('click', function () {
    var name = window.prompt('Name of the new folder');
    if (!name) { return; }
    post('mkdir', { path: join(name) }).then(refresh, function (err) { showError(err.message); });
  });

  go('');
}());

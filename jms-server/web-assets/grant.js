// jms console: the grant form's coverage preview. As the form changes,
// asks the server whom the draft grant covers (GET /web/grants/coverage,
// an HTML fragment the server escaped) and shows it under the form.
(function () {
  "use strict";
  var form = document.getElementById("grant-form");
  var out = document.getElementById("coverage");
  if (!form || !out) { return; }
  var timer = null;
  var asked = 0;
  function refresh() {
    var params = new URLSearchParams(new FormData(form));
    var mine = ++asked;
    fetch("/web/grants/coverage?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        if (mine === asked) { out.innerHTML = html; }
      })
      .catch(function () { /* keep the last answer */ });
  }
  function later() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(refresh, 250);
  }
  form.addEventListener("input", later);
  form.addEventListener("change", later);
})();

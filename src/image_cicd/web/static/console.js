// The console's one script (served at /static/console.js): a page whose body has
// data-poll (a running execution) asks that URL every data-refresh-ms and reloads
// when the answer's fingerprint is no longer the page's data-fingerprint.
(function () {
  var body = document.body, url = body.getAttribute("data-poll");
  if (!url) { return; }
  var seen = body.getAttribute("data-fingerprint");
  var ms = parseInt(body.getAttribute("data-refresh-ms"), 10) || 2000;
  function check() {
    fetch(url, {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (d && d.fingerprint !== seen) { window.location.reload(); }
        else { window.setTimeout(check, ms); }
      })
      .catch(function () { window.setTimeout(check, ms); });
  }
  window.setTimeout(check, ms);
})();

// The status page updates itself: poll the small status document and reload the page when
// the status or the number of events changes. No library, no inline script (CSP).
(function () {
  var box = document.getElementById("status-box");
  if (!box) { return; }
  var url = box.getAttribute("data-poll");
  var status = box.getAttribute("data-status");
  var events = box.getAttribute("data-events");
  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (s && (s.status !== status || String(s.events) !== events)) { window.location.reload(); return; }
        window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 2000);
})();

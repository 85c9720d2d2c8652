// The simulator panel: refresh the last events every 2 seconds. No framework, no CDN.
// The server renders (and escapes) the rows; this only swaps them in.
(function () {
  "use strict";
  var box = document.getElementById("sim-events");
  if (!box || !window.fetch) return;
  function refresh() {
    fetch(box.getAttribute("data-src"), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        // Sent to the sign-in page: the session ended. Reload to show it.
        if (response.redirected) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html !== null) box.innerHTML = html; })
      .catch(function () { /* the page or the daemon is restarting: try again next time */ });
  }
  window.setInterval(refresh, 2000);
})();


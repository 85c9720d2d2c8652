// The LED board's live frame: fetch a fresh PNG twice a second while the page is in view.
// Used by the board page and the simulator panel (any img with data-live). No framework, no CDN.
(function () {
  "use strict";
  var images = document.querySelectorAll("img[data-live]");
  if (!images.length) return;
  var n = 0;
  window.setInterval(function () {
    if (document.hidden) return;
    n += 1;
    for (var i = 0; i < images.length; i += 1) {
      images[i].setAttribute("src", images[i].getAttribute("data-live") + "?n=" + n);
    }
  }, 500);
})();

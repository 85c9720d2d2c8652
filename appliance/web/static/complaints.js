// The complaint pages' small helpers (the CSP allows no inline script): a character counter
// for the text, a copy button for the receipt code, the notice's print button. The pages
// work without them.
(function () {
  "use strict";

  // "123 / 2000" under the text, counted as the appliance counts (a line break is one).
  document.querySelectorAll("[data-counter-for]").forEach(function (counter) {
    var area = document.getElementById(counter.getAttribute("data-counter-for"));
    if (!area) return;
    var max = parseInt(area.getAttribute("data-max"), 10);
    function update() {
      var n = Array.from(area.value.trim()).length;
      counter.textContent = n + " / " + max;
      counter.classList.toggle("bad", n > max);
    }
    counter.hidden = false;
    area.addEventListener("input", update);
    update();
  });

  // The clipboard is there only on HTTPS or localhost: otherwise the button stays hidden and
  // the code is selected whole with one tap (user-select: all).
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    if (!navigator.clipboard || !window.isSecureContext) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
        button.textContent = button.getAttribute("data-copied");
      });
    });
  });

  document.querySelectorAll("button[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
})();

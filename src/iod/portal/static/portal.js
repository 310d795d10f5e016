// Progressive enhancement only: every page works without it.
"use strict";
(function () {
  // The change form's time zone: the browser's, when the user has kept the default.
  var zone = document.getElementById("timeZone");
  if (zone && zone.dataset.default === "UTC" && zone.value === "UTC" && window.Intl) {
    var browser = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (browser) { zone.value = browser; }
  }
  // Confirmation of destructive actions.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });
  // Live updates: while something is in progress, ask every 2 s whether the connection
  // changed (its ETag) and reload once it has, unless the user is filling in a form.
  var live = document.getElementById("live");
  if (!live || !live.dataset.poll) { return; }
  var typing = false;
  document.querySelectorAll("form.change input, form.change select").forEach(function (el) {
    el.addEventListener("input", function () { typing = true; });
  });
  function poll() {
    fetch(live.dataset.poll, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (version) {
        if (version && version !== live.dataset.version && !typing) {
          window.location.replace(window.location.pathname);
          return;
        }
        window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 2000);
})();

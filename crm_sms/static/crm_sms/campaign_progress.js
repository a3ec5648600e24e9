/* Refreshes the campaign page while it runs: polls the admin's JSON endpoint every few seconds,
   updates the status, the bar and the counts; reloads once when the campaign settles so the
   read-only fields (finished at…) are current. Stops when nothing is in flight. */
(function () {
  "use strict";

  var INTERVAL_MS = 2000;

  function init() {
    var box = document.getElementById("crm-sms-campaign");
    if (!box || box.dataset.active !== "1") { return; }
    var url = box.dataset.progressUrl;
    var timer = null;

    function apply(state) {
      document.getElementById("crm-sms-status").textContent = state.status_display;
      document.getElementById("crm-sms-progress").innerHTML = state.progress_html;
      Object.keys(state.counts).forEach(function (status) {
        var cell = box.querySelector('[data-status-count="' + status + '"]');
        if (cell) { cell.textContent = state.counts[status]; }
      });
      box.dataset.status = state.status;
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (state) {
          if (!state) { return; }
          apply(state);
          if (state.active) {
            timer = window.setTimeout(poll, INTERVAL_MS);
          } else {
            window.location.reload();
          }
        })
        .catch(function () { timer = window.setTimeout(poll, INTERVAL_MS * 2); });
    }
    timer = window.setTimeout(poll, INTERVAL_MS);
    window.addEventListener("beforeunload", function () { window.clearTimeout(timer); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();

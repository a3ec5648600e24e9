/* Redraws a campaign's charts (crm_sms/admin/dashboard.py) while the campaign runs: every few
   seconds it asks the charts' URL for their new SVG and puts it in place; stops when the
   campaign has settled. A chart the page left out (data-deferred, a big campaign) is asked
   for at once. The charts themselves are drawn on the server. */
(function () {
  "use strict";

  function init() {
    var box = document.getElementById("crm-sms-charts");
    if (!box) { return; }
    var deferred = box.dataset.deferred === "1";
    if (box.dataset.active !== "1" && !deferred) { return; }
    var body = document.getElementById("crm-sms-charts-body");
    var interval = (parseInt(box.dataset.refreshSeconds, 10) || 10) * 1000;
    var timer = null;

    function poll() {
      fetch(box.dataset.chartsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (state) {
          if (!state) { return; }
          body.innerHTML = state.html;
          box.dataset.active = state.active ? "1" : "0";
          if (state.active) { timer = window.setTimeout(poll, interval); }
        })
        .catch(function () { timer = window.setTimeout(poll, interval * 2); });
    }
    timer = window.setTimeout(poll, deferred ? 0 : interval);
    window.addEventListener("beforeunload", function () { window.clearTimeout(timer); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();

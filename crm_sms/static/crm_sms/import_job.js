/* The page of a background contact import (or its check): polls the job's JSON view every
   second or two, updates the sentence, the bar and the counts, and reloads once the job has
   finished so the page shows the result. */
(function () {
  "use strict";

  var INTERVAL_MS = 1500;

  function init() {
    var box = document.getElementById("crm-sms-import-job");
    if (!box) { return; }
    var url = box.dataset.statusUrl;
    var timer = null;

    function apply(state) {
      document.getElementById("import-job-message").textContent = state.message;
      var bar = document.getElementById("import-job-progress");
      var percent = document.getElementById("import-job-percent");
      if (bar && state.percent !== null) {
        bar.value = state.percent;
        percent.textContent = state.percent + " %";
      }
      ["rows", "created", "updated", "unchanged", "skipped"].forEach(function (name) {
        var cell = box.querySelector('[data-count="' + name + '"]');
        if (cell) { cell.textContent = state[name]; }
      });
      box.dataset.status = state.status;
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (state) {
          if (!state) { return; }
          apply(state);
          if (state.finished) {
            window.location.reload();
          } else {
            timer = window.setTimeout(poll, INTERVAL_MS);
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

/* Live character and SMS-part counter for the "Send SMS" page.
   Counts exactly as crm_sms/text.py: GSM-7 (160 / 153 per part) when every character is in the
   GSM-7 alphabet, else UCS-2 (70 / 67). GSM-7 extension characters take 2 units and are never
   split across parts; characters outside the BMP take 2 UCS-2 units (a surrogate pair). */
(function () {
  "use strict";

  var LIMITS = { "GSM-7": [160, 153], "UCS-2": [70, 67] };

  function readSet(id) {
    var node = document.getElementById(id);
    var chars = node ? JSON.parse(node.textContent) : "";
    var set = Object.create(null);
    Array.from(chars).forEach(function (ch) { set[ch] = true; });
    return set;
  }

  function smsInfo(text, basic, extension) {
    var chars = Array.from(text); // code points, as Python's len()
    var gsm = chars.every(function (ch) { return basic[ch] || extension[ch]; });
    var encoding = gsm ? "GSM-7" : "UCS-2";
    var costs = chars.map(function (ch) {
      if (gsm) { return extension[ch] ? 2 : 1; }
      return ch.codePointAt(0) > 0xffff ? 2 : 1;
    });
    var units = costs.reduce(function (a, b) { return a + b; }, 0);
    var single = LIMITS[encoding][0], multi = LIMITS[encoding][1];
    if (units <= single) {
      return { encoding: encoding, characters: chars.length, units: units,
               segments: units ? 1 : 0, per_segment: single };
    }
    var segments = 1, used = 0;
    costs.forEach(function (cost) {
      if (used + cost > multi) { segments += 1; used = 0; } // a pair moves whole to the next part
      used += cost;
    });
    return { encoding: encoding, characters: chars.length, units: units,
             segments: segments, per_segment: multi };
  }

  function format(template, info) {
    return template.replace(/\{(\w+)\}/g, function (m, key) {
      return key in info ? String(info[key]) : m;
    });
  }

  function init() {
    var textarea = document.getElementById("id_text");
    var counter = document.getElementById("sms-counter");
    if (!textarea || !counter) { return; }
    var basic = readSet("sms-gsm7-basic");
    var extension = readSet("sms-gsm7-extension");
    function update() {
      var text = textarea.value.replace(/\r\n?/g, "\n");
      var info = smsInfo(text, basic, extension);
      counter.dataset.characters = info.characters;
      counter.dataset.segments = info.segments;
      counter.dataset.encoding = info.encoding;
      counter.dataset.units = info.units;
      counter.textContent = text ? format(counter.dataset.template, info) : counter.dataset.empty;
      counter.classList.toggle("crm-sms-multipart", info.segments > 1);
    }
    textarea.addEventListener("input", update);
    update();
  }

  window.crmSmsInfo = function (text) {
    return smsInfo(text, readSet("sms-gsm7-basic"), readSet("sms-gsm7-extension"));
  };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();

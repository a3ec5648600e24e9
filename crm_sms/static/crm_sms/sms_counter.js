/* Live character and SMS-part counter for the "Send SMS" page.
   Counts exactly as crm_sms/text.py: GSM-7 (160 / 153 per part) when every character is in the
   GSM-7 alphabet, else UCS-2 (70 / 67). GSM-7 extension characters take 2 units and are never
   split across parts; characters outside the BMP take 2 UCS-2 units (a surrogate pair).

   With the page's "sms-translit" configuration (crm_sms.translit.counter_config()) it first
   transforms the text as crm_sms/translit.py does before sending: transliteration when the
   #id_translit box is ticked (iuliia's schema tables, words in capitals kept in capitals),
   smart encoding (look-alike punctuation -> GSM-7, only when that makes the text GSM-7) unless
   #id_smart_encoding is unticked, and shows the parts after and before. When the "kind" radio
   says advertising, the unsubscribe phrase is appended first (crm_sms.inbound.with_unsubscribe,
   its configuration in "sms-translit".unsubscribe). In Node, the functions
   are exported for the tests (tests/test_translit.py).

   A template ("{{ first_name }}") makes a text per recipient: the counter then asks the page's
   own action (the form posted with "_sms_counter", crm_sms/admin/send_action.py) for the
   longest text it makes for the selected recipients, and shows that one ("Longest text: …",
   data-longest-*); the text as typed stays in data-characters and the like. Numbers take
   their plural form from "sms-translit".plural (crm_sms/admin/send_preview.py). */
(function () {
  "use strict";

  var LIMITS = { "GSM-7": [160, 153], "UCS-2": [70, 67] };
  var WORD = /[\p{L}\p{N}_]+/gu; // Python's \w, as crm_sms/translit.py splits words
  var CYRILLIC = /[\u0400-\u04ff]/;

  function toSet(chars) {
    var set = Object.create(null);
    Array.from(chars).forEach(function (ch) { set[ch] = true; });
    return set;
  }

  function own(table, key) {
    return Object.prototype.hasOwnProperty.call(table, key) ? table[key] : undefined;
  }

  function isGsm(text, basic, extension) {
    return Array.from(text).every(function (ch) { return basic[ch] || extension[ch]; });
  }

  function smsInfo(text, basic, extension) {
    var chars = Array.from(text); // code points, as Python's len()
    var gsm = isGsm(text, basic, extension);
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

  // --- transliteration: iuliia's TranslitSchema.translate for one word ----------------------
  function translateLetters(chars, config) {
    var out = "";
    for (var i = 0; i < chars.length; i++) {
      var prev = i > 0 ? chars[i - 1] : "", curr = chars[i];
      var next = i + 1 < chars.length ? chars[i + 1] : "";
      var letter = own(config.prev, prev + curr);
      if (letter === undefined) { letter = own(config.next, curr + next); }
      if (letter === undefined) { letter = own(config.map, curr); }
      out += letter === undefined ? curr : letter;
    }
    return out;
  }

  function translitWord(word, config) {
    if (!CYRILLIC.test(word)) { return word; }
    var chars = Array.from(word), latin;
    var ending = chars.length > 2 ? own(config.ending, chars.slice(-2).join("")) : undefined;
    if (ending) {
      latin = translateLetters(chars.slice(0, -2), config) + ending;
    } else {
      latin = translateLetters(chars, config);
    }
    var capitals = word === word.toUpperCase() && word !== word.toLowerCase();
    return chars.length > 1 && capitals ? latin.toUpperCase() : latin;
  }

  function replaceChars(text, table) {
    return Array.from(text).map(function (ch) {
      var value = own(table, ch);
      return value === undefined ? ch : value;
    }).join("");
  }

  function smartEncode(text, config, basic, extension) {
    if (isGsm(text, basic, extension)) { return text; }
    var replaced = replaceChars(text, config.lookalikes);
    return isGsm(replaced, basic, extension) ? replaced : text;
  }

  function transliterate(text, config, basic, extension) {
    var latin = text.replace(WORD, function (word) { return translitWord(word, config); });
    return smartEncode(replaceChars(latin, config.symbols), config, basic, extension);
  }

  /* The text that is sent for ``text``: crm_sms.translit.prepare_text. */
  function prepareText(text, options, config, basic, extension) {
    if (!config) { return text; }
    if (options.translit) { return transliterate(text, config, basic, extension); }
    if (options.smart) { return smartEncode(text, config, basic, extension); }
    return text;
  }

  /* An advertising text with the unsubscribe phrase: crm_sms.inbound.with_unsubscribe. */
  function squeezed(text) {
    return text.toLowerCase().split(/\s+/).filter(Boolean).join(" ");
  }

  function withUnsubscribe(text, unsubscribe) {
    var phrase = unsubscribe ? unsubscribe.phrase : "";
    if (!phrase || squeezed(text).indexOf(squeezed(phrase)) !== -1) { return text; }
    return text.replace(/\s+$/, "") + unsubscribe.separator + phrase;
  }

  function format(template, info) {
    return template.replace(/\{(\w+)\}/g, function (m, key) {
      return key in info ? String(info[key]) : m;
    });
  }

  /* "5 characters" in the page's language: plural = {forms, index} (send_preview.plural_forms). */
  function plural(forms, n) {
    if (!forms) { return String(n); }
    var index = forms.index[n < forms.index.length ? n : 100 + n % 100];
    return forms.forms[index].replace("%(count)s", String(n));
  }

  function words(info, config) {
    var forms = (config && config.plural) || {};
    return { characters: plural(forms.characters, info.characters), encoding: info.encoding,
             segments: plural(forms.segments, info.segments), per_segment: info.per_segment };
  }

  function isTemplate(text) { return /\{[{%#]/.test(text); }

  var api = { smsInfo: smsInfo, prepareText: prepareText, transliterate: transliterate,
              smartEncode: smartEncode, toSet: toSet, withUnsubscribe: withUnsubscribe,
              plural: plural };
  if (typeof module !== "undefined" && module.exports) { module.exports = api; }
  if (typeof document === "undefined") { return; }

  function readJSON(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function readSet(id) {
    return toSet(readJSON(id) || "");
  }

  function advertising() {
    var checked = document.querySelector("input[name=kind]:checked");
    return !!(checked && checked.value === "advertising");
  }

  function options(config) {
    var translit = document.getElementById("id_translit");
    var smart = document.getElementById("id_smart_encoding");
    return {
      translit: !!(translit && translit.checked),
      smart: smart ? smart.checked : !!(config && config.smart_encoding !== false)
    };
  }

  function sameInfo(a, b) {
    return a.characters === b.characters && a.encoding === b.encoding &&
      a.segments === b.segments;
  }

  /* The counter's line: ``info`` after the transformations, ``before`` them, ``longest`` the
     server's answer for a template ({longest, before} or {error}) or null. */
  function describe(counter, info, before, longest, opts, config) {
    var texts = (config && config.texts) || {};
    var label = opts.translit ? texts.before_translit : texts.before_smart;
    var template = counter.dataset.template;
    if (longest && longest.longest) {
      template = counter.dataset.longest || template;
      before = longest.before || longest.longest;
      info = longest.longest;
    }
    var shown = format(template, words(info, config));
    if (!sameInfo(info, before) && label) {
      shown += " (" + format(label, words(before, config)) + ")";
    }
    if (longest && longest.error) { shown += " — " + longest.error; }
    return { text: shown, info: info };
  }

  function show(counter, text, sent, opts, config, basic, extension, longest) {
    var info = smsInfo(sent, basic, extension);
    var before = sent === text ? info : smsInfo(text, basic, extension);
    counter.dataset.characters = info.characters;
    counter.dataset.segments = info.segments;
    counter.dataset.encoding = info.encoding;
    counter.dataset.units = info.units;
    counter.dataset.segmentsBefore = before.segments;
    counter.dataset.encodingBefore = before.encoding;
    counter.dataset.changed = sent === text ? "0" : "1";
    var found = longest && longest.longest;
    counter.dataset.longestCharacters = found ? found.characters : "";
    counter.dataset.longestSegments = found ? found.segments : "";
    counter.dataset.longestEncoding = found ? found.encoding : "";
    counter.dataset.longestError = (longest && longest.error) || "";
    var line = describe(counter, info, before, longest, opts, config);
    counter.textContent = text ? line.text : counter.dataset.empty;
    counter.classList.toggle("crm-sms-multipart", line.info.segments > 1);
  }

  /* Asks the page's action for the longest text of a template, 300 ms after the last change;
     ``done(answer)`` gets the answer for the newest question only. */
  function longestAsker(form, done) {
    var timer = null, asked = 0;
    return function (key) {
      clearTimeout(timer);
      asked += 1;
      var mine = asked;
      if (!key) { return; }
      timer = setTimeout(function () {
        var body = new FormData(form);
        body.set("_sms_counter", "1");
        // form.action would be the form's <input name="action">: the page's own address.
        var url = form.getAttribute("action") || window.location.href;
        fetch(url, { method: "POST", body: body, credentials: "same-origin",
                     headers: { "X-Requested-With": "XMLHttpRequest" } })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (answer) { if (mine === asked) { done(key, answer); } })
          .catch(function () { if (mine === asked) { done(key, null); } });
      }, 300);
    };
  }

  function init() {
    var textarea = document.getElementById("id_text");
    var counter = document.getElementById("sms-counter");
    if (!textarea || !counter) { return; }
    var basic = readSet("sms-gsm7-basic");
    var extension = readSet("sms-gsm7-extension");
    var config = readJSON("sms-translit");
    var form = textarea.form;
    var longest = { key: "", answer: null };
    var ask = form && window.fetch && window.FormData ? longestAsker(form, function (key, answer) {
      longest = { key: key, answer: answer };
      counter.dataset.longestPending = "0";
      update();
    }) : null;
    function question(typed, opts) {
      if (!ask || !isTemplate(typed)) { return ""; }
      var kind = document.querySelector("input[name=kind]:checked");
      var provider = document.getElementById("id_provider");
      return JSON.stringify([typed, opts.translit, opts.smart, kind ? kind.value : "",
                             provider ? provider.value : ""]);
    }
    function update() {
      var typed = textarea.value.replace(/\r\n?/g, "\n");
      var text = typed;
      if (text && advertising() && config) { text = withUnsubscribe(text, config.unsubscribe); }
      var opts = options(config);
      var key = question(typed, opts);
      if (key !== longest.key) {
        longest = { key: key, answer: null };
        counter.dataset.longestPending = key ? "1" : "0";
        if (ask) { ask(key); }
      }
      show(counter, text, prepareText(text, opts, config, basic, extension), opts, config,
           basic, extension, longest.answer);
    }
    textarea.addEventListener("input", update);
    var provider = document.getElementById("id_provider");
    if (provider) { provider.addEventListener("change", update); }
    ["id_translit", "id_smart_encoding"].forEach(function (id) {
      var box = document.getElementById(id);
      if (box) { box.addEventListener("change", update); }
    });
    document.querySelectorAll("input[name=kind]").forEach(function (radio) {
      radio.addEventListener("change", update);
    });
    update();
  }

  window.crmSmsInfo = function (text) {
    return smsInfo(text, readSet("sms-gsm7-basic"), readSet("sms-gsm7-extension"));
  };
  window.crmSmsPrepare = function (text, opts) {
    return prepareText(text, opts || options(readJSON("sms-translit")),
                       readJSON("sms-translit"), readSet("sms-gsm7-basic"),
                       readSet("sms-gsm7-extension"));
  };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();

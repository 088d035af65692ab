/* bidsapp rating widget: plain JavaScript, no library, no server, no network.
 *
 * Ratings are kept in the browser's localStorage under "bidsapp-ratings:<dataset id>", so every
 * participant report of one output folder shares them. "Export" downloads all of them as
 * bidsapp_ratings_<time>.json (or .tsv); put that file in <output_dir>/ratings/ and run the group
 * level, which merges it. "Import" loads an exported JSON file back (the newer rating wins).
 */
(function () {
  "use strict";
  var meta = JSON.parse(document.getElementById("bidsapp-meta").textContent);
  var KEY = "bidsapp-ratings:" + meta.dataset;
  var RATER_KEY = "bidsapp-rater";
  var memory = {};  // used when localStorage is unavailable
  var persistent = true;

  function readStore() {
    try {
      return JSON.parse(window.localStorage.getItem(KEY) || "{}") || {};
    } catch (err) {
      persistent = false;
      return memory;
    }
  }
  function writeStore(store) {
    memory = store;
    try {
      window.localStorage.setItem(KEY, JSON.stringify(store));
    } catch (err) {
      persistent = false;
    }
    updateStatus();
  }
  function rater() {
    var field = document.getElementById("rater");
    return field ? field.value.trim() : "";
  }
  function idOf(widget) {
    return widget.getAttribute("data-image") + "|" + widget.getAttribute("data-defacer");
  }
  function widgets() {
    return Array.prototype.slice.call(document.querySelectorAll(".rating[data-image]"));
  }
  function showWidget(widget, entry) {
    var radios = widget.querySelectorAll("input[type=radio]");
    for (var i = 0; i < radios.length; i++) {
      radios[i].checked = !!entry && radios[i].value === entry.rating;
    }
    widget.querySelector("textarea").value = entry ? entry.notes || "" : "";
    widget.querySelector(".saved").textContent = entry && entry.time
      ? "saved " + entry.time.replace("T", " ").slice(0, 16) : "";
  }
  function refresh() {
    var store = readStore();
    widgets().forEach(function (widget) { showWidget(widget, store[idOf(widget)]); });
    updateStatus();
  }
  function saveWidget(widget) {
    var store = readStore();
    var chosen = widget.querySelector("input[type=radio]:checked");
    var notes = widget.querySelector("textarea").value;
    var id = idOf(widget);
    if (!chosen && !notes.trim()) {
      delete store[id];
    } else {
      store[id] = {
        image: widget.getAttribute("data-image"),
        defacer: widget.getAttribute("data-defacer"),
        rating: chosen ? chosen.value : "",
        notes: notes,
        rater: rater(),
        time: new Date().toISOString()
      };
    }
    writeStore(store);
    showWidget(widget, store[id]);
  }
  function updateStatus() {
    var status = document.getElementById("rating-status");
    if (!status) { return; }
    var store = readStore();
    var all = Object.keys(store).length;
    var here = widgets().filter(function (w) { return store[idOf(w)]; }).length;
    status.textContent = here + " of " + widgets().length + " rated in this report; " + all +
      " rating(s) for this output folder in this browser" +
      (persistent ? "" : " (storage unavailable: export before closing the page)");
  }
  function entries() {
    var store = readStore();
    return Object.keys(store).sort().map(function (k) { return store[k]; });
  }
  function stamp() {
    return new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  }
  function download(name, text, type) {
    var blob = new Blob([text], { type: type });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }
  function exportJson() {
    var payload = {
      format: "bidsapp-ratings", version: 1, dataset: meta.dataset_name, rater: rater(),
      exported: new Date().toISOString(), ratings: entries()
    };
    download("bidsapp_ratings_" + stamp() + ".json", JSON.stringify(payload, null, 1) + "\n",
             "application/json");
  }
  function clean(value) { return String(value || "").replace(/[\t\r\n]+/g, " "); }
  function exportTsv() {
    var lines = ["image\tdefacer\trating\tnotes\trater\ttime"];
    entries().forEach(function (e) {
      lines.push([e.image, e.defacer, e.rating, e.notes, e.rater, e.time].map(clean).join("\t"));
    });
    download("bidsapp_ratings_" + stamp() + ".tsv", lines.join("\n") + "\n",
             "text/tab-separated-values");
  }
  function importJson(file) {
    var reader = new FileReader();
    reader.onload = function () {
      var message = document.getElementById("rating-status");
      try {
        var payload = JSON.parse(reader.result);
        var items = Array.isArray(payload) ? payload : payload.ratings;
        if (!Array.isArray(items)) { throw new Error("no 'ratings' list"); }
        var store = readStore();
        var merged = 0;
        items.forEach(function (e) {
          if (!e || !e.image || !e.defacer) { return; }
          var id = e.image + "|" + e.defacer;
          if (!store[id] || String(store[id].time || "") < String(e.time || "")) {
            store[id] = e;
            merged += 1;
          }
        });
        writeStore(store);
        refresh();
        if (message) { message.textContent += " (imported " + merged + ")"; }
      } catch (err) {
        if (message) { message.textContent = "import failed: not a bidsapp ratings file"; }
      }
    };
    reader.readAsText(file);
  }

  widgets().forEach(function (widget) {
    widget.addEventListener("change", function () { saveWidget(widget); });
    widget.querySelector("textarea").addEventListener("input", function () { saveWidget(widget); });
  });
  var raterField = document.getElementById("rater");
  if (raterField) {
    try { raterField.value = window.localStorage.getItem(RATER_KEY) || ""; } catch (err) { }
    raterField.addEventListener("input", function () {
      try { window.localStorage.setItem(RATER_KEY, raterField.value); } catch (err) { }
    });
  }
  var bind = function (id, event, handler) {
    var element = document.getElementById(id);
    if (element) { element.addEventListener(event, handler); }
  };
  bind("export-json", "click", exportJson);
  bind("export-tsv", "click", exportTsv);
  bind("import-json", "change", function (event) {
    if (event.target.files.length) { importJson(event.target.files[0]); }
  });
  refresh();
})();

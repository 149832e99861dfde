// The SLI fields of the SLO and alert-rule forms: show the fields the chosen kind reads, and
// (on the SLO form) preview the SLI over the last three days as you type, computed on the
// server from the stored spans by the same code that counts the rollups.
(function () {
  var form = document.querySelector("form[data-sli-form]");
  if (!form) return;
  var kind = form.querySelector("#sli-kind");

  function showFields() {
    var option = kind.options[kind.selectedIndex];
    var source = option.dataset.source, threshold = option.dataset.threshold !== "none";
    form.querySelectorAll(".sli-fields").forEach(function (field) {
      var shown = field.dataset.sources ? field.dataset.sources.split(" ").indexOf(source) >= 0 : threshold;
      field.hidden = !shown;
      field.querySelectorAll("input, select, textarea").forEach(function (input) { input.disabled = !shown; });
    });
  }
  kind.addEventListener("change", showFields);
  showFields();

  var chart = document.getElementById("preview-chart");
  if (!chart || !form.dataset.previewUrl) return;
  var note = document.getElementById("preview-note"), error = document.getElementById("preview-error");
  var timer = null, sent = 0;

  function preview() {
    var mine = ++sent;
    fetch(form.dataset.previewUrl, {method: "POST", body: new FormData(form), credentials: "same-origin",
                                    headers: {"X-Requested-With": "fetch"}})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (mine !== sent) return;  // a newer preview is on its way
        if (data.error) { error.textContent = data.error; return; }
        error.textContent = "";
        Plotly.react(chart, data.figure.data, data.figure.layout, {responsive: true, displaylogo: false});
        var text = data.description + ": " + data.events + " events in the last 3 days";
        if (data.sli !== null) text += ", SLI " + (100 * data.sli).toFixed(3) + " %";
        if (data.truncated) text += " (the newest spans only)";
        note.textContent = text;
        chart.dataset.events = data.events;
      })
      .catch(function () { if (mine === sent) error.textContent = "The preview could not be loaded."; });
  }
  form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(preview, 300); });
  form.addEventListener("change", function () { clearTimeout(timer); timer = setTimeout(preview, 100); });
  preview();
})();

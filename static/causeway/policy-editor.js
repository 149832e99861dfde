// The policy editor: line numbers beside the textarea, the server's problem lines marked,
// and a click on a problem puts the cursor on its line and column.
(function () {
  "use strict";
  var source = document.getElementById("source");
  var gutter = document.getElementById("gutter");
  if (!source || !gutter) return;
  var errorLines = {};
  (gutter.dataset.errorLines || "").split(",").forEach(function (n) { if (n) errorLines[n] = true; });
  var dirty = false;

  function render() {
    var count = source.value.split("\n").length;
    var parts = [];
    for (var i = 1; i <= count; i++) {
      var bad = errorLines[i] && !dirty;
      parts.push(bad ? '<span class="bad-line" data-line="' + i + '">' + i + "</span>" : String(i));
    }
    gutter.innerHTML = parts.join("\n");
    gutter.scrollTop = source.scrollTop;
  }

  function goTo(line, column) {
    var lines = source.value.split("\n");
    var offset = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    var col = Math.max(0, (column || 1) - 1);
    source.focus();
    source.setSelectionRange(offset + col, offset + (lines[line - 1] || "").length);
    var lineHeight = parseFloat(getComputedStyle(source).lineHeight) || 19;
    source.scrollTop = Math.max(0, (line - 5) * lineHeight);
  }

  source.addEventListener("input", function () { dirty = true; render(); });
  source.addEventListener("scroll", function () { gutter.scrollTop = source.scrollTop; });
  source.addEventListener("keydown", function (event) {
    // Tab inserts two spaces: YAML forbids tabs for indentation.
    if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey) {
      event.preventDefault();
      var start = source.selectionStart;
      source.setRangeText("  ", start, source.selectionEnd, "end");
      dirty = true;
      render();
    }
  });
  document.querySelectorAll("#problems li[data-line]").forEach(function (item) {
    item.addEventListener("click", function () {
      var line = parseInt(item.dataset.line, 10);
      if (line) goTo(line, parseInt(item.dataset.column, 10));
    });
  });
  render();
})();

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
  // One listener for the server's problem list and for the lists live validation draws.
  document.addEventListener("click", function (event) {
    var item = event.target.closest ? event.target.closest("#problems li[data-line]") : null;
    var line = item ? parseInt(item.dataset.line, 10) : 0;
    if (line) goTo(line, parseInt(item.dataset.column, 10));
  });

  // Live validation as you type: the server checks the text against policy.schema.json and the
  // rule checks (the same code that saves), and nothing is saved.
  var box = document.getElementById("problems-box");
  var csrf = document.querySelector("input[name=csrfmiddlewaretoken]");
  var timer = null, asked = 0;

  function showProblems(problems) {
    errorLines = {};
    dirty = false;
    box.textContent = "";
    if (!problems.length) {
      var ok = document.createElement("p");
      ok.className = "ok";
      ok.id = "valid-note";
      ok.textContent = "Valid policy.";
      box.appendChild(ok);
      render();
      return;
    }
    var head = document.createElement("h2");
    head.className = "error";
    head.textContent = problems.length + " problem" + (problems.length === 1 ? "" : "s");
    var list = document.createElement("ul");
    list.className = "problems";
    list.id = "problems";
    problems.forEach(function (p) {
      if (p.line) errorLines[p.line] = true;
      var item = document.createElement("li");
      item.dataset.line = p.line || "";
      item.dataset.column = p.column || "";
      var where = document.createElement("span");
      where.className = "where";
      where.textContent = p.line ? "Line " + p.line + (p.column ? ", column " + p.column : "") : "Somewhere";
      item.appendChild(where);
      if (p.path) { var code = document.createElement("code"); code.textContent = " " + p.path; item.appendChild(code); }
      item.appendChild(document.createElement("br"));
      item.appendChild(document.createTextNode(p.message));
      list.appendChild(item);
    });
    box.appendChild(head);
    box.appendChild(list);
    render();
  }

  function validate() {
    var mine = ++asked;
    fetch(box.dataset.validateUrl, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf ? csrf.value : ""},
      body: JSON.stringify({source: source.value}),
    }).then(function (response) {
      return response.json().then(function (body) { return {status: response.status, body: body}; });
    }).then(function (answer) {
      if (mine !== asked) return;  // a newer check is on its way
      if (answer.status === 200) showProblems([]);
      else if (answer.body.error && answer.body.error.problems) showProblems(answer.body.error.problems);
    }).catch(function () { /* offline or server gone: saving still validates */ });
  }

  if (box) {
    source.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(validate, 400);
    });
  }
  render();
})();

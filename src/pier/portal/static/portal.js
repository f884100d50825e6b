// Pier portal: copy buttons, confirmations, and the live view that updates by itself.
// Plain JavaScript, no dependencies; the pages work without it (except live updates).
(function () {
  "use strict";

  function copyText(field, done) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () {
        field.select();
        document.execCommand("copy");
        done();
      });
    } else {
      field.select();
      document.execCommand("copy");
      done();
    }
  }

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var label = button.textContent;
    button.addEventListener("click", function () {
      copyText(document.getElementById(button.dataset.copy), function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  // -- lists: the rule editor's live count and problems; a list being computed reloads --------
  document.querySelectorAll("[data-preview-url]").forEach(function (editor) {
    var form = editor.closest("form");
    var rule = editor.querySelector("[data-rule]");
    var count = editor.querySelector("[data-preview]");
    var problems = editor.querySelector("[data-problems]");
    var timer = null;
    var asked = 0;

    function showProblems(list) {
      problems.textContent = "";
      list.forEach(function (p) {
        var item = document.createElement("li");
        var button = element("button", "link", "");
        button.type = "button";
        button.dataset.pointer = p.path;
        button.appendChild(element("code", "pointer", p.path || "/"));
        item.appendChild(button);
        item.appendChild(document.createTextNode(" " + p.message));
        problems.appendChild(item);
      });
    }

    // A problem's pointer selects its place in the rule: the value it names, or the nearest
    // enclosing one that is there (a missing key points into the object that lacks it).
    problems.addEventListener("click", function (event) {
      var button = event.target.closest("[data-pointer]");
      if (!button) return;
      var found = jsonPlaces(rule.value);
      var pointer = button.dataset.pointer.replace(/^\/rule/, "");
      while (!(pointer in found) && pointer) pointer = pointer.replace(/\/[^/]*$/, "");
      var place = found[pointer];
      rule.focus();
      if (place) rule.setSelectionRange(place[0], place[1]);
    });

    function ask() {
      if (!rule.value.trim()) {
        count.textContent = "";
        showProblems([]);
        return;
      }
      var mine = ++asked;
      var body = new URLSearchParams();
      body.set("csrf", form.querySelector("[name=csrf]").value);
      body.set("rule", rule.value);
      fetch(editor.dataset.previewUrl, { method: "POST", body: body, headers: { Accept: "application/json" } })
        .then(function (response) { return response.json().then(function (data) { return [response.status, data]; }); })
        .then(function (answer) {
          if (mine !== asked) return; // an older answer than the one shown
          var data = answer[1];
          if (answer[0] === 200) {
            count.textContent = data.count + (data.count === 1 ? " user matches now" : " users match now");
            count.className = "preview";
            showProblems([]);
          } else {
            count.textContent = "No count: the rule has problems";
            count.className = "preview off";
            showProblems(data.errors || [{ path: "", message: data.error }]);
          }
        })
        .catch(function () {
          count.textContent = "No count (the server did not answer)";
          count.className = "preview off";
        });
    }

    rule.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(ask, 400);
    });
    if (rule.value.trim() && !problems.children.length) ask();
  });

  // Where each value of a JSON text is: {JSON Pointer: [start, end]}, as far as the text parses.
  function jsonPlaces(text) {
    var at = 0;
    var places = {};
    function space() {
      while (at < text.length && " \t\r\n".indexOf(text[at]) >= 0) at++;
    }
    function string() {
      var start = at++;
      while (at < text.length && text[at] !== '"') at += text[at] === "\\" ? 2 : 1;
      at++;
      return JSON.parse(text.slice(start, at));
    }
    function items(close, pointer, keyed) {
      at++;
      for (var i = 0; ; i++) {
        space();
        if (at >= text.length || text[at] === close) break;
        var before = at;
        var key = i;
        if (keyed) {
          if (text[at] !== '"') return;
          key = string();
          space();
          at++; // the colon
        }
        value(pointer + "/" + String(key).replace(/~/g, "~0").replace(/\//g, "~1"));
        space();
        if (text[at] === ",") at++;
        if (at === before) return;
      }
      at++;
    }
    function value(pointer) {
      space();
      var start = at;
      if (text[at] === "{") items("}", pointer, true);
      else if (text[at] === "[") items("]", pointer, false);
      else if (text[at] === '"') string();
      else while (at < text.length && ",]} \t\r\n".indexOf(text[at]) < 0) at++;
      places[pointer] = [start, at];
    }
    try {
      value("");
    } catch (e) {
      // a string that does not parse: the places found so far
    }
    return places;
  }

  if (document.querySelector("[data-loading]")) {
    setTimeout(function () { window.location.reload(); }, 1000);
  }

  // -- live view: poll the portal's JSON endpoint for events after the newest one shown --------
  var live = document.getElementById("live");
  if (!live) return;
  var POLL_MS = 1500;
  var HIDDEN_POLL_MS = 10000;
  var CHART_MS = 15000;
  var MAX_ROWS = 100;
  var body = live.querySelector("tbody");
  var status = live.querySelector("[data-status]");
  var lastId = Number(live.dataset.lastId || 0);

  function cell(row, className, child) {
    var td = row.insertCell();
    if (className) td.className = className;
    td.appendChild(child);
  }

  function element(tag, className, text) {
    var el = document.createElement(tag);
    if (className) el.className = className;
    el.textContent = text;
    return el;
  }

  function addRow(event) {
    var row = body.insertRow(0);
    row.className = "fresh";
    row.dataset.id = event.id;
    cell(row, "time muted", document.createTextNode(event.time));
    cell(row, "", element("span", "event-name", event.name));
    var link = element("a", "", event.user);
    link.href = event.user_url;
    cell(row, "", link);
    cell(row, "", element("code", "data", event.data));
  }

  function show(text, className) {
    status.textContent = text;
    status.className = "status " + className;
  }

  function poll() {
    fetch(live.dataset.url + "?after=" + lastId, { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) {
          window.location.href = live.dataset.login;
          throw new Error("logged out");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        data.events.slice().reverse().forEach(addRow); // oldest first, so the newest ends on top
        if (data.events.length) {
          var firstSteps = live.querySelector("[data-first-steps]");
          if (firstSteps) firstSteps.remove();
        }
        while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
        lastId = data.last_id;
        show("Live · checked " + new Date().toLocaleTimeString(), "on");
      })
      .catch(function () {
        show("Reconnecting…", "off");
      })
      .then(function () {
        setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
      });
  }

  function refreshChart() {
    var box = document.getElementById("chart");
    if (!box || document.hidden) return;
    fetch(box.dataset.url)
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (svg) { if (svg) box.innerHTML = svg; })
      .catch(function () {});
  }

  show("Live", "on");
  setTimeout(poll, POLL_MS);
  setInterval(refreshChart, CHART_MS);
})();

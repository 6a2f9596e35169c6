// proxyprint: live job status. The pages work without this file; it only
// updates the status of jobs held or on their way ([data-live-job] elements),
// from the Server-Sent Events of /jobs/events (same origin, the session
// cookie). The browser's EventSource reconnects by itself when a stream ends.
"use strict";
(function () {
  function live() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live-job]"));
  }

  function show(card, item) {
    var badge = card.querySelector(".status");
    if (badge) {
      badge.textContent = item.status;
      badge.className = "status status-" + item.status;
    }
    card.setAttribute("data-live-status", item.status);
    if (item.status !== "held") {
      // Released or cancelled elsewhere (a tap, an operator): its buttons no longer apply.
      Array.prototype.forEach.call(card.querySelectorAll("button"), function (button) {
        button.disabled = true;
      });
    }
    if (item.final) {
      card.removeAttribute("data-live-job");
      card.setAttribute("data-final", item.status);
    }
  }

  function follow() {
    var cards = live();
    if (cards.length === 0 || typeof window.EventSource === "undefined") {
      return;
    }
    var ids = cards.map(function (card) { return card.getAttribute("data-live-job"); });
    var source = new window.EventSource("/jobs/events?ids=" + ids.join(","));
    source.addEventListener("open", function () {
      document.body.setAttribute("data-live", "open");
    });
    source.addEventListener("status", function (message) {
      var item = JSON.parse(message.data);
      var card = document.querySelector('[data-live-job="' + String(item.id) + '"]');
      if (card) { show(card, item); }
      if (live().length === 0) {
        source.close();  // nothing left to follow on this page
        document.body.setAttribute("data-live", "done");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", follow);
})();

// The OfficeRnD sync started on the Integrations page: its progress bar, by
// polling /admin/integrations/sync/status until the run has ended.
(function () {
  function poll(box) {
    fetch("/admin/integrations/sync/status", {
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (resp) {
      return resp.ok ? resp.json() : null;
    }).then(function (run) {
      if (run === null) { return; }
      var bar = document.getElementById("sync-progress");
      if (bar) {
        bar.max = run.total || 1;
        bar.value = run.done;
      }
      var count = document.getElementById("sync-count");
      if (count) { count.textContent = run.done + " / " + run.total; }
      box.setAttribute("data-state", run.state);
      var state = box.querySelector("#sync-state .status");
      if (state) {
        state.textContent = run.state;
        state.className = "status status-" + run.state;
      }
      var summary = document.getElementById("sync-summary");
      if (summary) { summary.textContent = run.summary; }
      if (run.state === "running") {
        window.setTimeout(function () { poll(box); }, 300);
      } else {
        box.removeAttribute("data-live-sync");
        var hint = document.getElementById("sync-reload");
        if (hint) { hint.parentNode.removeChild(hint); }
        var button = document.getElementById("sync");
        if (button) { button.disabled = false; }
      }
    }).catch(function () { window.setTimeout(function () { poll(box); }, 1000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.querySelector("[data-live-sync]");
    if (box) { poll(box); }
  });
})();

// proxyprint: live job status. The pages work without this file; it only
// updates the status of jobs still on their way ([data-live-job] elements),
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

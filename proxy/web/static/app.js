// proxyprint: live job status on "My jobs". The pages work without this file;
// it only updates the status of jobs still on their way, by polling
// /jobs/status (same origin, the session cookie) every data-poll-secs seconds.
"use strict";
(function () {
  var secs = parseFloat(document.body.getAttribute("data-poll-secs")) || 3;

  function live() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live-job]"));
  }

  function show(card, item) {
    var badge = card.querySelector(".status");
    if (badge) {
      badge.textContent = item.status;
      badge.className = "status status-" + item.status;
    }
    if (item.final) {
      card.removeAttribute("data-live-job");
      card.setAttribute("data-final", item.status);
    }
  }

  function poll() {
    var cards = live();
    if (cards.length === 0) {
      return;
    }
    var byId = {};
    cards.forEach(function (card) { byId[card.getAttribute("data-live-job")] = card; });
    fetch("/jobs/status?ids=" + Object.keys(byId).join(","), {
      credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (resp) {
      return resp.ok ? resp.json() : { items: [] };
    }).then(function (body) {
      body.items.forEach(function (item) {
        var card = byId[String(item.id)];
        if (card) { show(card, item); }
      });
    }).catch(function () { /* the next tick tries again */ }).then(function () {
      if (live().length > 0) { window.setTimeout(poll, secs * 1000); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (live().length > 0) { window.setTimeout(poll, secs * 1000); }
  });
})();

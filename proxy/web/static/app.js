// proxyprint: live jobs. The pages work without this file; it only updates
// the status of jobs held or on their way ([data-live-job] elements) and adds
// new jobs to a page's lists ([data-live-new]: My jobs, the ticket queue), from
// the Server-Sent Events of /jobs/events (same origin, the session cookie).
// A new job is announced by its id only: its row comes from the page itself,
// fetched again and drawn by the server, as a reload would draw it. A row of a
// list that holds one status only ([data-live-leaves="held"]: My jobs' held
// list) moves, the same way, to where the server now draws its job once the
// job leaves that status (released by a tap or from another window).
"use strict";
(function () {
  var RETRY_MS = 2000;
  var MAX_FAILURES = 5;  // in a row, never open: signed out (401) or the service is gone
  var moved = null;  // set by follow(): fetch the page again for rows that left their list

  function live() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live-job]"));
  }

  function card(id) {
    return document.querySelector('[data-live-job="' + String(id) + '"]');
  }

  function known(id) {
    return document.querySelector('[data-job-id="' + String(id) + '"]') !== null;
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
      var list = card.parentElement;
      if (list && list.getAttribute("data-live-leaves") === "held" &&
          !card.hasAttribute("data-left")) {
        card.setAttribute("data-left", item.status);
        if (moved) { moved(); }
      }
    }
    if (item.final) {
      card.removeAttribute("data-live-job");
      card.setAttribute("data-final", item.status);
    }
  }

  // The rows of the freshly drawn page that this one lacks, each put before the
  // row that follows it there (or last); what is on the page stays as it is.
  function merge(fresh, pending) {
    Array.prototype.forEach.call(fresh.querySelectorAll("[data-live-list]"), function (list) {
      var here = document.getElementById(list.id);
      if (!here) { return; }
      var rows = Array.prototype.slice.call(list.children);
      rows.forEach(function (row, index) {
        var id = row.getAttribute("data-job-id");
        if (!id) { return; }
        var left = document.querySelector('[data-job-id="' + id + '"][data-left]');
        if (left && left.parentElement !== here) {
          var from = left.parentElement;
          from.removeChild(left);  // drawn in this list now
          var none = document.querySelector('[data-empty-for="' + from.id + '"]');
          if (none && from.children.length === 0) { none.hidden = false; }
        } else if (known(id)) {
          return;
        }
        var before = null;
        for (var i = index + 1; i < rows.length && before === null; i++) {
          var next = rows[i].getAttribute("data-job-id");
          before = next ? here.querySelector(':scope > [data-job-id="' + next + '"]') : null;
        }
        var added = document.importNode(row, true);
        here.insertBefore(added, before);
        var item = pending[id];
        if (item && added.hasAttribute("data-live-job")) { show(added, item); }
      });
      if (here.children.length > 0) {
        var empty = document.querySelector('[data-empty-for="' + list.id + '"]');
        if (empty) { empty.hidden = true; }
        var section = here.closest("section");
        if (section) { section.hidden = false; }
      }
    });
  }

  function follow() {
    var region = document.querySelector("[data-live-new]");
    if ((live().length === 0 && !region) || typeof window.EventSource === "undefined") {
      return;
    }
    var source = null;
    var failures = 0;
    var refreshing = false;
    var again = false;
    var pending = {};  // statuses of jobs not on the page yet, while their rows are fetched

    function refresh() {
      if (refreshing) { again = true; return; }
      refreshing = true;
      pending = {};
      fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "Accept": "text/html" }
      }).then(function (resp) {
        return resp.ok ? resp.text() : null;
      }).then(function (text) {
        if (text === null) { return; }
        var fresh = new window.DOMParser().parseFromString(text, "text/html");
        merge(fresh, pending);
        var since = fresh.querySelector("[data-live-new]");
        if (since && region) {
          region.setAttribute("data-live-since", since.getAttribute("data-live-since"));
        }
        document.body.setAttribute("data-live-added", String(Date.now()));
      }).catch(function () {
        // The next announcement fetches again.
      }).then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
    }

    moved = refresh;

    function url() {
      var ids = live().map(function (c) { return c.getAttribute("data-live-job"); });
      var query = "ids=" + ids.join(",");
      if (region) {
        query += "&new=" + encodeURIComponent(region.getAttribute("data-live-new")) +
          "&since=" + encodeURIComponent(region.getAttribute("data-live-since") || "");
      }
      return "/jobs/events?" + query;
    }

    function status(item) {
      var found = card(item.id);
      if (found) {
        show(found, item);
      } else if (refreshing) {
        pending[String(item.id)] = item;
      }
    }

    function open() {
      source = new window.EventSource(url());
      source.addEventListener("open", function () {
        failures = 0;
        document.body.setAttribute("data-live", "open");
      });
      source.addEventListener("status", function (message) {
        status(JSON.parse(message.data));
        if (live().length === 0 && !region) {
          source.close();  // nothing left to follow on this page
          document.body.setAttribute("data-live", "done");
        }
      });
      source.addEventListener("new", function (message) {
        var item = JSON.parse(message.data);
        if (known(item.id)) { status(item); } else { refresh(); }
      });
      source.addEventListener("end", function (message) {
        var reason = JSON.parse(message.data).reason;
        source.close();
        if (reason === "signed-out") {
          document.body.setAttribute("data-live", "ended");
        } else {
          // A new stream for what the page shows now (its new rows included).
          window.setTimeout(open, reason === "renew" ? 0 : RETRY_MS);
        }
      });
      source.addEventListener("error", function () {
        if (source.readyState === window.EventSource.OPEN) { return; }
        source.close();
        failures += 1;
        if (failures < MAX_FAILURES) {
          window.setTimeout(open, RETRY_MS * failures);
        } else {
          document.body.setAttribute("data-live", "ended");
        }
      });
    }

    open();
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

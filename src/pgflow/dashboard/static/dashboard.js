// pgflow dashboard: live refresh of the run page, and action forms that post without leaving it.
// Everything works without this script: forms post and redirect, and the run page says to reload.
(function () {
  "use strict";

  var FAST = 1000; // ms between refreshes while the run can still change
  var SLOW = 5000; // once it has ended (a retry elsewhere can still revive it), or in a hidden tab

  function flash(text, kind) {
    var area = document.getElementById("flash");
    if (!area) return;
    var line = document.createElement("p");
    line.className = "flash " + kind;
    line.textContent = text;
    area.replaceChildren(line);
  }

  // -- live refresh: fetch the run's fragment, swap each part that changed --------------------------
  var root = document.querySelector("[data-live]");
  var busy = false;
  var timer = null;

  function openDetails() {
    var keys = [];
    root.querySelectorAll("details[data-key]").forEach(function (d) {
      keys.push([d.dataset.key, d.open]);
    });
    return keys;
  }

  function restoreDetails(keys) {
    keys.forEach(function (pair) {
      var found = root.querySelector('details[data-key="' + CSS.escape(pair[0]) + '"]');
      if (found) found.open = pair[1];
    });
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var keys = openDetails();
    doc.querySelectorAll("[data-live-part]").forEach(function (fresh) {
      var current = root.querySelector('[data-live-part="' + fresh.dataset.livePart + '"]');
      if (!current || current.outerHTML === fresh.outerHTML) return; // unchanged: leave it be
      current.replaceWith(document.importNode(fresh, true));
    });
    restoreDetails(keys);
  }

  function ended() {
    var top = root.querySelector('[data-live-part="top"]');
    var status = top ? top.dataset.status : "";
    return status === "completed" || status === "failed" || status === "cancelled";
  }

  async function refresh() {
    if (!root || busy) return;
    busy = true;
    clearTimeout(timer);
    try {
      var response = await fetch(root.dataset.live, { cache: "no-store", credentials: "same-origin" });
      if (response.ok) swap(await response.text());
    } catch (e) {
      // the server is away for a moment: try again at the next tick
    } finally {
      busy = false;
      timer = setTimeout(refresh, document.hidden || ended() ? SLOW : FAST);
    }
  }

  if (root) {
    timer = setTimeout(refresh, FAST);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) refresh();
    });
  }

  // -- actions: confirm when asked, post in the background, say what happened ------------------------
  document.addEventListener("submit", async function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-async")) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    var confirmed = form.querySelector('input[name="confirmed"]');
    if (confirmed) confirmed.value = "yes";
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    try {
      var response = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "Accept": "application/json" },
        credentials: "same-origin",
      });
      var answer = await response.json().catch(function () {
        return { ok: false, error: "Unexpected answer from the server (HTTP " + response.status + ")." };
      });
      if (answer.ok) {
        flash(answer.message, "ok");
        var cleared = form.dataset.reset && form.elements.namedItem(form.dataset.reset);
        if (cleared) cleared.value = "";
      } else {
        flash(answer.error, "error");
      }
    } catch (e) {
      flash("The dashboard could not be reached: " + e.message, "error");
    } finally {
      buttons.forEach(function (b) { b.disabled = false; });
      if (confirmed) confirmed.value = "";
      refresh();
    }
  });
})();

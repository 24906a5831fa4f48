// fleet-stub console: the only script. Every page reads the same without it; with it, what is on the screen is
// fetched again every data-refresh seconds and <main> is swapped, unless the reader is typing in a form.
"use strict";
(function () {
  // an abort cannot be undone: ask first (without JavaScript the button posts at once)
  document.addEventListener("submit", function (event) {
    const button = event.submitter;
    if (button && button.classList.contains("danger") && !window.confirm(button.textContent + " this rollout? Every host goes back to the version before it, for good.")) {
      event.preventDefault();
    }
  });
  const seconds = Number(document.body.dataset.refresh || "0");
  if (!seconds) {
    return;
  }
  function busy() {
    const active = document.activeElement;
    return document.hidden || (active !== null && active.closest("form") !== null && active.tagName !== "A");
  }
  async function refresh() {
    if (busy()) {
      return;
    }
    let answer;
    try {
      answer = await fetch(window.location.href, { credentials: "same-origin", cache: "no-store", redirect: "follow" });
    } catch (error) {
      return; // the stub is away: try again next time
    }
    if (answer.redirected || !answer.ok) {
      window.location.reload(); // logged out or expired: show the login page
      return;
    }
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    const main = fresh.getElementById("main");
    const current = document.getElementById("main");
    if (main === null || current === null || busy()) {
      return;
    }
    current.replaceWith(document.importNode(main, true));
    const stamp = fresh.getElementById("rendered-at");
    const shown = document.getElementById("rendered-at");
    if (stamp !== null && shown !== null) {
      shown.textContent = stamp.textContent;
    }
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || "0") + 1);
  }
  window.setInterval(refresh, seconds * 1000);
})();

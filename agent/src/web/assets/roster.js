// A lesson's roster (the teacher's phone or laptop): a tap on a tile's button saves that
// mark in place, and the roster follows phones checking in without a reload. The server
// renders every tile; this script only fetches the page again and swaps the list in, so
// a tile looks the same with or without it.
(function () {
  "use strict";
  const roster = document.getElementById("roster");
  if (!roster) return;
  const notice = document.getElementById("notice");
  const count = document.getElementById("count");

  // Puts the fetched page's roster, notice and count in place of ours. What the teacher
  // is typing on other tiles stays; the changed tile shows what the server kept.
  function adopt(html, changed) {
    const page = new DOMParser().parseFromString(html, "text/html");
    const fresh = page.getElementById("roster");
    if (fresh) {
      const typed = [];
      for (const input of roster.querySelectorAll("input[name$=reason]")) {
        const tile = input.closest("li");
        if (input.value && tile && tile.id !== changed) typed.push([tile.id, input.name, input.value]);
      }
      roster.replaceChildren(...fresh.childNodes);
      for (const [id, name, value] of typed) {
        const input = document.querySelector("#" + CSS.escape(id) + " input[name=" + name + "]");
        if (input) input.value = value;
      }
    }
    const freshNotice = page.getElementById("notice");
    if (freshNotice && notice) {
      notice.textContent = freshNotice.textContent;
      notice.className = freshNotice.className;
    }
    const freshCount = page.getElementById("count");
    if (freshCount && count) count.textContent = freshCount.textContent;
  }

  roster.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    event.preventDefault();
    const body = new URLSearchParams(new FormData(form, event.submitter));
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    try {
      const answer = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
      const changed = form.closest("li").id;
      adopt(await answer.text(), changed);
      const tile = document.getElementById(changed);
      if (tile) tile.scrollIntoView({ block: "nearest" });
    } catch (error) {
      // Offline: the form is sent the ordinary way, and the browser says what happened.
      form.submit();
    }
  });

  // Live: the projector's feed tells when the lesson's count changes; the roster is
  // fetched again then, unless the teacher is typing a reason.
  async function refresh() {
    if (roster.contains(document.activeElement) && document.activeElement.value) return;
    const answer = await fetch(location.pathname, { credentials: "same-origin" });
    if (answer.ok) {
      const html = await answer.text();
      const keep = notice ? [notice.textContent, notice.className] : null;
      adopt(html, null);
      if (keep) [notice.textContent, notice.className] = keep;
    }
  }
  if (roster.dataset.live !== undefined && window.EventSource) {
    let last = null;
    const feed = new EventSource("/display/" + roster.dataset.lesson + "/events");
    feed.addEventListener("now", (event) => {
      let shown;
      try { shown = JSON.parse(event.data); } catch (error) { return; }
      if (shown.checked_in !== last) {
        if (last !== null) refresh();
        last = shown.checked_in;
      }
    });
  }
})();

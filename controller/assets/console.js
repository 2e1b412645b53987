// muster console: the live campaign page. It listens to the page's
// server-sent events (WatchCampaign) and puts what they carry in place: the
// server decides every word, label and share; this script only paints,
// works out the rate and ETA, and keeps the failure list bounded.
"use strict";
(() => {
  const page = document.querySelector("[data-live]");
  if (!page) return;
  const $ = (id) => document.getElementById(id);
  const MAX_FAILURES = 200;
  // How long each update took (ms), newest last, in script and until the
  // next frame was drawn: the console's benchmark reads them.
  const timings = [];
  const frames = [];
  const state = { events: 0, timings, frames, ended: false };
  window.musterConsole = state;
  const samples = [];
  const keep = (list, value) => {
    list.push(value);
    if (list.length > 1000) list.shift();
  };

  function timed(paint) {
    return (event) => {
      const started = performance.now();
      paint(JSON.parse(event.data));
      keep(timings, performance.now() - started);
      // The frame after the update, once drawn: rendering included.
      requestAnimationFrame(() => setTimeout(() => keep(frames, performance.now() - started), 0));
      state.events += 1;
    };
  }

  const SEGMENTS = ["ok", "failed", "running", "not-run", "waiting"];
  let mapRefresh = null;

  function paintCell(cell) {
    const el = $(cell.id);
    if (!el) {
      // A scope the page has no cell for yet: redraw the map once.
      if (!mapRefresh) {
        mapRefresh = setTimeout(async () => {
          mapRefresh = null;
          const answer = await fetch(page.dataset.live.replace(/\/events$/, "/map"), { credentials: "same-origin" });
          if (answer.ok) $("map").innerHTML = await answer.text();
        }, 250);
      }
      return;
    }
    el.className = "cell " + cell.word.replace(/ /g, "-");
    el.title = cell.sentence;
    el.setAttribute("aria-label", cell.sentence);
    const segs = el.querySelectorAll(".seg");
    SEGMENTS.forEach((_, i) => { if (segs[i]) segs[i].style.flexGrow = cell.grow[i]; });
    el.querySelector(".word").textContent = cell.word;
    el.querySelector(".label").textContent = cell.label;
  }

  // A plan's page has only some of these.
  const put = (id, text) => { if ($(id)) $(id).textContent = text; };

  function paintTotals(t) {
    const b = t.buckets;
    put("done", t.done);
    put("total", b.total);
    put("percent", t.percent);
    const bar = $("progress");
    if (bar) {
      bar.max = b.total || 1;
      bar.value = t.done;
      bar.textContent = t.percent + "%";
    }
    put("n-ok", b.ok);
    put("n-failed", b.failed);
    put("n-running", b.running);
    put("n-not-run", b.not_run);
    put("n-waiting", b.waiting);
    put("running-now", b.running);
    put("errors", t.errors);
    if ($("rate")) paintRate(t.done, b.total);
  }

  function duration(seconds) {
    if (!isFinite(seconds)) return "–";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  // Targets done per second over the last half minute of readings.
  function paintRate(done, total) {
    const now = performance.now() / 1000;
    samples.push([now, done]);
    while (samples.length > 2 && now - samples[0][0] > 30) samples.shift();
    const [t0, d0] = samples[0];
    if (now - t0 < 2) return;
    const rate = (done - d0) / (now - t0);
    $("rate").textContent = rate.toFixed(1) + " targets/s";
    $("eta").textContent = done >= total ? "done" : rate > 0 ? duration((total - done) / rate) : "–";
  }

  // The stages and the actions the state allows, drawn by the server:
  // at once when the state or its reason changes (a stage passed, baked
  // or paused: the campaign may stay "running"), and at most every few
  // seconds as targets finish, for the stages' counts.
  let rolloutTimer = null;
  function redrawRollout(delay) {
    if (!$("rollout")) return;
    if (rolloutTimer !== null) {
      if (delay > 0) return;
      clearTimeout(rolloutTimer);
    }
    rolloutTimer = setTimeout(() => {
      rolloutTimer = null;
      fetch(page.dataset.live.replace(/\/events$/, "/rollout"), { credentials: "same-origin" })
        .then((answer) => (answer.ok ? answer.text() : null))
        .then((html) => {
          // A form being filled in (a reason typed) is not redrawn under
          // the operator's hands: it is tried again a little later.
          const busy = $("rollout").contains(document.activeElement) && document.activeElement.tagName === "INPUT";
          if (html === null) return;
          if (busy) redrawRollout(5000);
          else $("rollout").innerHTML = html;
        });
    }, delay);
  }

  function paintState(s) {
    const badge = $("state");
    const changed = badge.textContent !== s.state || $("reason").textContent !== (s.reason || "");
    badge.textContent = s.state;
    badge.className = "badge " + s.state.replace(/ /g, "-");
    $("reason").textContent = s.reason || "";
    if (changed) redrawRollout(0);
    if (s.terminal) $("live").textContent = "ended";
  }

  function addFailure(f) {
    const list = $("failures");
    if (!list) return;
    const item = document.createElement("li");
    item.className = f.class;
    const link = document.createElement("a");
    link.href = f.href;
    const code = document.createElement("code");
    code.textContent = f.instance || "(scope)";
    link.appendChild(code);
    const where = document.createElement("span");
    where.className = "muted";
    where.textContent = f.account + " " + f.region;
    const status = document.createElement("span");
    status.className = "status " + f.class;
    status.textContent = f.status;
    item.append(link, " " + (f.name || "") + " ", where, " ", status, " " + (f.reason || ""));
    list.prepend(item);
    while (list.children.length > MAX_FAILURES) list.lastElementChild.remove();
  }

  const source = new EventSource(page.dataset.live);
  source.addEventListener("snapshot", timed((d) => {
    paintState(d);
    paintTotals(d.summary);
    if ($("concurrency")) $("concurrency").textContent = d.summary.concurrency;
    if ($("threshold")) $("threshold").textContent = d.summary.threshold;
    d.cells.forEach(paintCell);
  }));
  source.addEventListener("progress", timed((d) => {
    paintTotals(d.totals);
    d.cells.forEach(paintCell);
    if ($("stages")) redrawRollout(5000);
  }));
  source.addEventListener("state", timed(paintState));
  source.addEventListener("failure", timed(addFailure));
  source.addEventListener("end", () => {
    source.close();
    state.ended = true;
    $("live").textContent = "ended";
  });
  source.onopen = () => { if (!state.ended) $("live").textContent = "live"; };
  source.onerror = () => { if (!state.ended) $("live").textContent = "reconnecting…"; };
})();

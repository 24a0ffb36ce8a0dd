// The rater page: fetch the next item, draw its waveform (inpainted span on yellow, a red line at the playing
// position), play it, report the seconds heard, send one 1-10 score per criterion, go on.
// The rater token comes from this page's address (/r/<token>) and travels in the X-Rater-Token header only.
(() => {
  "use strict";
  const token = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const $ = (id) => document.getElementById(id);
  const audio = $("audio"), canvas = $("wave"), ctx = canvas.getContext("2d"), form = $("ratings");
  const COLORS = { bg: "#ffffff", span: "#ffe14d", wave: "#1f3b73", head: "#e00000" };
  let state = null, item = null, objectUrl = null, built = false, busy = false, active = 0;
  let reporting = Promise.resolve(), lastReport = 0;

  function api(path, options = {}) {
    const headers = Object.assign({ "X-Rater-Token": token }, options.headers || {});
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, Object.assign({}, options, { headers, cache: "no-store", credentials: "omit" }));
  }

  function say(text) { $("message").textContent = text || ""; }

  // seconds of the clip heard: the union of the ranges the browser played (seeking does not count)
  function heard() {
    let t = 0;
    for (let i = 0; i < audio.played.length; i++) t += audio.played.end(i) - audio.played.start(i);
    return t;
  }

  function reportPlay(force) {
    if (!item) return reporting;
    const now = performance.now();
    if (!force && now - lastReport < 1000) return reporting;
    lastReport = now;
    const id = item.id, seconds = heard();
    reporting = reporting
      .then(() => api(`/api/items/${encodeURIComponent(id)}/play`,
                      { method: "POST", body: JSON.stringify({ played_seconds: seconds }) }))
      .then(async (res) => {
        if (res.ok && item && item.id === id) {
          item.played_seconds = Math.max(item.played_seconds, (await res.json()).played_seconds);
          updateControls();
        }
      })
      .catch(() => say("Connection lost; your scores so far are saved. Reload the page to go on."));
    return reporting;
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr)), h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.fillStyle = COLORS.bg;
    ctx.fillRect(0, 0, w, h);
    if (!item) return;
    const dur = item.seconds;
    if (item.span) {
      const x0 = item.span[0] / dur * w, x1 = item.span[1] / dur * w;
      ctx.fillStyle = COLORS.span;
      ctx.fillRect(x0, 0, x1 - x0, h);
    }
    const peaks = item.peaks || [], n = peaks.length, mid = h / 2;
    let top = 0;
    for (const [lo, hi] of peaks) top = Math.max(top, Math.abs(lo), Math.abs(hi));
    const scale = top > 0 ? 0.42 * h / top : 0;
    ctx.fillStyle = COLORS.wave;
    for (let i = 0; i < n; i++) {
      const x = Math.floor(i / n * w), x2 = Math.max(x + 1, Math.floor((i + 1) / n * w));
      const y0 = mid - peaks[i][1] * scale, y1 = mid - peaks[i][0] * scale;
      ctx.fillRect(x, y0, x2 - x, Math.max(1, y1 - y0));
    }
    const lw = Math.max(2, Math.round(2 * dpr));
    const xh = Math.min(w - lw, Math.max(0, Math.round((audio.currentTime || 0) / dur * w) - lw / 2));
    ctx.fillStyle = COLORS.head;
    ctx.fillRect(xh, 0, lw, h);
  }

  function tick() {
    draw();
    $("time").textContent = `${(audio.currentTime || 0).toFixed(1)} / ${item ? item.seconds.toFixed(1) : "0.0"} s`;
    if (!audio.paused) { reportPlay(false); requestAnimationFrame(tick); }
  }

  function scores() {
    const out = {};
    for (const c of state.criteria) {
      const el = form.querySelector(`input[name="${c.key}"]:checked`);
      if (el) out[c.key] = parseInt(el.value, 10);
    }
    return out;
  }

  function updateControls() {
    if (!item) return;
    const h = Math.max(heard(), item.played_seconds || 0), need = item.required_seconds;
    const played = h + 1e-6 >= need, all = Object.keys(scores()).length === state.criteria.length;
    $("heard").textContent = played ? "clip heard" : `heard ${h.toFixed(1)} of ${need.toFixed(1)} s needed`;
    $("next").disabled = busy || !played || !all;
    $("next").title = played ? (all ? "" : "score every criterion") : "play the whole clip first";
  }

  function setActive(i) {
    active = i;
    document.querySelectorAll("#criteria fieldset").forEach((fs, k) => fs.classList.toggle("active", k === i));
  }

  function buildCriteria(criteria) {
    const box = $("criteria");
    box.textContent = "";
    criteria.forEach((c, ci) => {
      const fs = document.createElement("fieldset");
      const legend = document.createElement("legend");
      legend.textContent = c.label;
      const q = document.createElement("p");
      q.id = `q-${c.key}`;
      q.textContent = c.question;
      fs.setAttribute("aria-describedby", q.id);
      const scale = document.createElement("div");
      scale.className = "scale";
      for (let v = 1; v <= 10; v++) {
        const label = document.createElement("label"), input = document.createElement("input");
        const span = document.createElement("span");
        input.type = "radio";
        input.name = c.key;
        input.value = String(v);
        input.setAttribute("aria-label", `${c.label}: ${v} of 10`);
        span.textContent = String(v);
        span.setAttribute("aria-hidden", "true");
        label.append(input, span);
        scale.appendChild(label);
      }
      const ends = document.createElement("div");
      ends.className = "ends";
      ends.innerHTML = "<span>1 = worst</span><span>10 = best</span>";
      fs.append(legend, q, scale, ends);
      fs.addEventListener("focusin", () => setActive(ci));
      fs.addEventListener("change", () => { setActive(ci); updateControls(); });
      box.appendChild(fs);
    });
    setActive(0);
  }

  async function load() {
    const res = await api("/api/state");
    if (!res.ok) { say(res.status === 401 ? "This link is not valid." : "The server did not answer; reload."); return; }
    state = await res.json();
    document.title = $("title").textContent = state.title;
    $("instructions").textContent = state.instructions;
    if (!built) { buildCriteria(state.criteria); built = true; }
    if (objectUrl) { URL.revokeObjectURL(objectUrl); objectUrl = null; }
    item = state.item;
    if (!item) {
      $("item").hidden = true;
      $("done").hidden = false;
      $("progress").textContent = `${state.total} of ${state.total} done`;
      return;
    }
    form.reset();
    setActive(0);
    $("progress").textContent = `${item.number} of ${state.total}`;
    $("caption").textContent = item.caption || "";
    $("legend").hidden = !item.span;
    $("play").disabled = true;
    $("item").hidden = false;
    const clip = await api(`/api/items/${encodeURIComponent(item.id)}/audio`);
    if (!clip.ok) { say("The clip could not be loaded; reload the page."); return; }
    objectUrl = URL.createObjectURL(await clip.blob());
    audio.src = objectUrl;
    audio.load();
    lastReport = 0;
    tick();
    updateControls();
  }

  function togglePlay() {
    if (!item || $("play").disabled) return;
    if (audio.paused) audio.play().catch(() => say("The browser did not start playback; press Play again."));
    else audio.pause();
  }

  audio.addEventListener("canplay", () => { $("play").disabled = false; say(""); });
  audio.addEventListener("play", () => { $("play").textContent = "Pause"; reportPlay(true); requestAnimationFrame(tick); });
  audio.addEventListener("pause", () => { $("play").textContent = "Play"; reportPlay(true); tick(); });
  audio.addEventListener("ended", () => { $("play").textContent = "Play again"; reportPlay(true); tick(); });
  audio.addEventListener("seeked", tick);
  $("play").addEventListener("click", togglePlay);
  canvas.addEventListener("click", (e) => {  // tap or click: jump there (only heard ranges count)
    if (!item || !audio.duration) return;
    const r = canvas.getBoundingClientRect();
    audio.currentTime = Math.max(0, Math.min(1, (e.clientX - r.left) / r.width)) * audio.duration;
  });
  window.addEventListener("resize", draw);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if ($("next").disabled || !item) return;
    busy = true;
    updateControls();
    await reportPlay(true);
    const res = await api(`/api/items/${encodeURIComponent(item.id)}/ratings`,
                          { method: "POST", body: JSON.stringify({ scores: scores() }) }).catch(() => null);
    busy = false;
    if (res && res.status === 201) { say(""); audio.pause(); await load(); $("play").focus(); return; }
    const detail = res ? ((await res.json().catch(() => ({}))).detail || res.statusText) : "no connection";
    say(`Not saved: ${typeof detail === "string" ? detail : "invalid scores"}`);
    updateControls();
  });

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || !item || !state) return;
    const onButton = e.target instanceof HTMLButtonElement;
    if (e.key === " " && !onButton) { e.preventDefault(); togglePlay(); return; }
    if (/^[0-9]$/.test(e.key)) {
      e.preventDefault();
      const c = state.criteria[active], v = e.key === "0" ? 10 : parseInt(e.key, 10);
      const input = form.querySelector(`input[name="${c.key}"][value="${v}"]`);
      input.checked = true;
      input.focus();
      const next = state.criteria.findIndex((k) => !form.querySelector(`input[name="${k.key}"]:checked`));
      if (next >= 0) setActive(next);
      updateControls();
      return;
    }
    if (e.key === "Enter" && !onButton) { e.preventDefault(); if (!$("next").disabled) form.requestSubmit(); }
  });

  load();
})();

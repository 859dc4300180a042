// genrestream dashboard: one card per stream, fed by the server's WebSocket.
//
// Events (JSON text, one per message, "schema": 1) of type "status",
// "prediction", "genre_change" and "metadata" update an in-memory model; other
// types are ignored. Besides genres, the smoothed state may be "speech",
// "unknown" or "silence"; with a model that has them, predictions also carry
// "content" ({music, speech, other: p}) and "tags" (the top five
// [[tag, p], ...], most probable first), and both are optional. Cards are
// re-rendered at most once per animation frame and only the DOM nodes whose
// content changed are touched, so ~100 streams updating every second stay cheap.
// All event data goes through textContent, attributes or CSSOM properties,
// never innerHTML.
"use strict";

(() => {
  const WINDOW_S = 300;          // timeline span, seconds of stream time
  const MAX_SEGMENTS = 600;      // per stream, whatever the hop
  const MAX_MARKERS = 64;        // genre_change markers kept per stream
  const MAX_LABELS = 64;         // probability bars drawn per stream at most
  const MAX_TAGS = 5;            // tag chips per card
  const MAX_CONTENT = 6;         // content bars per card
  const MAX_GAP_S = 10;          // longer gaps between predictions stay empty
  const STALE_MS = 15000;        // no prediction for this long: dim the card
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const STABLE_OPEN_MS = 5000;   // a connection open this long resets the backoff

  const PALETTE = {
    blues: "#4c6ef5", classical: "#e9dcc4", country: "#c08552", disco: "#ffd43b",
    hiphop: "#ff922b", jazz: "#3bc9db", metal: "#fa5252", pop: "#f783ac",
    reggae: "#51cf66", rock: "#9775fa",
    speech: "#dde3ea", unknown: "#5c6370", silence: "#3a3f47",
  };
  const SPEECH = "speech";
  // Not genres, drawn in greys at the end of the legend, in this order.
  const NON_GENRES = ["speech", "unknown", "silence"];
  const isNonGenre = (g) => NON_GENRES.includes(g);
  // Content bars: the content head's labels, known ones first and in this order.
  const CONTENT_ORDER = ["music", "speech", "other"];
  const CONTENT_COLOURS = { music: "#74c0fc", speech: PALETTE.speech, other: "#868e96" };
  const KNOWN_STATES = new Set(["connecting", "playing", "reconnecting", "ended", "failed"]);

  // ---------------------------------------------------------------- helpers
  const $ = (id) => document.getElementById(id);
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const isStr = (x) => typeof x === "string";
  const isObj = (x) => Boolean(x) && typeof x === "object" && !Array.isArray(x);
  const clamp01 = (x) => Math.min(1, Math.max(0, x));
  const pct = (x) => `${Math.round(clamp01(x) * 100)}%`;

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // Bars of {label, row, fill, value, last, top}: widths and percentages from valueOf(label),
  // touched only when they change; the largest gets the "top" class.
  function fillBars(bars, valueOf) {
    let best = null, bestV = -Infinity;
    for (const b of bars) {
      const v = valueOf(b.label);
      if (v > bestV) { bestV = v; best = b; }
      const r = Math.round(v * 1000) / 1000;
      if (r !== b.last) {
        b.last = r;
        b.fill.style.transform = `scaleX(${r})`;
        setText(b.value, pct(v));
      }
    }
    for (const b of bars) {
      const top = b === best;
      if (top !== b.top) { b.top = top; b.row.classList.toggle("top", top); }
    }
  }

  function setAttr(node, name, value) {
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }
  function make(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const colorCache = new Map();
  function colorFor(genre) {
    if (Object.prototype.hasOwnProperty.call(PALETTE, genre)) return PALETTE[genre];
    let c = colorCache.get(genre);
    if (c === undefined) {
      let h = 2166136261;                      // FNV-1a over the label
      for (let i = 0; i < genre.length; i++) {
        h ^= genre.charCodeAt(i);
        h = Math.imul(h, 16777619);
      }
      c = `hsl(${(h >>> 0) % 360} 65% 62%)`;
      colorCache.set(genre, c);
    }
    return c;
  }

  function fmtStreamTime(s) {
    if (!isNum(s)) return "";
    const neg = s < 0;
    let t = Math.floor(Math.abs(s));
    const h = Math.floor(t / 3600); t -= h * 3600;
    const m = Math.floor(t / 60); const sec = t - m * 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return `${neg ? "−" : ""}${h ? `${h}:` : ""}${mm}:${String(sec).padStart(2, "0")}`;
  }
  // Formatters are built once: toLocale*String(…, options) builds one per call.
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  const intFormat = new Intl.NumberFormat("en-US");
  const floatFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
  function fmtWall(iso) {
    if (!isStr(iso)) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    return timeFormat.format(d);
  }
  function fmtValue(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return String(v);
      return Number.isInteger(v) ? intFormat.format(v) : floatFormat.format(v);
    }
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "string") return v === "" ? "—" : v;
    try {
      const s = JSON.stringify(v);
      return s.length > 120 ? `${s.slice(0, 119)}…` : s;
    } catch (_) {
      return "?";
    }
  }
  const humanKey = (k) => k.replace(/_/g, " ");

  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  const compareNames = (a, b) => collator.compare(a, b) || (a < b ? -1 : a > b ? 1 : 0);

  // ----------------------------------------------------------------- legend
  const legend = $("legend");
  const legendSeen = new Set();
  const MAX_LEGEND = 40;
  function addLegend(genre) {
    if (legendSeen.has(genre) || legendSeen.size >= MAX_LEGEND) return;
    legendSeen.add(genre);
    const item = make("span", "legend-item");
    item.dataset.genre = genre;
    const sw = make("span", "legend-swatch");
    sw.style.backgroundColor = colorFor(genre);
    item.append(sw, make("span", "legend-label", genre));
    if (isNonGenre(genre)) {
      item.classList.add("neutral");           // greys stay at the end, in NON_GENRES order
      const rank = NON_GENRES.indexOf(genre);
      const after = [...legend.querySelectorAll(".legend-item.neutral")]
        .find((n) => NON_GENRES.indexOf(n.dataset.genre) > rank);
      legend.insertBefore(item, after || null);
    } else {
      legend.insertBefore(item, legend.querySelector(".legend-item.neutral"));
    }
  }
  addLegend("unknown");
  addLegend("silence");

  // ------------------------------------------------------------------ cards
  const grid = $("streams");
  const template = $("card-template");
  const cards = new Map();                     // name -> StreamCard
  const sortedNames = [];
  const dirty = new Set();
  let filterText = "";

  const cardByStrip = new WeakMap();
  const stripObserver = typeof ResizeObserver === "function" ? new ResizeObserver((entries) => {
    for (const entry of entries) {
      const card = cardByStrip.get(entry.target);
      if (!card) continue;
      const w = entry.contentRect.width;
      if (w > 0 && w !== card.stripWidth) {   // 0 while skipped by content-visibility
        card.stripWidth = w;
        dirty.add(card);
        schedule();
      }
    }
  }) : null;

  class StreamCard {
    constructor(name) {
      this.name = name;
      const root = template.content.firstElementChild.cloneNode(true);
      root.dataset.stream = name;
      this.root = root;
      this.q = {
        name: root.querySelector(".name"),
        state: root.querySelector(".state"),
        detail: root.querySelector(".detail"),
        genre: root.querySelector(".genre"),
        confidence: root.querySelector(".confidence"),
        title: root.querySelector(".title"),
        badge: root.querySelector(".badge"),
        content: root.querySelector(".content"),
        tagsBox: root.querySelector(".tags-box"),
        tags: root.querySelector(".tags"),
        probs: root.querySelector(".probs"),
        timeline: root.querySelector(".timeline"),
        axisNow: root.querySelector(".axis-now"),
        stats: root.querySelector(".stats"),
        meta: root.querySelector(".meta"),
      };
      this.q.name.textContent = name;
      this.q.name.title = name;

      this.status = null;        // latest status event
      this.pred = null;          // latest prediction event
      this.change = null;        // latest genre_change event
      this.title = "";
      this.titleDirty = true;
      this.statusDirty = true;
      this.predDirty = true;
      this.lastPredAt = 0;       // performance.now() of the last prediction
      this.stale = false;

      this.segments = [];        // {t0, t1, genre, el}
      this.markers = [];         // {t, key, text, el}
      this.markerKeys = new Set();
      this.trash = [];           // DOM nodes to remove at the next render
      this.lastT = null;
      this.hop = 1;
      this.origin = null;        // stream time at left = 0%
      this.probLabels = "";      // labels the bars were built for
      this.bars = [];            // {label, row, fill, value, last, top}
      this.contentLabels = null; // labels the content bars were built for
      this.contentBars = [];     // {label, row, fill, value, last, top}
      this.chips = [];           // {row, label, value, fill, last}
      this.statsKey = "";
      this.stripWidth = 0;       // px, kept up to date by a ResizeObserver
      const strip = root.querySelector(".timeline-strip");
      cardByStrip.set(strip, this);
      if (stripObserver) stripObserver.observe(strip);
    }

    // ---- model updates (no DOM work) ----
    onStatus(ev) {
      this.status = ev;
      if (ev.stats && typeof ev.stats === "object" && isStr(ev.stats.title) && ev.stats.title) {
        this.setTitle(ev.stats.title);
      }
      this.statusDirty = true;
    }

    onMetadata(ev) {
      if (isStr(ev.title)) this.setTitle(ev.title);
    }

    setTitle(title) {
      if (title !== this.title) {
        this.title = title;
        this.titleDirty = true;
      }
    }

    onPrediction(ev) {
      // Predictions carry fresh source statistics every few seconds; status events only at changes.
      if (ev.stats && typeof ev.stats === "object" && !Array.isArray(ev.stats) && this.status) {
        this.status = Object.assign({}, this.status, { stats: ev.stats });
        this.statusDirty = true;
      }
      const t = ev.stream_time_s;
      if (isStr(ev.title)) this.setTitle(ev.title);
      if (ev.probabilities && typeof ev.probabilities === "object") {
        for (const k of Object.keys(ev.probabilities)) addLegend(k);
      }
      const genre = isStr(ev.smoothed) && ev.smoothed ? ev.smoothed : isStr(ev.genre) && ev.genre ? ev.genre : "unknown";
      addLegend(genre);
      if (isObj(ev.content) && SPEECH in ev.content) addLegend(SPEECH);   // the model can say speech
      this.pred = ev;
      this.predDirty = true;
      this.lastPredAt = performance.now();
      if (!isNum(t)) return;
      if (this.lastT !== null) {
        if (Math.abs(t - this.lastT) < 1e-6) return;   // repeated (snapshot after reconnect)
        if (t < this.lastT) this.clearTimeline();     // stream time restarted
      }
      if (this.origin === null) this.origin = t - this.hop;
      let t0;
      if (this.lastT === null) {
        t0 = t - this.hop;
      } else {
        const dt = t - this.lastT;
        if (dt <= MAX_GAP_S) {
          this.hop = dt;
          t0 = this.lastT;
        } else {
          t0 = t - this.hop;
        }
      }
      this.lastT = t;
      this.segments.push({ t0, t1: t, genre, el: null });
      this.prune();
    }

    onGenreChange(ev) {
      this.change = ev;
      if (isStr(ev.genre)) addLegend(ev.genre);
      if (isStr(ev.previous) && ev.previous) addLegend(ev.previous);
      this.predDirty = true;
      const t = isNum(ev.onset_s) ? ev.onset_s : ev.stream_time_s;
      if (!isNum(t) || !isStr(ev.genre)) return;
      const key = `${t}|${ev.genre}`;
      if (this.markerKeys.has(key)) return;
      this.markerKeys.add(key);
      const prev = isStr(ev.previous) ? ev.previous : "?";
      const conf = isNum(ev.confidence) ? ` (${pct(ev.confidence)})` : "";
      this.markers.push({ t, key, genre: ev.genre, text: `${prev} → ${ev.genre}${conf} at ${fmtStreamTime(t)}`, el: null });
      if (this.origin === null) this.origin = t;
      this.prune();
    }

    clearTimeline() {
      for (const s of this.segments) if (s.el) this.trash.push(s.el);
      for (const m of this.markers) if (m.el) this.trash.push(m.el);
      this.segments = [];
      this.markers = [];
      this.markerKeys.clear();
      this.lastT = null;
      this.origin = null;
    }

    now() {
      const a = this.lastT;
      const b = this.change && isNum(this.change.stream_time_s) ? this.change.stream_time_s : null;
      if (a === null) return b;
      return b === null ? a : Math.max(a, b);
    }

    prune() {
      const now = this.now();
      const cutoff = now === null ? -Infinity : now - WINDOW_S;
      let n = 0;
      while (n < this.segments.length && (this.segments.length - n > MAX_SEGMENTS || this.segments[n].t1 < cutoff)) n++;
      if (n) for (const s of this.segments.splice(0, n)) if (s.el) this.trash.push(s.el);
      n = 0;
      while (n < this.markers.length && (this.markers.length - n > MAX_MARKERS || this.markers[n].t < cutoff)) n++;
      if (n) {
        for (const m of this.markers.splice(0, n)) {
          this.markerKeys.delete(m.key);
          if (m.el) this.trash.push(m.el);
        }
      }
    }

    // ---- rendering (called at most once per frame) ----
    // The current state and the event it comes from (the newer of the latest
    // prediction and genre_change).
    currentGenre() {
      const p = this.pred, c = this.change;
      const pt = p && isNum(p.stream_time_s) ? p.stream_time_s : -Infinity;
      const ct = c && isNum(c.stream_time_s) ? c.stream_time_s : -Infinity;
      if (p && (!c || pt >= ct || !isStr(c.genre))) {
        const g = isStr(p.smoothed) && p.smoothed ? p.smoothed : (c && isStr(c.genre) ? c.genre : (isStr(p.genre) ? p.genre : null));
        return { genre: g, confidence: isNum(p.confidence) ? p.confidence : null, source: p };
      }
      if (c && isStr(c.genre)) return { genre: c.genre, confidence: isNum(c.confidence) ? c.confidence : null, source: c };
      return { genre: null, confidence: null, source: null };
    }

    render() {
      const q = this.q;
      if (this.statusDirty) {
        this.statusDirty = false;
        this.renderStatus();
      }
      if (this.titleDirty) {
        this.titleDirty = false;
        setText(q.title, this.title);
        q.title.title = this.title;
      }
      if (this.predDirty) {
        this.predDirty = false;
        const { genre, confidence, source } = this.currentGenre();
        const speech = genre === SPEECH;
        setText(q.genre, genre || "—");
        setAttr(q.genre, "data-genre", genre || "");
        setText(q.confidence, confidence === null ? "" : pct(confidence));
        q.badge.title = speech ? "speech: talk, not music" : "";
        this.root.style.setProperty("--genre", genre ? colorFor(genre) : PALETTE.unknown);
        this.root.classList.toggle("non-genre", !genre || isNonGenre(genre));
        this.root.classList.toggle("speech", speech);
        if (this.pred) this.renderProbs(this.pred);
        this.renderContent(source && isObj(source.content) ? source.content : null);
        this.renderTags(this.pred ? this.pred.tags : null);
        this.renderMeta();
      }
      this.renderTimeline();
      this.checkStale(performance.now());
    }

    renderStatus() {
      const q = this.q, s = this.status;
      const state = s && isStr(s.state) ? s.state : "";
      const known = KNOWN_STATES.has(state) ? state : (state ? "other" : "none");
      setText(q.state, state || "—");
      setAttr(q.state, "data-state", known);
      setAttr(this.root, "data-state", known);
      const detail = s && isStr(s.detail) ? s.detail : "";
      setText(q.detail, detail);
      q.detail.title = s && isStr(s.source) ? `source: ${s.source}` : "";

      const rows = [];
      if (s && isStr(s.source) && s.source) rows.push(["source", s.source]);
      if (s && s.stats && typeof s.stats === "object" && !Array.isArray(s.stats)) {
        for (const [k, v] of Object.entries(s.stats).slice(0, 24)) rows.push([humanKey(k), fmtValue(v)]);
      }
      const key = JSON.stringify(rows);
      if (key === this.statsKey) return;
      this.statsKey = key;
      const frag = document.createDocumentFragment();
      for (const [k, v] of rows) {
        const wrap = make("div", "stat");
        wrap.dataset.key = k;
        const dd = make("dd", "", v);
        dd.title = v;
        wrap.append(make("dt", "", k), dd);
        frag.append(wrap);
      }
      q.stats.replaceChildren(frag);
    }

    renderProbs(p) {
      const probs = p.probabilities;
      if (!probs || typeof probs !== "object") return;
      const labels = Object.keys(probs).slice(0, MAX_LABELS);
      const key = labels.join("\u0000");
      if (key !== this.probLabels) {
        this.probLabels = key;
        this.bars = labels.map((label) => {
          const row = make("div", "prob");
          row.dataset.label = label;
          const bar = make("span", "bar");
          const fill = make("span", "fill");
          fill.style.backgroundColor = colorFor(label);
          bar.append(fill);
          const value = make("span", "pct", "");
          row.append(make("span", "label", label), bar, value);
          return { label, row, fill, value, last: -1, top: false };
        });
        this.q.probs.replaceChildren(...this.bars.map((b) => b.row));
      }
      fillBars(this.bars, (label) => (isNum(probs[label]) ? clamp01(probs[label]) : 0));
    }

    // Content bars (music, speech, other), hidden when the model has no content head.
    renderContent(content) {
      const box = this.q.content;
      const labels = content ? Object.keys(content).filter((k) => isNum(content[k])) : [];
      labels.sort((a, b) => {
        const ra = CONTENT_ORDER.indexOf(a), rb = CONTENT_ORDER.indexOf(b);
        return (ra < 0 ? CONTENT_ORDER.length : ra) - (rb < 0 ? CONTENT_ORDER.length : rb);
      });
      labels.length = Math.min(labels.length, MAX_CONTENT);
      box.hidden = labels.length === 0;
      if (!labels.length) return;
      const key = labels.join("\u0000");
      if (key !== this.contentLabels) {
        this.contentLabels = key;
        this.contentBars = labels.map((label) => {
          const row = make("div", "c-item");
          row.dataset.label = label;
          const value = make("span", "c-pct", "");
          const bar = make("span", "c-bar");
          const fill = make("span", "c-fill");
          fill.style.backgroundColor = Object.prototype.hasOwnProperty.call(CONTENT_COLOURS, label)
            ? CONTENT_COLOURS[label] : colorFor(label);
          bar.append(fill);
          bar.setAttribute("aria-hidden", "true");
          // The space keeps "music 82%" one phrase for copy and screen readers.
          row.append(make("span", "c-label", label), " ", value, bar);
          return { label, row, fill, value, last: -1, top: false };
        });
        box.replaceChildren(...this.contentBars.map((b) => b.row));
      }
      fillBars(this.contentBars, (label) => clamp01(content[label]));
    }

    // Tag chips in the model's order (most probable first), hidden without tags.
    renderTags(tags) {
      const list = [];
      if (Array.isArray(tags)) {
        for (const entry of tags) {
          if (list.length >= MAX_TAGS) break;
          if (Array.isArray(entry) && isStr(entry[0]) && entry[0] && isNum(entry[1])) {
            list.push([entry[0], clamp01(entry[1])]);
          }
        }
      }
      this.q.tagsBox.hidden = list.length === 0;
      while (this.chips.length > list.length) this.chips.pop().row.remove();
      while (this.chips.length < list.length) {
        const row = make("li", "tag");
        const label = make("span", "tag-label");
        const value = make("span", "tag-pct");
        const fill = make("span", "tag-fill");
        fill.setAttribute("aria-hidden", "true");
        row.append(label, " ", value, fill);
        this.q.tags.append(row);
        this.chips.push({ row, label, value, fill, last: -1 });
      }
      list.forEach(([tag, v], i) => {
        const chip = this.chips[i];
        setText(chip.label, tag);
        setAttr(chip.row, "data-tag", tag);
        const r = Math.round(v * 1000) / 1000;
        if (r !== chip.last) {
          chip.last = r;
          chip.fill.style.transform = `scaleX(${r})`;
          setText(chip.value, pct(v));
        }
        const title = `${tag}: ${pct(v)}`;
        if (chip.row.title !== title) chip.row.title = title;
      });
    }

    renderMeta() {
      const p = this.pred;
      const parts = [];
      if (p && isStr(p.genre)) parts.push(`window: ${p.genre}`);
      const now = this.now();
      if (now !== null) parts.push(`t ${fmtStreamTime(now)}`);
      const wall = fmtWall((p && p.wall_time) || (this.change && this.change.wall_time) || (this.status && this.status.wall_time));
      if (wall) parts.push(wall);
      setText(this.q.meta, parts.join(" · "));
    }

    renderTimeline() {
      const tl = this.q.timeline;
      if (this.trash.length) {
        for (const node of this.trash) node.remove();
        this.trash = [];
      }
      if (this.origin === null) return;
      const scale = 100 / WINDOW_S;
      let frag = null;
      for (const s of this.segments) {
        if (s.el) continue;
        const node = make("span", "seg");
        node.dataset.genre = s.genre;
        node.style.left = `${(s.t0 - this.origin) * scale}%`;
        node.style.width = `${(s.t1 - s.t0) * scale}%`;
        const colour = colorFor(s.genre);
        node.style.backgroundColor = colour;
        node.style.color = colour;           // for the seam-hiding box-shadow
        node.title = `${s.genre} · ${fmtStreamTime(s.t1)}`;
        s.el = node;
        (frag || (frag = document.createDocumentFragment())).append(node);
      }
      for (const m of this.markers) {
        if (m.el) continue;
        const node = make("span", "marker");
        node.dataset.genre = m.genre;
        node.style.left = `${(m.t - this.origin) * scale}%`;
        node.title = m.text;
        m.el = node;
        (frag || (frag = document.createDocumentFragment())).append(node);
      }
      if (frag) tl.append(frag);
      const now = this.now();
      if (now !== null) {
        const shift = (now - WINDOW_S - this.origin) * scale;
        // Whole pixels when the strip width is known: a fractional offset
        // would anti-alias every ~1px segment edge and show as fine stripes.
        const w = this.stripWidth;
        const tr = w > 0 ? `translateX(${-Math.round((shift * w) / 100)}px)` : `translateX(${-shift}%)`;
        if (tl.style.transform !== tr) tl.style.transform = tr;
        setText(this.q.axisNow, fmtStreamTime(now));
      }
    }

    checkStale(nowMs) {
      const playing = this.status && this.status.state === "playing";
      const stale = Boolean(playing && this.lastPredAt && nowMs - this.lastPredAt > STALE_MS);
      if (stale !== this.stale) {
        this.stale = stale;
        this.root.classList.toggle("stale", stale);
      }
    }
  }

  function matchesFilter(name) {
    return !filterText || name.toLowerCase().includes(filterText);
  }

  function cardFor(name) {
    let card = cards.get(name);
    if (card) return card;
    card = new StreamCard(name);
    cards.set(name, card);
    // Binary search for the sorted position.
    let lo = 0, hi = sortedNames.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareNames(sortedNames[mid], name) < 0) lo = mid + 1; else hi = mid;
    }
    const before = lo < sortedNames.length ? cards.get(sortedNames[lo]).root : null;
    sortedNames.splice(lo, 0, name);
    card.root.hidden = !matchesFilter(name);
    grid.insertBefore(card.root, before);
    $("empty").hidden = true;
    return card;
  }

  // ------------------------------------------------------------- rendering
  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    if (document.hidden) setTimeout(flush, 250);
    else requestAnimationFrame(flush);
  }

  let summaryDirty = true;
  function flush() {
    scheduled = false;
    for (const card of dirty) card.render();
    dirty.clear();
    if (summaryDirty) {
      summaryDirty = false;
      renderSummary();
    }
  }

  function renderSummary() {
    const counts = {};
    for (const card of cards.values()) {
      const st = card.status && isStr(card.status.state) ? card.status.state : "no status";
      counts[st] = (counts[st] || 0) + 1;
    }
    const n = cards.size;
    if (!n) { setText($("summary"), "no streams yet"); return; }
    const parts = [`${n} stream${n === 1 ? "" : "s"}`];
    for (const st of ["playing", "connecting", "reconnecting", "ended", "failed"]) {
      if (counts[st]) parts.push(`${counts[st]} ${st}`);
    }
    setText($("summary"), parts.join(" · "));
    setAttr($("summary"), "data-failed", String(counts.failed || 0));
  }

  // --------------------------------------------------------------- events
  let warnedSchema = false;
  function handleMessage(data) {
    if (!isStr(data)) return;
    let ev;
    try {
      ev = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (!ev || typeof ev !== "object" || Array.isArray(ev)) return;
    if (ev.schema !== 1) {
      if (!warnedSchema) {
        warnedSchema = true;
        console.warn("genrestream: ignoring events with unsupported schema", ev.schema);
      }
      return;
    }
    const type = ev.type;
    if (type !== "prediction" && type !== "genre_change" && type !== "status" && type !== "metadata") return;
    if (!isStr(ev.stream) || !ev.stream) return;
    const isNew = !cards.has(ev.stream);
    const card = cardFor(ev.stream);
    if (type === "prediction") card.onPrediction(ev);
    else if (type === "genre_change") card.onGenreChange(ev);
    else if (type === "status") card.onStatus(ev);
    else card.onMetadata(ev);
    if (type === "status" || isNew) summaryDirty = true;
    dirty.add(card);
    schedule();
  }

  // ------------------------------------------------------------ WebSocket
  const pill = $("connection-pill");
  const connLabel = $("connection");
  const reconnectLabel = $("reconnect");
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let countdownTimer = null;
  let openedAt = 0;

  function setConnection(state, info) {
    setText(connLabel, state === "connected" ? "connected" : "disconnected");
    setAttr(pill, "data-state", state);
    setText(reconnectLabel, info || "");
    document.body.classList.toggle("offline", state !== "connected");
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = countdownTimer = null;
    setConnection("connecting", "connecting…");
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/ws`);
    } catch (err) {
      console.warn("genrestream: cannot open WebSocket", err);
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.addEventListener("open", () => {
      if (socket !== ws) return;
      openedAt = Date.now();
      setConnection("connected", "");
    });
    ws.addEventListener("message", (e) => {
      if (socket !== ws) return;
      attempt = 0;
      handleMessage(e.data);
    });
    ws.addEventListener("close", () => {
      if (socket !== ws) return;
      socket = null;
      if (openedAt && Date.now() - openedAt >= STABLE_OPEN_MS) attempt = 0;
      openedAt = 0;
      scheduleReconnect();
    });
    // "error" is always followed by "close"; nothing to do here.
  }

  function scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    attempt = Math.min(attempt + 1, 16);
    const due = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setConnection("disconnected", left > 0 ? `reconnecting in ${left} s` : "reconnecting…");
    };
    tick();
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 1000);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (socket) return;
    attempt = 0;
    connect();
  }

  pill.addEventListener("click", reconnectNow);
  window.addEventListener("online", reconnectNow);

  // ---------------------------------------------------------------- misc
  $("filter").addEventListener("input", (e) => {
    filterText = e.target.value.trim().toLowerCase();
    for (const [name, card] of cards) card.root.hidden = !matchesFilter(name);
  });

  setInterval(() => {
    const nowMs = performance.now();
    for (const card of cards.values()) card.checkStale(nowMs);
  }, 2000);

  connect();
})();

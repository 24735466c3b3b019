// LoRA gallery: one virtual-scrolled grid for the whole catalog (anywidget ES module).
//
// Python owns the data: the grid asks for pages of card rows ({action: "rows"}) and for
// the thumbnails of the cards on screen ({action: "thumbs"}); filters and sort are sent
// as {action: "filter"} and run in the catalog. Every string from a LoRA file or sidecar
// is put into the DOM with textContent, never as HTML.

const CARD_MIN_WIDTH = 172;
const CARD_HEIGHT = 278;
const GAP = 10;
const OVERSCAN_ROWS = 2;
const MAX_CACHED_PAGES = 40;
const MAX_CACHED_THUMBS = 1500;
const THUMB_BATCH = 60;

/** Create an element with a class and optional text (text only through textContent). */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function option(value, label, selected) {
  const node = el("option", null, label);
  node.value = value;
  if (selected) node.selected = true;
  return node;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function splitList(text) {
  return String(text || "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

const TRISTATE = [
  ["", "any"],
  ["true", "yes"],
  ["false", "no"],
];

function tristateValue(select) {
  return select.value === "" ? null : select.value === "true";
}

function render({ model, el: root }) {
  const pages = new Map(); // page index -> rows, for the current generation
  const pending = new Set(); // page indices asked for
  const thumbs = new Map(); // lora id -> object URL (insertion order = age)
  const noThumb = new Set(); // ids Python has no thumbnail for
  const thumbWanted = new Set();
  const thumbAsked = new Set();
  const cards = new Map(); // index in the result -> card element
  let selected = new Set(model.get("selected") || []);
  let lastClicked = null;
  let layout = { cols: 1, cardWidth: CARD_MIN_WIDTH, rowHeight: CARD_HEIGHT + GAP };
  let thumbTimer = null;
  let frame = null;

  // ---- skeleton ----------------------------------------------------------------
  const container = el("div", "wb-gallery");
  const toolbar = el("div", "wb-toolbar");
  const search = el("input", "wb-search");
  search.type = "search";
  search.placeholder = "Search name, trigger words, tags…";
  search.setAttribute("aria-label", "Search");
  const fuzzyLabel = el("label", "wb-inline");
  const fuzzy = el("input", "wb-fuzzy");
  fuzzy.type = "checkbox";
  fuzzyLabel.append(fuzzy, el("span", null, "fuzzy"));
  const sort = el("select", "wb-sort");
  sort.setAttribute("aria-label", "Sort by");
  const direction = el("button", "wb-button wb-direction");
  direction.type = "button";
  const shuffle = el("button", "wb-button wb-shuffle", "Shuffle");
  shuffle.type = "button";
  const filtersToggle = el("button", "wb-button wb-filters-toggle", "Filters");
  filtersToggle.type = "button";
  const count = el("span", "wb-count");
  toolbar.append(search, fuzzyLabel, sort, direction, shuffle, filtersToggle, count);

  const filterPanel = el("div", "wb-filters");
  // base models as checkboxes: several at once without Ctrl-click, "unknown" among them
  const baseBox = el("div", "wb-filter-base");
  baseBox.setAttribute("role", "group");
  baseBox.setAttribute("aria-label", "Base model");
  const formatSelect = el("select", "wb-filter-format");
  formatSelect.multiple = true;
  formatSelect.size = 4;
  const folderSelect = el("select", "wb-filter-folder");
  const tagInput = el("input", "wb-filter-tags");
  tagInput.placeholder = "tag1, tag2";
  const tagList = el("datalist");
  tagList.id = `wb-tags-${Math.random().toString(36).slice(2)}`;
  tagInput.setAttribute("list", tagList.id);
  const tagMode = el("select", "wb-filter-tagmode");
  tagMode.append(option("all", "all of (AND)"), option("any", "any of (OR)"));
  const excludeInput = el("input", "wb-filter-exclude");
  excludeInput.placeholder = "nsfw, wip";
  excludeInput.setAttribute("list", tagList.id);
  const presetSelect = el("select", "wb-presets");
  presetSelect.setAttribute("aria-label", "Saved filters");
  const presetSave = el("button", "wb-button wb-preset-save", "Save filters…");
  presetSave.type = "button";
  const presetDelete = el("button", "wb-button wb-preset-delete", "Delete preset");
  presetDelete.type = "button";
  const tristates = {};
  const tristateBox = el("div", "wb-filter-flags");
  for (const [key, label] of [
    ["favorites", "Favorites"],
    ["has_preview", "Has preview"],
    ["missing", "Missing"],
    ["errors", "Errors"],
    ["updates", "Update available"],
  ]) {
    const wrap = el("label", "wb-field");
    const select = el("select", `wb-filter-${key}`);
    for (const [v, l] of TRISTATE) select.append(option(v, l));
    tristates[key] = select;
    wrap.append(el("span", null, label), select);
    tristateBox.append(wrap);
  }
  const clear = el("button", "wb-button wb-clear", "Clear filters");
  clear.type = "button";
  const field = (label, control) => {
    const wrap = el("label", "wb-field");
    wrap.append(el("span", null, label), control);
    return wrap;
  };
  const tagWrap = el("div", "wb-field");
  tagWrap.append(el("span", null, "Tags"), tagInput, tagMode, tagList);
  const excludeWrap = el("div", "wb-field");
  excludeWrap.append(el("span", null, "Without tags"), excludeInput);
  const presetWrap = el("div", "wb-field");
  const presetRow = el("div", "wb-inline");
  presetRow.append(presetSelect, presetSave, presetDelete);
  presetWrap.append(el("span", null, "Saved filters"), presetRow);
  filterPanel.append(
    field("Base model", baseBox),
    field("Format", formatSelect),
    field("Folder", folderSelect),
    tagWrap,
    excludeWrap,
    tristateBox,
    presetWrap,
    clear,
  );
  filterPanel.hidden = true;

  const bulkbar = el("div", "wb-bulkbar");
  const selCount = el("span", "wb-selcount");
  const bulkTag = el("input", "wb-bulk-tag");
  bulkTag.placeholder = "tags";
  bulkTag.setAttribute("list", tagList.id);
  const button = (label, cls, handler) => {
    const b = el("button", `wb-button ${cls}`, label);
    b.type = "button";
    b.addEventListener("click", handler);
    return b;
  };
  const bulkBase = el("input", "wb-bulk-base");
  bulkBase.placeholder = "base model";
  const baseList = el("datalist");
  baseList.id = `${tagList.id}-base`;
  bulkBase.setAttribute("list", baseList.id);
  const bulk = (op, value) => {
    flushSelection();
    model.send({ action: "bulk", op, value });
  };
  bulkbar.append(
    selCount,
    bulkTag,
    button("Add tags", "wb-bulk-addtags", () => bulk("add_tags", splitList(bulkTag.value))),
    button("Remove tags", "wb-bulk-removetags", () => bulk("remove_tags", splitList(bulkTag.value))),
    button("★ Favorite", "wb-bulk-fav", () => bulk("favorite", true)),
    button("Unfavorite", "wb-bulk-unfav", () => bulk("favorite", false)),
    bulkBase,
    baseList,
    button("Set base model", "wb-bulk-setbase", () => bulk("set_base_model", bulkBase.value)),
    button("Remove from catalog", "wb-bulk-remove wb-danger", () => {
      flushSelection();
      const n = selected.size;
      if (n > 1) {
        const ok = window.confirm(
          `Remove ${n.toLocaleString()} LoRAs from the catalog? The files stay on disk, and Undo brings them back.`,
        );
        if (!ok) return;
      }
      model.send({ action: "bulk", op: "remove", value: null, confirmed: n > 1 });
    }),
    button("Select all", "wb-select-all", () => model.send({ action: "select_all" })),
    button("Select none", "wb-select-none", () => setSelection(new Set())),
  );
  const undo = button("Undo", "wb-undo", () => model.send({ action: "undo" }));
  bulkbar.append(undo);

  const scroller = el("div", "wb-scroll");
  scroller.tabIndex = 0;
  const spacer = el("div", "wb-spacer");
  scroller.append(spacer);
  const empty = el("div", "wb-empty", "No LoRA matches these filters.");
  const notice = el("div", "wb-notice");
  notice.setAttribute("role", "status");
  // the status line sits right under the toolbar, where the eye is after a click, not below the grid;
  // a viewer's page (read_only) has no selection, bulk or favorite controls; the kernel refuses them anyway
  const readOnly = !!model.get("read_only");
  container.append(toolbar, notice, filterPanel, ...(readOnly ? [] : [bulkbar]), empty, scroller);
  root.append(container);

  // ---- filters ------------------------------------------------------------------
  function currentFilters() {
    const f = model.get("filters") || {};
    return {
      ...f,
      text: search.value,
      fuzzy: fuzzy.checked,
      sort: sort.value,
      tags: splitList(tagInput.value),
      tag_mode: tagMode.value,
      exclude_tags: splitList(excludeInput.value),
      base_models: Array.from(baseBox.querySelectorAll("input:checked")).map((o) => o.value),
      formats: Array.from(formatSelect.selectedOptions).map((o) => o.value),
      folder: folderSelect.value,
      favorites: tristateValue(tristates.favorites),
      has_preview: tristateValue(tristates.has_preview),
      missing: tristateValue(tristates.missing),
      errors: tristateValue(tristates.errors),
      updates: tristateValue(tristates.updates),
    };
  }
  function sendFilters(extra) {
    model.send({ action: "filter", filters: { ...currentFilters(), ...(extra || {}) } });
  }
  const sendFiltersSoon = debounce(() => sendFilters(), 250);

  function fillSelect(select, values, keepSelected, blankLabel) {
    const chosen = new Set(keepSelected);
    select.replaceChildren();
    if (blankLabel !== undefined) select.append(option("", blankLabel, chosen.size === 0));
    for (const [value, n] of values || []) {
      select.append(option(value, `${value} (${n})`, chosen.has(value)));
    }
  }
  function syncControls() {
    const f = model.get("filters") || {};
    const facets = model.get("facets") || {};
    if (document.activeElement !== search) search.value = f.text || "";
    fuzzy.checked = !!f.fuzzy;
    sort.replaceChildren();
    for (const key of model.get("sorts") || []) sort.append(option(key, `Sort: ${key}`, key === f.sort));
    direction.textContent = f.descending ? "↓ desc" : "↑ asc";
    direction.title = "Sort direction";
    shuffle.hidden = f.sort !== "random";
    if (document.activeElement !== tagInput) tagInput.value = (f.tags || []).join(", ");
    tagMode.value = f.tag_mode || "all";
    const chosenBases = new Set(f.base_models || []);
    baseBox.replaceChildren();
    for (const [value, n] of facets.base_models || []) {
      const label = el("label", "wb-check-option");
      const box = el("input");
      box.type = "checkbox";
      box.value = value;
      box.checked = chosenBases.has(value);
      box.addEventListener("change", () => sendFilters());
      label.append(box, el("span", null, `${value} (${n})`));
      baseBox.append(label);
    }
    if (document.activeElement !== excludeInput) excludeInput.value = (f.exclude_tags || []).join(", ");
    presetSelect.replaceChildren(option("", "choose a preset…", true));
    for (const name of model.get("presets") || []) presetSelect.append(option(name, name));
    presetDelete.disabled = true;
    fillSelect(formatSelect, facets.formats, f.formats || []);
    fillSelect(folderSelect, facets.folders, f.folder ? [f.folder] : [], "any folder");
    tagList.replaceChildren(...(facets.tags || []).map(([tag]) => option(tag, tag)));
    baseList.replaceChildren(...(facets.base_models || []).map(([b]) => option(b, b)));
    for (const [key, select] of Object.entries(tristates)) {
      const v = f[key];
      select.value = v === null || v === undefined ? "" : String(v);
    }
  }

  search.addEventListener("input", sendFiltersSoon);
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") sendFilters();
  });
  tagInput.addEventListener("change", () => sendFilters());
  excludeInput.addEventListener("change", () => sendFilters());
  presetSelect.addEventListener("change", () => {
    presetDelete.disabled = !presetSelect.value;
    if (presetSelect.value) model.send({ action: "apply_preset", name: presetSelect.value });
  });
  presetSave.addEventListener("click", () => {
    const name = window.prompt("Name for these filters:", presetSelect.value || "");
    if (name && name.trim()) model.send({ action: "save_preset", name: name.trim() });
  });
  presetDelete.addEventListener("click", () => {
    const name = presetSelect.value;
    if (name && window.confirm(`Delete the saved filters “${name}”?`)) model.send({ action: "delete_preset", name });
  });
  for (const control of [fuzzy, sort, tagMode, formatSelect, folderSelect, ...Object.values(tristates)]) {
    control.addEventListener("change", () => {
      const extra = control === sort && sort.value === "random" ? { seed: 1 + Math.floor(Math.random() * 2147483000) } : {};
      sendFilters(extra);
    });
  }
  direction.addEventListener("click", () => sendFilters({ descending: !(model.get("filters") || {}).descending }));
  shuffle.addEventListener("click", () => sendFilters({ seed: 1 + Math.floor(Math.random() * 2147483000) }));
  filtersToggle.addEventListener("click", () => {
    filterPanel.hidden = !filterPanel.hidden;
    filtersToggle.classList.toggle("wb-on", !filterPanel.hidden);
  });
  clear.addEventListener("click", () => {
    search.value = "";
    tagInput.value = "";
    excludeInput.value = "";
    model.send({ action: "filter", filters: { sort: sort.value, descending: (model.get("filters") || {}).descending } });
  });

  // ---- selection ----------------------------------------------------------------
  let selectionDirty = false;
  function flushSelection() {
    if (!selectionDirty) return;
    selectionDirty = false;
    model.send({ action: "select", ids: Array.from(selected) });
  }
  const flushSelectionSoon = debounce(flushSelection, 150);
  function setSelection(next) {
    selected = next;
    selectionDirty = true;
    flushSelectionSoon();
    paintSelection();
  }
  function paintSelection() {
    selCount.textContent = selected.size ? `${selected.size.toLocaleString()} selected` : "Nothing selected";
    bulkbar.classList.toggle("wb-has-selection", selected.size > 0);
    for (const card of cards.values()) {
      const id = Number(card.dataset.id);
      const on = selected.has(id);
      card.classList.toggle("wb-selected", on);
      const box = card.querySelector(".wb-check");
      if (box) box.checked = on;
    }
  }
  function rowAt(index) {
    const size = model.get("page_size");
    const page = pages.get(Math.floor(index / size));
    return page ? page[index % size] : undefined;
  }
  function toggle(index, id, extendRange) {
    const next = new Set(selected);
    if (extendRange && lastClicked !== null) {
      const [a, b] = lastClicked < index ? [lastClicked, index] : [index, lastClicked];
      for (let i = a; i <= b; i++) {
        const row = rowAt(i);
        if (row) next.add(row.id);
      }
    } else if (next.has(id)) next.delete(id);
    else next.add(id);
    lastClicked = index;
    setSelection(next);
  }

  // ---- cards --------------------------------------------------------------------
  function badge(text, cls, title) {
    const b = el("span", `wb-badge ${cls}`, text);
    if (title) b.title = title;
    return b;
  }
  function fillCard(card, row) {
    card.replaceChildren();
    card.classList.remove("wb-placeholder");
    card.dataset.id = String(row.id);
    card.classList.toggle("wb-missing", !!row.missing);
    card.classList.toggle("wb-error", !!row.error);
    card.classList.toggle("wb-active", model.get("active_id") === row.id);
    card.classList.toggle("wb-selected", selected.has(row.id));
    card.setAttribute("aria-label", row.name);

    const thumb = el("div", "wb-thumb");
    const url = thumbs.get(row.id);
    if (url) {
      const img = el("img");
      img.alt = "";
      img.src = url;
      thumb.append(img);
    } else {
      thumb.append(el("span", "wb-nothumb", row.has_preview && !noThumb.has(row.id) ? "…" : "no preview"));
      if (row.has_preview && !noThumb.has(row.id)) wantThumb(row.id);
    }
    const check = el("input", "wb-check");
    check.type = "checkbox";
    check.checked = selected.has(row.id);
    check.title = "Select";
    check.addEventListener("click", (e) => {
      e.stopPropagation();
      toggle(Number(card.dataset.index), row.id, e.shiftKey);
    });
    const fav = el("button", `wb-fav${row.favorite ? " wb-on" : ""}`, row.favorite ? "♥" : "♡");
    fav.type = "button";
    fav.title = row.favorite ? "Remove from favorites" : "Add to favorites";
    fav.addEventListener("click", (e) => {
      e.stopPropagation();
      model.send({ action: "favorite", id: row.id, value: !row.favorite });
    });
    if (!readOnly) thumb.append(check, fav);
    const badges = el("div", "wb-badges");
    if (row.missing) badges.append(badge("missing", "wb-badge-missing", "The file is no longer on disk"));
    if (row.error) badges.append(badge("error", "wb-badge-error", row.error));
    if (row.update) badges.append(badge("update", "wb-badge-update", row.update));
    thumb.append(badges);

    const body = el("div", "wb-body");
    const name = el("div", "wb-name", row.name);
    name.title = row.name;
    const meta = el("div", "wb-meta");
    const parts = [row.base_model || "unknown base", row.rank ? `r${row.rank}` : null, row.network_type].filter(
      (p) => p && p !== "LoRA",
    );
    meta.append(el("span", "wb-base", parts.join(" · ")));
    if (row.rating) meta.append(el("span", "wb-rating", "★".repeat(Math.max(0, Math.min(5, row.rating)))));
    const triggers = el("div", "wb-triggers");
    for (const word of row.trigger_words || []) triggers.append(el("span", "wb-trigger", word));
    const tags = el("div", "wb-tags");
    for (const tag of row.tags || []) tags.append(el("span", "wb-tag", tag));
    body.append(name, meta, triggers, tags);
    card.append(thumb, body);
  }
  function placeholder(card) {
    card.replaceChildren(el("div", "wb-thumb"), el("div", "wb-body"));
    card.classList.add("wb-placeholder");
    delete card.dataset.id;
  }
  function makeCard(index) {
    const card = el("div", "wb-card");
    card.tabIndex = 0;
    card.dataset.index = String(index);
    card.addEventListener("click", (e) => {
      if (!card.dataset.id) return;
      const id = Number(card.dataset.id);
      if (e.ctrlKey || e.metaKey || e.shiftKey) {
        toggle(index, id, e.shiftKey);
        return;
      }
      model.send({ action: "open", id });
    });
    card.addEventListener("keydown", (e) => {
      if ((e.key === "Enter" || e.key === " ") && card.dataset.id) {
        e.preventDefault();
        model.send({ action: "open", id: Number(card.dataset.id) });
      }
    });
    return card;
  }

  // ---- thumbnails ---------------------------------------------------------------
  function wantThumb(id) {
    if (thumbs.has(id) || thumbAsked.has(id) || noThumb.has(id)) return;
    thumbWanted.add(id);
    if (!thumbTimer) thumbTimer = setTimeout(askThumbs, 30);
  }
  function askThumbs() {
    thumbTimer = null;
    const visible = new Set();
    for (const card of cards.values()) if (card.dataset.id) visible.add(Number(card.dataset.id));
    const ids = Array.from(thumbWanted).filter((id) => visible.has(id));
    thumbWanted.clear();
    for (let i = 0; i < ids.length; i += THUMB_BATCH) {
      const batch = ids.slice(i, i + THUMB_BATCH);
      batch.forEach((id) => thumbAsked.add(id));
      model.send({ action: "thumbs", ids: batch });
    }
  }
  function storeThumb(id, buffer) {
    const blob = new Blob([buffer], { type: "image/webp" });
    thumbs.set(id, URL.createObjectURL(blob));
    thumbAsked.delete(id);
    while (thumbs.size > MAX_CACHED_THUMBS) {
      const [oldId, oldUrl] = thumbs.entries().next().value;
      thumbs.delete(oldId);
      URL.revokeObjectURL(oldUrl);
    }
  }

  // ---- virtual scroll -------------------------------------------------------------
  function measure() {
    const width = Math.max(scroller.clientWidth - 2 * GAP, CARD_MIN_WIDTH);
    const cols = Math.max(1, Math.floor((width + GAP) / (CARD_MIN_WIDTH + GAP)));
    const cardWidth = Math.floor((width - GAP * (cols - 1)) / cols);
    const changed = cols !== layout.cols || cardWidth !== layout.cardWidth;
    layout = { cols, cardWidth, rowHeight: CARD_HEIGHT + GAP };
    return changed;
  }
  function requestPage(pageIndex) {
    if (pages.has(pageIndex) || pending.has(pageIndex)) return;
    pending.add(pageIndex);
    model.send({ action: "rows", offset: pageIndex * model.get("page_size"), generation: model.get("generation") });
  }
  function update() {
    frame = null;
    const total = model.get("total");
    const size = model.get("page_size");
    const rows = Math.ceil(total / layout.cols);
    spacer.style.height = `${rows * layout.rowHeight + GAP}px`;
    empty.hidden = total > 0;
    count.textContent = `${total.toLocaleString()} LoRA${total === 1 ? "" : "s"}`;
    const top = scroller.scrollTop;
    const firstRow = Math.max(0, Math.floor(top / layout.rowHeight) - OVERSCAN_ROWS);
    const lastRow = Math.min(rows - 1, Math.ceil((top + scroller.clientHeight) / layout.rowHeight) + OVERSCAN_ROWS);
    const start = firstRow * layout.cols;
    const end = Math.min(total, (lastRow + 1) * layout.cols);
    for (const [index, card] of cards) {
      if (index < start || index >= end) {
        card.remove();
        cards.delete(index);
      }
    }
    for (let index = start; index < end; index++) {
      let card = cards.get(index);
      if (!card) {
        card = makeCard(index);
        placeholder(card);
        card.dataset.filled = "";
        cards.set(index, card);
        spacer.append(card);
      }
      const row = Math.floor(index / layout.cols);
      const col = index % layout.cols;
      card.style.transform = `translate(${GAP + col * (layout.cardWidth + GAP)}px, ${GAP + row * layout.rowHeight}px)`;
      card.style.width = `${layout.cardWidth}px`;
      card.style.height = `${CARD_HEIGHT}px`;
      const pageIndex = Math.floor(index / size);
      const page = pages.get(pageIndex);
      const data = page ? page[index % size] : undefined;
      const stamp = data ? `${model.get("generation")}:${data.id}` : "";
      if (data && card.dataset.filled !== stamp) {
        fillCard(card, data);
        card.dataset.filled = stamp;
      } else if (!data) {
        if (card.dataset.filled !== "") placeholder(card);
        card.dataset.filled = "";
        requestPage(pageIndex);
      }
    }
    // prefetch the two pages after the visible window (scrolling down is the common case)
    for (let ahead = 0; ahead < 2; ahead++) {
      const next = end + ahead * size;
      if (next < total) requestPage(Math.floor(next / size));
    }
    scroller.dataset.first = String(start);
    scroller.dataset.end = String(end);
  }
  function schedule() {
    if (!frame) frame = requestAnimationFrame(update);
  }
  function resetPages() {
    pages.clear();
    pending.clear();
    const first = model.get("first_rows") || [];
    if (first.length) pages.set(0, first);
    for (const card of cards.values()) card.dataset.filled = "x";
  }

  // ---- model events -------------------------------------------------------------
  function onCustom(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    if (msg.kind === "rows") {
      if (msg.generation !== model.get("generation")) return;
      const pageIndex = Math.floor(msg.offset / model.get("page_size"));
      pending.delete(pageIndex);
      pages.set(pageIndex, msg.rows || []);
      while (pages.size > MAX_CACHED_PAGES) {
        const oldest = pages.keys().next().value;
        if (oldest === pageIndex) break;
        pages.delete(oldest);
      }
      schedule();
    } else if (msg.kind === "thumbs") {
      (msg.ids || []).forEach((id, i) => storeThumb(id, buffers[i]));
      (msg.none || []).forEach((id) => {
        noThumb.add(id);
        thumbAsked.delete(id);
      });
      for (const card of cards.values()) {
        const id = Number(card.dataset.id);
        if ((msg.ids || []).includes(id) || (msg.none || []).includes(id)) card.dataset.filled = "x";
      }
      schedule();
    }
  }
  function onNotice() {
    const n = model.get("notice") || {};
    notice.textContent = n.text || "";
    notice.className = `wb-notice wb-${n.level === "error" ? "error" : "info"}`;
    notice.hidden = !n.text;
    if (n.text) {
      notice.classList.remove("wb-flash");
      void notice.offsetWidth; // restart the highlight for a repeated message
      notice.classList.add("wb-flash");
    }
  }
  function onSelected() {
    selected = new Set(model.get("selected") || []);
    selectionDirty = false;
    paintSelection();
  }
  function onActive() {
    const active = model.get("active_id");
    for (const card of cards.values()) card.classList.toggle("wb-active", Number(card.dataset.id) === active);
  }
  function onGeneration() {
    resetPages();
    schedule();
  }
  function onScrollToken() {
    scroller.scrollTop = 0;
    lastClicked = null;
  }
  function onUndo() {
    undo.disabled = !model.get("can_undo");
  }

  model.on("msg:custom", onCustom);
  model.on("change:generation", onGeneration);
  model.on("change:first_rows", onGeneration);
  model.on("change:total", schedule);
  model.on("change:scroll_token", onScrollToken);
  model.on("change:filters", syncControls);
  model.on("change:facets", syncControls);
  model.on("change:notice", onNotice);
  model.on("change:selected", onSelected);
  model.on("change:active_id", onActive);
  model.on("change:can_undo", onUndo);
  model.on("change:presets", syncControls);
  scroller.addEventListener("scroll", schedule, { passive: true });
  const resizeObserver = new ResizeObserver(() => {
    if (measure()) for (const card of cards.values()) card.dataset.filled = "x";
    schedule();
  });
  resizeObserver.observe(scroller);

  syncControls();
  onNotice();
  onUndo();
  paintSelection();
  resetPages();
  measure();
  schedule();

  return () => {
    model.off("msg:custom", onCustom);
    model.off("change:generation", onGeneration);
    model.off("change:first_rows", onGeneration);
    model.off("change:total", schedule);
    model.off("change:scroll_token", onScrollToken);
    model.off("change:filters", syncControls);
    model.off("change:facets", syncControls);
    model.off("change:notice", onNotice);
    model.off("change:selected", onSelected);
    model.off("change:active_id", onActive);
    model.off("change:can_undo", onUndo);
    model.off("change:presets", syncControls);
    resizeObserver.disconnect();
    for (const url of thumbs.values()) URL.revokeObjectURL(url);
  };
}

export default { render };

// History grid: one anywidget for every generated image (cards filled from the `items` trait).
//
// Thumbnails arrive as binary buffers ({kind: "thumbs"}) after {action: "thumbs"}; rating,
// favorite, reuse and delete are sent as {action, id, value}. Prompts and LoRA names come from
// users and files: they are put into the DOM with textContent only, never as HTML.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function render({ model, el: root }) {
  const urls = new Map(); // result id -> object URL
  const container = el("div", "wb-history");

  const toolbar = el("div", "wb-history-toolbar");
  const search = el("input", "wb-history-search");
  search.type = "search";
  search.placeholder = "Search prompts…";
  const lora = el("input", "wb-history-lora");
  lora.placeholder = "LoRA name";
  const favorites = el("select", "wb-history-favorites");
  for (const [value, label] of [["", "all"], ["true", "favorites"], ["false", "not favorites"]]) {
    const option = el("option", null, label);
    option.value = value;
    favorites.append(option);
  }
  const minRating = el("select", "wb-history-rating");
  for (let r = 0; r <= 5; r++) {
    const option = el("option", null, r === 0 ? "any rating" : `≥ ${r}★`);
    option.value = String(r);
    minRating.append(option);
  }
  const count = el("span", "wb-history-count");
  const prev = el("button", "wb-button", "‹ newer");
  const next = el("button", "wb-button", "older ›");
  prev.type = next.type = "button";
  toolbar.append(search, lora, favorites, minRating, prev, next, count);

  const grid = el("div", "wb-history-grid");
  const notice = el("div", "wb-history-notice");
  notice.setAttribute("role", "status");
  // the large view: one image with its parameters, over the grid (Esc or a click outside closes it)
  const overlay = el("div", "wb-history-overlay");
  overlay.hidden = true;
  const panel = el("div", "wb-history-large");
  const largeImg = el("img", "wb-history-large-img");
  largeImg.alt = "";
  const largeText = el("pre", "wb-history-params");
  const largeActions = el("div", "wb-history-actions");
  panel.append(largeImg, largeText, largeActions);
  overlay.append(panel);
  let largeUrl = null;
  let openId = null;
  function closeLarge() {
    overlay.hidden = true;
    openId = null;
    if (largeUrl) URL.revokeObjectURL(largeUrl);
    largeUrl = null;
    largeImg.removeAttribute("src");
  }
  overlay.addEventListener("click", (ev) => {
    if (ev.target === overlay) closeLarge();
  });
  overlay.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") closeLarge();
  });
  overlay.tabIndex = -1;
  container.append(toolbar, notice, grid, overlay);
  root.append(container);

  function sendFilters() {
    model.send({
      action: "filter",
      filters: {
        text: search.value,
        lora: lora.value,
        favorites: favorites.value === "" ? null : favorites.value === "true",
        min_rating: Number(minRating.value),
      },
    });
  }
  const sendSoon = debounce(sendFilters, 300);
  search.addEventListener("input", sendSoon);
  lora.addEventListener("input", sendSoon);
  favorites.addEventListener("change", sendFilters);
  minRating.addEventListener("change", sendFilters);
  prev.addEventListener("click", () =>
    model.send({ action: "page", offset: Math.max(0, model.get("offset") - model.get("page_size")) }),
  );
  next.addEventListener("click", () => model.send({ action: "page", offset: model.get("offset") + model.get("page_size") }));

  function button(label, title, handler) {
    const b = el("button", "wb-button", label);
    b.type = "button";
    b.title = title;
    b.addEventListener("click", handler);
    return b;
  }

  function openLarge(item) {
    openId = item.id;
    largeText.textContent = item.infotext || item.prompt || "";
    if (urls.has(item.id)) largeImg.src = urls.get(item.id);
    largeActions.replaceChildren(...actionButtons(item, true));
    overlay.hidden = false;
    overlay.focus();
    model.send({ action: "large", id: item.id });
  }

  function actionButtons(item, large) {
    const reuse = button("Reuse", "load these parameters into the Generate tab", () => {
      if (large) closeLarge();
      model.send({ action: "reuse", id: item.id });
    });
    const del = button("Delete", "delete this image", () => {
      if (window.confirm("Delete this image?")) {
        if (large) closeLarge();
        model.send({ action: "delete", id: item.id });
      }
    });
    const out = [reuse, del];
    if ((item.loras || []).length) {
      const pick = el("select", "wb-history-preview-pick");
      pick.title = "make this image the preview of one of its LoRAs";
      const first = el("option", null, "Use as preview of…");
      first.value = "";
      pick.append(first);
      for (const entry of item.loras) {
        const text = String(entry);
        const name = text.includes(":") ? text.slice(0, text.lastIndexOf(":")) : text;
        const option = el("option", null, name);
        option.value = name;
        pick.append(option);
      }
      pick.addEventListener("change", () => {
        if (pick.value) model.send({ action: "set_preview", id: item.id, lora: pick.value });
        pick.value = "";
      });
      out.push(pick);
    }
    if (large) out.push(button("Close", "close (Esc)", closeLarge));
    return out;
  }

  function card(item) {
    const node = el("div", "wb-history-card");
    node.dataset.id = item.id;
    const img = el("img", "wb-history-thumb");
    img.alt = item.prompt;
    if (urls.has(item.id)) img.src = urls.get(item.id);
    img.title = "open large, with its parameters";
    img.addEventListener("click", () => openLarge(item));
    const prompt = el("div", "wb-history-prompt", item.prompt || "(no prompt)");
    prompt.title = item.prompt;
    const meta = el("div", "wb-history-meta", `seed ${item.seed} · ${item.size} · ${item.backend}`);
    const loras = el("div", "wb-history-loras", (item.loras || []).join(", "));
    const actions = el("div", "wb-history-actions");
    const star = button(item.favorite ? "★" : "☆", "favorite", () =>
      model.send({ action: "favorite", id: item.id, value: !item.favorite }),
    );
    const rating = el("select", "wb-history-rate");
    for (let r = 0; r <= 5; r++) {
      const option = el("option", null, r === 0 ? "unrated" : "★".repeat(r));
      option.value = String(r);
      if (r === item.rating) option.selected = true;
      rating.append(option);
    }
    rating.addEventListener("change", () => model.send({ action: "rate", id: item.id, value: Number(rating.value) }));
    actions.append(star, rating, ...actionButtons(item, false));
    // a viewer's page (read_only) has no rating, reuse or delete; the kernel refuses them anyway
    node.append(img, prompt, meta, loras, ...(model.get("read_only") ? [] : [actions]));
    return node;
  }

  function paint() {
    const items = model.get("items") || [];
    grid.replaceChildren(...items.map(card));
    const offset = model.get("offset");
    count.textContent = items.length ? `${offset + 1}–${offset + items.length}` : "no images yet";
    prev.disabled = offset === 0;
    next.disabled = model.get("total") <= offset + items.length;
    const missing = items.map((i) => i.id).filter((id) => !urls.has(id));
    if (missing.length) model.send({ action: "thumbs", ids: missing.slice(0, 60) });
  }

  function onCustom(msg, buffers) {
    if (msg && msg.kind === "large") {
      if (msg.id !== openId || !msg.found || !buffers.length) return;
      if (largeUrl) URL.revokeObjectURL(largeUrl);
      largeUrl = URL.createObjectURL(new Blob([buffers[0]], { type: "image/webp" }));
      largeImg.src = largeUrl;
      return;
    }
    if (!msg || msg.kind !== "thumbs") return;
    msg.ids.forEach((id, i) => {
      const blob = new Blob([buffers[i]], { type: "image/webp" });
      if (urls.has(id)) URL.revokeObjectURL(urls.get(id));
      urls.set(id, URL.createObjectURL(blob));
      const img = grid.querySelector(`.wb-history-card[data-id="${CSS.escape(id)}"] img`);
      if (img) img.src = urls.get(id);
    });
  }

  function onNotice() {
    const n = model.get("notice") || {};
    notice.textContent = n.text || "";
    notice.className = `wb-history-notice wb-${n.level || "info"}`;
  }

  model.on("change:items", paint);
  model.on("change:notice", onNotice);
  model.on("msg:custom", onCustom);
  paint();
  onNotice();
  return () => {
    model.off("change:items", paint);
    model.off("change:notice", onNotice);
    model.off("msg:custom", onCustom);
    for (const url of urls.values()) URL.revokeObjectURL(url);
    if (largeUrl) URL.revokeObjectURL(largeUrl);
  };
}

export default { render };

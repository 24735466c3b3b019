// LoRA detail panel (anywidget ES module): fields with their sources, ss_* metadata,
// training tags, hashes, previews, duplicates, and the edit form.
// Every value comes from Python as a plain string and is placed with textContent.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function splitList(text) {
  return String(text || "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function table(headers, rows, className) {
  const t = el("table", `wb-table ${className || ""}`);
  if (headers) {
    const tr = el("tr");
    for (const h of headers) tr.append(el("th", null, h));
    const thead = el("thead");
    thead.append(tr);
    t.append(thead);
  }
  const tbody = el("tbody");
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) tr.append(el("td", null, cell));
    tbody.append(tr);
  }
  t.append(tbody);
  return t;
}

function section(title, body, open) {
  const details = el("details", "wb-section");
  if (open) details.open = true;
  details.append(el("summary", null, title), body);
  return details;
}

async function copyText(text, fallbackInput) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (err) {
    fallbackInput.focus();
    fallbackInput.select();
    try {
      return document.execCommand("copy");
    } catch (err2) {
      return false;
    }
  }
}

function render({ model, el: root }) {
  const container = el("div", "wb-detail");
  root.append(container);
  let previewUrl = null;
  let videoUrl = null;

  function field(label, control) {
    const wrap = el("label", "wb-dfield");
    wrap.append(el("span", null, label), control);
    return wrap;
  }

  function draw() {
    const r = model.get("record") || {};
    container.replaceChildren();
    if (previewUrl) {
      URL.revokeObjectURL(previewUrl);
      previewUrl = null;
    }
    if (videoUrl) {
      URL.revokeObjectURL(videoUrl);
      videoUrl = null;
    }
    if (!r.id) {
      container.append(el("div", "wb-detail-empty", "Select a LoRA in the gallery to see its details."));
      container.append(noticeLine);
      return;
    }
    container.dataset.id = String(r.id);

    // header: preview, name, badges
    const head = el("div", "wb-dhead");
    const pic = el("div", "wb-dpreview");
    const bytes = model.get("preview");
    const size = bytes ? bytes.byteLength || bytes.length || 0 : 0;
    const video = model.get("video");
    const videoSize = video ? video.byteLength || video.length || 0 : 0;
    if (size > 0) previewUrl = URL.createObjectURL(new Blob([bytes], { type: "image/webp" }));
    if (videoSize > 0) {
      // a Civitai-style video preview plays (muted, looping), its poster frame shown first
      videoUrl = URL.createObjectURL(new Blob([video], { type: model.get("video_type") || "video/mp4" }));
      const player = el("video", "wb-dvideo");
      player.muted = true;
      player.loop = true;
      player.controls = true;
      player.playsInline = true;
      player.autoplay = true;
      if (previewUrl) player.poster = previewUrl;
      player.src = videoUrl;
      pic.append(player);
    } else if (size > 0) {
      const img = el("img");
      img.alt = "";
      img.src = previewUrl;
      pic.append(img);
    } else {
      pic.append(el("span", "wb-nothumb", "no preview"));
    }
    const upload = el("input", "wb-upload-preview");
    upload.type = "file";
    upload.accept = "image/png,image/jpeg,image/webp,image/gif,video/mp4,video/webm";
    upload.hidden = true;
    const uploadButton = el("button", "wb-button wb-replace-preview", "Replace preview…");
    uploadButton.type = "button";
    uploadButton.addEventListener("click", () => upload.click());
    upload.addEventListener("change", async () => {
      const file = upload.files && upload.files[0];
      if (!file) return;
      const data = await file.arrayBuffer();
      model.send({ action: "set_preview", id: r.id }, undefined, [data]);
    });
    const title = el("div", "wb-dtitle");
    title.append(el("h3", "wb-dname", r.name));
    const badges = el("div", "wb-dbadges");
    if (r.base_model) badges.append(el("span", "wb-dbadge", r.base_model));
    if (r.missing) badges.append(el("span", "wb-dbadge wb-dbadge-missing", "missing"));
    if (r.error) badges.append(el("span", "wb-dbadge wb-dbadge-error", "error"));
    title.append(badges, el("div", "wb-dpath", r.path), uploadButton, upload);
    if (r.error) title.append(el("div", "wb-derror", r.error));
    head.append(pic, title);

    // prompt syntax
    const syntax = r.syntax || {};
    const prompt = el("div", "wb-dprompt");
    if (syntax.error) {
      prompt.append(el("div", "wb-derror", syntax.error));
    } else {
      const withTriggers = el("input");
      withTriggers.type = "checkbox";
      withTriggers.className = "wb-with-triggers";
      const wtLabel = el("label", "wb-inline");
      wtLabel.append(withTriggers, el("span", null, "with trigger words"));
      const out = el("input", "wb-syntax");
      out.readOnly = true;
      out.setAttribute("aria-label", "Prompt syntax");
      const status = el("span", "wb-copied");
      const show = (dialect) => {
        out.value = syntax[withTriggers.checked ? `${dialect}_triggers` : dialect] || "";
        out.dataset.dialect = dialect;
      };
      const copyButton = (dialect, label) => {
        const b = el("button", `wb-button wb-copy-${dialect}`, label);
        b.type = "button";
        b.addEventListener("click", async () => {
          show(dialect);
          const ok = await copyText(out.value, out);
          status.textContent = ok ? "copied" : "select the text and copy it";
        });
        return b;
      };
      withTriggers.addEventListener("change", () => show(out.dataset.dialect || "a1111"));
      show("a1111");
      prompt.append(
        copyButton("a1111", "Copy <lora:…> (A1111 / SD.Next)"),
        copyButton("comfyui", "Copy <lora:…> (ComfyUI Lora Manager)"),
        wtLabel,
        out,
        status,
      );
    }

    // edit form
    const e = r.edit || {};
    const form = el("form", "wb-dform");
    const favorite = el("input", "wb-edit-favorite");
    favorite.type = "checkbox";
    favorite.checked = !!e.favorite;
    const rating = el("select", "wb-edit-rating");
    for (let i = 0; i <= 5; i++) {
      const o = el("option", null, i ? "★".repeat(i) : "no rating");
      o.value = String(i);
      if (i === e.rating) o.selected = true;
      rating.append(o);
    }
    const weight = el("input", "wb-edit-weight");
    weight.type = "number";
    weight.step = "0.05";
    weight.min = "-10";
    weight.max = "10";
    weight.value = String(e.preferred_weight ?? 1);
    const triggers = el("input", "wb-edit-triggers");
    triggers.value = (e.trigger_words || []).join(", ");
    const tags = el("input", "wb-edit-tags");
    tags.value = (e.tags || []).join(", ");
    const base = el("input", "wb-edit-base");
    base.value = e.base_model_override || "";
    base.placeholder = "detected";
    const baseList = el("datalist");
    baseList.id = `wb-base-${r.id}-${Math.random().toString(36).slice(2)}`;
    for (const b of model.get("base_models") || []) {
      const o = el("option");
      o.value = b;
      baseList.append(o);
    }
    base.setAttribute("list", baseList.id);
    const notes = el("textarea", "wb-edit-notes");
    notes.rows = 3;
    notes.value = e.notes || "";
    const negative = el("textarea", "wb-edit-negative");
    negative.rows = 2;
    negative.value = e.negative_text || "";
    const save = el("button", "wb-button wb-save", "Save");
    save.type = "submit";
    const favWrap = el("label", "wb-inline");
    favWrap.append(favorite, el("span", null, "favorite"));
    form.append(
      favWrap,
      field("Rating", rating),
      field("Preferred weight", weight),
      field("Trigger words (comma separated)", triggers),
      field("Tags (comma separated)", tags),
      field("Base model override", base),
      baseList,
      field("Notes", notes),
      field("Negative prompt to use with it", negative),
      save,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const w = Number(weight.value);
      model.send({
        action: "save",
        id: r.id,
        fields: {
          favorite: favorite.checked,
          rating: Number(rating.value),
          preferred_weight: Number.isFinite(w) ? w : 1,
          trigger_words: splitList(triggers.value),
          tags: splitList(tags.value),
          base_model_override: base.value.trim(),
          notes: notes.value,
          negative_text: negative.value,
        },
      });
    });

    // a viewer's page (read_only) has no edit form; the kernel refuses a save anyway
    const editSection = model.get("read_only") ? [] : [section("Edit", form, true)];
    container.append(head, prompt, ...editSection, noticeLine);
    container.append(section("Fields and their sources", table(["Field", "Value", "Source"], r.fields || [], "wb-fields"), true));
    if ((r.training_tags || []).length)
      container.append(section(`Training tags (${r.training_tags.length})`, table(["Tag", "Count"], r.training_tags, "wb-ttags")));
    if ((r.ss || []).length) container.append(section(`Training metadata (ss_*, ${r.ss.length})`, table(["Key", "Value"], r.ss, "wb-ss")));
    if ((r.metadata || []).length) container.append(section("Other header metadata", table(["Key", "Value"], r.metadata, "wb-meta")));
    if ((r.hashes || []).length) container.append(section("Hashes", table(null, r.hashes, "wb-hashes")));
    if ((r.previews || []).length) container.append(section("Previews", table(null, r.previews, "wb-previews")));
    for (const sc of r.sidecars || []) container.append(section(`Sidecar: ${sc.kind}`, table(null, sc.items || [], "wb-sidecar")));
    if ((r.sidecar_errors || []).length) {
      const list = el("ul", "wb-sidecar-errors");
      for (const msg of r.sidecar_errors) list.append(el("li", null, msg));
      container.append(section("Sidecar problems", list, true));
    }
    if ((r.duplicates || []).length) {
      const list = el("ul", "wb-dupes");
      for (const d of r.duplicates) {
        const item = el("li");
        const link = el("button", "wb-link", d.name);
        link.type = "button";
        link.addEventListener("click", () => model.send({ action: "open", id: d.id }));
        item.append(link, el("span", "wb-dupe-path", ` (${d.by}) ${d.path}`));
        list.append(item);
      }
      container.append(section(`Duplicates (${r.duplicates.length})`, list, true));
    }
  }

  const noticeLine = el("div", "wb-dnotice");
  noticeLine.setAttribute("role", "status");
  function onNotice() {
    const n = model.get("notice") || {};
    noticeLine.textContent = n.text || "";
    noticeLine.className = `wb-dnotice wb-${n.level === "error" ? "error" : "info"}`;
  }

  model.on("change:record", draw);
  model.on("change:preview", draw);
  model.on("change:video", draw);
  model.on("change:notice", onNotice);
  onNotice();
  draw();
  return () => {
    model.off("change:record", draw);
    model.off("change:preview", draw);
    model.off("change:video", draw);
    model.off("change:notice", onNotice);
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    if (videoUrl) URL.revokeObjectURL(videoUrl);
  };
}

export default { render };

// A file the kernel sends as a binary buffer becomes a download link (and is offered at once).
// Names and labels are set with textContent / attributes, never innerHTML.
function render({ model, el }) {
  el.classList.add("wb-download");
  const status = document.createElement("span");
  el.appendChild(status);
  let lastUrl = null;
  model.on("msg:custom", (msg, buffers) => {
    if (!msg || msg.kind !== "file" || !buffers || !buffers.length) return;
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    const blob = new Blob([buffers[0]], { type: String(msg.mime || "application/octet-stream") });
    lastUrl = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = lastUrl;
    link.setAttribute("download", String(msg.name || "download"));
    link.textContent = "Download " + String(msg.name || "file");
    link.className = "wb-download-link";
    status.replaceChildren(link);
    link.click();
  });
}
export default { render };

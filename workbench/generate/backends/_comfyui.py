"""ComfyUI over its HTTP + WebSocket API: an API-format graph with one ``LoraLoader`` per LoRA.

Progress comes from the ``/ws`` events of our ``client_id``; the job ends at ``execution_success``
/ ``execution_error`` / ``execution_interrupted``; images come from ``/history/{id}`` and
``/view``. ComfyUI rejects unknown LoRAs at ``/prompt`` with ``node_errors``, which we surface.
"""

from __future__ import annotations

import io
import json
import pathlib
import time
import uuid

import httpx

from workbench.generate import _infotext as _infotext
from workbench.generate._prompt_syntax import A1111, compose_prompt
from workbench.generate._types import (
    BackendUnavailableError,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    JobCancelledError,
    JobControl,
    LoraInfo,
    LoraNotFoundError,
)
from workbench.generate.backends._a1111 import http_error, response_error

# A1111 sampler name -> (ComfyUI sampler_name, scheduler)
SAMPLERS = {
    "Euler": ("euler", "normal"),
    "Euler a": ("euler_ancestral", "normal"),
    "DDIM": ("ddim", "ddim_uniform"),
    "DPM++ 2M": ("dpmpp_2m", "normal"),
    "DPM++ 2M Karras": ("dpmpp_2m", "karras"),
    "UniPC": ("uni_pc", "normal"),
    "Heun": ("heun", "normal"),
    "LMS": ("lms", "normal"),
}


def build_graph(request: GenerationRequest, checkpoint: str, lora_files: list[str], prefix: str = "workbench") -> dict:
    """API-format graph: checkpoint → LoraLoader chain → text encoders → KSampler → VAEDecode → SaveImage."""
    sampler, scheduler = SAMPLERS.get(request.sampler, (request.sampler, "normal"))
    g: dict = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}}}
    model, clip = ["1", 0], ["1", 1]
    for i, (spec, file) in enumerate(zip(request.loras, lora_files)):
        nid = str(100 + i)
        g[nid] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": file,
                "strength_model": spec.unet,
                "strength_clip": spec.te_weight,
            },
        }
        model, clip = [nid, 0], [nid, 1]
    g["2"] = {"class_type": "CLIPTextEncode", "inputs": {"text": request.prompt, "clip": clip}}
    g["3"] = {"class_type": "CLIPTextEncode", "inputs": {"text": request.negative_prompt, "clip": clip}}
    g["4"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": request.width, "height": request.height, "batch_size": 1},
    }
    g["5"] = {
        "class_type": "KSampler",
        "inputs": {
            "seed": request.seed,
            "steps": request.steps,
            "cfg": request.cfg_scale,
            "sampler_name": sampler,
            "scheduler": scheduler,
            "denoise": 1.0,
            "model": model,
            "positive": ["2", 0],
            "negative": ["3", 0],
            "latent_image": ["4", 0],
        },
    }
    g["6"] = {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}}
    g["7"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["6", 0]}}
    return g


def describe_node_errors(node_errors: dict, error: dict | None = None) -> str:
    parts = []
    for nid, entry in (node_errors or {}).items():
        for err in entry.get("errors", []):
            parts.append(
                f"node {nid} ({entry.get('class_type', '?')}): {err.get('message', '')} {err.get('details', '')}".strip()
            )
    if not parts and error:
        parts.append(f"{error.get('message', '')} {error.get('details', '')}".strip())
    return "; ".join(parts) or "rejected"


class ComfyUIBackend:
    """Client for one ComfyUI server. ``checkpoint``: ckpt_name; defaults to the first one listed."""

    kind = "comfyui"

    def __init__(
        self,
        url: str = "http://127.0.0.1:8188",
        *,
        checkpoint: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
        model: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.checkpoint = checkpoint or model
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client_id = uuid.uuid4().hex

    def _client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=self.connect_timeout))

    def _get(self, path: str, timeout: float = 30.0, **params):
        try:
            with self._client(timeout) as c:
                r = c.get(path, params=params or None)
        except httpx.HTTPError as exc:
            raise http_error("ComfyUI", self.url, exc) from exc
        if r.status_code != 200:
            raise response_error("ComfyUI", r)
        return r

    def _choices(self, node: str, field: str) -> list[str]:
        data = self._get(f"/object_info/{node}").json()
        return list(data[node]["input"]["required"][field][0])

    # ---------------------------------------------------------------- protocol
    def list_loras(self) -> list[LoraInfo]:
        return [
            LoraInfo(name=pathlib.PurePosixPath(f).stem, alias=f, path=f)
            for f in self._choices("LoraLoader", "lora_name")
        ]

    def health(self) -> dict:
        try:
            q = self._get("/queue", timeout=5.0).json()
        except GenerationError as exc:
            return {"ok": False, "backend": self.kind, "url": self.url, "error": str(exc)}
        return {
            "ok": True,
            "backend": self.kind,
            "url": self.url,
            "busy": bool(q.get("queue_running")) or bool(q.get("queue_pending")),
        }

    def cancel(self, control: JobControl) -> None:
        control.cancel()

    def resolve_loras(self, names: list[str]) -> list[str]:
        """Map names (stem, file name or sub/path) to ComfyUI's ``lora_name`` choices."""
        if not names:
            return []
        files = self._choices("LoraLoader", "lora_name")
        out, missing = [], []
        for name in names:
            match = next((f for f in files if f == name), None) or next(
                (
                    f
                    for f in files
                    if pathlib.PurePosixPath(f.replace("\\", "/")).stem == name
                    or pathlib.PurePosixPath(f.replace("\\", "/")).name == name
                ),
                None,
            )
            (out.append(match) if match else missing.append(name))
        if missing:
            raise LoraNotFoundError(
                f"ComfyUI at {self.url} does not know LoRA(s) {', '.join(missing)}; it has "
                f"{', '.join(files[:20]) or 'none'}"
            )
        return out

    def submit(self, request: GenerationRequest, control: JobControl | None = None) -> GenerationResult:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        control = control or JobControl()
        control.raise_if_cancelled()
        t0 = time.perf_counter()
        files = self.resolve_loras([s.name for s in request.loras])
        checkpoint = (
            request.model or self.checkpoint or next(iter(self._choices("CheckpointLoaderSimple", "ckpt_name")), None)
        )
        if not checkpoint:
            raise GenerationError(f"ComfyUI at {self.url} lists no checkpoint")
        if request.seed is None or request.seed < 0:
            import random

            request = request.with_seed(random.randrange(2**32))
        graph = build_graph(request, checkpoint, files)
        ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        try:
            ws = connect(ws_url, open_timeout=self.connect_timeout, max_size=None)
        except Exception as exc:
            raise BackendUnavailableError(f"ComfyUI server at {self.url}: websocket failed ({exc})") from exc
        with ws:
            try:
                with self._client() as c:
                    r = c.post("/prompt", json={"prompt": graph, "client_id": self.client_id})
            except httpx.HTTPError as exc:
                raise http_error("ComfyUI", self.url, exc) from exc
            if r.status_code == 400:
                body = r.json()
                text = describe_node_errors(body.get("node_errors") or {}, body.get("error"))
                kind = LoraNotFoundError if "lora_name" in text else GenerationError
                raise kind(f"ComfyUI rejected the graph: {text}")
            if r.status_code != 200:
                raise response_error("ComfyUI", r)
            prompt_id = r.json()["prompt_id"]
            control.on_cancel(lambda: self._interrupt(prompt_id))
            self._follow(ws, prompt_id, control, ConnectionClosed)
        return self._result(request, checkpoint, prompt_id, time.perf_counter() - t0)

    def _interrupt(self, prompt_id: str) -> None:
        try:
            with self._client(5.0) as c:
                c.post("/interrupt", json={"prompt_id": prompt_id})
        except httpx.HTTPError:
            pass

    def _follow(self, ws, prompt_id: str, control: JobControl, closed_exc) -> None:
        """Read ``/ws`` events until our prompt ends; raise on error, interrupt, silence or a dead server."""
        last = time.monotonic()
        while True:
            try:
                raw = ws.recv(timeout=0.5)
            except TimeoutError:
                if time.monotonic() - last > self.timeout:
                    raise BackendUnavailableError(
                        f"ComfyUI server at {self.url} sent nothing for {self.timeout:.0f} s"
                    ) from None
                continue
            except closed_exc:
                if self._history(prompt_id):
                    return
                if control.cancelled:
                    raise JobCancelledError("cancelled") from None
                raise BackendUnavailableError(f"ComfyUI server at {self.url} closed the websocket mid-job") from None
            last = time.monotonic()
            if isinstance(raw, bytes):
                continue  # binary preview frames
            msg = json.loads(raw)
            data = msg.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = msg.get("type")
            if kind == "progress" and data.get("prompt_id") == prompt_id:
                control.report(int(data.get("value", 0)), int(data.get("max", 0)))
            elif kind == "execution_success" and data.get("prompt_id") == prompt_id:
                return
            elif kind == "execution_error" and data.get("prompt_id") == prompt_id:
                raise GenerationError(
                    f"ComfyUI node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type', '')}: {data.get('exception_message', '')}"
                )
            elif kind == "execution_interrupted" and data.get("prompt_id") == prompt_id:
                raise JobCancelledError("cancelled (ComfyUI interrupted)")
            elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return  # fallback terminal event

    def _history(self, prompt_id: str) -> dict:
        try:
            return self._get(f"/history/{prompt_id}", timeout=10.0).json().get(prompt_id) or {}
        except GenerationError:
            return {}

    def _result(self, request: GenerationRequest, checkpoint: str, prompt_id: str, elapsed: float) -> GenerationResult:
        entry = self._history(prompt_id)
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            raise GenerationError(f"ComfyUI reports prompt {prompt_id} failed: {status.get('messages')}")
        images = [img for out in (entry.get("outputs") or {}).values() for img in out.get("images", [])]
        if not images:
            raise GenerationError(f"ComfyUI history for {prompt_id} has no image")
        img_ref = images[0]
        raw = self._get(
            "/view",
            filename=img_ref["filename"],
            subfolder=img_ref.get("subfolder", ""),
            type=img_ref.get("type", "output"),
        ).content
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as img:
            image = img.convert("RGB")
        params = {
            "Steps": request.steps,
            "Sampler": request.sampler,
            "CFG scale": request.cfg_scale,
            "Seed": request.seed,
            "Size": f"{image.width}x{image.height}",
            "Model": pathlib.PurePosixPath(checkpoint).stem,
            "Backend": "comfyui",
        }
        text = _infotext.build_infotext(
            compose_prompt(request.prompt, request.loras, A1111, triggers="none"), request.negative_prompt, params
        )
        return GenerationResult(
            png=_infotext.png_with_infotext(image, text),
            seed=request.seed,
            width=image.width,
            height=image.height,
            infotext=text,
            params={**request.to_dict(), "comfyui_prompt_id": prompt_id, "checkpoint": checkpoint},
            backend=self.kind,
            elapsed_s=elapsed,
        )

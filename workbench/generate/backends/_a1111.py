"""AUTOMATIC1111 / SD.Next over their ``/sdapi/v1`` HTTP API.

``txt2img`` blocks until the image is done, so it runs in a helper thread while this thread polls
``/sdapi/v1/progress`` (global state, no job id) and posts ``/sdapi/v1/interrupt`` on cancel.
A1111 silently skips unknown LoRAs, so names are checked against ``/sdapi/v1/loras`` first and
each one must appear in the result's ``Lora hashes``.
"""

from __future__ import annotations

import base64
import json
import threading
import time

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
    LoraSpec,
)


def http_error(backend: str, url: str, exc: BaseException) -> BackendUnavailableError:
    """One wording for transport failures, so a user sees which server and what happened."""
    if isinstance(exc, httpx.TimeoutException):
        what = f"did not answer in time ({type(exc).__name__})"
    elif isinstance(exc, httpx.ConnectError):
        what = "refused the connection (is it running?)"
    elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        what = f"dropped the connection mid-job ({exc or type(exc).__name__})"
    else:
        what = f"failed: {exc or type(exc).__name__}"
    return BackendUnavailableError(f"{backend} server at {url} {what}")


def response_error(backend: str, response: httpx.Response) -> GenerationError:
    try:
        body = response.json()
        detail = body.get("detail") or body.get("error") or body.get("errors") or body
    except ValueError:
        detail = response.text[:300]
    msg = f"{backend} answered HTTP {response.status_code} for {response.request.url.path}: {detail}"
    return BackendUnavailableError(msg) if response.status_code >= 500 else GenerationError(msg)


class A1111Backend:
    """Client for one A1111 or SD.Next server."""

    kind = "a1111"

    def __init__(
        self,
        url: str = "http://127.0.0.1:7860",
        *,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
        poll_interval: float = 0.25,
        model: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.poll_interval = poll_interval
        self.model = model

    def _client(self, timeout: float | None = None) -> httpx.Client:
        t = self.timeout if timeout is None else timeout
        return httpx.Client(base_url=self.url, timeout=httpx.Timeout(t, connect=self.connect_timeout))

    def _get(self, path: str, timeout: float = 30.0):
        try:
            with self._client(timeout) as c:
                r = c.get(path)
        except httpx.HTTPError as exc:
            raise http_error("A1111", self.url, exc) from exc
        if r.status_code != 200:
            raise response_error("A1111", r)
        return r.json()

    # ---------------------------------------------------------------- protocol
    def list_loras(self) -> list[LoraInfo]:
        return [
            LoraInfo(name=x["name"], alias=x.get("alias"), path=x.get("path"), metadata=x.get("metadata") or {})
            for x in self._get("/sdapi/v1/loras")
        ]

    def health(self) -> dict:
        try:
            state = self._get("/sdapi/v1/progress?skip_current_image=true", timeout=5.0)
        except GenerationError as exc:
            return {"ok": False, "backend": self.kind, "url": self.url, "error": str(exc)}
        return {
            "ok": True,
            "backend": self.kind,
            "url": self.url,
            "busy": bool(state.get("state", {}).get("job_count")),
        }

    def cancel(self, control: JobControl) -> None:
        control.cancel()

    def _interrupt(self) -> None:
        try:
            with self._client(5.0) as c:
                c.post("/sdapi/v1/interrupt")
        except httpx.HTTPError:
            pass  # the txt2img call will end on its own or fail; the job is failed/cancelled either way

    def resolve_loras(self, loras: list[LoraSpec]) -> list[LoraSpec]:
        """Check every name against ``/sdapi/v1/loras`` (name or alias); unknown → LoraNotFoundError."""
        if not loras:
            return []
        known = self.list_loras()
        by_name = {x.name: x.name for x in known}
        by_name.update({x.alias: x.alias for x in known if x.alias})
        missing = [s.name for s in loras if s.name not in by_name]
        if missing:
            raise LoraNotFoundError(
                f"A1111 at {self.url} does not know LoRA(s) {', '.join(missing)}; it has "
                f"{', '.join(sorted(x.name for x in known)[:20]) or 'none'}"
            )
        return loras

    def payload(self, request: GenerationRequest) -> dict:
        body = {
            "prompt": compose_prompt(request.prompt, request.loras, A1111, triggers="none"),
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "steps": request.steps,
            "cfg_scale": request.cfg_scale,
            "width": request.width,
            "height": request.height,
            "sampler_name": request.sampler,
            "batch_size": 1,
            "n_iter": 1,
            "send_images": True,
            "save_images": False,
        }
        model = request.model or self.model
        if model:
            body["override_settings"] = {"sd_model_checkpoint": model}
        return body

    def submit(self, request: GenerationRequest, control: JobControl | None = None) -> GenerationResult:
        control = control or JobControl()
        control.raise_if_cancelled()
        self.resolve_loras(request.loras)
        body = self.payload(request)
        outcome: dict = {}
        t0 = time.perf_counter()

        def post() -> None:
            try:
                with self._client() as c:
                    outcome["response"] = c.post("/sdapi/v1/txt2img", json=body)
            except BaseException as exc:  # reported to the polling thread
                outcome["error"] = exc

        worker = threading.Thread(target=post, name="a1111-txt2img", daemon=True)
        worker.start()
        control.on_cancel(self._interrupt)
        interrupted_at = None
        while worker.is_alive():
            worker.join(self.poll_interval)
            if not worker.is_alive():
                break
            if control.cancelled:
                interrupted_at = interrupted_at or time.monotonic()
                if time.monotonic() - interrupted_at > 30:
                    raise JobCancelledError("cancelled; A1111 did not return within 30 s of the interrupt")
                continue
            try:
                with self._client(min(5.0, self.timeout)) as c:
                    state = c.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json().get("state", {})
                if state.get("sampling_steps"):
                    control.report(int(state.get("sampling_step", 0)), int(state["sampling_steps"]))
            except (httpx.HTTPError, ValueError):
                pass  # a dead server shows up as the txt2img call failing
        if "error" in outcome:
            if control.cancelled:
                raise JobCancelledError("cancelled")
            raise http_error("A1111", self.url, outcome["error"]) from outcome["error"]
        response: httpx.Response = outcome["response"]
        if control.cancelled:
            raise JobCancelledError("cancelled (A1111 interrupted)")
        if response.status_code != 200:
            raise response_error("A1111", response)
        return self._result(request, response.json(), time.perf_counter() - t0)

    def _result(self, request: GenerationRequest, data: dict, elapsed: float) -> GenerationResult:
        info = data.get("info") or "{}"
        info = json.loads(info) if isinstance(info, str) else info
        images = data.get("images") or []
        first = int(info.get("index_of_first_image", 0) or 0)
        if len(images) <= first:
            raise GenerationError(f"A1111 at {self.url} returned no image")
        raw = base64.b64decode(images[first].split(",", 1)[-1])
        lora_hashes = _infotext.parse_lora_hashes(
            str((info.get("extra_generation_params") or {}).get("Lora hashes", ""))
        )
        not_applied = [s.name for s in request.loras if s.name not in lora_hashes]
        if not_applied:
            raise GenerationError(
                f"A1111 at {self.url} did not apply LoRA(s) {', '.join(not_applied)} "
                "(missing from the result's Lora hashes)"
            )
        infotexts = info.get("infotexts") or []
        text = infotexts[first] if len(infotexts) > first else infotexts[0] if infotexts else ""
        import io

        from PIL import Image

        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            has_params = "parameters" in img.info
            png = raw if has_params and img.format == "PNG" else _infotext.png_with_infotext(img.convert("RGB"), text)
            width, height = img.size
        seed = int(info.get("seed", request.seed))
        return GenerationResult(
            png=png,
            seed=seed,
            width=width,
            height=height,
            infotext=text,
            params={**request.to_dict(), "seed": seed, "sd_model_name": info.get("sd_model_name")},
            lora_hashes=lora_hashes,
            backend=self.kind,
            elapsed_s=elapsed,
        )

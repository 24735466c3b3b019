"""Loopback A1111 and ComfyUI servers for tests, backed by the tiny random-weight pipeline.

They follow the documented APIs and the recorded response shapes in ../shared/data/api/ (A1111
``/sdapi/v1/{txt2img,progress,interrupt,loras,sd-models}``; ComfyUI ``/prompt``, ``/ws``,
``/history``, ``/view``, ``/object_info``, ``/interrupt``, ``/queue``), including how they fail:
``fail_next`` (HTTP status for the next job), ``hang_next`` (never answer), ``die_at_step``
(the server stops listening and drops every connection mid-job).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import json
import pathlib
import threading
import time
import uuid

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from workbench.files import read_header
from workbench.generate import (
    A1111,
    DiffusersBackend,
    GenerationRequest,
    JobCancelledError,
    JobControl,
    LoraSpec,
    parse_prompt,
)

CHECKPOINT = "tiny-sd1-random.safetensors"


class _FakeServer:
    """Runs a Tornado app on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, backend: DiffusersBackend, lora_dir: pathlib.Path) -> None:
        self.backend = backend
        self.lora_dir = pathlib.Path(lora_dir)
        self.fail_next: int | None = None
        self.hang_next = False
        self.die_at_step: int | None = None
        self.control: JobControl | None = None
        self.requests: list[dict] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(1)  # one job at a time, like A1111's queue_lock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._release: asyncio.Event | None = None
        self.dead = False
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def start():
            self._release = asyncio.Event()
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            self.port = sockets[0].getsockname()[1]
            self._server = tornado.httpserver.HTTPServer(self.app())
            self._server.add_sockets(sockets)
            ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> tornado.web.Application:  # pragma: no cover - overridden
        raise NotImplementedError

    def lora_names(self) -> dict[str, pathlib.Path]:
        out = {}
        for p in sorted(self.lora_dir.rglob("*.safetensors")):
            out[p.stem] = p
            alias = read_header(p).metadata.get("ss_output_name")
            if alias:
                out.setdefault(alias, p)
        return out

    async def generate(self, request: GenerationRequest, control: JobControl):
        self.control = control
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.backend.submit, request, control)

    def on_step(self, control: JobControl) -> None:
        """Called from the generating thread after every step: may kill the server mid-job."""
        if self.die_at_step is not None and control.step >= self.die_at_step and not self.dead:
            self.die_at_step = None
            fut = asyncio.run_coroutine_threadsafe(self._die(), self._loop)
            fut.result(10)
            time.sleep(0.2)

    async def _die(self) -> None:
        self.dead = True
        self._server.stop()
        await self._server.close_all_connections()
        for ws in list(getattr(self, "sockets", {}).values()):
            ws.close()

    async def maybe_fail(self, handler: tornado.web.RequestHandler) -> bool:
        if self.hang_next:
            self.hang_next = False
            await self._release.wait()
            return True
        if self.fail_next:
            status, self.fail_next = self.fail_next, None
            handler.set_status(status)
            handler.finish({"error": "RuntimeError", "detail": "injected failure", "body": "", "errors": "boom"})
            return True
        return False

    def close(self) -> None:
        async def stop():
            self._release.set()
            if not self.dead:
                self._server.stop()
                await self._server.close_all_connections()

        if self._loop and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._executor.shutdown(wait=True)


# ------------------------------------------------------------------------------------------ A1111
class FakeA1111(_FakeServer):
    """``/sdapi/v1``: txt2img (blocking), global progress, interrupt, loras, sd-models."""

    def app(self):
        s = self

        class Txt2Img(tornado.web.RequestHandler):
            async def post(self):
                body = json.loads(self.request.body)
                s.requests.append(body)
                if await s.maybe_fail(self):
                    return
                text, specs = parse_prompt(body.get("prompt", ""), A1111)
                known = s.lora_names()
                applied = [LoraSpec(x.name, x.unet, x.te, path=str(known[x.name])) for x in specs if x.name in known]
                req = GenerationRequest(
                    prompt=text,
                    negative_prompt=body.get("negative_prompt") or "",
                    loras=applied,
                    seed=int(body.get("seed", -1)),
                    steps=int(body.get("steps", 50)),
                    cfg_scale=float(body.get("cfg_scale", 7.0)),
                    width=int(body.get("width", 512)),
                    height=int(body.get("height", 512)),
                    sampler=body.get("sampler_name") or body.get("sampler_index") or "Euler",
                )
                control = JobControl(on_progress=s.on_step)
                try:
                    result = await s.generate(req, control)
                except JobCancelledError:  # A1111 returns what it has; we have nothing decoded
                    self.finish({"images": [], "parameters": body, "info": json.dumps({"interrupted": True})})
                    return
                finally:
                    s.control = None
                extra = {}
                if result.lora_hashes:  # A1111 writes only the LoRAs it actually applied
                    extra["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in result.lora_hashes.items())
                info = {
                    "prompt": body.get("prompt"),
                    "all_prompts": [body.get("prompt")],
                    "negative_prompt": req.negative_prompt,
                    "seed": result.seed,
                    "all_seeds": [result.seed],
                    "subseed": -1,
                    "width": req.width,
                    "height": req.height,
                    "sampler_name": req.sampler,
                    "cfg_scale": req.cfg_scale,
                    "steps": req.steps,
                    "batch_size": 1,
                    "sd_model_name": "tiny-sd1-random",
                    "sd_model_hash": "0123456789",
                    "extra_generation_params": extra,
                    "index_of_first_image": 0,
                    "infotexts": [result.infotext],
                    "styles": [],
                    "job_timestamp": "20240101000000",
                    "clip_skip": 1,
                    "version": "fake-a1111",
                }
                self.finish(
                    {"images": [base64.b64encode(result.png).decode()], "parameters": body, "info": json.dumps(info)}
                )

        class Progress(tornado.web.RequestHandler):
            def get(self):
                c = s.control
                steps = c.steps if c else 0
                step = c.step if c else 0
                running = c is not None
                progress = (0.01 + (step / steps if steps else 0)) if running else 0
                self.finish(
                    {
                        "progress": progress,
                        "eta_relative": 0.0,
                        "current_image": None,
                        "textinfo": None,
                        "state": {
                            "skipped": False,
                            "interrupted": bool(c and c.cancelled),
                            "stopping_generation": False,
                            "job": "txt2img" if running else "",
                            "job_count": 1 if running else 0,
                            "job_timestamp": "0",
                            "job_no": 0,
                            "sampling_step": step,
                            "sampling_steps": steps,
                        },
                    }
                )

        class Interrupt(tornado.web.RequestHandler):
            def post(self):
                if s.control is not None:
                    s.control.cancel()
                self.finish({})

        class Loras(tornado.web.RequestHandler):
            def get(self):
                out = []
                for p in sorted(s.lora_dir.rglob("*.safetensors")):
                    meta = read_header(p).metadata
                    out.append(
                        {
                            "name": p.stem,
                            "alias": meta.get("ss_output_name") or p.stem,
                            "path": str(p),
                            "metadata": meta,
                        }
                    )
                self.finish(json.dumps(out))

        class Models(tornado.web.RequestHandler):
            def get(self):
                self.finish(
                    json.dumps(
                        [
                            {
                                "title": f"{CHECKPOINT} [0123456789]",
                                "model_name": "tiny-sd1-random",
                                "hash": "0123456789",
                                "sha256": None,
                                "filename": CHECKPOINT,
                                "config": None,
                            }
                        ]
                    )
                )

        return tornado.web.Application(
            [
                (r"/sdapi/v1/txt2img", Txt2Img),
                (r"/sdapi/v1/progress", Progress),
                (r"/sdapi/v1/interrupt", Interrupt),
                (r"/sdapi/v1/loras", Loras),
                (r"/sdapi/v1/sd-models", Models),
            ]
        )


# ------------------------------------------------------------------------------------------ ComfyUI
_COMFY_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "ddim": "DDIM",
    "dpmpp_2m": "DPM++ 2M",
    "uni_pc": "UniPC",
    "heun": "Heun",
    "lms": "LMS",
}


class FakeComfyUI(_FakeServer):
    """``/prompt`` (validated), ``/ws`` events, ``/history``, ``/view``, ``/object_info``, ``/interrupt``, ``/queue``."""

    def __init__(self, *a, **kw) -> None:
        self.sockets: dict[str, tornado.websocket.WebSocketHandler] = {}
        self.history: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self.running: str | None = None
        self.pending: list[str] = []
        self.counter = 0
        super().__init__(*a, **kw)

    def lora_files(self) -> list[str]:
        return [p.relative_to(self.lora_dir).as_posix() for p in sorted(self.lora_dir.rglob("*.safetensors"))]

    def send(self, client_id: str, kind: str, data: dict) -> None:
        ws = self.sockets.get(client_id)
        if ws is not None:
            try:
                ws.write_message(json.dumps({"type": kind, "data": data}))
            except tornado.websocket.WebSocketClosedError:
                pass

    def validate(self, graph: dict) -> dict:
        errors = {}
        loras = self.lora_files()
        for nid, node in graph.items():
            if node.get("class_type") in ("LoraLoader", "LoraLoaderModelOnly"):
                name = node["inputs"].get("lora_name")
                if name not in loras:
                    errors[nid] = {
                        "errors": [
                            {
                                "type": "value_not_in_list",
                                "message": "Value not in list",
                                "details": f"lora_name: '{name}' not in {loras}",
                                "extra_info": {"input_name": "lora_name", "received_value": name},
                            }
                        ],
                        "dependent_outputs": ["7"],
                        "class_type": node["class_type"],
                    }
        return errors

    def to_request(self, graph: dict) -> GenerationRequest:
        sampler_id = next(k for k, v in graph.items() if v["class_type"] == "KSampler")
        ks = graph[sampler_id]["inputs"]
        loras = []
        ref = ks["model"]
        while graph[ref[0]]["class_type"] in ("LoraLoader", "LoraLoaderModelOnly"):
            inp = graph[ref[0]]["inputs"]
            loras.append(
                LoraSpec(
                    pathlib.PurePosixPath(inp["lora_name"]).stem,
                    float(inp["strength_model"]),
                    float(inp.get("strength_clip", inp["strength_model"])),
                    path=str(self.lora_dir / inp["lora_name"]),
                )
            )
            ref = inp["model"]
        latent = graph[ks["latent_image"][0]]["inputs"]
        return GenerationRequest(
            prompt=graph[ks["positive"][0]]["inputs"]["text"],
            negative_prompt=graph[ks["negative"][0]]["inputs"]["text"],
            loras=list(reversed(loras)),
            seed=int(ks["seed"]),
            steps=int(ks["steps"]),
            cfg_scale=float(ks["cfg"]),
            width=int(latent["width"]),
            height=int(latent["height"]),
            sampler=_COMFY_SAMPLERS.get(ks["sampler_name"], "Euler"),
        )

    async def execute(self, prompt_id: str, client_id: str, graph: dict) -> None:
        self.running = prompt_id
        request = self.to_request(graph)
        send = lambda kind, data: self.send(client_id, kind, {**data, "prompt_id": prompt_id})
        send("execution_start", {"timestamp": int(time.time() * 1000)})
        send("execution_cached", {"nodes": [], "timestamp": int(time.time() * 1000)})
        send("executing", {"node": "5", "display_node": "5"})
        loop = asyncio.get_running_loop()

        def on_progress(c: JobControl) -> None:
            loop.call_soon_threadsafe(send, "progress", {"value": c.step, "max": c.steps, "node": "5"})
            self.on_step(c)

        control = JobControl(on_progress=on_progress)
        messages = [["execution_start", {"prompt_id": prompt_id}]]
        try:
            result = await self.generate(request, control)
        except JobCancelledError:
            send("execution_interrupted", {"node_id": "5", "node_type": "KSampler", "executed": []})
            self.history[prompt_id] = {
                "prompt": [0, prompt_id, graph, {}, ["7"]],
                "outputs": {},
                "status": {"status_str": "error", "completed": False, "messages": messages},
            }
            return
        except Exception as exc:
            send(
                "execution_error",
                {
                    "node_id": "5",
                    "node_type": "KSampler",
                    "executed": [],
                    "exception_message": str(exc),
                    "exception_type": type(exc).__name__,
                    "traceback": [],
                    "current_inputs": {},
                    "current_outputs": {},
                },
            )
            self.history[prompt_id] = {
                "prompt": [0, prompt_id, graph, {}, ["7"]],
                "outputs": {},
                "status": {"status_str": "error", "completed": False, "messages": messages},
            }
            return
        finally:
            self.running = None
            self.control = None
        self.counter += 1
        name = f"{graph['7']['inputs'].get('filename_prefix', 'ComfyUI')}_{self.counter:05}_.png"
        self.files[name] = result.png
        images = [{"filename": name, "subfolder": "", "type": "output"}]
        self.history[prompt_id] = {
            "prompt": [self.counter, prompt_id, graph, {"client_id": client_id}, ["7"]],
            "outputs": {"7": {"images": images}},
            "status": {"status_str": "success", "completed": True, "messages": messages},
        }
        send("executed", {"node": "7", "display_node": "7", "output": {"images": images}})
        send("execution_success", {"timestamp": int(time.time() * 1000)})
        send("executing", {"node": None})

    def app(self):
        s = self

        class Prompt(tornado.web.RequestHandler):
            async def post(self):
                body = json.loads(self.request.body)
                s.requests.append(body)
                if await s.maybe_fail(self):
                    return
                graph = body["prompt"]
                errors = s.validate(graph)
                if errors:
                    self.set_status(400)
                    self.finish(
                        {
                            "error": {
                                "type": "prompt_outputs_failed_validation",
                                "message": "Prompt outputs failed validation",
                                "details": "",
                                "extra_info": {},
                            },
                            "node_errors": errors,
                        }
                    )
                    return
                prompt_id = body.get("prompt_id") or str(uuid.uuid4())
                s.counter += 0
                asyncio.get_running_loop().create_task(s.execute(prompt_id, body.get("client_id", ""), graph))
                self.finish({"prompt_id": prompt_id, "number": len(s.history), "node_errors": {}})

        class History(tornado.web.RequestHandler):
            def get(self, prompt_id):
                entry = s.history.get(prompt_id)
                self.finish({prompt_id: entry} if entry else {})

        class View(tornado.web.RequestHandler):
            def get(self):
                name = self.get_argument("filename")
                if name not in s.files:
                    raise tornado.web.HTTPError(404)
                self.set_header("Content-Type", "image/png")
                self.finish(s.files[name])

        class ObjectInfo(tornado.web.RequestHandler):
            def get(self, node):
                if node == "LoraLoader":
                    req = {
                        "model": ["MODEL"],
                        "clip": ["CLIP"],
                        "lora_name": [s.lora_files(), {"tooltip": "The name of the LoRA."}],
                        "strength_model": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}],
                        "strength_clip": ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}],
                    }
                    out = {
                        "input": {"required": req},
                        "input_order": {"required": list(req)},
                        "output": ["MODEL", "CLIP"],
                        "output_name": ["MODEL", "CLIP"],
                        "name": "LoraLoader",
                        "display_name": "Load LoRA",
                        "category": "loaders",
                        "output_node": False,
                    }
                elif node == "CheckpointLoaderSimple":
                    out = {
                        "input": {"required": {"ckpt_name": [[CHECKPOINT], {}]}},
                        "output": ["MODEL", "CLIP", "VAE"],
                        "name": node,
                        "display_name": "Load Checkpoint",
                        "category": "loaders",
                    }
                else:
                    raise tornado.web.HTTPError(404)
                self.finish({node: out})

        class Interrupt(tornado.web.RequestHandler):
            def post(self):
                body = json.loads(self.request.body or b"{}")
                target = body.get("prompt_id")
                if s.control is not None and (target is None or target == s.running):
                    s.control.cancel()
                self.finish({})

        class Queue(tornado.web.RequestHandler):
            def get(self):
                self.finish({"queue_running": [[0, s.running]] if s.running else [], "queue_pending": []})

        class Socket(tornado.websocket.WebSocketHandler):
            def open(self):
                self.cid = self.get_argument("clientId", uuid.uuid4().hex)
                s.sockets[self.cid] = self
                self.write_message(
                    json.dumps(
                        {
                            "type": "status",
                            "data": {
                                "status": {"exec_info": {"queue_remaining": 1 if s.running else 0}},
                                "sid": self.cid,
                            },
                        }
                    )
                )

            def on_close(self):
                s.sockets.pop(self.cid, None)

        return tornado.web.Application(
            [
                (r"/prompt", Prompt),
                (r"/history/([^/]+)", History),
                (r"/view", View),
                (r"/object_info/(\w+)", ObjectInfo),
                (r"/interrupt", Interrupt),
                (r"/queue", Queue),
                (r"/ws", Socket),
            ]
        )


# ------------------------------------------------------------------------------------------ shared test helpers
_SHARED: dict = {}


def shared_tiny(root: pathlib.Path | None = None) -> tuple[DiffusersBackend, pathlib.Path]:
    """One tiny-pipeline backend and one folder of tiny LoRAs per test process (building costs seconds)."""
    import tempfile

    import torch

    from workbench.generate import write_tiny_loras

    torch.set_num_threads(1)
    if "backend" not in _SHARED:
        base = pathlib.Path(root or tempfile.mkdtemp(prefix="wb-gen-"))
        lora_dir = base / "loras"
        write_tiny_loras(lora_dir)
        cache = pathlib.Path(tempfile.gettempdir()) / "workbench-test-tiny-cache"
        _SHARED["backend"] = DiffusersBackend("tiny", lora_dirs=[lora_dir], cache_dir=cache)
        _SHARED["lora_dir"] = lora_dir
        _SHARED["cache"] = cache
    return _SHARED["backend"], _SHARED["lora_dir"]


def tiny_request(**kw) -> GenerationRequest:
    """A fast request for the tiny pipeline: 64 px, 4 DDIM steps, fixed seed."""
    base = dict(prompt="a lighthouse at dusk", seed=7, steps=4, width=64, height=64, sampler="DDIM", cfg_scale=7.0)
    base.update(kw)
    return GenerationRequest(**base)


def pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype("float64")

"""In-process generation with a diffusers pipeline (GPU notebook servers; CPU for the tiny pipeline).

LoRAs are loaded once with ``load_lora_weights(adapter_name=…)`` and kept (an LRU of adapters), and
every job calls ``set_adapters`` with per-component weights, because after a load only the newly
loaded adapter is active. Compatibility is checked from the file header before loading, and the
number of modules that received the adapter is checked after, so a LoRA is never applied partially
without an error. Cancel: ``callback_on_step_end`` raises when the job's control is cancelled.
"""

from __future__ import annotations

import collections
import contextlib
import pathlib
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from workbench.files import CROSS_ATTENTION_WIDTH
from workbench.generate import _infotext as _infotext
from workbench.generate._tiny_pipeline import (
    TINY_BASE_MODEL,
    TINY_MODEL_NAME,
    build_tiny_pipeline,
    is_tiny_pipeline_folder,
)
from workbench.generate._types import (
    GenerationError,
    GenerationRequest,
    GenerationResult,
    JobCancelledError,
    JobControl,
    LoraIncompatibleError,
    LoraInfo,
    LoraNotFoundError,
)
from workbench.generate.backends import _compat as compat

# A1111 sampler name -> (diffusers scheduler class, extra config)
SAMPLERS: dict[str, tuple[str, dict]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
}


class _Cancelled(Exception):
    pass


@contextlib.contextmanager
def _quiet_loaders():
    """Silence diffusers/transformers/peft load chatter (a harmless transformers-5 "MISSING" table, PEFT's
    "multiple adapters" note); real problems are caught by the module-count check instead."""
    import warnings

    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    d_level, t_level = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        dlog.set_verbosity(d_level)
        tlog.set_verbosity(t_level)


def load_pipeline(
    model: str | pathlib.Path, cache_dir: str | pathlib.Path | None = None, device: str | None = None
) -> Any:
    """A text-to-image pipeline from a local diffusers folder, a single-file checkpoint, or ``"tiny"``.

    ``"tiny"`` builds (once, into ``cache_dir``) the random-weight test pipeline. Never reaches a hub.
    """
    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    if str(model) == "tiny":
        if cache_dir is None:
            raise ValueError("model 'tiny' needs a cache_dir to build the tiny pipeline into")
        model = build_tiny_pipeline(cache_dir)
    path = pathlib.Path(model)
    if path.is_dir():
        with _quiet_loaders():
            pipe = DiffusionPipeline.from_pretrained(
                path, local_files_only=True, safety_checker=None, requires_safety_checker=False
            )
    elif path.is_file():
        try:
            pipe = StableDiffusionPipeline.from_single_file(str(path), local_files_only=True)
        except Exception as exc:
            raise GenerationError(
                f"cannot load single-file checkpoint {path.name} offline ({exc}); convert it to a diffusers "
                "folder, or run it with the a1111/comfyui backend"
            ) from exc
    else:
        raise GenerationError(f"model {model} not found (expected a diffusers folder, a checkpoint file or 'tiny')")
    pipe.set_progress_bar_config(disable=True)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return pipe.to(device)


def pipeline_family(pipe: Any, folder: pathlib.Path | None = None) -> str | None:
    """Base-model family of a loaded pipeline, from its U-Net's cross-attention width."""
    if folder is not None and is_tiny_pipeline_folder(folder):
        return TINY_BASE_MODEL
    ctx = getattr(pipe.unet.config, "cross_attention_dim", None)
    return CROSS_ATTENTION_WIDTH.get(ctx) if isinstance(ctx, int) else None


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


class DiffusersBackend:
    """In-process backend. ``model``: diffusers folder, checkpoint file, or ``"tiny"`` (needs ``cache_dir``)."""

    kind = "diffusers"

    def __init__(
        self,
        model: str | pathlib.Path = "tiny",
        *,
        lora_dirs: list[pathlib.Path] | None = None,
        resolver: Callable[[str], pathlib.Path] | None = None,
        cache_dir: str | pathlib.Path | None = None,
        max_adapters: int = 8,
        device: str | None = None,
        pipeline: Any = None,
        num_threads: int | None = None,
    ) -> None:
        self.model = str(model)
        self.lora_dirs = [pathlib.Path(d) for d in (lora_dirs or [])]
        self.resolver = resolver
        self.cache_dir = cache_dir
        self.max_adapters = max_adapters
        self.device = device
        self._pipe = pipeline
        self._folder: pathlib.Path | None = None
        self._family: str | None = None
        self._adapters: collections.OrderedDict[tuple, str] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._schedulers: dict[str, object] = {}
        self._has_te: dict[str, bool] = {}
        self.random_weights = self.model == "tiny"
        # torch's intra-op thread count is per OS thread (OpenMP): a queue worker thread would otherwise use
        # every core. Remember the creating thread's setting (tests/CI set 1) and apply it where jobs run.
        self.num_threads = num_threads or _torch_threads()

    # ---------------------------------------------------------------- pipeline
    @property
    def pipe(self) -> Any:
        with self._lock:
            if self._pipe is None:
                if self.model == "tiny":
                    self._folder = build_tiny_pipeline(
                        self.cache_dir or pathlib.Path.home() / ".cache" / "lora-workbench"
                    )
                else:
                    self._folder = pathlib.Path(self.model) if pathlib.Path(self.model).is_dir() else None
                self._pipe = load_pipeline(self._folder or self.model, self.cache_dir, self.device)
                self.random_weights = self._folder is not None and is_tiny_pipeline_folder(self._folder)
            if self._family is None:
                self._family = pipeline_family(self._pipe, self._folder)
            return self._pipe

    @property
    def family(self) -> str | None:
        _ = self.pipe
        return self._family

    @property
    def model_name(self) -> str:
        return TINY_MODEL_NAME if self.random_weights else pathlib.Path(self.model).stem

    def _scheduler(self, sampler: str):
        pipe = self.pipe
        if sampler not in SAMPLERS:
            raise GenerationError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        if sampler not in self._schedulers:
            import diffusers

            if not self._schedulers:
                self._base_scheduler_config = dict(pipe.scheduler.config)
            cls_name, extra = SAMPLERS[sampler]
            cls = getattr(diffusers, cls_name)
            self._schedulers[sampler] = cls.from_config({**self._base_scheduler_config, **extra})
        return self._schedulers[sampler]

    # ---------------------------------------------------------------- LoRAs
    def resolve(self, name: str, path: str | None = None) -> pathlib.Path:
        if path:
            return pathlib.Path(path)
        if self.resolver is not None:
            return pathlib.Path(self.resolver(name))
        return compat.find_lora_file(name, self.lora_dirs)

    def _adapter_for(self, name: str, path: pathlib.Path) -> str:
        """Load (or reuse) the adapter for this file; returns its adapter name."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key in self._adapters:
            self._adapters.move_to_end(key)
            return self._adapters[key]
        pipe = self.pipe
        info = compat.inspect_file(path)
        compat.check_diffusers_compatible(
            info, self._family, name, pipeline_has_te2=getattr(pipe, "text_encoder_2", None) is not None
        )
        while len(self._adapters) >= self.max_adapters:
            _, old = self._adapters.popitem(last=False)
            pipe.delete_adapters([old])
        adapter = f"lora__{_slug(path.stem)}__{len(self._adapters)}_{abs(hash(key)) % 10**8}"
        try:
            with _quiet_loaders():
                pipe.load_lora_weights(str(path), adapter_name=adapter)
        except Exception as exc:
            self._drop(adapter)
            raise LoraIncompatibleError(f"LoRA {name!r} could not be loaded by diffusers: {exc}") from exc
        got_unet, got_te = self._count_modules(adapter)
        if got_unet < info.unet_modules or got_te < info.te_modules:
            self._drop(adapter)
            raise LoraIncompatibleError(
                f"LoRA {name!r} would be applied only partially ({got_unet}/{info.unet_modules} U-Net and "
                f"{got_te}/{info.te_modules} text-encoder modules matched); it was made for another base model "
                f"than {self._family}. Run it on its own base model (a1111/comfyui backend or a matching pipeline)"
            )
        self._adapters[key] = adapter
        self._has_te[adapter] = info.te_modules > 0
        return adapter

    def _drop(self, adapter: str) -> None:
        try:
            if adapter in self._all_adapters():
                self.pipe.delete_adapters([adapter])
        except Exception:
            pass

    def _all_adapters(self) -> set[str]:
        return {a for names in self.pipe.get_list_adapters().values() for a in names}

    def _count_modules(self, adapter: str) -> tuple[int, int]:
        def count(model) -> int:
            if model is None:
                return 0
            return sum(
                1
                for m in model.modules()
                if adapter in getattr(m, "lora_A", {}) or adapter in getattr(m, "lora_down", {})
            )

        pipe = self.pipe
        return count(pipe.unet), count(getattr(pipe, "text_encoder", None)) + count(
            getattr(pipe, "text_encoder_2", None)
        )

    def _activate(self, request: GenerationRequest) -> dict[str, str]:
        """Load the stack's adapters and set their weights; returns {name: short hash} for infotext."""
        pipe = self.pipe
        names, weights, hashes = [], [], {}
        for spec in request.loras:
            path = self.resolve(spec.name, spec.path)
            if not path.is_file():
                raise LoraNotFoundError(f"LoRA file {path} for {spec.name!r} does not exist")
            adapter = self._adapter_for(spec.name, path)
            names.append(adapter)
            weights.append(
                {"unet": spec.unet, "text_encoder": spec.te_weight}
                if self._has_te.get(adapter)
                else {"unet": spec.unet}
            )
            hashes[spec.name] = compat.lora_short_hash(path)
        if names:
            pipe.enable_lora()
            pipe.set_adapters(names, adapter_weights=weights)
        elif self._adapters:
            pipe.disable_lora()
        return hashes

    # ---------------------------------------------------------------- protocol
    def submit(self, request: GenerationRequest, control: JobControl | None = None) -> GenerationResult:
        import torch

        control = control or JobControl()
        t0 = time.perf_counter()
        if torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        with self._lock:
            control.raise_if_cancelled()
            pipe = self.pipe
            hashes = self._activate(request)
            pipe.scheduler = self._scheduler(request.sampler)
            seed = request.seed if request.seed is not None and request.seed >= 0 else random.randrange(2**32)
            steps = int(request.steps)

            def on_step(_pipe, step, _timestep, kwargs):
                control.report(step + 1, steps)
                if control.cancelled:
                    raise _Cancelled()
                return kwargs

            device = getattr(pipe, "device", "cpu")
            generator = torch.Generator(device="cpu" if str(device) == "cpu" else device).manual_seed(seed)
            try:
                out = pipe(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt or None,
                    num_inference_steps=steps,
                    guidance_scale=float(request.cfg_scale),
                    width=int(request.width),
                    height=int(request.height),
                    generator=generator,
                    callback_on_step_end=on_step,
                )
            except _Cancelled:
                raise JobCancelledError(f"cancelled at step {control.step}/{steps}") from None
            image = out.images[0]
        params = self.infotext_params(request, seed, hashes)
        from workbench.generate._prompt_syntax import A1111, compose_prompt

        text = _infotext.build_infotext(
            compose_prompt(request.prompt, request.loras, A1111, triggers="none"), request.negative_prompt, params
        )
        return GenerationResult(
            png=_infotext.png_with_infotext(image, text),
            seed=seed,
            width=image.width,
            height=image.height,
            infotext=text,
            params={**request.to_dict(), "seed": seed},
            lora_hashes=hashes,
            backend=self.kind,
            elapsed_s=time.perf_counter() - t0,
        )

    def infotext_params(self, request: GenerationRequest, seed: int, hashes: dict[str, str]) -> dict:
        params = {
            "Steps": request.steps,
            "Sampler": request.sampler,
            "CFG scale": request.cfg_scale,
            "Seed": seed,
            "Size": f"{request.width}x{request.height}",
            "Model": self.model_name,
        }
        if hashes:
            params["Lora hashes"] = _infotext.format_lora_hashes(hashes)
        params["Backend"] = "diffusers"
        if self.random_weights:
            params["Note"] = "random weights (tiny test pipeline; the image carries no meaning)"
        return params

    def cancel(self, control: JobControl) -> None:
        control.cancel()  # the step callback sees the flag and stops the pipeline

    def list_loras(self) -> list[LoraInfo]:
        out = []
        for d in self.lora_dirs:
            for p in sorted(pathlib.Path(d).rglob("*.safetensors")):
                meta = compat.header_metadata(p)
                out.append(
                    LoraInfo(name=p.stem, alias=meta.get("ss_output_name") or p.stem, path=str(p), metadata=meta)
                )
        return out

    def health(self) -> dict:
        try:
            family = self.family
        except Exception as exc:
            return {"ok": False, "backend": self.kind, "error": str(exc)}
        return {
            "ok": True,
            "backend": self.kind,
            "model": self.model_name,
            "family": family,
            "random_weights": self.random_weights,
            "device": str(self.pipe.device),
            "adapters_loaded": len(self._adapters),
        }

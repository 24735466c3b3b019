"""Generating with LoRAs: the domain types, prompt syntax and infotext, the job queue and its RQ workers,
history, recipes, comparison grids, the tiny test pipeline and the backends. Imports only
:mod:`workbench.files` and :mod:`workbench.catalog` of the rest of the package."""

from __future__ import annotations

from workbench.generate._compare import CompareResult, assemble_grid, compare, plan_cells
from workbench.generate._compatibility import incompatibility, loras_for_backend
from workbench.generate._history import History
from workbench.generate._image_recipes import ImageRecipe, image_text_chunks, recipe_from_image
from workbench.generate._infotext import (
    build_infotext,
    format_lora_hashes,
    parse_infotext,
    parse_lora_hashes,
    png_with_infotext,
    read_infotext,
)
from workbench.generate._jobs import Job, JobQueue, RetryPolicy, catalog_resolver
from workbench.generate._limits import BACKEND_LIMITS, GenerationLimits, InvalidRequestError, validate_request
from workbench.generate._prompt_syntax import (
    A1111,
    COMFYUI,
    PromptSyntaxError,
    compose_prompt,
    convert,
    format_tag,
    insert_trigger_words,
    parse_prompt,
    parse_tag,
)
from workbench.generate._recipes import Recipe, RecipeError, Recipes, parse_recipe
from workbench.generate._rq import fail_jobs_of_dead_worker, live_workers, run_worker
from workbench.generate._tiny_pipeline import (
    TINY_LORAS,
    kohya_metadata,
    make_lora_tensors,
    write_tiny_loras,
)
from workbench.generate._types import (
    Backend,
    BackendUnavailableError,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    JobCancelledError,
    JobControl,
    LoraIncompatibleError,
    LoraInfo,
    LoraNotFoundError,
    LoraSpec,
)
from workbench.generate.backends import (
    A1111Backend,
    BackendChoice,
    ComfyUIBackend,
    DiffusersBackend,
    LoraFileInfo,
    build_graph,
    check_diffusers_compatible,
    configured_backends,
    inspect_file,
    open_backend,
)

__all__ = [
    "A1111",
    "A1111Backend",
    "assemble_grid",
    "Backend",
    "BACKEND_LIMITS",
    "BackendChoice",
    "BackendUnavailableError",
    "build_graph",
    "build_infotext",
    "catalog_resolver",
    "check_diffusers_compatible",
    "COMFYUI",
    "ComfyUIBackend",
    "compare",
    "CompareResult",
    "compose_prompt",
    "configured_backends",
    "convert",
    "DiffusersBackend",
    "fail_jobs_of_dead_worker",
    "format_lora_hashes",
    "format_tag",
    "GenerationError",
    "GenerationLimits",
    "GenerationRequest",
    "GenerationResult",
    "History",
    "image_text_chunks",
    "ImageRecipe",
    "incompatibility",
    "insert_trigger_words",
    "inspect_file",
    "InvalidRequestError",
    "Job",
    "JobCancelledError",
    "JobControl",
    "JobQueue",
    "kohya_metadata",
    "live_workers",
    "LoraFileInfo",
    "LoraIncompatibleError",
    "LoraInfo",
    "LoraNotFoundError",
    "loras_for_backend",
    "LoraSpec",
    "make_lora_tensors",
    "open_backend",
    "parse_infotext",
    "parse_lora_hashes",
    "parse_prompt",
    "parse_recipe",
    "parse_tag",
    "plan_cells",
    "png_with_infotext",
    "PromptSyntaxError",
    "read_infotext",
    "Recipe",
    "recipe_from_image",
    "RecipeError",
    "Recipes",
    "RetryPolicy",
    "run_worker",
    "TINY_LORAS",
    "validate_request",
    "write_tiny_loras",
]

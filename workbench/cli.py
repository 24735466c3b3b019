"""The `workbench` command line: scan, hash, export and everything the helpers' modules add.

Each command is a small `_cmd_*` function calling the core; heavy imports stay inside them so
`workbench --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import workbench


def _open(args: argparse.Namespace) -> workbench.Workbench:
    return workbench.open(args.home)


def _open_existing(args: argparse.Namespace) -> workbench.Workbench:
    """For commands that only read (or add to) a catalog: a mistyped --home is an error, not a new home."""
    from workbench._home import existing_home

    return workbench.open(existing_home(args.home))


def _table(frame: Any) -> str:
    """A DataFrame as a plain-text table: no index, blanks instead of NaN/None."""
    return frame.astype(object).where(frame.notna(), "").to_string(index=False)


def _cmd_scan(args: argparse.Namespace) -> int:
    wb = _open(args)
    report = wb.scan(
        args.roots or None, workers=args.workers, progress=not args.quiet, follow_outside=args.follow_outside
    )
    print(report)
    for skipped in report.skipped_dirs:
        print(f"skipped folder: {skipped}", file=sys.stderr)
    for path, error in report.error_files[:_ERRORS_SHOWN]:
        print(f"error: {path}: {error}", file=sys.stderr)
    if len(report.error_files) > _ERRORS_SHOWN:
        print(
            f"... and {len(report.error_files) - _ERRORS_SHOWN} more files with errors "
            "('workbench export-catalog --format csv' lists every one in its error column)",
            file=sys.stderr,
        )
    if args.hash:
        print(f"hashed {wb.hash(progress=not args.quiet)} files")
    return 0


_ERRORS_SHOWN = 20


def _cmd_hash(args: argparse.Namespace) -> int:
    wb = _open_existing(args)
    print(f"hashed {wb.hash(progress=not args.quiet, workers=args.workers)} files")
    return 0


def _jsonable(value: Any) -> Any:
    """A catalog value as strict JSON: NaN, infinities, NaT and NA become null, also inside lists and objects."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or type(value).__name__ in ("NaTType", "NAType"):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _cmd_export_catalog(args: argparse.Namespace) -> int:
    wb = _open_existing(args)
    frame = wb.catalog.query(sort="name")
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
        return 0
    for record in frame.to_dict("records"):
        sys.stdout.write(json.dumps(_jsonable(record), ensure_ascii=False, allow_nan=False, default=str) + "\n")
    return 0


def _cmd_duplicates(args: argparse.Namespace) -> int:
    from workbench.analytics import summary

    wb = _open_existing(args)
    if args.by == "weights":
        return _print_weight_groups(wb, args.threshold, args.format)
    frame = wb.catalog.duplicates(by=args.by)
    if args.format == "jsonl":
        for value, group in frame.groupby("hash", sort=False):
            print(json.dumps({args.by: value, "ids": group["id"].tolist(), "paths": group["path"].tolist()}))
        return 0
    facts = summary(wb)
    unhashed, local = facts["unhashed"], facts["local_files"]
    if len(frame):
        print(_table(frame))
    elif unhashed == 0:
        print(f"no duplicates among the {local} hashed files")
    else:
        print("no duplicates found among the files hashed so far")
    if unhashed:
        print(
            f"{unhashed} of {local} files have no hash yet, so duplicates among them are not known: "
            f"run 'workbench hash{_home_flag(args)}' (or 'workbench scan --hash') to compute them"
        )
    return 0


def _home_flag(args: argparse.Namespace) -> str:
    return f" --home {args.home}" if getattr(args, "home", None) else ""


def _cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the Voilà dashboard (gallery helper's command)."""
    from workbench.dashboard import serve_dashboard

    try:
        return serve_dashboard(
            args.home,
            args.library,
            port=args.port,
            host=args.host,
            open_browser=not args.no_browser,
            pool_size=args.pool_size,
            token=args.token,
            read_only=args.read_only,
            base_url=args.base_url,
            theme=args.theme,
            redis_url=args.redis,
            shared_worker=not args.no_worker,
        )
    except (OSError, RuntimeError) as exc:
        print(f"workbench dashboard: error: {exc}", file=sys.stderr)
        return 2


def _cmd_report(args: argparse.Namespace) -> int:
    from workbench.report import run_report

    out = run_report(
        args.out, home=args.home, library=args.library, rescan=not args.no_rescan, hash_files=args.hash, html=args.html
    )
    print(f"report written to {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    print(f"archive written to {_open_existing(args).export(args.out, include_files=args.with_files)}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from workbench.catalog import ArchiveError

    try:
        report = _open(args).import_archive(
            args.archive, dry_run=args.dry_run, conflict=args.conflict, restore_to=args.restore_to
        )
    except ArchiveError as exc:
        print(f"workbench import: refused: {exc}", file=sys.stderr)
        return 2
    print(("dry run: " if args.dry_run else "") + str(report))
    return 0


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="workbench home (default: $WORKBENCH_HOME or the platform data folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="LoRA Workbench command line")
    parser.add_argument("--version", action="version", version=f"lora-workbench {workbench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scan", help="scan library folders into the catalog (incremental)")
    p.add_argument("roots", nargs="*", help="library folders (default: the ones scanned before)")
    _add_home(p)
    p.add_argument("--workers", type=int, default=None, help="inspection processes (default: CPU count)")
    p.add_argument("--hash", action="store_true", help="also compute missing file hashes")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--follow-outside",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="follow links that resolve outside these roots (remembered per root; default: as before, else no)",
    )
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("hash", help="compute missing SHA256 / AutoV2 / tensor hashes")
    _add_home(p)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_hash)

    p = sub.add_parser("export-catalog", help="print the catalog, one LoRA per line")
    _add_home(p)
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.set_defaults(func=_cmd_export_catalog)

    p = sub.add_parser("duplicates", help="list duplicate files by hash")
    _add_home(p)
    p.add_argument(
        "--by",
        choices=["sha256", "tensor_hash", "weights"],
        default="sha256",
        help="file hash, tensor-data hash, or weights: near-duplicates whose deltas have cosine >= --threshold "
        "(run 'workbench weights' first)",
    )
    p.add_argument("--threshold", type=float, default=0.9, help="--by weights: lowest cosine inside a group (0.9)")
    p.add_argument("--format", choices=["table", "jsonl"], default="table")
    p.set_defaults(func=_cmd_duplicates)

    # [weights helper] weights
    p = sub.add_parser("weights", help="analyse LoRA tensors: block norms, effective rank, similarity signature")
    _add_home(p)
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="catalog ids (default: every file not analysed)")
    p.add_argument("--force", action="store_true", help="analyse again even when a current analysis exists")
    p.add_argument("--workers", type=int, default=None, help="analysis processes (default: one per core, up to 8)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_weights)
    # [/weights helper]

    p = sub.add_parser("report", help="run the papermill report notebook")
    _add_home(p)
    p.add_argument("--library", nargs="*", default=[], help="extra library roots to scan first")
    p.add_argument("--out", default="report.ipynb", help="executed notebook to write")
    p.add_argument("--html", default=None, help="also write an HTML version (code hidden)")
    p.add_argument("--no-rescan", action="store_true")
    p.add_argument("--hash", action="store_true", help="compute missing hashes first")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="export ratings, tags, notes and recipes (optionally files) to a zip")
    _add_home(p)
    p.add_argument("out", help="archive to write (.zip)")
    p.add_argument("--with-files", action="store_true", help="include LoRA files, sidecars and previews")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("import", help="import an archive made by 'workbench export'")
    _add_home(p)
    p.add_argument("archive")
    p.add_argument("--dry-run", action="store_true", help="check and report, change nothing")
    p.add_argument("--conflict", choices=["skip", "overwrite", "merge"], default="skip")
    p.add_argument("--restore-to", default=None, help="folder to restore included files into (then scanned)")
    p.set_defaults(func=_cmd_import)

    # --- commands added by other modules: one function each, registered below ---
    # [gallery helper] dashboard
    p = sub.add_parser("dashboard", help="serve the dashboard (Voila) for browsing and editing the library")
    _add_home(p)
    p.add_argument(
        "--library",
        nargs="+",
        action="extend",
        default=[],
        metavar="ROOT",
        help="library folders to scan when the catalog is empty or they are new to it",
    )
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    p.add_argument(
        "--theme", choices=["auto", "light", "dark"], default="auto", help="page theme (default: JupyterLab's setting)"
    )
    p.add_argument(
        "--token",
        help="visitors need ?token=TOKEN once (then a cookie); default: $WORKBENCH_TOKEN, "
        "else one is generated when --host is not loopback",
    )
    p.add_argument(
        "--read-only",
        action="store_true",
        help="every visitor is a viewer: no editing or generating, refused server-side",
    )
    p.add_argument(
        "--pool-size", type=int, default=1, metavar="N", help="kernels kept preheated for the next visitors (0: none)"
    )
    p.add_argument(
        "--base-url", default="/", metavar="PREFIX", help="URL prefix behind a proxy, e.g. /services/lora-workbench/"
    )
    p.add_argument(
        "--redis",
        default=None,
        metavar="URL",
        help="join this Redis (and its workers) instead of starting a private one for the shared worker",
    )
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="start no shared worker (kernels then generate and embed in-process: torch in every kernel)",
    )
    p.set_defaults(func=_cmd_dashboard)
    # [/gallery helper]
    # [generation helper] generate, compare, worker
    _add_generation_commands(sub)
    # [/generation helper]
    # [recommend helper] recommend, import-civitai
    _add_recommend_commands(sub)
    # [/recommend helper]
    # [civitai helper] civitai fetch|link|updates|download
    _add_civitai_commands(sub)
    # [/civitai helper]
    # [migration] import-recipe
    _add_migration_commands(sub)
    # [/migration]
    # [shared service] backup
    _add_backup_command(sub)
    # [/shared service]
    return parser


# [weights helper]
def _cmd_weights(args: argparse.Namespace) -> int:
    """Analyse tensors of files lacking a current analysis; print the table of analyses (errors included)."""
    wb = _open(args)
    done = wb.weights.analyze(args.ids or None, force=args.force, progress=not args.quiet, workers=args.workers)
    table = wb.weights.table(args.ids or None)
    print(f"analysed {len(done)} files now ({int((~done['ok']).sum()) if len(done) else 0} with errors)")
    if table.empty:
        print("no analyses (scan a library first)")
        return 0
    shown = table[["id", "name", "family", "network_type", "nominal_rank", "rank90", "rank99", "total_norm"]]
    with __import__("pandas").option_context("display.max_colwidth", 40, "display.width", 200):
        print(shown.round(3).to_string(index=False))
    for row in table[~table["ok"]].itertuples():
        print(f"error: {row.id} {row.path}: {row.error}", file=sys.stderr)
    return 0


def _print_weight_groups(wb: workbench.Workbench, threshold: float, fmt: str) -> int:
    groups = wb.weights.groups(threshold)
    if fmt == "jsonl":
        for group in groups:
            print(json.dumps(group, ensure_ascii=False))
        return 0
    if not groups:
        print(f"no near-duplicates by weights at cosine >= {threshold}")
    for number, group in enumerate(groups, start=1):
        print(f"group {number} ({group['family']}, lowest cosine {group['similarity']:.4f}):")
        for lora_id, path in zip(group["ids"], group["paths"]):
            print(f"  {lora_id:>6}  {path}")
    return 0


# [/weights helper]


# [generation helper]
def _cmd_generate(args: argparse.Namespace) -> int:
    """Run one job through the queue and write its PNG."""
    import shutil

    from workbench.generate import A1111, GenerationRequest, LoraSpec, parse_prompt

    text, stack = parse_prompt(args.prompt, A1111)
    for item in args.lora or []:
        name, _, rest = item.partition(":")
        weights = [float(x) for x in rest.split(":") if x] or [1.0]
        stack = [s for s in stack if s.name != name] + [
            LoraSpec(name, weights[0], weights[1] if len(weights) > 1 else None)
        ]
    width, _, height = args.size.lower().partition("x")
    request = GenerationRequest(
        prompt=text,
        negative_prompt=args.negative or "",
        loras=stack,
        seed=args.seed,
        steps=args.steps,
        cfg_scale=args.cfg,
        width=int(width),
        height=int(height or width),
        sampler=args.sampler,
    )
    wb = _open(args)
    options: dict = {}
    if args.backend == "diffusers":
        options = {"model": args.model or "tiny"}
    else:
        if not args.url:
            raise ValueError(f"--backend {args.backend} needs --url")
        options = {"url": args.url}
        if args.model:
            options["model"] = args.model
    queue = wb.queue
    job_id = queue.submit(request, args.backend, backend_options=options, max_attempts=1)
    try:
        state = queue.wait(job_id, timeout=args.timeout)
    finally:
        queue.close()
    if state["state"] != "succeeded":
        print(f"workbench generate: job {job_id} {state['state']}: {state['error']}", file=sys.stderr)
        return 1
    result = queue.result(job_id)
    if result is None:
        print(f"workbench generate: job {job_id} left no result", file=sys.stderr)
        return 1
    shutil.copyfile(result["path"], args.out)
    print(result["infotext"])
    if args.backend == "diffusers" and (args.model or "tiny") == "tiny":
        print("(tiny pipeline with RANDOM WEIGHTS: the image is noise-like and carries no meaning)")
    print(f"wrote {args.out} (job {job_id})")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    """Serve generation jobs from Redis (RQ); results go back to the catalog's owner, never to DuckDB here."""
    from workbench.generate import run_worker

    defaults = {"diffusers": {"model": args.model, "cache_dir": args.cache_dir, "lora_dirs": args.lora_dir or []}}
    return run_worker(args.redis, args.queue or ["workbench"], burst=args.burst, backend_defaults=defaults)


def _cmd_compare(args: argparse.Namespace) -> int:
    """A LoRA x weight x seed grid through the queue; writes the labelled PNG and prints the cells."""
    import shutil

    from workbench.generate import GenerationRequest, compare

    width, _, height = args.size.lower().partition("x")
    base = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative or "",
        steps=args.steps,
        cfg_scale=args.cfg,
        width=int(width),
        height=int(height or width),
        sampler=args.sampler,
    )
    options = {"model": args.model or "tiny"} if args.backend == "diffusers" else {"url": args.url}
    if args.backend != "diffusers" and not args.url:
        raise ValueError(f"--backend {args.backend} needs --url")
    wb = _open(args)
    try:
        result = compare(
            wb,
            args.lora,
            [float(x) for x in args.weights.split(",") if x.strip()],
            [int(x) for x in args.seeds.split(",") if x.strip()],
            base=base,
            cols=args.cols,
            backend=args.backend,
            backend_options=options,
            progress=not args.quiet,
        )
    except RuntimeError as exc:
        print(f"workbench compare: {exc}", file=sys.stderr)
        return 1
    finally:
        wb.queue.close()
    if args.out:
        shutil.copyfile(result.path, args.out)
    print(_table(result.cells[["row", "col", "lora", "weight", "seed", "result_id"]]))
    if args.backend == "diffusers" and (args.model or "tiny") == "tiny":
        print("(tiny pipeline with RANDOM WEIGHTS: the images are noise-like and carry no meaning)")
    print(f"wrote {args.out or result.path}")
    return 0


def _add_generation_commands(sub) -> None:
    p = sub.add_parser("generate", help="generate one image through the queue and write the PNG")
    _add_home(p)
    p.add_argument("--backend", choices=["diffusers", "a1111", "comfyui"], default="diffusers")
    p.add_argument(
        "--model", help="diffusers folder or checkpoint, or 'tiny' (random weights); a1111/comfyui: checkpoint name"
    )
    p.add_argument("--url", help="server URL for a1111/comfyui")
    p.add_argument("--prompt", required=True, help="prompt text; <lora:NAME:W> tags are honoured (A1111 dialect)")
    p.add_argument("--negative", default="")
    p.add_argument("--lora", action="append", metavar="NAME:WEIGHT[:TE]", help="add a LoRA (repeatable)")
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--sampler", default="Euler")
    p.add_argument("--size", default="512x512", help="WxH")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("compare", help="LoRA x weight x seed comparison grid through the queue")
    _add_home(p)
    p.add_argument("--lora", action="append", required=True, help="LoRA to compare (repeatable)")
    p.add_argument("--weights", default="0,0.5,1", help="comma separated weights")
    p.add_argument("--seeds", default="1", help="comma separated fixed seeds")
    p.add_argument("--cols", choices=["weight", "seed", "lora"], default="weight", help="axis along the columns")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="")
    p.add_argument("--backend", choices=["diffusers", "a1111", "comfyui"], default="diffusers")
    p.add_argument("--model", help="diffusers folder or checkpoint, or 'tiny' (random weights)")
    p.add_argument("--url", help="server URL for a1111/comfyui")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--sampler", default="Euler")
    p.add_argument("--size", default="512x512", help="WxH")
    p.add_argument("--out", help="also copy the grid PNG here (it is always saved under <home>/compare)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("worker", help="run an RQ generation worker on Redis (for several GPU machines)")
    p.add_argument(
        "--redis",
        default=os.environ.get("WORKBENCH_REDIS") or "redis://127.0.0.1:6379/0",
        help="Redis URL (default: $WORKBENCH_REDIS, else redis://127.0.0.1:6379/0)",
    )
    p.add_argument("--queue", action="append", help="RQ queue name(s) (default: workbench)")
    p.add_argument("--model", default="tiny", help="default diffusers model for jobs that name none")
    p.add_argument("--cache-dir", default=None, help="where the tiny pipeline is built")
    p.add_argument("--lora-dir", action="append", help="folders to resolve LoRA names in")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=_cmd_worker)


# [/generation helper]


# [recommend helper]
def _cmd_recommend(args: argparse.Namespace) -> int:
    """Print recommendations for a prompt, a LoRA id or trigger text."""
    rec = _open_existing(args).recommend
    if args.prompt is not None:
        df = rec.for_prompt(args.prompt, k=args.k, base_model=args.base_model)
    elif args.similar is not None:
        try:
            df = rec.similar(args.similar, k=args.k)
        except LookupError as exc:  # unknown id or not embedded
            print(f"workbench recommend: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2
    else:
        df = rec.by_trigger(args.trigger, k=args.k, base_model=args.base_model)
    cols = ["id", "name", "base_model", "score", "reason"]
    if args.format == "jsonl":
        for row in df[
            [
                *cols,
                "score_semantic",
                "score_trigger",
                "score_lexical",
                "score_popularity",
                "score_usage",
                "score_feedback",
                "why",
                "trigger_words",
                "civitai_model_id",
                "path",
            ]
        ].to_dict("records"):
            print(json.dumps(row, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v), ensure_ascii=False))
    elif df.empty:
        print("no recommendations")
    else:
        with __import__("pandas").option_context("display.max_colwidth", 60, "display.width", 200):
            print(_table(df[cols].assign(score=df["score"].round(3))))
    return 0


def _cmd_import_civitai(args: argparse.Namespace) -> int:
    """Add catalog entries from Civitai /api/v1/models items."""
    print(_open(args).import_civitai(args.file, progress=not args.quiet))
    return 0


def _add_recommend_commands(sub: Any) -> None:
    p = sub.add_parser("recommend", help="recommend LoRAs for a prompt, like a LoRA, or by trigger words")
    _add_home(p)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--prompt", help="prompt text (<lora:...> tags are ignored)")
    q.add_argument("--similar", type=int, metavar="ID", help="catalog id of a LoRA")
    q.add_argument("--trigger", help="trigger words to look up")
    p.add_argument("-k", type=int, default=10, help="how many (default 10)")
    p.add_argument("--base-model", help="only LoRAs compatible with this base model (SD1, SDXL, ...)")
    p.add_argument("--format", choices=["table", "jsonl"], default="table")
    p.set_defaults(func=_cmd_recommend)

    p = sub.add_parser("import-civitai", help="add catalog entries from a Civitai /api/v1/models export")
    p.add_argument("file", help=".json, .jsonl or .jsonl.gz file of model items")
    _add_home(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_import_civitai)


# [/recommend helper]


# [civitai helper]
def _cmd_civitai_fetch(args: argparse.Namespace) -> int:
    """Identify files on Civitai by SHA256 and store what it says (the only command that asks by hash)."""
    report = _open(args).civitai.fetch(
        refresh=args.refresh, max_images=args.images, sidecars=args.sidecars, progress=not args.quiet
    )
    print(report)
    for error in report.errors:
        print(f"  error: {error}", file=sys.stderr)
    return 1 if report.errors and not (report.found or report.not_found or report.cached) else 0


def _cmd_civitai_link(args: argparse.Namespace) -> int:
    from workbench.catalog import CivitaiError

    try:
        result = _open(args).civitai.link(args.id, args.url)
    except CivitaiError as exc:
        print(f"workbench civitai link: {exc}", file=sys.stderr)
        return 1
    print(
        f"LoRA {result['lora_id']} linked to Civitai model {result['model_id']} "
        f"version {result['version_id']} ({result['images']} images)"
    )
    for error in result["errors"]:
        print(f"  error: {error}", file=sys.stderr)
    return 0


def _cmd_civitai_updates(args: argparse.Namespace) -> int:
    frame = _open(args).civitai.updates(refresh=args.refresh, progress=not args.quiet)
    if args.format == "jsonl":
        for record in frame.to_dict("records"):
            print(json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False))
    elif frame.empty:
        print("no updates available (from the last fetch; --refresh asks Civitai again)")
    else:
        cols = ["id", "name", "current_version", "current_version_id", "latest_version", "latest_version_id"]
        print(frame[cols].to_string(index=False))
    return 0


def _cmd_civitai_download(args: argparse.Namespace) -> int:
    from workbench.catalog import CivitaiError

    try:
        result = _open(args).civitai.download(args.ref, args.to, progress=not args.quiet)
    except CivitaiError as exc:
        print(f"workbench civitai download: {exc}", file=sys.stderr)
        return 1
    print(result)
    return 0


def _add_civitai_commands(sub: Any) -> None:
    group = sub.add_parser(
        "civitai", help="ask Civitai about your files: fetch by hash, link, updates, download"
    ).add_subparsers(dest="civitai_command", required=True)

    p = group.add_parser("fetch", help="look files up by SHA256; store metadata, previews and example images")
    _add_home(p)
    p.add_argument("--refresh", action="store_true", help="ask again about files already looked up")
    p.add_argument("--images", type=int, default=4, help="example images kept per version (default 4; 0: none)")
    p.add_argument("--sidecars", action="store_true", help="also write .civitai.info and .metadata.json sidecars")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_civitai_fetch)

    p = group.add_parser("link", help="link a file to a Civitai version by hand (when its hash is not known)")
    p.add_argument("id", type=int, help="catalog id of the LoRA")
    p.add_argument("--url", required=True, help="https://civitai.com/models/ID?modelVersionId=VID, or a version id")
    _add_home(p)
    p.set_defaults(func=_cmd_civitai_link)

    p = group.add_parser("updates", help="LoRAs whose Civitai model has a newer version")
    _add_home(p)
    p.add_argument("--format", choices=["table", "jsonl"], default="table")
    p.add_argument("--refresh", action="store_true", help="ask Civitai about those models again first")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_civitai_updates)

    p = group.add_parser("download", help="download a model version into a folder and add it to the catalog")
    p.add_argument("ref", help="a version id or a Civitai model/download URL")
    p.add_argument("--to", required=True, help="library folder to put the file in")
    _add_home(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_civitai_download)


# [/civitai helper]
def _quiet_model_loading() -> None:
    """No Hugging Face / transformers progress bars or load reports on every command (set the variables to see them)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# [migration]
def _cmd_import_recipe(args: argparse.Namespace) -> int:
    """Save the recipe an A1111 or ComfyUI image carries; list the LoRAs this catalog lacks."""
    found = _open_existing(args).recipes.import_image(args.image, args.name, overwrite=args.overwrite)
    print(found.summary())
    print(f"saved recipe {found.recipe.name!r}")
    return 0


def _add_migration_commands(sub: Any) -> None:
    p = sub.add_parser("import-recipe", help="make a recipe from an A1111 or ComfyUI image (PNG metadata)")
    p.add_argument("image", help="PNG (or JPEG/WEBP with A1111 infotext) carrying generation parameters")
    _add_home(p)
    p.add_argument("--name", help="recipe name (default: the image's file name)")
    p.add_argument("--overwrite", action="store_true", help="replace a recipe of the same name")
    p.set_defaults(func=_cmd_import_recipe)


# [/migration]
# [shared service]
def _cmd_backup(args: argparse.Namespace) -> int:
    """Zip the home's catalog (history, feedback, usage) and generated images; keep the newest N."""
    from workbench.catalog import BackupError

    try:
        info = _open(args).backup(keep=args.keep)
    except BackupError as exc:
        print(f"workbench backup: error: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in info.counts.items())
    print(f"backup written to {info.path} ({info.size_bytes:,} bytes; {counts})")
    return 0


def _add_backup_command(sub: Any) -> None:
    p = sub.add_parser("backup", help="back up the home (catalog, history, feedback, usage, images) with rotation")
    _add_home(p)
    p.add_argument("--keep", type=int, default=5, help="backups to keep in <home>/backups (default 5)")
    p.set_defaults(func=_cmd_backup)


# [/shared service]


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_model_loading()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # name the subcommand's own usage, not the top-level one
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

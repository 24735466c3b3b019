"""The `workbench` command line: scan, hash, export and everything the helpers' modules add.

Each command is a small `_cmd_*` function calling the core; heavy imports stay inside them so
`workbench --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import workbench


def _open(args: argparse.Namespace) -> workbench.Workbench:
    return workbench.open(args.home)


def _cmd_scan(args: argparse.Namespace) -> int:
    wb = _open(args)
    report = wb.scan(args.roots or None, workers=args.workers, progress=not args.quiet)
    print(report)
    for skipped in report.skipped_dirs:
        print(f"skipped folder: {skipped}", file=sys.stderr)
    if args.hash:
        print(f"hashed {wb.hash(progress=not args.quiet)} files")
    return 0


def _cmd_hash(args: argparse.Namespace) -> int:
    wb = _open(args)
    print(f"hashed {wb.hash(progress=not args.quiet, workers=args.workers)} files")
    return 0


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def _cmd_export_catalog(args: argparse.Namespace) -> int:
    wb = _open(args)
    frame = wb.catalog.query(sort="name")
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
        return 0
    for record in frame.to_dict("records"):
        sys.stdout.write(json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
    return 0


def _cmd_duplicates(args: argparse.Namespace) -> int:
    wb = _open(args)
    frame = wb.catalog.duplicates(by=args.by)
    print(frame.to_string(index=False) if len(frame) else "no duplicates")
    return 0


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
    print(f"archive written to {_open(args).export(args.out, include_files=args.with_files)}")
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
    p.add_argument("--by", choices=["sha256", "tensor_hash"], default="sha256")
    p.set_defaults(func=_cmd_duplicates)

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
    # [shared service] backup
    _add_backup_command(sub)
    # [/shared service]
    return parser


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
    print(result.cells[["row", "col", "lora", "weight", "seed", "result_id"]].to_string(index=False))
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
    rec = _open(args).recommend
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
                "score_feedback",
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
            print(df[cols].assign(score=df["score"].round(3)).to_string(index=False))
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

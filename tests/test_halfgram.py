"""The native float16/bfloat16 kernels of the weight analysis: built where the CPU can run them, exact against
float64 maths for every shape edge, strict about their arguments, and giving the analysis the numbers of the
numpy path (norms, effective ranks, signatures, errors)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from lora_factory import write_safetensors, write_stored

from workbench.files import analyze_weights

_weights = sys.modules["workbench.files._weights"]  # white-box: the kernels, and the switch between the two paths

_NEEDED_FLAGS = {"avx2", "f16c", "fma"}  # the AVX2 kernels; AVX-512 ones are used when the CPU has them


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


native = pytest.mark.skipif(_weights._NATIVE is None, reason="native kernels not built or CPU without F16C/AVX2")
_LEVELS = _weights._NATIVE.levels() if _weights._NATIVE is not None else []


@pytest.fixture(params=_LEVELS or ["none"])
def level(request: pytest.FixtureRequest) -> object:
    """Each instruction set this CPU runs, in turn (the kernels are one source built per set)."""
    if _weights._NATIVE is None:
        pytest.skip("native kernels not built or CPU without F16C/AVX2")
    kernels = _weights._NATIVE
    best = kernels.supported()
    kernels.use(request.param)
    yield request.param
    kernels.use(best)


def test_native_kernels_are_built_where_the_cpu_can_run_them() -> None:
    """`make install` builds the extension; on a CPU with AVX2/F16C the analysis must use it (a silent fallback
    to numpy would hide a broken build behind passing tests), with AVX-512 when the CPU has it."""
    flags = _cpu_flags()
    if not _NEEDED_FLAGS <= flags:
        pytest.skip(f"CPU lacks {sorted(_NEEDED_FLAGS - flags)}")
    assert _weights._NATIVE is not None
    best = "avx512" if {"avx512f", "avx512bw", "avx512vl"} <= flags else "avx2"
    assert _weights._NATIVE.supported() == best
    assert _weights._NATIVE.levels() == (["avx512", "avx2"] if best == "avx512" else ["avx2"])
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _weights._NATIVE.use("sse9")


def _bits(values: np.ndarray, kind: int) -> np.ndarray:
    """The stored bits of ``values`` as float16 (kind 0) or bfloat16 (kind 1, as uint16)."""
    if kind == 0:
        return values.astype(np.float16)
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _values(bits: np.ndarray, kind: int) -> np.ndarray:
    if kind == 0:
        return bits.astype(np.float64)
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _unaligned(bits: np.ndarray) -> np.ndarray:
    """The same values starting 2 bytes into a buffer (safetensors offsets need not be aligned)."""
    raw = b"\0\0" + bits.tobytes()
    return np.frombuffer(raw, dtype=bits.dtype, offset=2).reshape(bits.shape)


def _close(got: np.ndarray, want: np.ndarray, terms: int) -> None:
    """Equal up to float32 accumulation over ``terms`` products."""
    scale = max(float(np.abs(want).max()), 1e-30)
    assert float(np.abs(got - want).max()) <= 1e-6 * scale * max(1.0, np.sqrt(terms))


def test_long_factors_are_summed_as_accurately_as_numpy_does(level: str) -> None:
    """A running float32 sum over every row of a 40,960-row factor lost a digit against numpy's blocked
    products; chunks are summed from zero, then added."""
    rng = np.random.default_rng(9)
    kernels = _weights._NATIVE
    length, rank = 40_960, 32
    factor = (rng.standard_normal((length, rank)) * 0.1).astype(np.float16)
    values = factor.astype(np.float64)
    exact = np.diag(values.T @ values)
    as_float32 = factor.astype(np.float32)
    numpy_error = float(np.max(np.abs(np.diag(as_float32.T @ as_float32) - exact) / exact))
    g = rng.standard_normal((length, 4)).astype(np.float32)
    gram, proj = np.empty((rank, rank), np.float32), np.empty((4, rank), np.float32)
    kernels.col_products(factor, length, rank, 0, g, 4, gram, proj)
    assert float(np.max(np.abs(np.diag(gram) - exact) / exact)) <= 2.5 * max(numpy_error, 1e-7)
    gram, proj = np.empty((rank, rank), np.float32), np.empty((rank, 4), np.float32)
    kernels.row_products(np.ascontiguousarray(factor.T), rank, length, 0, np.ascontiguousarray(g.T), 4, gram, proj)
    assert float(np.max(np.abs(np.diag(gram) - exact) / exact)) <= 2.5 * max(numpy_error, 1e-7)


@pytest.mark.parametrize("kind", [0, 1])
@pytest.mark.parametrize("rank", [1, 3, 4, 7, 8, 9, 15, 16, 17, 32, 33, 64, 100, 128])
def test_kernels_match_float64_maths(level: str, kind: int, rank: int) -> None:
    rng = np.random.default_rng(rank * 2 + kind)
    kernels = _weights._NATIVE
    for length in (1, 7, 8, 9, 63, 64, 65, 255, 256, 257, 1000):
        for sketch in (1, 3, 4):
            factor = _bits(rng.standard_normal((length, rank)) * 0.3, kind)
            if length % 2:
                factor = _unaligned(factor)
            values = _values(factor, kind)
            g = rng.standard_normal((length, sketch)).astype(np.float32)
            gram = np.full((rank, rank), np.nan, np.float32)
            proj = np.full((sketch, rank), np.nan, np.float32)
            kernels.col_products(factor, length, rank, kind, g, sketch, gram, proj)
            _close(gram, values.T @ values, length)
            _close(proj, g.T.astype(np.float64) @ values, length)

            wide = np.ascontiguousarray(factor.T)
            ht = np.ascontiguousarray(g.T)
            gram = np.full((rank, rank), np.nan, np.float32)
            proj = np.full((rank, sketch), np.nan, np.float32)
            kernels.row_products(wide, rank, length, kind, ht, sketch, gram, proj)
            _close(gram, values.T @ values, length)
            _close(proj, values.T @ g.astype(np.float64), length)


def test_kernels_carry_nan_and_inf_into_the_grams(level: str) -> None:
    kernels = _weights._NATIVE
    for bad in (np.inf, -np.inf, np.nan):
        factor = np.ones((70, 8), np.float16)
        factor[65, 3] = bad
        gram, proj = np.empty((8, 8), np.float32), np.empty((4, 8), np.float32)
        kernels.col_products(factor, 70, 8, 0, np.ones((70, 4), np.float32), 4, gram, proj)
        assert not np.isfinite(gram).all()
        wide = np.ascontiguousarray(factor.T)
        gram, proj = np.empty((8, 8), np.float32), np.empty((8, 4), np.float32)
        kernels.row_products(wide, 8, 70, 0, np.ones((4, 70), np.float32), 4, gram, proj)
        assert not np.isfinite(gram).all()


@native
def test_kernels_refuse_arguments_that_do_not_fit_their_buffers() -> None:
    kernels = _weights._NATIVE
    factor = np.zeros((10, 8), np.float16)
    g = np.zeros((10, 4), np.float32)
    gram, proj = np.zeros((8, 8), np.float32), np.zeros((4, 8), np.float32)
    kernels.col_products(factor, 10, 8, 0, g, 4, gram, proj)  # fits
    for args, error in [
        ((factor, 11, 8, 0, g, 4, gram, proj), "smaller"),  # more rows than the factor holds
        ((factor, 10, 8, 0, g[:9], 4, gram, proj), "smaller"),
        ((factor, 10, 8, 0, g, 4, gram[:7], proj), "smaller"),
        ((factor, 10, 8, 0, g, 4, gram, proj[:3]), "smaller"),
        ((factor, 10, 0, 0, g, 4, gram, proj), "out of range"),
        ((np.zeros((10, 129), np.float16), 10, 129, 0, g, 4, gram, proj), "out of range"),
        ((factor, 10, 8, 2, g, 4, gram, proj), "out of range"),
        ((factor, 10, 8, 0, g, 5, gram, proj), "out of range"),
        ((factor, -1, 8, 0, g, 4, gram, proj), "out of range"),
    ]:
        with pytest.raises(ValueError, match=error):
            kernels.col_products(*args)
    with pytest.raises(TypeError):  # outputs must be writable
        kernels.row_products(factor, 8, 10, 0, g.T.copy(), 4, bytes(256), bytes(128))
    with pytest.raises((TypeError, BufferError, ValueError)):  # a strided view is not handed over
        kernels.col_products(np.zeros((10, 16), np.float16)[:, ::2], 10, 8, 0, g, 4, gram, proj)
    shifted = np.frombuffer(b"\0\0" + g.tobytes(), np.float32, offset=2)  # float32 at an odd address
    with pytest.raises(ValueError, match="aligned"):
        kernels.col_products(factor, 10, 8, 0, shifted, 4, gram, proj)


_NAME = "lora_unet_down_blocks_{}_attentions_0_transformer_blocks_{}_attn1_to_{}"


def _mixed_file(path: Path) -> Path:
    """Modules the native kernels take (float16/bfloat16, conv, odd ranks, DoRA) and ones they leave to numpy
    (float32, mixed dtypes, rank ≥ min(out, in), rank above 128, a LoCon mid)."""
    rng = np.random.default_rng(5)
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    specs = [
        ("F16", "F16", 8, (320, 320), None),
        ("BF16", "BF16", 16, (640, 768), None),
        ("F16", "F16", 3, (77, 1280), None),
        ("F16", "F16", 33, (1280, 640), None),
        ("F16", "F16", 4, (320, 320), (3, 3)),  # conv down [rank, in, 3, 3], up [out, rank, 1, 1]
        ("F16", "F16", 12, (96, 40), "dora"),
        ("F32", "F32", 8, (320, 320), None),
        ("F16", "BF16", 8, (320, 320), None),
        ("F16", "F16", 64, (64, 700), None),  # rank = out: the dense path
        ("F16", "F16", 160, (1280, 1280), None),  # above the kernels' rank
        ("F16", "F16", 4, (320, 320), "mid"),
    ]
    for number, (up_dtype, down_dtype, rank, (out, inp), extra) in enumerate(specs):
        name = _NAME.format(number % 3, number, "q")
        weak = np.geomspace(1, 1e-3, rank)
        if extra == (3, 3):
            down = rng.standard_normal((rank, inp, 3, 3)) / 9
            up = (rng.standard_normal((out, rank)) * weak).reshape(out, rank, 1, 1)
        elif extra == "mid":
            down = rng.standard_normal((rank, inp, 1, 1)) / 9
            up = rng.standard_normal((out, rank, 1, 1))
            tensors[f"{name}.lora_mid.weight"] = ("F16", rng.standard_normal((rank, rank, 3, 3)))
        else:
            down = rng.standard_normal((rank, inp)) / 9
            up = rng.standard_normal((out, rank)) * weak
        tensors[f"{name}.alpha"] = ("F16", np.array(rank / 2))
        tensors[f"{name}.lora_down.weight"] = (down_dtype, down)
        tensors[f"{name}.lora_up.weight"] = (up_dtype, up)
        if extra == "dora":
            tensors[f"{name}.dora_scale"] = ("F16", np.ones((1, inp)))
    return write_stored(path, tensors)


class _Counting:
    """The native kernels, counting their calls."""

    def __init__(self, kernels: object) -> None:
        self.kernels, self.calls = kernels, 0

    def col_products(self, *args: object) -> None:
        self.calls += 1
        self.kernels.col_products(*args)  # type: ignore[attr-defined]

    def row_products(self, *args: object) -> None:
        self.kernels.row_products(*args)  # type: ignore[attr-defined]


def test_analysis_gives_the_numbers_of_the_numpy_path(
    level: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _mixed_file(tmp_path / "mixed.safetensors")
    counting = _Counting(_weights._NATIVE)
    monkeypatch.setattr(_weights, "_NATIVE", counting)
    fast = analyze_weights(path)
    assert fast.ok, fast.error
    assert counting.calls == 6  # the six modules the kernels take; the other five went through numpy
    monkeypatch.setattr(_weights, "_NATIVE", None)
    plain = analyze_weights(path)
    assert plain.ok, plain.error
    assert [row["key"] for row in fast.modules] == [row["key"] for row in plain.modules]
    for a, b in zip(fast.modules, plain.modules):
        assert a["norm"] == pytest.approx(b["norm"], rel=1e-5), a["key"]
        assert (a["rank90"], a["rank99"], a["rank"]) == (b["rank90"], b["rank99"], b["rank"]), a["key"]
    assert fast.total_norm == pytest.approx(plain.total_norm, rel=1e-6)
    assert fast.signature is not None and plain.signature is not None
    np.testing.assert_allclose(fast.signature, plain.signature, atol=2e-6)
    assert fast.warnings == plain.warnings


@native
@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_nan_or_inf_in_a_stored_factor_is_named_as_on_the_numpy_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    rng = np.random.default_rng(3)
    name = _NAME.format(0, 0, "q")
    down = rng.standard_normal((8, 320))
    down[5, 300] = np.inf
    path = write_stored(
        tmp_path / "bad.safetensors",
        {
            f"{name}.alpha": ("F16", np.array(4.0)),
            f"{name}.lora_down.weight": (dtype, down),
            f"{name}.lora_up.weight": (dtype, rng.standard_normal((320, 8))),
        },
    )
    fast = analyze_weights(path)
    monkeypatch.setattr(_weights, "_NATIVE", None)
    plain = analyze_weights(path)
    assert fast.error is not None and fast.error == plain.error
    assert "lora_down.weight holds NaN or Inf" in fast.error
    assert fast.signature is None


@native
def test_a_file_cut_short_is_refused_before_the_kernels_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernels are handed views of the mapping: a file whose data area is shorter than its header says must
    be refused before any tensor is read (a view past the end would be a crash, not an error)."""
    rng = np.random.default_rng(4)
    name = _NAME.format(0, 0, "q")
    path = write_safetensors(
        tmp_path / "whole.safetensors",
        {
            f"{name}.alpha": np.array(4.0, np.float16),
            f"{name}.lora_down.weight": rng.standard_normal((8, 320)).astype(np.float16),
            f"{name}.lora_up.weight": rng.standard_normal((320, 8)).astype(np.float16),
        },
    )
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    counting = _Counting(_weights._NATIVE)
    monkeypatch.setattr(_weights, "_NATIVE", counting)
    result = analyze_weights(cut)
    assert not result.ok and result.signature is None
    assert "data area" in (result.error or "") and counting.calls == 0
    assert analyze_weights(path).ok and counting.calls == 1

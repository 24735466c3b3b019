/* Gram matrices and sketch products of float16/bfloat16 LoRA factors, converted in registers.
 *
 * numpy converts float16 with a scalar loop and its OpenBLAS is slow on k x k products of tall, thin factors;
 * together that made the weight analysis cost more than reading the file. Here each factor is read once:
 * a few rows (or columns) at a time are converted into a buffer that stays in L1, and the Gram matrix and the
 * sketch projection are accumulated from it with FMAs (AVX-512, or AVX2 on CPUs without it; the kernels are
 * written once, in _halfgram_kernels.h). Built as an optional extension: without it (no compiler at install
 * time) or on a CPU without F16C/FMA the analysis uses numpy (``supported()`` is None).
 *
 *   col_products(a, m, r, kind, g, p, gram, proj):  a is m x r;  gram = a^T a (r x r),  proj = g^T a (p x r)
 *   row_products(a, r, n, kind, ht, q, gram, proj): a is r x n;  gram = a a^T (r x r),  proj = a ht^T (r x q)
 *
 * a: float16 (kind 0) or bfloat16 (kind 1) bits, C order; g (m x p) and ht (q x n): float32, C order, p, q <= 4;
 * gram and proj: writable float32 buffers of the output sizes. r <= 128. Accumulation is in float32, each chunk
 * summed from zero and then added (as accurate as numpy's blocked float32 products).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANK 128
#define MAX_SKETCH 4
#define COL_CHUNK 64  /* rows of a tall factor converted at a time: 64 x 128 floats = 32 KiB */
#define ROW_CHUNK 256 /* columns of a wide factor converted at a time */

typedef int (*col_fn)(const uint16_t *, int64_t, int, int, const float *, int, float *, float *);
typedef int (*row_fn)(const uint16_t *, int, int64_t, int, const float *, int, float *, float *);

#if defined(__x86_64__) && defined(__GNUC__) && !defined(HALFGRAM_NO_KERNELS)
#include <immintrin.h>
#define INLINE __attribute__((always_inline)) inline

/* 64-byte aligned memory; C11 wants the size a multiple of the alignment (macOS returns NULL otherwise). */
static void *alloc64(size_t size) { return aligned_alloc(64, (size + 63) & ~(size_t)63); }

/* --- AVX-512 (with F16C): 16 lanes, masked loads for the tails --- */
#define SUFFIX avx512
#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define VEC __m512
#define LANES 16
#define COL_X 8
#define COL_JN 3
#define ROW_B 4
#define V_LOAD(p) _mm512_load_ps(p)
#define V_STORE(p, v) _mm512_store_ps(p, v)
#define V_ZERO() _mm512_setzero_ps()
#define V_SET1(x) _mm512_set1_ps(x)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define V_REDUCE(v) _mm512_reduce_add_ps(v)
#define V_HALF(src, kind, count) half16(src, kind, count)
#define V_PART(src, count) _mm512_maskz_loadu_ps(lanes16(count), src)

static __mmask16 lanes16(int64_t count) {
    return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1u);
}

TARGET static INLINE __m512 half16(const uint16_t *src, int kind, int64_t count) {
    __m256i raw = _mm256_maskz_loadu_epi16(lanes16(count), src);
    if (kind == 0)
        return _mm512_cvtph_ps(raw);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

#include "_halfgram_kernels.h"
#undef SUFFIX
#undef TARGET
#undef VEC
#undef LANES
#undef COL_X
#undef COL_JN
#undef ROW_B
#undef V_LOAD
#undef V_STORE
#undef V_ZERO
#undef V_SET1
#undef V_ADD
#undef V_FMA
#undef V_REDUCE
#undef V_HALF
#undef V_PART

/* --- AVX2 (with F16C and FMA): 8 lanes, tails copied through a zeroed scratch vector --- */
#define SUFFIX avx2
#define TARGET __attribute__((target("avx2,f16c,fma")))
#define VEC __m256
#define LANES 8
#define COL_X 4
#define COL_JN 2
#define ROW_B 3
#define V_LOAD(p) _mm256_load_ps(p)
#define V_STORE(p, v) _mm256_store_ps(p, v)
#define V_ZERO() _mm256_setzero_ps()
#define V_SET1(x) _mm256_set1_ps(x)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define V_REDUCE(v) reduce8(v)
#define V_HALF(src, kind, count) half8(src, kind, count)
#define V_PART(src, count) part8(src, count)

TARGET static INLINE float reduce8(__m256 v) {
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
}

TARGET static INLINE __m256 half8(const uint16_t *src, int kind, int64_t count) {
    __m128i raw;
    if (count >= 8) {
        raw = _mm_loadu_si128((const __m128i *)src);
    } else {
        uint16_t part[8] = {0};
        memcpy(part, src, sizeof(uint16_t) * (size_t)count);
        raw = _mm_loadu_si128((const __m128i *)part);
    }
    if (kind == 0)
        return _mm256_cvtph_ps(raw);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

TARGET static INLINE __m256 part8(const float *src, int64_t count) {
    if (count >= 8)
        return _mm256_loadu_ps(src);
    float part[8] = {0};
    memcpy(part, src, sizeof(float) * (size_t)count);
    return _mm256_loadu_ps(part);
}

#include "_halfgram_kernels.h"

/* Instruction sets, best first; a CPU runs the first it supports (use() picks another, for tests). */
static const struct {
    const char *name;
    col_fn col;
    row_fn row;
} LEVELS[] = {{"avx512", col_kernel_avx512, row_kernel_avx512}, {"avx2", col_kernel_avx2, row_kernel_avx2}};
#define LEVEL_COUNT 2

static int level_usable(int level) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("f16c") || !__builtin_cpu_supports("fma"))
        return 0;
    if (level == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
    return __builtin_cpu_supports("avx2");
}
#else
#define LEVEL_COUNT 0
static const struct {
    const char *name;
    col_fn col;
    row_fn row;
} LEVELS[1] = {{"none", NULL, NULL}};
static int level_usable(int level) { return level < 0; }
#endif

static int active = -1; /* index into LEVELS, -1: none usable */

/* Arguments shared by both entry points, checked against the buffers' sizes and alignment. */
static int check(Py_buffer *a, Py_ssize_t length, int r, int kind, Py_buffer *side, int k, Py_buffer *gram,
                 Py_buffer *proj) {
    if (active < 0) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has neither AVX-512 nor AVX2 with F16C: use the numpy path");
        return -1;
    }
    if (r < 1 || r > MAX_RANK || k < 1 || k > MAX_SKETCH || (kind != 0 && kind != 1) || length < 0 ||
        length > PY_SSIZE_T_MAX / MAX_RANK / 4) {
        PyErr_Format(PyExc_ValueError,
                     "rank %d (1..%d), sketch size %d (1..%d), kind %d (0 or 1) or length %zd out of range", r,
                     MAX_RANK, k, MAX_SKETCH, kind, length);
        return -1;
    }
    if (a->len < length * r * 2 || side->len < length * k * 4 || gram->len < (Py_ssize_t)r * r * 4 ||
        proj->len < (Py_ssize_t)r * k * 4) {
        PyErr_SetString(PyExc_ValueError, "a buffer is smaller than the shapes given");
        return -1;
    }
    if ((uintptr_t)side->buf % 4 || (uintptr_t)gram->buf % 4 || (uintptr_t)proj->buf % 4) {
        PyErr_SetString(PyExc_ValueError, "float32 buffers must be 4-byte aligned");
        return -1;
    }
    return 0;
}

static PyObject *run(PyObject *args, int columns) {
    Py_buffer a, side, gram, proj;
    Py_ssize_t length;
    int r, kind, k, status = -1;
    if (columns) {
        if (!PyArg_ParseTuple(args, "y*niiy*iw*w*", &a, &length, &r, &kind, &side, &k, &gram, &proj))
            return NULL;
    } else if (!PyArg_ParseTuple(args, "y*iniy*iw*w*", &a, &r, &length, &kind, &side, &k, &gram, &proj))
        return NULL;
    if (check(&a, length, r, kind, &side, k, &gram, &proj) == 0) {
        col_fn col = LEVELS[active].col;
        row_fn row = LEVELS[active].row;
        Py_BEGIN_ALLOW_THREADS;
        status = columns ? col(a.buf, length, r, kind, side.buf, k, gram.buf, proj.buf)
                         : row(a.buf, r, length, kind, side.buf, k, gram.buf, proj.buf);
        Py_END_ALLOW_THREADS;
        if (status != 0)
            PyErr_NoMemory();
    }
    PyBuffer_Release(&a), PyBuffer_Release(&side), PyBuffer_Release(&gram), PyBuffer_Release(&proj);
    return status == 0 ? Py_NewRef(Py_None) : NULL;
}

static PyObject *col_products(PyObject *Py_UNUSED(self), PyObject *args) { return run(args, 1); }
static PyObject *row_products(PyObject *Py_UNUSED(self), PyObject *args) { return run(args, 0); }
static PyObject *supported(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    if (active < 0)
        Py_RETURN_NONE;
    return PyUnicode_FromString(LEVELS[active].name);
}

static PyObject *levels(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    PyObject *names = PyList_New(0);
    for (int level = 0; names && level < LEVEL_COUNT; level++) {
        if (!level_usable(level))
            continue;
        PyObject *name = PyUnicode_FromString(LEVELS[level].name);
        if (!name || PyList_Append(names, name) < 0)
            Py_CLEAR(names);
        Py_XDECREF(name);
    }
    return names;
}

static PyObject *use(PyObject *Py_UNUSED(self), PyObject *arg) {
    const char *wanted = PyUnicode_AsUTF8(arg);
    if (!wanted)
        return NULL;
    for (int level = 0; level < LEVEL_COUNT; level++)
        if (strcmp(wanted, LEVELS[level].name) == 0 && level_usable(level)) {
            active = level;
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "instruction set %R is not one this CPU runs (see levels())", arg);
    return NULL;
}

static PyMethodDef methods[] = {
    {"col_products", col_products, METH_VARARGS, "a (m x r): gram = a^T a, proj = g^T a"},
    {"row_products", row_products, METH_VARARGS, "a (r x n): gram = a a^T, proj = a ht^T"},
    {"supported", supported, METH_NOARGS, "the instruction set in use (avx512, avx2), None: numpy must be used"},
    {"levels", levels, METH_NOARGS, "the instruction sets this CPU runs, best first"},
    {"use", use, METH_O, "run the kernels with this instruction set (tests compare them)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_halfgram", NULL, 0, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__halfgram(void) {
    for (int level = LEVEL_COUNT - 1; level >= 0; level--)
        if (level_usable(level))
            active = level;
    PyObject *created = PyModule_Create(&module);
    if (created && PyModule_AddIntConstant(created, "MAX_RANK", MAX_RANK) < 0)
        Py_CLEAR(created);
#ifdef Py_GIL_DISABLED
    if (created)
        PyUnstable_Module_SetGIL(created, Py_MOD_GIL_NOT_USED); /* kernels touch no Python state */
#endif
    return created;
}

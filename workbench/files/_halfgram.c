/* Gram matrices and sketch products of float16/bfloat16 LoRA factors, converted in registers.
 *
 * numpy converts float16 with a scalar loop and its OpenBLAS is slow on k x k products of tall, thin factors;
 * together that made the weight analysis cost more than reading the file. Here each factor is read once:
 * a few rows (or columns) at a time are converted into a buffer that stays in L1, and the Gram matrix and the
 * sketch projection are accumulated from it with AVX-512 FMAs. Built as an optional extension: without it (no
 * compiler at install time) or on a CPU without AVX-512 the analysis uses numpy (``supported()`` is False).
 *
 *   col_products(a, m, r, kind, g, p, gram, proj):  a is m x r;  gram = a^T a (r x r),  proj = g^T a (p x r)
 *   row_products(a, r, n, kind, ht, q, gram, proj): a is r x n;  gram = a a^T (r x r),  proj = a ht^T (r x q)
 *
 * a: float16 (kind 0) or bfloat16 (kind 1) bits, C order; g (m x p) and ht (q x n): float32, C order, p, q <= 4;
 * gram and proj: writable float32 buffers of the output sizes. r <= 128. Accumulation is in float32, as
 * numpy's float32 products are.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANK 128
#define MAX_SKETCH 4
#define COL_BLOCK 8 /* rows of the Gram matrix accumulated together (by broadcasting) */
#define COL_CHUNK 64  /* rows of a tall factor converted at a time: 64 x 128 floats = 32 KiB */
#define ROW_CHUNK 256 /* columns of a wide factor converted at a time */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_KERNELS 1
#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define INLINE __attribute__((always_inline)) inline

static int cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
}

/* 16 values (masked lanes read nothing and come back 0) as float32. */
TARGET static INLINE __m512 load16(const uint16_t *src, int kind, __mmask16 mask) {
    __m256i raw = _mm256_maskz_loadu_epi16(mask, src);
    if (kind == 0)
        return _mm512_cvtph_ps(raw);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

static __mmask16 lanes(int64_t count) { return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1u); }

/* acc[x][y] += sum over k of bcast[k * bstride + x] * buf[k * width + 16 * (jv + y)], x < X, y < JN. */
TARGET static INLINE void col_tile(float *acc, int width, const float *bcast, int bstride, int bcount,
                                   const float *buf, int rows, int jv, const int X, const int JN) {
    __m512 c[COL_BLOCK][3];
    for (int x = 0; x < X; x++)
        for (int y = 0; y < JN; y++)
            c[x][y] = _mm512_load_ps(acc + x * width + 16 * (jv + y));
    for (int k = 0; k < rows; k++) {
        const float *row = buf + (int64_t)k * width;
        __m512 b[3];
        for (int y = 0; y < JN; y++)
            b[y] = _mm512_load_ps(row + 16 * (jv + y));
        for (int x = 0; x < X; x++) {
            __m512 s = x < bcount ? _mm512_set1_ps(bcast[(int64_t)k * bstride + x]) : _mm512_setzero_ps();
            for (int y = 0; y < JN; y++)
                c[x][y] = _mm512_fmadd_ps(s, b[y], c[x][y]);
        }
    }
    for (int x = 0; x < X; x++)
        for (int y = 0; y < JN; y++)
            _mm512_store_ps(acc + x * width + 16 * (jv + y), c[x][y]);
}

/* Tiles of X accumulator rows (X = COL_BLOCK for the Gram matrix, MAX_SKETCH for the projection). */
TARGET static INLINE void col_tiles(float *acc, int width, int nv, int jv0, const float *bcast, int bstride,
                                    int bcount, const float *buf, int rows, const int X) {
    for (int jv = jv0; jv < nv; jv += 3) {
        switch (nv - jv) {
        case 1: col_tile(acc, width, bcast, bstride, bcount, buf, rows, jv, X, 1); break;
        case 2: col_tile(acc, width, bcast, bstride, bcount, buf, rows, jv, X, 2); break;
        default: col_tile(acc, width, bcast, bstride, bcount, buf, rows, jv, X, 3); break;
        }
    }
}

TARGET static int col_kernel(const uint16_t *a, int64_t m, int r, int kind, const float *g, int p, float *gram,
                             float *proj) {
    int nv = (r + 15) / 16, width = 16 * nv;
    float *buf = aligned_alloc(64, sizeof(float) * COL_CHUNK * width);
    float *acc = aligned_alloc(64, sizeof(float) * (width + COL_BLOCK) * width);
    float *pacc = aligned_alloc(64, sizeof(float) * MAX_SKETCH * width);
    if (!buf || !acc || !pacc) {
        free(buf), free(acc), free(pacc);
        return -1;
    }
    memset(acc, 0, sizeof(float) * (width + COL_BLOCK) * width);
    memset(pacc, 0, sizeof(float) * MAX_SKETCH * width);
    for (int64_t k0 = 0; k0 < m; k0 += COL_CHUNK) {
        int rows = (int)(m - k0 < COL_CHUNK ? m - k0 : COL_CHUNK);
        for (int k = 0; k < rows; k++) {
            const uint16_t *src = a + (k0 + k) * r;
            for (int v = 0; v < nv; v++)
                _mm512_store_ps(buf + (int64_t)k * width + 16 * v, load16(src + 16 * v, kind, lanes(r - 16 * v)));
        }
        /* Upper triangle by blocks of 4 rows: row block i needs column vectors from the one holding i. */
        for (int i = 0; i < r; i += COL_BLOCK)
            col_tiles(acc + (int64_t)i * width, width, nv, i / 16, buf + i, width, COL_BLOCK, buf, rows, COL_BLOCK);
        col_tiles(pacc, width, nv, 0, g + k0 * p, p, p, buf, rows, MAX_SKETCH);
    }
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++)
            gram[i * r + j] = i <= j ? acc[(int64_t)i * width + j] : acc[(int64_t)j * width + i];
    for (int x = 0; x < p; x++)
        memcpy(proj + x * r, pacc + x * width, sizeof(float) * r);
    free(buf), free(acc), free(pacc);
    return 0;
}

/* vacc[16 * (4x + y) ...] += lanes of the products of rows ib+x of abuf and rows y of bbuf over wv vectors. */
TARGET static INLINE void row_tile(float *vacc, const float *abuf, const float *bbuf, int wv) {
    __m512 c[4][4];
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 4; y++)
            c[x][y] = _mm512_load_ps(vacc + 16 * (4 * x + y));
    for (int v = 0; v < wv; v++) {
        __m512 a0 = _mm512_load_ps(abuf + 16 * v), a1 = _mm512_load_ps(abuf + ROW_CHUNK + 16 * v);
        __m512 a2 = _mm512_load_ps(abuf + 2 * ROW_CHUNK + 16 * v), a3 = _mm512_load_ps(abuf + 3 * ROW_CHUNK + 16 * v);
        for (int y = 0; y < 4; y++) {
            __m512 b = _mm512_load_ps(bbuf + y * ROW_CHUNK + 16 * v);
            c[0][y] = _mm512_fmadd_ps(a0, b, c[0][y]);
            c[1][y] = _mm512_fmadd_ps(a1, b, c[1][y]);
            c[2][y] = _mm512_fmadd_ps(a2, b, c[2][y]);
            c[3][y] = _mm512_fmadd_ps(a3, b, c[3][y]);
        }
    }
    for (int x = 0; x < 4; x++)
        for (int y = 0; y < 4; y++)
            _mm512_store_ps(vacc + 16 * (4 * x + y), c[x][y]);
}

TARGET static int row_kernel(const uint16_t *a, int r, int64_t n, int kind, const float *ht, int q, float *gram,
                             float *proj) {
    int blocks = (r + 3) / 4, rows = 4 * blocks, tiles = blocks * (blocks + 1) / 2;
    float *buf = aligned_alloc(64, sizeof(float) * rows * ROW_CHUNK);
    float *hbuf = aligned_alloc(64, sizeof(float) * 4 * ROW_CHUNK);
    float *vacc = aligned_alloc(64, sizeof(float) * 256 * (tiles + blocks)); /* 16 pairs x 16 lanes a tile */
    if (!buf || !hbuf || !vacc) {
        free(buf), free(hbuf), free(vacc);
        return -1;
    }
    memset(buf, 0, sizeof(float) * rows * ROW_CHUNK); /* rows past r stay 0 */
    memset(hbuf, 0, sizeof(float) * 4 * ROW_CHUNK);
    memset(vacc, 0, sizeof(float) * 256 * (tiles + blocks));
    for (int64_t c0 = 0; c0 < n; c0 += ROW_CHUNK) {
        int64_t w = n - c0 < ROW_CHUNK ? n - c0 : ROW_CHUNK;
        int wv = (int)((w + 15) / 16);
        for (int i = 0; i < r; i++)
            for (int v = 0; v < wv; v++)
                _mm512_store_ps(buf + i * ROW_CHUNK + 16 * v,
                                load16(a + i * n + c0 + 16 * v, kind, lanes(w - 16 * v)));
        for (int y = 0; y < q; y++)
            for (int v = 0; v < wv; v++)
                _mm512_store_ps(hbuf + y * ROW_CHUNK + 16 * v,
                                _mm512_maskz_loadu_ps(lanes(w - 16 * v), ht + y * n + c0 + 16 * v));
        float *tile = vacc;
        for (int ib = 0; ib < blocks; ib++) {
            for (int jb = ib; jb < blocks; jb++, tile += 256)
                row_tile(tile, buf + 4 * ib * ROW_CHUNK, buf + 4 * jb * ROW_CHUNK, wv);
            row_tile(vacc + 256 * (tiles + ib), buf + 4 * ib * ROW_CHUNK, hbuf, wv);
        }
    }
    const float *tile = vacc;
    for (int ib = 0; ib < blocks; ib++) {
        for (int jb = ib; jb < blocks; jb++, tile += 256)
            for (int x = 0; x < 4; x++)
                for (int y = 0; y < 4; y++) {
                    int i = 4 * ib + x, j = 4 * jb + y;
                    if (i < r && j < r) {
                        float sum = _mm512_reduce_add_ps(_mm512_load_ps(tile + 16 * (4 * x + y)));
                        if (i <= j) {
                            gram[i * r + j] = sum;
                            gram[j * r + i] = sum;
                        }
                    }
                }
        for (int x = 0; x < 4 && 4 * ib + x < r; x++)
            for (int y = 0; y < q; y++)
                proj[(4 * ib + x) * q + y] =
                    _mm512_reduce_add_ps(_mm512_load_ps(vacc + 256 * (tiles + ib) + 16 * (4 * x + y)));
    }
    free(buf), free(hbuf), free(vacc);
    return 0;
}
#else
#define HAVE_KERNELS 0
static int cpu_supported(void) { return 0; }
#endif

/* Arguments shared by both entry points, checked against the buffers' sizes. */
static int check(Py_buffer *a, Py_ssize_t values, int r, int kind, Py_buffer *side, Py_ssize_t side_values, int k,
                 Py_buffer *gram, Py_buffer *proj, Py_ssize_t proj_values) {
    if (!HAVE_KERNELS || !cpu_supported()) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has no AVX-512/F16C: use the numpy path");
        return -1;
    }
    if (r < 1 || r > MAX_RANK || k < 1 || k > MAX_SKETCH || (kind != 0 && kind != 1) || values < 0) {
        PyErr_Format(PyExc_ValueError, "rank %d (1..%d), sketch size %d (1..%d), kind %d (0 or 1) out of range", r,
                     MAX_RANK, k, MAX_SKETCH, kind);
        return -1;
    }
    if (a->len < values * 2 || side->len < side_values * 4 || gram->len < (Py_ssize_t)r * r * 4 ||
        proj->len < proj_values * 4) {
        PyErr_SetString(PyExc_ValueError, "a buffer is smaller than the shapes given");
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
    if (length >= 0 && length <= PY_SSIZE_T_MAX / MAX_RANK / 4 &&
        check(&a, length * r, r, kind, &side, length * k, k, &gram, &proj, (Py_ssize_t)r * k) == 0) {
#if HAVE_KERNELS
        Py_BEGIN_ALLOW_THREADS;
        status = columns ? col_kernel(a.buf, length, r, kind, side.buf, k, gram.buf, proj.buf)
                         : row_kernel(a.buf, r, length, kind, side.buf, k, gram.buf, proj.buf);
        Py_END_ALLOW_THREADS;
#endif
        if (status != 0)
            PyErr_NoMemory();
    } else if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "length out of range");
    PyBuffer_Release(&a), PyBuffer_Release(&side), PyBuffer_Release(&gram), PyBuffer_Release(&proj);
    return status == 0 ? Py_NewRef(Py_None) : NULL;
}

static PyObject *col_products(PyObject *Py_UNUSED(self), PyObject *args) { return run(args, 1); }
static PyObject *row_products(PyObject *Py_UNUSED(self), PyObject *args) { return run(args, 0); }
static PyObject *supported(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(unused)) {
    return PyBool_FromLong(HAVE_KERNELS && cpu_supported());
}

static PyMethodDef methods[] = {
    {"col_products", col_products, METH_VARARGS, "a (m x r): gram = a^T a, proj = g^T a"},
    {"row_products", row_products, METH_VARARGS, "a (r x n): gram = a a^T, proj = a ht^T"},
    {"supported", supported, METH_NOARGS, "whether this CPU runs the kernels (AVX-512 + F16C)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_halfgram", NULL, 0, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__halfgram(void) { return PyModule_Create(&module); }

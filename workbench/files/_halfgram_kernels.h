/* The kernels of _halfgram.c, written once for a vector width. Included once per instruction set, with:
 *
 *   SUFFIX                    name suffix of this set's functions (avx512, avx2)
 *   TARGET                    the function attribute enabling the set
 *   VEC, LANES                float vector type and its lane count
 *   V_LOAD/V_STORE(p[, v])    aligned float loads and stores
 *   V_ZERO(), V_SET1(x), V_ADD(a, b), V_FMA(a, b, c) = a * b + c, V_REDUCE(v) = sum of lanes
 *   V_HALF(src, kind, count)  LANES float16/bfloat16 values as floats, lanes past count read nothing and are 0
 *   V_PART(src, count)        LANES floats, lanes past count read nothing and are 0
 *   COL_X, COL_JN             column kernel tile: COL_X Gram rows by up to COL_JN vectors (COL_X divides LANES)
 *   ROW_B                     row kernel tile: ROW_B x ROW_B row pairs
 *
 * COL_X * COL_JN + COL_JN + 1 and ROW_B * ROW_B + ROW_B + 1 vectors must fit in the set's registers.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

/* acc[x][y] += sum over k of bcast[k * bstride + x] * buf[k * width + LANES * (jv + y)], x < X, y < JN.
 * The chunk's rows are summed from zero, then added: a running float32 sum over every row of a 10,240-row
 * factor loses a digit that numpy's blocked products keep. */
TARGET static INLINE void FN(col_tile)(float *acc, int width, const float *bcast, int bstride, int bcount,
                                       const float *buf, int rows, int jv, const int X, const int JN) {
    VEC c[COL_X][COL_JN];
    for (int x = 0; x < X; x++)
        for (int y = 0; y < JN; y++)
            c[x][y] = V_ZERO();
    for (int k = 0; k < rows; k++) {
        const float *row = buf + (int64_t)k * width;
        VEC b[COL_JN];
        for (int y = 0; y < JN; y++)
            b[y] = V_LOAD(row + LANES * (jv + y));
        for (int x = 0; x < X; x++) {
            VEC s = x < bcount ? V_SET1(bcast[(int64_t)k * bstride + x]) : V_ZERO();
            for (int y = 0; y < JN; y++)
                c[x][y] = V_FMA(s, b[y], c[x][y]);
        }
    }
    for (int x = 0; x < X; x++)
        for (int y = 0; y < JN; y++)
            V_STORE(acc + x * width + LANES * (jv + y), V_ADD(V_LOAD(acc + x * width + LANES * (jv + y)), c[x][y]));
}

/* Tiles of X accumulator rows (COL_X for the Gram matrix, MAX_SKETCH for the projection) over vectors jv0... */
TARGET static INLINE void FN(col_tiles)(float *acc, int width, int nv, int jv0, const float *bcast, int bstride,
                                        int bcount, const float *buf, int rows, const int X) {
    for (int jv = jv0; jv < nv; jv += COL_JN) {
        int left = nv - jv;
        if (left >= COL_JN)
            FN(col_tile)(acc, width, bcast, bstride, bcount, buf, rows, jv, X, COL_JN);
#if COL_JN > 2
        else if (left == 2)
            FN(col_tile)(acc, width, bcast, bstride, bcount, buf, rows, jv, X, 2);
#endif
        else
            FN(col_tile)(acc, width, bcast, bstride, bcount, buf, rows, jv, X, 1);
    }
}

TARGET static int FN(col_kernel)(const uint16_t *a, int64_t m, int r, int kind, const float *g, int p, float *gram,
                                 float *proj) {
    int nv = (r + LANES - 1) / LANES, width = LANES * nv;
    float *buf = alloc64(sizeof(float) * COL_CHUNK * width);
    float *acc = alloc64(sizeof(float) * width * width);
    float *pacc = alloc64(sizeof(float) * MAX_SKETCH * width);
    if (!buf || !acc || !pacc) {
        free(buf), free(acc), free(pacc);
        return -1;
    }
    memset(acc, 0, sizeof(float) * width * width);
    memset(pacc, 0, sizeof(float) * MAX_SKETCH * width);
    for (int64_t k0 = 0; k0 < m; k0 += COL_CHUNK) {
        int rows = (int)(m - k0 < COL_CHUNK ? m - k0 : COL_CHUNK);
        for (int k = 0; k < rows; k++) {
            const uint16_t *src = a + (k0 + k) * r;
            for (int v = 0; v < nv; v++)
                V_STORE(buf + (int64_t)k * width + LANES * v, V_HALF(src + LANES * v, kind, r - LANES * v));
        }
        /* Upper triangle by blocks of COL_X rows: block i needs the column vectors from the one holding i on. */
        for (int i = 0; i < r; i += COL_X)
            FN(col_tiles)(acc + (int64_t)i * width, width, nv, i / LANES, buf + i, width, COL_X, buf, rows, COL_X);
        FN(col_tiles)(pacc, width, nv, 0, g + k0 * p, p, p, buf, rows, MAX_SKETCH);
    }
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++)
            gram[i * r + j] = i <= j ? acc[(int64_t)i * width + j] : acc[(int64_t)j * width + i];
    for (int x = 0; x < p; x++)
        memcpy(proj + x * r, pacc + x * width, sizeof(float) * r);
    free(buf), free(acc), free(pacc);
    return 0;
}

/* vacc[LANES * (YB * x + y) ...] += lane products of rows x of abuf and rows y of bbuf over wv vectors (summed
 * from zero for this chunk, then added, as in col_tile). */
TARGET static INLINE void FN(row_tile)(float *vacc, const float *abuf, const float *bbuf, int wv, const int XB,
                                       const int YB) {
    VEC c[ROW_B][MAX_SKETCH > ROW_B ? MAX_SKETCH : ROW_B];
    for (int x = 0; x < XB; x++)
        for (int y = 0; y < YB; y++)
            c[x][y] = V_ZERO();
    for (int v = 0; v < wv; v++) {
        VEC a[ROW_B];
        for (int x = 0; x < XB; x++)
            a[x] = V_LOAD(abuf + x * ROW_CHUNK + LANES * v);
        for (int y = 0; y < YB; y++) {
            VEC b = V_LOAD(bbuf + y * ROW_CHUNK + LANES * v);
            for (int x = 0; x < XB; x++)
                c[x][y] = V_FMA(a[x], b, c[x][y]);
        }
    }
    for (int x = 0; x < XB; x++)
        for (int y = 0; y < YB; y++)
            V_STORE(vacc + LANES * (YB * x + y), V_ADD(V_LOAD(vacc + LANES * (YB * x + y)), c[x][y]));
}

TARGET static int FN(row_kernel)(const uint16_t *a, int r, int64_t n, int kind, const float *ht, int q, float *gram,
                                 float *proj) {
    const int tile = ROW_B * ROW_B * LANES, sketch_tile = ROW_B * MAX_SKETCH * LANES;
    int blocks = (r + ROW_B - 1) / ROW_B, rows = ROW_B * blocks, tiles = blocks * (blocks + 1) / 2;
    size_t vacc_size = sizeof(float) * ((size_t)tile * tiles + (size_t)sketch_tile * blocks);
    float *buf = alloc64(sizeof(float) * rows * ROW_CHUNK);
    float *hbuf = alloc64(sizeof(float) * MAX_SKETCH * ROW_CHUNK);
    float *vacc = alloc64(vacc_size);
    if (!buf || !hbuf || !vacc) {
        free(buf), free(hbuf), free(vacc);
        return -1;
    }
    memset(buf, 0, sizeof(float) * rows * ROW_CHUNK); /* rows past r stay 0 */
    memset(hbuf, 0, sizeof(float) * MAX_SKETCH * ROW_CHUNK);
    memset(vacc, 0, vacc_size);
    float *sketch = vacc + (size_t)tile * tiles;
    for (int64_t c0 = 0; c0 < n; c0 += ROW_CHUNK) {
        int64_t w = n - c0 < ROW_CHUNK ? n - c0 : ROW_CHUNK;
        int wv = (int)((w + LANES - 1) / LANES);
        for (int i = 0; i < r; i++)
            for (int v = 0; v < wv; v++)
                V_STORE(buf + i * ROW_CHUNK + LANES * v, V_HALF(a + i * n + c0 + LANES * v, kind, w - LANES * v));
        for (int y = 0; y < q; y++)
            for (int v = 0; v < wv; v++)
                V_STORE(hbuf + y * ROW_CHUNK + LANES * v, V_PART(ht + y * n + c0 + LANES * v, w - LANES * v));
        float *next = vacc;
        for (int ib = 0; ib < blocks; ib++) {
            for (int jb = ib; jb < blocks; jb++, next += tile)
                FN(row_tile)(next, buf + ROW_B * ib * ROW_CHUNK, buf + ROW_B * jb * ROW_CHUNK, wv, ROW_B, ROW_B);
            FN(row_tile)(sketch + sketch_tile * ib, buf + ROW_B * ib * ROW_CHUNK, hbuf, wv, ROW_B, MAX_SKETCH);
        }
    }
    const float *done = vacc;
    for (int ib = 0; ib < blocks; ib++) {
        for (int jb = ib; jb < blocks; jb++, done += tile)
            for (int x = 0; x < ROW_B; x++)
                for (int y = 0; y < ROW_B; y++) {
                    int i = ROW_B * ib + x, j = ROW_B * jb + y;
                    if (i < r && j < r && i <= j) {
                        float sum = V_REDUCE(V_LOAD(done + LANES * (ROW_B * x + y)));
                        gram[i * r + j] = sum;
                        gram[j * r + i] = sum;
                    }
                }
        for (int x = 0; x < ROW_B && ROW_B * ib + x < r; x++)
            for (int y = 0; y < q; y++)
                proj[(ROW_B * ib + x) * q + y] =
                    V_REDUCE(V_LOAD(sketch + sketch_tile * ib + LANES * (MAX_SKETCH * x + y)));
    }
    free(buf), free(hbuf), free(vacc);
    return 0;
}

#undef FN

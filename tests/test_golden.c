/*
 * Golden vectors: compatibility with the reference encodings in ../shared/golden/FMT.gguf.
 *
 *   test_golden FMT
 *
 * 1. Decoding the reference's bytes (q, q_imx) gives its decodings (dq, dq_imx) bit for bit.
 * 2. Our searching encoder is at least as accurate as the reference's on the same rows: RMSE
 *    without an importance matrix, importance-weighted squared error with it.
 * 3. The integer dot product of each reference row with each activation vector (quantized to the
 *    format's activation type) agrees with the reference's `dot` to the rounding of float sums.
 * The golden files are read with lowbit's own GGUF reader.
 */
#include "testing.h"
#include "lowbit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct golden {
    lowbit_gguf *file;
    lowbit_type type;
    const lowbit_tensor_info *x, *imatrix, *y, *q, *dq, *q_imx, *dq_imx, *dot;
    int64_t n_rows, n_cols;
} golden;

static const lowbit_tensor_info *tensor(const golden *g, const char *name, int required) {
    const lowbit_tensor_info *t = lowbit_gguf_find_tensor(g->file, name);
    if (required) CHECK(t != NULL, "golden tensor '%s' is missing", name);
    return t;
}

static int open_golden(const char *format, golden *g) {
    char relative[256];
    snprintf(relative, sizeof relative, "golden/%s.gguf", format);
    lowbit_diag diag = {0};
    const lowbit_status st = lowbit_gguf_open(lb_shared_path(relative), &g->file, &diag);
    CHECK(st == LOWBIT_OK, "cannot open %s: %s", relative, diag.message);
    if (st != LOWBIT_OK) return 0;
    CHECK(lowbit_type_from_name(format, &g->type) == LOWBIT_OK, "no type named %s", format);
    int64_t id = -1;
    CHECK(lowbit_gguf_get_i64(g->file, "golden.ggml_type_id", &id) == LOWBIT_OK, "type id key");
    CHECK(id == (int64_t)g->type, "%s: our type id %d, golden %lld", format, (int)g->type,
          (long long)id);
    g->x = tensor(g, "x", 1);
    g->imatrix = tensor(g, "imatrix", 1);
    g->y = tensor(g, "y", 1);
    g->dot = tensor(g, "dot", 1);
    g->q = tensor(g, "q", 0);
    g->dq = tensor(g, "dq", 0);
    g->q_imx = tensor(g, "q_imx", 1);
    g->dq_imx = tensor(g, "dq_imx", 1);
    if (!g->x || !g->imatrix || !g->y || !g->dot || !g->q_imx || !g->dq_imx) return 0;
    g->n_cols = g->x->ne[0];
    g->n_rows = g->x->ne[1];
    CHECK(g->q_imx->type == g->type, "q_imx has type %d", (int)g->q_imx->type);
    return 1;
}

static void check_decoding(const golden *g, const lowbit_tensor_info *q,
                           const lowbit_tensor_info *dq) {
    float *out = malloc((size_t)(g->n_rows * g->n_cols) * sizeof *out);
    lowbit_status st = lowbit_dequantize_rows(g->type, q->data, out, g->n_rows, g->n_cols, NULL);
    CHECK(st == LOWBIT_OK, "dequantize %s: %s", q->name, lowbit_status_name(st));
    int64_t mismatches = 0, first = -1;
    for (int64_t i = 0; i < g->n_rows * g->n_cols; i++) {
        if (memcmp(&out[i], (const float *)dq->data + i, sizeof(float)) != 0) {
            if (first < 0) first = i;
            mismatches++;
        }
    }
    CHECK(mismatches == 0, "decoding %s: %lld of %lld values differ from %s, first at %lld "
          "(ours %.9g, reference %.9g)", q->name, (long long)mismatches,
          (long long)(g->n_rows * g->n_cols), dq->name, (long long)first,
          first >= 0 ? out[first] : 0.0, first >= 0 ? ((const float *)dq->data)[first] : 0.0);
    free(out);
}

/* sum over all elements of w[column] * (x - dq)^2, with w = 1 when weights is NULL */
static double weighted_sse(const golden *g, const float *dq, const float *weights) {
    const float *x = g->x->data;
    double sum = 0.0;
    for (int64_t r = 0; r < g->n_rows; r++) {
        for (int64_t c = 0; c < g->n_cols; c++) {
            const double e = (double)x[r * g->n_cols + c] - dq[r * g->n_cols + c];
            sum += (weights ? weights[c] : 1.0) * e * e;
        }
    }
    return sum;
}

/* Encodes x with our searching encoder and returns the (weighted) SSE of its decoding. */
static double our_error(const golden *g, const float *importance) {
    const size_t bytes = lowbit_row_bytes(g->type, g->n_cols) * (size_t)g->n_rows;
    void *q = malloc(bytes);
    float *dq = malloc((size_t)(g->n_rows * g->n_cols) * sizeof *dq);
    lowbit_diag diag = {0};
    lowbit_status st = lowbit_quantize_rows(g->type, g->x->data, q, g->n_rows, g->n_cols,
                                            importance, NULL, &diag);
    CHECK(st == LOWBIT_OK, "quantize: %s", diag.message);
    double sse = INFINITY;
    if (st == LOWBIT_OK) {
        lowbit_dequantize_rows(g->type, q, dq, g->n_rows, g->n_cols, NULL);
        sse = weighted_sse(g, dq, importance);
    }
    free(q);
    free(dq);
    return sse;
}

static void check_plain_accuracy(const golden *g, const char *format) {
    const double n = (double)(g->n_rows * g->n_cols);
    const double ref_rmse = sqrt(weighted_sse(g, g->dq->data, NULL) / n);
    const double our_rmse = sqrt(our_error(g, NULL) / n);
    double meta = 0.0;
    CHECK(lowbit_gguf_get_f64(g->file, "golden.rmse_plain", &meta) == LOWBIT_OK, "rmse_plain key");
    /* the key is the reference's own figure; recomputing it from dq must agree */
    CHECK(fabs(meta - ref_rmse) <= 1e-5 * ref_rmse, "golden.rmse_plain %.7g vs dq %.7g", meta,
          ref_rmse);
    printf("%-7s rmse        ours %.7g  reference %.7g  (%+.2f%%)\n", format, our_rmse, ref_rmse,
           100.0 * (our_rmse / ref_rmse - 1.0));
    CHECK(our_rmse <= ref_rmse, "%s: our RMSE %.7g is above the reference's %.7g", format,
          our_rmse, ref_rmse);
}

static void check_weighted_accuracy(const golden *g, const char *format) {
    const float *w = g->imatrix->data;
    const double ref = weighted_sse(g, g->dq_imx->data, w);
    const double ours = our_error(g, w);
    printf("%-7s weighted    ours %.7g  reference %.7g  (%+.2f%%)\n", format, ours, ref,
           100.0 * (ours / ref - 1.0));
    CHECK(ours <= ref, "%s: our weighted SSE %.7g is above the reference's %.7g", format, ours,
          ref);
}

static void check_dots(const golden *g, const char *format) {
    const char *dot_of = NULL;
    uint64_t length = 0;
    const lowbit_tensor_info *q = g->q;
    const float *dq = g->dq ? g->dq->data : NULL;
    if (lowbit_gguf_get_string(g->file, "golden.dot_of", &dot_of, &length) == LOWBIT_OK &&
        length == 5 && memcmp(dot_of, "q_imx", 5) == 0) {
        q = g->q_imx;
        dq = g->dq_imx->data;
    }
    const size_t row_bytes = lowbit_row_bytes(g->type, g->n_cols);
    const int64_t n_vectors = g->y->ne[1];
    const float *expected = g->dot->data;
    int bad = 0;
    double worst = 0.0;
    for (int64_t j = 0; j < n_vectors; j++) {
        const float *y = (const float *)g->y->data + j * g->n_cols;
        for (int64_t r = 0; r < g->n_rows; r++) {
            float ours = NAN;
            const lowbit_status st = lowbit_dot_row(
                g->type, g->n_cols, (const uint8_t *)q->data + r * row_bytes, y, &ours);
            /* float sums of per-block products round differently by order: allow a few ulps of
               the magnitude of the terms, not of the (possibly cancelling) result */
            double magnitude = 0.0;
            for (int64_t c = 0; c < g->n_cols; c++) magnitude += fabs(dq[r * g->n_cols + c] * y[c]);
            const double tolerance = 1e-5 * magnitude + 1e-6;
            const double diff = fabs((double)ours - expected[j * g->n_rows + r]);
            if (st != LOWBIT_OK || !(diff <= tolerance)) {
                if (bad++ < 3) {
                    fprintf(stderr, "%s dot row %lld vec %lld: ours %.9g reference %.9g (%s)\n",
                            format, (long long)r, (long long)j, ours,
                            expected[j * g->n_rows + r], lowbit_status_name(st));
                }
            }
            if (diff / (magnitude + 1e-30) > worst) worst = diff / (magnitude + 1e-30);
        }
    }
    printf("%-7s dot         worst difference %.3g of the terms' magnitude\n", format, worst);
    CHECK(bad == 0, "%s: %d dot products differ from the reference's", format, bad);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_golden FORMAT\n");
        return 2;
    }
    const char *format = argv[1];
    golden g = {0};
    if (open_golden(format, &g)) {
        if (g.q && g.dq) check_decoding(&g, g.q, g.dq);
        check_decoding(&g, g.q_imx, g.dq_imx);
        const int encodes = lowbit_type_info(g.type)->quantize != NULL;
        if (encodes && g.q && g.dq) check_plain_accuracy(&g, format);
        if (encodes) check_weighted_accuracy(&g, format);
        check_dots(&g, format);
    }
    lowbit_gguf_close(g.file);
    return lb_test_summary();
}

/*
 * Interleaved in-memory layouts of Q4_0, Q8_0, IQ4_NL, MXFP4 and Q4_K weight matrices, made from
 * the plain GGUF row layout when a model is prepared (never stored in files), with their own
 * kernels.
 *
 * Why: the plain kernels compute one weight row against one activation row at a time and end
 * every dot product with a horizontal sum; with R rows' blocks of the same column side by side,
 * one SIMD register holds 4 bytes of each of R rows, every activation byte quadruple is broadcast
 * once and feeds R rows, the R row sums land in R lanes (no horizontal sums), the R scales convert
 * with one instruction, and the weights' offset (Q4_0's 8) comes off once per activation block
 * through the activation's level sum instead of once per row (likewise the offset of IQ4_NL's
 * levels, or of MXFP4's, where a kernel takes them unsigned). With several tokens a kernel keeps
 * a few tokens' sums in registers, so each weight block is decoded once per tile of tokens.
 *
 * Layout Q4_0xR / Q8_0xR / IQ4_NLxR / MXFP4xR (R = 4 or 8), a group of R consecutive rows: for
 * each block column b in order, one "block group" of
 *     d[R]            the R rows' scales, row r at index r: fp16 (2 bytes each), MXFP4's E8M0
 *                     bytes e (1 byte each)
 *     qs[chunks][R][4] chunk c of row r: that row's qs[4c .. 4c + 3] (Q4_0: 4 chunks of the 16
 *                     packed bytes, byte j still holding elements j and j + 16 in its low and
 *                     high nibble; IQ4_NL and MXFP4 likewise, their nibbles being codes into
 *                     lb_kvalues_iq4nl or the doubled E2M1 values; Q8_0: 8 chunks of the 32
 *                     levels)
 * i.e. 18 R bytes (Q4_0, IQ4_NL), 34 R bytes (Q8_0) or 17 R bytes (MXFP4) per block column, the
 * bytes of the R plain blocks permuted. Rows past the last whole group (rows % R) stay in the
 * plain layout (the "tail") and use the plain dot product.
 *
 * Layout Q4_KxR, per super-block column (256 columns), the same permutation of 144 R bytes:
 *     d_dmin[R][4]     row r's fp16 d, then its fp16 dmin
 *     chunks[35][R][4] chunk c of row r: bytes 4c .. 4c + 3 of that row's 140 bytes after d and
 *                      dmin: chunks 0-2 its 12 packed 6-bit scales and mins (GGUF's packing,
 *                      kept so that the kernels unpack 8 rows' at once and the repacking stays a
 *                      permutation), chunks 3-34 its 128 qs bytes (byte 32 p + l holding
 *                      elements 64 p + l and 64 p + 32 + l in its low and high nibble)
 * Its activations are Q8_K rows (with their bsums), as the plain Q4_K dot product's.
 *
 * Results: each interleaved output is the type table's scalar reference dot product bit for bit
 * (the integer block sums are exact; the float sum runs over the blocks in order as
 * sum = sum + (float)sumi_b * (d_w * d_a), each operation rounded, no fused multiply-add; MXFP4's
 * d_w is its E8M0 scale halved, 2^(e - 128), subnormal for e = 0 and 1, as fp4.c decodes it), at
 * every instruction-set level. Q4_K's float sum is its reference's: per super-block, the exact
 * integer sums sum_scaled = sum_j sc_j * dot_j and sum_mins = sum_j m_j * (bsum pairs of
 * sub-block j), then sum = sum + ((d_w * d_a) * (float)sum_scaled - (dmin_w * d_a) *
 * (float)sum_mins), unfused, super-blocks in order. Tail rows are the level's plain kernel's. So
 * results never depend on the thread count or the split.
 */
#ifndef LOWBIT_INTERLEAVED_H
#define LOWBIT_INTERLEAVED_H

#include "kernels.h"

/* A weight matrix in an interleaved layout; owns its memory. */
typedef struct lb_interleaved_matrix {
    lowbit_type type;       /* LOWBIT_TYPE_Q4_0, _Q8_0, _IQ4_NL, _MXFP4 or _Q4_K */
    int rows_per_group;     /* R: 4 or 8 */
    lb_interleaved_layout layout;
    int64_t rows, cols;
    int64_t n_groups;       /* rows / R */
    size_t group_bytes;     /* bytes of one group: cols / 32 block groups (Q4_K: cols / 256) */
    uint8_t *groups;        /* n_groups groups */
    uint8_t *tail;          /* rows % R plain rows (NULL when none) */
    size_t tail_row_bytes;
} lb_interleaved_matrix;

/* The layout of (type, R), or -1 when there is none. */
int lb_interleaved_layout_of(lowbit_type type, int rows_per_group);
/* Bytes of one block group of a layout (18 R, 34 R, 17 R or Q4_K's 144 R). */
size_t lb_interleaved_block_group_bytes(lb_interleaved_layout layout);

/* The row count (4 or 8) the active level prefers for `type`, 0 when the plain layout is faster
   or the type has no interleaved layout. */
int lb_interleave_rows_preferred(lowbit_type type);

/* Repacks a plain rows x cols matrix of `type` (Q4_0, Q8_0, IQ4_NL, MXFP4, Q4_K) into groups of
   R rows, threads (pool may be NULL) taking ranges of groups. A pure permutation of the bytes. */
lowbit_status lb_interleave(lowbit_type type, int rows_per_group, const void *weights,
                            int64_t rows, int64_t cols, lowbit_pool *pool,
                            lb_interleaved_matrix *out);
/* Writes the plain layout back (rows * row bytes): the inverse of lb_interleave. */
void lb_deinterleave(const lb_interleaved_matrix *m, void *plain);
void lb_interleaved_free(lb_interleaved_matrix *m);

/* Scratch bytes lb_interleaved_matmul needs for n_tokens rows of cols (quantized activations and
   their block sums; also room for Q4_K's Q8_K activations). */
size_t lb_interleaved_scratch_bytes(int64_t cols, int64_t n_tokens);

/* out[t * rows + r] = dot(weight row r, x row t), as lowbit_matmul computes it, over the
   interleaved matrix, with the active level's kernels; threads take ranges of groups. */
lowbit_status lb_interleaved_matmul(const lb_interleaved_matrix *m, const float *x,
                                    int64_t n_tokens, float *out, lowbit_pool *pool,
                                    lowbit_matmul_scratch *scratch);
/* The same with a given level's kernels (tests compare levels in one process). */
lowbit_status lb_interleaved_matmul_with(const lb_kernel_set *set, const lb_interleaved_matrix *m,
                                         const float *x, int64_t n_tokens, float *out,
                                         lowbit_pool *pool, lowbit_matmul_scratch *scratch);

#endif

// The CUDA backend's kernels. `make ptx` compiles this file to
// kernels.ptx (PTX ISA 7.8 for sm_75, so that the driver JIT-compiles it
// for every GPU from Turing on); the PTX is committed and embedded in the
// binary, and CI validates it with ptxas and runs it on the simulator.
//
// Conventions: activations are dense float32; a weight row of a block
// type is its GGML blocks one after another (the GGUF layout); sizes are
// int (32-bit), which every tensor lqc runs fits; one warp reduces one
// dot product with butterfly shuffles, so every lane ends with the sum.
// Only what the PTX simulator implements may appear in the PTX: keep to
// plain arithmetic, __expf, __logf, sqrtf, shuffles and __syncthreads.

#include <cuda_fp16.h>

#define WARP 32
#define FULL 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

// block_sum is the sum of v over the block (at most 1024 threads), in
// every thread.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[WARP];
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    v = warp_sum(v);
    __syncthreads(); // part may still be read by an earlier call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + WARP - 1) / WARP;
    v = lane < warps ? part[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float load_half(const unsigned char* p) {
    return __half2float(*reinterpret_cast<const __half*>(p));
}

extern "C" {

// ---- elementwise ----

// out[i] = a[i] + b[i % nb]: b repeats along a's leading dimensions.
__global__ void add_f32(float* out, const float* a, const float* b, int n, int nb) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i % nb];
}

__global__ void mul_f32(float* out, const float* a, const float* b, int n, int nb) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] * b[i % nb];
}

__global__ void scale_f32(float* out, const float* x, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] * s;
}

__global__ void silu_f32(float* out, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        out[i] = v / (1.0f + __expf(-v));
    }
}

// gelu_f32 is the tanh approximation (GPT-2's gelu_new), tanh(u) written
// as 1 − 2/(e^{2u} + 1).
__global__ void gelu_f32(float* out, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        float t = 1.0f - 2.0f / (__expf(2.0f * u) + 1.0f);
        out[i] = 0.5f * v * (1.0f + t);
    }
}

// gelu_erf_f32 is GELU without the approximation: x·Φ(x).
__global__ void gelu_erf_f32(float* out, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
}

__global__ void relu_f32(float* out, const float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = fmaxf(x[i], 0.0f);
}

// softcap_f32 is cap·tanh(x/cap) (Gemma 2's logit soft-capping), tanh
// written as in gelu_f32.
__global__ void softcap_f32(float* out, const float* x, float cap, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float u = x[i] / cap;
        out[i] = cap * (1.0f - 2.0f / (__expf(2.0f * u) + 1.0f));
    }
}

// ---- normalization: one block per row ----

__global__ void rms_norm_f32(float* out, const float* x, const float* w, int d, float eps) {
    const float* row = x + (size_t)blockIdx.x * d;
    float* o = out + (size_t)blockIdx.x * d;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) ss += row[i] * row[i];
    ss = block_sum(ss);
    float s = 1.0f / sqrtf(ss / d + eps);
    for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = row[i] * s * w[i];
}

// layer_norm_stats is a row's mean and 1/σ over the block, as LayerNorm
// and its gradient compute them.
__device__ __forceinline__ void layer_norm_stats(const float* row, int d, float eps, float* mean, float* inv) {
    float sum = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) sum += row[i];
    float m = block_sum(sum) / d;
    float var = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float c = row[i] - m;
        var += c * c;
    }
    *mean = m;
    *inv = 1.0f / sqrtf(block_sum(var) / d + eps);
}

__global__ void layer_norm_f32(float* out, const float* x, const float* w, const float* b, int d, float eps) {
    const float* row = x + (size_t)blockIdx.x * d;
    float* o = out + (size_t)blockIdx.x * d;
    float mean, s;
    layer_norm_stats(row, d, eps, &mean, &s);
    for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = (row[i] - mean) * s * w[i] + b[i];
}

// ---- RoPE: the angles' cosines and sines come from the host, computed
// in float64 as the CPU backend does, [T, half] each ----

__global__ void rope_f32(float* out, const float* x, const float* cs, const float* sn, int T, int H, int d, int half, int neox) {
    int i = blockIdx.x * blockDim.x + threadIdx.x; // over T·H·half
    if (i >= T * H * half) return;
    int p = i % half, th = i / half, t = th / H;
    const float* src = x + (size_t)th * d;
    float* dst = out + (size_t)th * d;
    int a = neox ? p : 2 * p, b = neox ? p + half : 2 * p + 1;
    float c = cs[t * half + p], s = sn[t * half + p];
    float x0 = src[a], x1 = src[b];
    dst[a] = x0 * c - x1 * s;
    dst[b] = x0 * s + x1 * c;
}

// ---- copies ----

// copy_strided copies rows: out row r (n values) from x + r·stride + off.
// Slice, Concat's parts and the KV cache writes are all this.
__global__ void copy_rows_f32(float* out, const float* x, int rows, int n, int outStride, int outOff, int inStride, int inOff) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * n) return;
    int r = i / n, c = i % n;
    out[(size_t)r * outStride + outOff + c] = x[(size_t)r * inStride + inOff + c];
}

// permute3_f32: out[a][b][c] = x[a·sa + b·sb + c·sc], where sa, sb, sc
// are the strides of the input axes the output's take (perm applied on
// the host).
__global__ void permute3_f32(float* out, const float* x, int o0, int o1, int o2, int sa, int sb, int sc) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= o0 * o1 * o2) return;
    int c = i % o2, b = (i / o2) % o1, a = i / (o1 * o2);
    out[i] = x[(size_t)a * sa + (size_t)b * sb + (size_t)c * sc];
}

// ---- embedding rows and matrix products, per weight type ----

// Every weight type has a decoder of one group of 32 values into
// registers: decode_<type>(row, b, v) is values 32b…32b+31 of the row.
// Matrix products and embedding rows share them. Layouts are GGML's.

__device__ __forceinline__ void decode_f32(const unsigned char* row, int b, float* v) {
    const float* w = reinterpret_cast<const float*>(row) + b * 32;
#pragma unroll
    for (int j = 0; j < 32; j++) v[j] = w[j];
}

__device__ __forceinline__ void decode_f16(const unsigned char* row, int b, float* v) {
    const unsigned char* w = row + b * 64;
#pragma unroll
    for (int j = 0; j < 32; j++) v[j] = load_half(w + 2 * j);
}

// Q8_0: an f16 scale, then 32 int8 values.
__device__ __forceinline__ void decode_q8_0(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b * 34;
    const signed char* q = reinterpret_cast<const signed char*>(blk + 2);
    float d = load_half(blk);
#pragma unroll
    for (int j = 0; j < 32; j++) v[j] = d * q[j];
}

// Q4_0: an f16 scale, then 16 bytes: value j in the low nibble of byte j,
// value j+16 in its high nibble, both offset by 8.
__device__ __forceinline__ void decode_q4_0(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b * 18;
    float d = load_half(blk);
#pragma unroll
    for (int j = 0; j < 16; j++) {
        v[j] = d * ((blk[2 + j] & 15) - 8);
        v[j + 16] = d * ((blk[2 + j] >> 4) - 8);
    }
}

// Q6_K: superblocks of 256 values, 210 bytes: ql[128] (low 4 bits), qh[64]
// (high 2 bits), 16 int8 scales, an f16 scale. Value j = h·128 + g·32 + l
// (half h, quarter g, l < 32) has its low bits in ql[h·64 + (g&1)·32 + l]
// (high nibble when g ≥ 2), its high bits in qh[h·32 + l] at bit 2g, and
// scale h·8 + 2g + l/16; it is d·scale·(q − 32). Group b of 32 values is
// one (h, g) quarter.
__device__ __forceinline__ void decode_q6_K(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + (b / 8) * 210;
    int h = b % 8 / 4, g = b % 4;
    const unsigned char* ql = blk + h * 64 + (g & 1) * 32;
    const unsigned char* qh = blk + 128 + h * 32;
    const signed char* sc = reinterpret_cast<const signed char*>(blk + 192) + h * 8 + 2 * g;
    int shl = (g >> 1) * 4, shh = 2 * g;
    float d = load_half(blk + 208);
#pragma unroll
    for (int l = 0; l < 32; l++) v[l] = d * sc[l / 16] * (((ql[l] >> shl) & 15 | ((qh[l] >> shh) & 3) << 4) - 32);
}


__device__ __forceinline__ unsigned int load_u32(const unsigned char* p) {
    return p[0] | p[1] << 8 | p[2] << 16 | (unsigned int)p[3] << 24; // unaligned in Q5_0
}

// Q4_1: f16 d, f16 m, 16 bytes of nibbles: q·d + m.
__device__ __forceinline__ void decode_q4_1(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b * 20;
    float d = load_half(blk), m = load_half(blk + 2);
#pragma unroll
    for (int j = 0; j < 16; j++) {
        v[j] = (blk[4 + j] & 15) * d + m;
        v[j + 16] = (blk[4 + j] >> 4) * d + m;
    }
}

// Q5_0: f16 d, 32 fifth bits, 16 bytes of nibbles: (q − 16)·d.
__device__ __forceinline__ void decode_q5_0(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b * 22;
    float d = load_half(blk);
    unsigned int qh = load_u32(blk + 2);
#pragma unroll
    for (int j = 0; j < 16; j++) {
        v[j] = ((int)((blk[6 + j] & 15) | (qh >> j & 1) << 4) - 16) * d;
        v[j + 16] = ((int)((blk[6 + j] >> 4) | (qh >> (j + 16) & 1) << 4) - 16) * d;
    }
}

// Q5_1: f16 d, f16 m, 32 fifth bits, 16 bytes of nibbles: q·d + m.
__device__ __forceinline__ void decode_q5_1(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b * 24;
    float d = load_half(blk), m = load_half(blk + 2);
    unsigned int qh = load_u32(blk + 4);
#pragma unroll
    for (int j = 0; j < 16; j++) {
        v[j] = ((blk[8 + j] & 15) | (qh >> j & 1) << 4) * d + m;
        v[j + 16] = ((blk[8 + j] >> 4) | (qh >> (j + 16) & 1) << 4) * d + m;
    }
}

// The 16 non-uniform levels of IQ4_NL and IQ4_XS, packed eight int8s to a
// 64-bit constant (a table in constant memory would need the module to
// carry initialized data).
__device__ __forceinline__ float iq4_level(int q) {
    const unsigned long long lo = 0xf6eaddcfbfad9881ull, hi = 0x7159453526190d01ull;
    return (float)(signed char)((q < 8 ? lo : hi) >> (8 * (q & 7)));
}

// IQ4_NL: f16 d, 16 bytes of nibbles indexing the levels.
__device__ __forceinline__ void decode_iq4_nl(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b * 18;
    float d = load_half(blk);
#pragma unroll
    for (int j = 0; j < 16; j++) {
        v[j] = d * iq4_level(blk[2 + j] & 15);
        v[j + 16] = d * iq4_level(blk[2 + j] >> 4);
    }
}

// IQ4_XS: 256 values, 136 bytes: f16 d, 16 high scale bits, 4 bytes of low
// scale nibbles, 128 bytes of level nibbles; group ib has the 6-bit scale
// ls and the value d·(ls − 32)·level.
__device__ __forceinline__ void decode_iq4_xs(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b / 8 * 136;
    int ib = b % 8;
    int sh = blk[2] | blk[3] << 8;
    int ls = (blk[4 + ib / 2] >> 4 * (ib % 2) & 15) | (sh >> 2 * ib & 3) << 4;
    float dl = load_half(blk) * (ls - 32);
    const unsigned char* qs = blk + 8 + 16 * ib;
#pragma unroll
    for (int j = 0; j < 16; j++) {
        v[j] = dl * iq4_level(qs[j] & 15);
        v[j + 16] = dl * iq4_level(qs[j] >> 4);
    }
}

// Q2_K: 256 values, 84 bytes: 16 scale bytes (low nibble scale, high
// nibble min), 64 bytes of 2-bit levels, f16 d and dmin. Group b is half
// h = b/4 of the super-block at shift 2·(b%4): two runs of 16 values.
__device__ __forceinline__ void decode_q2_K(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b / 8 * 84;
    int h = b % 8 / 4, si = b % 4;
    float d = load_half(blk + 80), dmin = load_half(blk + 82);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int sc = blk[h * 8 + si * 2 + half];
        float dl = d * (sc & 15), ml = dmin * (sc >> 4);
        const unsigned char* q = blk + 16 + h * 32 + 16 * half;
#pragma unroll
        for (int l = 0; l < 16; l++) v[16 * half + l] = dl * (q[l] >> 2 * si & 3) - ml;
    }
}

// q3_scale is Q3_K's 6-bit scale j, less 32.
__device__ __forceinline__ int q3_scale(const unsigned char* sc, int j) {
    int lo = j < 8 ? sc[j] & 15 : sc[j - 8] >> 4;
    return (lo | (sc[8 + j % 4] >> 2 * (j / 4) & 3) << 4) - 32;
}

// Q3_K: 256 values, 110 bytes: 32 bytes of high bits, 64 of 2-bit levels,
// 12 of packed scales, f16 d. A value is d·scale·(q − 4 when its high
// bit is clear).
__device__ __forceinline__ void decode_q3_K(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b / 8 * 110;
    int h = b % 8 / 4, si = b % 4;
    int m = 1 << (h * 4 + si);
    float d = load_half(blk + 108);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        float dl = d * q3_scale(blk + 96, h * 8 + si * 2 + half);
        const unsigned char* q = blk + 32 + h * 32 + 16 * half;
        const unsigned char* hm = blk + 16 * half;
#pragma unroll
        for (int l = 0; l < 16; l++) v[16 * half + l] = dl * ((q[l] >> 2 * si & 3) - (hm[l] & m ? 0 : 4));
    }
}

// scale_min_k4 unpacks the 6-bit scale and minimum of sub-block j of a
// Q4_K/Q5_K super-block from its 12 scale bytes.
__device__ __forceinline__ void scale_min_k4(const unsigned char* q, int j, int* sc, int* mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
        *mn = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

// Q4_K: 256 values, 144 bytes: f16 d, f16 dmin, 12 scale bytes, 128 bytes
// of nibbles; group b is the low (even b) or high nibbles of bytes
// 32·(b/2)…: d·sc·q − dmin·m.
__device__ __forceinline__ void decode_q4_K(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b / 8 * 144;
    int g = b % 8, sc, mn;
    scale_min_k4(blk + 4, g, &sc, &mn);
    float dl = load_half(blk) * sc, ml = load_half(blk + 2) * mn;
    const unsigned char* q = blk + 16 + g / 2 * 32;
    int shift = 4 * (g & 1);
#pragma unroll
    for (int l = 0; l < 32; l++) v[l] = dl * (q[l] >> shift & 15) - ml;
}

// Q5_K: Q4_K with 32 bytes of fifth bits (bit g of byte l) before the
// nibbles: 176 bytes.
__device__ __forceinline__ void decode_q5_K(const unsigned char* row, int b, float* v) {
    const unsigned char* blk = row + b / 8 * 176;
    int g = b % 8, sc, mn;
    scale_min_k4(blk + 4, g, &sc, &mn);
    float dl = load_half(blk) * sc, ml = load_half(blk + 2) * mn;
    const unsigned char* qh = blk + 16;
    const unsigned char* q = blk + 48 + g / 2 * 32;
    int shift = 4 * (g & 1);
#pragma unroll
    for (int l = 0; l < 32; l++) v[l] = dl * ((q[l] >> shift & 15) | (qh[l] >> g & 1) << 4) - ml;
}

// get_rows_<type>: embedding rows, one block per id, threads over groups
// of 32 (F32 and F16, whose rows need not be whole groups, have their
// own).
#define DECODED(name)                                                                                        \
    __global__ void get_rows_##name(float* out, const unsigned char* table, const int* ids, int d, int rowBytes) { \
        const unsigned char* row = table + (size_t)ids[blockIdx.x] * rowBytes;                                \
        for (int g = threadIdx.x; g < d / 32; g += blockDim.x) {                                              \
            float v[32];                                                                                     \
            decode_##name(row, g, v);                                                                        \
            float* o = out + (size_t)blockIdx.x * d + 32 * g;                                                 \
            _Pragma("unroll") for (int j = 0; j < 32; j++) o[j] = v[j];                                     \
        }                                                                                                    \
    }

DECODED(q8_0)
DECODED(q4_0)
DECODED(q6_K)
DECODED(q4_1)
DECODED(q5_0)
DECODED(q5_1)
DECODED(iq4_nl)
DECODED(iq4_xs)
DECODED(q2_K)
DECODED(q3_K)
DECODED(q4_K)
DECODED(q5_K)

// linear_<type>: out[t, o] = alpha·Σ_i x[t, i]·W[o, i] (+ bias[o]) (+ out[t, o]
// when accumulate is set). One warp per output value and LINEAR_TOKENS
// tokens, so each group of weights is decoded once for all of them; lanes
// take groups of 32 values in turn. grid = (ceil(nout / warps per
// block), ceil(T / LINEAR_TOKENS)).
#define LINEAR_TOKENS 4

// store_outputs finishes a warp's sums s for tokens t0…t0+nt−1 of output
// o: summed over the lanes, scaled, the bias added (and the old value,
// with accumulate), written by lane 0.
__device__ __forceinline__ void store_outputs(float* out, const float* s, int t0, int nt, int o, int nout, int lane,
                                              const float* bias, float alpha, int accumulate) {
#pragma unroll
    for (int k = 0; k < LINEAR_TOKENS; k++) {
        if (k < nt) {
            float r = warp_sum(s[k]) * alpha;
            if (lane == 0) {
                float* dst = out + (size_t)(t0 + k) * nout + o;
                if (bias) r += bias[o];
                if (accumulate) r += *dst;
                *dst = r;
            }
        }
    }
}
#define LINEAR(name)                                                                                          \
    __global__ void linear_##name(float* out, const float* x, const unsigned char* w, const float* bias,      \
                                  int in, int nout, int rowBytes, int T, float alpha, int accumulate) {       \
        int o = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, lane = threadIdx.x % WARP;              \
        int t0 = blockIdx.y * LINEAR_TOKENS, nt = min(LINEAR_TOKENS, T - t0);                                 \
        if (o >= nout) return;                                                                                \
        const unsigned char* row = w + (size_t)o * rowBytes;                                                  \
        float s[LINEAR_TOKENS] = {};                                                                          \
        for (int b = lane; b < in / 32; b += WARP) {                                                          \
            float v[32];                                                                                      \
            decode_##name(row, b, v);                                                                         \
            _Pragma("unroll") for (int k = 0; k < LINEAR_TOKENS; k++) {                                      \
                if (k < nt) {                                                                                 \
                    const float* xt = x + (size_t)(t0 + k) * in + 32 * b;                                     \
                    float acc = 0.0f;                                                                         \
                    _Pragma("unroll") for (int j = 0; j < 32; j++) acc += v[j] * xt[j];                     \
                    s[k] += acc;                                                                              \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        store_outputs(out, s, t0, nt, o, nout, lane, bias, alpha, accumulate);                                \
    }

LINEAR(f32)
LINEAR(f16)
LINEAR(q8_0)
LINEAR(q4_0)
LINEAR(q6_K)
LINEAR(q4_1)
LINEAR(q5_0)
LINEAR(q5_1)
LINEAR(iq4_nl)
LINEAR(iq4_xs)
LINEAR(q2_K)
LINEAR(q3_K)
LINEAR(q4_K)
LINEAR(q5_K)

// ---- products on 8-bit activations (ggml's MMVQ): activations are
// quantized per 32-value block as the CPU backend and ggml do, and the
// weights' integer levels are multiplied with theirs four at a time by
// dp4a ----

__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// quantize_q8 turns nblocks blocks of 32 floats into int8 values q and,
// per block, (d, Σq): d = amax/127, q = round-to-even(x/d). One warp per
// block, lane j holding value j.
__global__ void quantize_q8(signed char* q, float2* ds, const float* x, int nblocks) {
    int b = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (b >= nblocks) return;
    float v = x[(size_t)b * 32 + lane];
    float d = warp_max(fabsf(v)) / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int qi = __float2int_rn(v * id);
    q[(size_t)b * 32 + lane] = (signed char)qi;
    int sum = warp_sum_int(qi);
    if (lane == 0) ds[b] = make_float2(d, (float)sum);
}

// load_int4 reads four bytes at a 2-byte-aligned address (a block's
// levels follow its f16 scale).
__device__ __forceinline__ int load_int4(const unsigned char* p) {
    const unsigned short* h = reinterpret_cast<const unsigned short*>(p);
    return h[0] | h[1] << 16;
}

// load_q8w_<type> reads group b of a row as 8 words of four int8 levels
// each (values 4k…4k+3 in word k), its scale, and the offset its levels
// carry (Q4_0 stores q + 8).
__device__ __forceinline__ void load_q8w_q4_0(const unsigned char* row, int b, int* w, float* d, int* offset) {
    const unsigned char* blk = row + b * 18;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int q = load_int4(blk + 2 + 4 * k);
        w[k] = q & 0x0f0f0f0f;
        w[4 + k] = q >> 4 & 0x0f0f0f0f;
    }
    *d = load_half(blk);
    *offset = 8;
}

__device__ __forceinline__ void load_q8w_q8_0(const unsigned char* row, int b, int* w, float* d, int* offset) {
    const unsigned char* blk = row + b * 34;
#pragma unroll
    for (int k = 0; k < 8; k++) w[k] = load_int4(blk + 2 + 4 * k);
    *d = load_half(blk);
    *offset = 0;
}

// linear_q8_<type>: linear_<type> on activations quantize_q8 made: xq
// [T, in] int8, xds [T, in/32] (d, Σq); per group Σ(q_w − offset)·q_x =
// Σq_w·q_x − offset·Σq_x in integers, times both scales.
#define LINEAR_Q8(name)                                                                                            \
    __global__ void linear_q8_##name(float* out, const signed char* xq, const float2* xds, const unsigned char* w,  \
                                     const float* bias, int in, int nout, int rowBytes, int T, float alpha,        \
                                     int accumulate) {                                                             \
        int o = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, lane = threadIdx.x % WARP;                   \
        int t0 = blockIdx.y * LINEAR_TOKENS, nt = min(LINEAR_TOKENS, T - t0);                                      \
        if (o >= nout) return;                                                                                     \
        const unsigned char* row = w + (size_t)o * rowBytes;                                                       \
        float s[LINEAR_TOKENS] = {};                                                                               \
        for (int b = lane; b < in / 32; b += WARP) {                                                               \
            int wq[8], offset;                                                                                     \
            float dw;                                                                                              \
            load_q8w_##name(row, b, wq, &dw, &offset);                                                             \
            _Pragma("unroll") for (int k = 0; k < LINEAR_TOKENS; k++) {                                           \
                if (k < nt) {                                                                                      \
                    const int* xt = reinterpret_cast<const int*>(xq + (size_t)(t0 + k) * in) + 8 * b;              \
                    float2 ds = xds[(size_t)(t0 + k) * (in / 32) + b];                                             \
                    int sumi = 0;                                                                                  \
                    _Pragma("unroll") for (int j = 0; j < 8; j++) sumi = __dp4a(wq[j], xt[j], sumi);             \
                    s[k] += dw * ds.x * (float)(sumi - offset * (int)ds.y);                                        \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
        store_outputs(out, s, t0, nt, o, nout, lane, bias, alpha, accumulate);                                     \
    }

LINEAR_Q8(q4_0)
LINEAR_Q8(q8_0)

// Rows of in values that are not a multiple of 32 (small adapters, odd
// models) take this float32 kernel, value by value.
__global__ void linear_f32_any(float* out, const float* x, const float* w, const float* bias, int in, int nout, float alpha, int accumulate) {
    int o = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, t = blockIdx.y, lane = threadIdx.x % WARP;
    if (o >= nout) return;
    const float* row = w + (size_t)o * in;
    const float* xt = x + (size_t)t * in;
    float s = 0.0f;
    for (int i = lane; i < in; i += WARP) s += row[i] * xt[i];
    s = warp_sum(s) * alpha;
    if (lane == 0) {
        float* dst = out + (size_t)t * nout + o;
        if (bias) s += bias[o];
        if (accumulate) s += *dst;
        *dst = s;
    }
}

// get_rows_<type>: out[t] = the decoded row ids[t] of the table. One block
// per token, threads over the row's values.
__global__ void get_rows_f32(float* out, const unsigned char* table, const int* ids, int d, int rowBytes) {
    const float* row = reinterpret_cast<const float*>(table + (size_t)ids[blockIdx.x] * rowBytes);
    for (int i = threadIdx.x; i < d; i += blockDim.x) out[(size_t)blockIdx.x * d + i] = row[i];
}

__global__ void get_rows_f16(float* out, const unsigned char* table, const int* ids, int d, int rowBytes) {
    const unsigned char* row = table + (size_t)ids[blockIdx.x] * rowBytes;
    for (int i = threadIdx.x; i < d; i += blockDim.x) out[(size_t)blockIdx.x * d + i] = load_half(row + 2 * i);
}

// ---- spelled-out attention (--flash-attn off) ----

// block_max is the maximum of v over the block, in every thread.
__device__ __forceinline__ float block_max(float v) {
    __shared__ float part[WARP];
    int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + WARP - 1) / WARP;
    v = lane < warps ? part[lane] : -INFINITY;
    return warp_max(v);
}

// softmax_f32 normalizes each row of n values; one block per row.
// Masked (−inf) entries become 0.
__global__ void softmax_f32(float* out, const float* x, int n) {
    const float* row = x + (size_t)blockIdx.x * n;
    float* o = out + (size_t)blockIdx.x * n;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
    m = block_max(m);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float e = __expf(row[i] - m);
        o[i] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum);
    for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] *= inv;
}

// causal_mask_f32 hides, in each [T, S] matrix of scores, the keys a query
// may not see: query t sits at position S−T+t and sees keys up to it, and
// with window > 0 only the window newest of those. Hidden scores become
// −inf, or 0 with zero set (the mask applied to probabilities).
__global__ void causal_mask_f32(float* out, const float* x, int n, int T, int S, int window, int zero) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int s = i % S, t = i / S % T;
    int limit = S - T + t;
    int first = window > 0 ? limit - window + 1 : 0;
    out[i] = (s > limit || s < first) ? (zero ? 0.0f : -INFINITY) : x[i];
}

// matmul_f32 is out[i] = a[i]·b[i/group] (b transposed when transB) for
// batches i < B of a [M, K] and b [K, N] (or [N, K]); as and bs are the
// batches' strides in elements. One thread per output.
__global__ void matmul_f32(float* out, const float* a, const float* b, int B, int M, int K, int N, int group, int as, int bs,
                           int transB) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * M * N) return;
    int n = i % N, m = i / N % M, bi = i / (M * N);
    const float* ar = a + (size_t)bi * as + (size_t)m * K;
    const float* bm = b + (size_t)(bi / group) * bs;
    float acc = 0.0f;
    if (transB) {
        const float* br = bm + (size_t)n * K;
        for (int k = 0; k < K; k++) acc += ar[k] * br[k];
    } else {
        for (int k = 0; k < K; k++) acc += ar[k] * bm[(size_t)k * N + n];
    }
    out[i] = acc;
}

// ---- attention ----

// flash_attn_f32: softmax(softcap(q·kᵀ·scale) + mask)·v, causal and
// windowed as the CPU kernel, one warp per query row (b·H + h, t) with
// the online softmax over chunks of 32 keys: lane c scores key s0+c, and
// each lane keeps dv/32 of the output (dv ≤ 256). k and v are [B, Hkv,
// S, d] with per-head strides kStride and vStride (a cache view's own);
// mask, if set, is indexed with strides m0..m3 for b, h, t, s.
__global__ void flash_attn_f32(float* out, float* lse, const float* q, const float* k, const float* v, const float* mask,
                               int H, int Hkv, int T, int S, int d, int dv, int kStride, int vStride,
                               float scale, float softcap, int causal, int window,
                               int m0, int m1, int m2, int m3) {
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int bi = blockIdx.y;
    if (row >= H * T) return;
    int h = row / T, t = row % T, hk = h / (H / Hkv);
    const float* qr = q + ((size_t)(bi * H + h) * T + t) * d;
    const float* kh = k + (size_t)(bi * Hkv + hk) * kStride;
    const float* vh = v + (size_t)(bi * Hkv + hk) * vStride;
    int first = 0, limit = S;
    if (causal) {
        limit = S - T + t + 1;
        if (window > 0) first = max(0, limit - window);
    }
    float m = -INFINITY, l = 0.0f;
    float acc[8];
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j] = 0.0f;
    for (int s0 = first; s0 < limit; s0 += WARP) {
        int s = s0 + lane;
        float sc = -INFINITY;
        if (s < limit) {
            const float* kr = kh + (size_t)s * d;
            float dot = 0.0f;
            for (int j = 0; j < d; j++) dot += qr[j] * kr[j];
            sc = dot * scale;
            if (softcap != 0.0f) {
                float u = sc / softcap;
                sc = softcap * (1.0f - 2.0f / (__expf(2.0f * u) + 1.0f));
            }
            if (mask) sc += mask[(size_t)bi * m0 + (size_t)h * m1 + (size_t)t * m2 + (size_t)s * m3];
        }
        float nm = fmaxf(m, warp_max(sc));
        if (nm == -INFINITY) continue; // every key so far is masked out
        float p = sc == -INFINITY ? 0.0f : __expf(sc - nm);
        float alpha = __expf(m - nm);
        l = l * alpha + warp_sum(p);
#pragma unroll
        for (int j = 0; j < 8; j++) acc[j] *= alpha;
        int n = min(WARP, limit - s0);
        for (int c = 0; c < n; c++) {
            float pc = __shfl_sync(FULL, p, c);
            const float* vr = vh + (size_t)(s0 + c) * dv;
#pragma unroll
            for (int j = 0; j < 8; j++)
                if (j * WARP + lane < dv) acc[j] += pc * vr[j * WARP + lane];
        }
        m = nm;
    }
    float* o = out + ((size_t)(bi * H + h) * T + t) * dv;
    float inv = 1.0f / l;
#pragma unroll
    for (int j = 0; j < 8; j++)
        if (j * WARP + lane < dv) o[j * WARP + lane] = acc[j] * inv;
    if (lse && lane == 0) lse[(size_t)(bi * H + h) * T + t] = m + __logf(l); // −inf for a row that sees no key
}

// ---- attention's backward (FlashAttention-2): the probabilities
// recomputed from the saved log-sum-exp, never stored ----

// fa_score is a query's score for a key as flash_attn_f32 computes it,
// before the mask, and in dcap the softcap's derivative.
__device__ __forceinline__ float fa_score(const float* qr, const float* kr, int d, float scale, float softcap, float* dcap) {
    float dot = 0.0f;
    for (int j = 0; j < d; j++) dot += qr[j] * kr[j];
    float z = dot * scale;
    *dcap = 1.0f;
    if (softcap != 0.0f) {
        float th = 1.0f - 2.0f / (__expf(2.0f * z / softcap) + 1.0f);
        *dcap = 1.0f - th * th;
        return softcap * th;
    }
    return z;
}

// flash_attn_grad_d_f32: D[r] = do[r]·o[r] for every query row; one warp
// per row.
__global__ void flash_attn_grad_d_f32(float* D, const float* o, const float* dO, int rows, int dv) {
    int r = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, lane = threadIdx.x % WARP;
    if (r >= rows) return;
    float s = 0.0f;
    for (int j = lane; j < dv; j += WARP) s += o[(size_t)r * dv + j] * dO[(size_t)r * dv + j];
    s = warp_sum(s);
    if (lane == 0) D[r] = s;
}

// flash_attn_grad_q_f32: dq of each query row, one warp per row (as
// flash_attn_f32): lane c scores key s0+c, dS = P·(do·v − D)·softcap'·
// scale, and every lane adds dS·k to its share of dq, key after key in
// order.
__global__ void flash_attn_grad_q_f32(float* dq, const float* q, const float* k, const float* v, const float* dO,
                                      const float* lse, const float* D, const float* mask,
                                      int H, int Hkv, int T, int S, int d, int dv, int kStride, int vStride,
                                      float scale, float softcap, int causal, int window, int m0, int m1, int m2, int m3) {
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int bi = blockIdx.y;
    if (row >= H * T) return;
    int h = row / T, t = row % T, hk = h / (H / Hkv);
    size_t r = (size_t)(bi * H + h) * T + t;
    const float* qr = q + r * d;
    const float* dor = dO + r * dv;
    const float* kh = k + (size_t)(bi * Hkv + hk) * kStride;
    const float* vh = v + (size_t)(bi * Hkv + hk) * vStride;
    float l = lse[r], Dt = D[r];
    int first = 0, limit = S;
    if (causal) {
        limit = S - T + t + 1;
        if (window > 0) first = max(0, limit - window);
    }
    float acc[8];
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j] = 0.0f;
    if (l != -INFINITY) {
        for (int s0 = first; s0 < limit; s0 += WARP) {
            int s = s0 + lane;
            float ds = 0.0f;
            if (s < limit) {
                float dcap, sc = fa_score(qr, kh + (size_t)s * d, d, scale, softcap, &dcap);
                if (mask) sc += mask[(size_t)bi * m0 + (size_t)h * m1 + (size_t)t * m2 + (size_t)s * m3];
                float p = __expf(sc - l);
                if (p != 0.0f) {
                    const float* vr = vh + (size_t)s * dv;
                    float dp = 0.0f;
                    for (int j = 0; j < dv; j++) dp += dor[j] * vr[j];
                    ds = p * (dp - Dt) * dcap * scale;
                }
            }
            int n = min(WARP, limit - s0);
            for (int c = 0; c < n; c++) {
                float dsc = __shfl_sync(FULL, ds, c);
                const float* kr = kh + (size_t)(s0 + c) * d;
#pragma unroll
                for (int j = 0; j < 8; j++)
                    if (j * WARP + lane < d) acc[j] += dsc * kr[j * WARP + lane];
            }
        }
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
        if (j * WARP + lane < d) dq[r * d + j * WARP + lane] = acc[j];
}

// flash_attn_grad_kv_f32: dk and dv of each key row (b, key/value head,
// s), one warp per row: for every query head of the group, query rows
// 32 at a time (lane c takes t0+c), the recomputed P and dS broadcast and
// added to the row's dv (P·do) and dk (dS·q) in order of head and query.
__global__ void flash_attn_grad_kv_f32(float* dk, float* dvOut, const float* q, const float* k, const float* v,
                                       const float* dO, const float* lse, const float* D, const float* mask,
                                       int H, int Hkv, int T, int S, int d, int dv, int kStride, int vStride,
                                       float scale, float softcap, int causal, int window, int m0, int m1, int m2, int m3) {
    int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP, lane = threadIdx.x % WARP;
    int bi = blockIdx.y;
    if (row >= Hkv * S) return;
    int hk = row / S, s = row % S, group = H / Hkv;
    const float* kr = k + (size_t)(bi * Hkv + hk) * kStride + (size_t)s * d;
    const float* vr = v + (size_t)(bi * Hkv + hk) * vStride + (size_t)s * dv;
    float accK[8], accV[8];
#pragma unroll
    for (int j = 0; j < 8; j++) accK[j] = accV[j] = 0.0f;
    for (int h = hk * group; h < (hk + 1) * group; h++) {
        size_t r0 = (size_t)(bi * H + h) * T;
        for (int t0 = 0; t0 < T; t0 += WARP) {
            int t = t0 + lane;
            float p = 0.0f, ds = 0.0f;
            if (t < T) {
                int first = 0, limit = S;
                if (causal) {
                    limit = S - T + t + 1;
                    if (window > 0) first = max(0, limit - window);
                }
                float l = lse[r0 + t];
                if (s >= first && s < limit && l != -INFINITY) {
                    float dcap, sc = fa_score(q + (r0 + t) * d, kr, d, scale, softcap, &dcap);
                    if (mask) sc += mask[(size_t)bi * m0 + (size_t)h * m1 + (size_t)t * m2 + (size_t)s * m3];
                    p = __expf(sc - l);
                    if (p != 0.0f) {
                        const float* dor = dO + (r0 + t) * dv;
                        float dp = 0.0f;
                        for (int j = 0; j < dv; j++) dp += dor[j] * vr[j];
                        ds = p * (dp - D[r0 + t]) * dcap * scale;
                    }
                }
            }
            int n = min(WARP, T - t0);
            for (int c = 0; c < n; c++) {
                float pc = __shfl_sync(FULL, p, c), dsc = __shfl_sync(FULL, ds, c);
                const float* dor = dO + (r0 + t0 + c) * dv;
                const float* qr = q + (r0 + t0 + c) * d;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if (j * WARP + lane < dv) accV[j] += pc * dor[j * WARP + lane];
                    if (j * WARP + lane < d) accK[j] += dsc * qr[j * WARP + lane];
                }
            }
        }
    }
    size_t base = (size_t)(bi * Hkv + hk) * S + s;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (j * WARP + lane < d) dk[base * d + j * WARP + lane] = accK[j];
        if (j * WARP + lane < dv) dvOut[base * dv + j * WARP + lane] = accV[j];
    }
}

// ---- training: the backward ops and the losses ----
//
// Every sum runs in a fixed order (a thread or a warp per output value,
// never atomics), so a training step gives the same bits every time, as
// on the CPU.

// silu_grad_f32: out = dy · σ(x)·(1 + x·(1 − σ(x))).
__global__ void silu_grad_f32(float* out, const float* x, const float* dy, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i], s = 1.0f / (1.0f + __expf(-v));
        out[i] = dy[i] * s * (1.0f + v * (1.0f - s));
    }
}

// gelu_grad_f32: out = dy · d/dx GELU(x), the tanh approximation.
__global__ void gelu_grad_f32(float* out, const float* x, const float* dy, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float c = 0.7978845608028654f; // sqrt(2/π)
        float v = x[i];
        float t = 1.0f - 2.0f / (__expf(2.0f * c * (v + 0.044715f * v * v * v)) + 1.0f);
        out[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * c * (1.0f + 3.0f * 0.044715f * v * v));
    }
}

// gelu_erf_grad_f32: out = dy · d/dx GELU(x), the exact (erf) form.
__global__ void gelu_erf_grad_f32(float* out, const float* x, const float* dy, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        out[i] = dy[i] * (0.5f * (1.0f + erff(v * 0.7071067811865476f)) + v * __expf(-0.5f * v * v) * 0.3989422804014327f);
    }
}

__global__ void relu_grad_f32(float* out, const float* x, const float* dy, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

// softcap_grad_f32: out = dy · (1 − tanh²(x/cap)).
__global__ void softcap_grad_f32(float* out, const float* x, const float* dy, float cap, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float t = 1.0f - 2.0f / (__expf(2.0f * x[i] / cap) + 1.0f);
        out[i] = dy[i] * (1.0f - t * t);
    }
}

// softmax_grad_f32: out = y·(dy − Σ y·dy) over each row of n; one block
// per row.
__global__ void softmax_grad_f32(float* out, const float* y, const float* dy, int n) {
    const float* yr = y + (size_t)blockIdx.x * n;
    const float* g = dy + (size_t)blockIdx.x * n;
    float* o = out + (size_t)blockIdx.x * n;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) dot += yr[i] * g[i];
    dot = block_sum(dot);
    for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = yr[i] * (g[i] - dot);
}

// layer_norm_grad_f32: the gradient of LayerNorm(x, w, b) with respect to
// x; one block per row. With x̂ = (x − mean)/σ and g = dy·w:
// dx = (g − mean(g) − x̂·mean(g·x̂))/σ.
__global__ void layer_norm_grad_f32(float* out, const float* x, const float* w, const float* dy, int d, float eps) {
    const float* row = x + (size_t)blockIdx.x * d;
    const float* g = dy + (size_t)blockIdx.x * d;
    float* o = out + (size_t)blockIdx.x * d;
    float mean, inv;
    layer_norm_stats(row, d, eps, &mean, &inv);
    float sg = 0.0f, sgx = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float gw = g[i] * w[i];
        sg += gw;
        sgx += gw * (row[i] - mean) * inv;
    }
    sg = block_sum(sg) / d;
    sgx = block_sum(sgx) / d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = (g[i] * w[i] - sg - (row[i] - mean) * inv * sgx) * inv;
}

// fill_f32: out[i] = v.
__global__ void fill_f32(float* out, float v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = v;
}

// rms_norm_grad_f32: the gradient of RMSNorm(x, w) with respect to x; one
// block per row. With x̂ = x/σ and g = dy·w: dx = (g − x̂·mean(g·x̂))/σ.
__global__ void rms_norm_grad_f32(float* out, const float* x, const float* w, const float* dy, int d, float eps) {
    const float* row = x + (size_t)blockIdx.x * d;
    const float* g = dy + (size_t)blockIdx.x * d;
    float* o = out + (size_t)blockIdx.x * d;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) ss += row[i] * row[i];
    ss = block_sum(ss);
    float inv = 1.0f / sqrtf(ss / d + eps);
    float gx = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) gx += g[i] * w[i] * row[i];
    gx = block_sum(gx) * inv / d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) o[i] = (g[i] * w[i] - row[i] * inv * gx) * inv;
}

// linear_grad_w_f32: dW[o, i] = Σ_t dy[t, o]·x[t, i], t in order; one
// thread per element of dW (the trained matrices are an adapter's, small).
__global__ void linear_grad_w_f32(float* dw, const float* dy, const float* x, int T, int nout, int in) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= nout * in) return;
    int o = e / in, i = e % in;
    float s = 0.0f;
    for (int t = 0; t < T; t++) s += dy[(size_t)t * nout + o] * x[(size_t)t * in + i];
    dw[e] = s;
}

// linear_t_<type>: dx[t, i] = Σ_o dy[t, o]·W[o, i], the transposed
// product on a weight of any type, read in place. A thread takes one
// group of 32 columns for LINEAR_TOKENS tokens and walks the rows in
// order, decoding that group of each row in registers.
// grid = (ceil(in/32 / threads per block), ceil(T / LINEAR_TOKENS)).
#define LINEAR_T(name)                                                                                        \
    __global__ void linear_t_##name(float* dx, const float* dy, const unsigned char* w, int in, int nout,     \
                                    int rowBytes, int T) {                                                    \
        int g = blockIdx.x * blockDim.x + threadIdx.x;                                                        \
        int t0 = blockIdx.y * LINEAR_TOKENS, nt = min(LINEAR_TOKENS, T - t0);                                 \
        if (g >= in / 32) return;                                                                             \
        float acc[LINEAR_TOKENS][32];                                                                         \
        _Pragma("unroll") for (int k = 0; k < LINEAR_TOKENS; k++)                                             \
            _Pragma("unroll") for (int j = 0; j < 32; j++) acc[k][j] = 0.0f;                                 \
        for (int o = 0; o < nout; o++) {                                                                      \
            float v[32];                                                                                      \
            decode_##name(w + (size_t)o * rowBytes, g, v);                                                    \
            _Pragma("unroll") for (int k = 0; k < LINEAR_TOKENS; k++) {                                      \
                if (k < nt) {                                                                                 \
                    float d = dy[(size_t)(t0 + k) * nout + o];                                                \
                    _Pragma("unroll") for (int j = 0; j < 32; j++) acc[k][j] += d * v[j];                   \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        _Pragma("unroll") for (int k = 0; k < LINEAR_TOKENS; k++) {                                          \
            if (k < nt) {                                                                                     \
                float* out = dx + (size_t)(t0 + k) * in + 32 * g;                                             \
                _Pragma("unroll") for (int j = 0; j < 32; j++) out[j] = acc[k][j];                          \
            }                                                                                                 \
        }                                                                                                     \
    }

LINEAR_T(f32)
LINEAR_T(f16)
LINEAR_T(q8_0)
LINEAR_T(q4_0)
LINEAR_T(q6_K)
LINEAR_T(q4_1)
LINEAR_T(q5_0)
LINEAR_T(q5_1)
LINEAR_T(iq4_nl)
LINEAR_T(iq4_xs)
LINEAR_T(q2_K)
LINEAR_T(q3_K)
LINEAR_T(q4_K)
LINEAR_T(q5_K)

// linear_t_f32_any: the transposed product on float32 rows whose length
// is not a multiple of 32 (an adapter's B, of rank r); a thread per
// element of dx.
__global__ void linear_t_f32_any(float* dx, const float* dy, const float* w, int in, int nout, int T) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= T * in) return;
    int t = e / in, i = e % in;
    float s = 0.0f;
    for (int o = 0; o < nout; o++) s += dy[(size_t)t * nout + o] * w[(size_t)o * in + i];
    dx[e] = s;
}

// row_lse is the log-sum-exp of a row of n values over the block.
__device__ __forceinline__ float row_lse(const float* row, int n) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
    m = block_max(m);
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += __expf(row[i] - m);
    return m + __logf(block_sum(s));
}

// cross_entropy_rows_f32: per[t] = lse(logits[t]) − logits[t, y] for rows
// with a target y ≥ 0, else 0; one block per row.
__global__ void cross_entropy_rows_f32(float* per, const float* logits, const int* targets, int V) {
    const float* row = logits + (size_t)blockIdx.x * V;
    int y = targets[blockIdx.x];
    if (y < 0) {
        if (threadIdx.x == 0) per[blockIdx.x] = 0.0f;
        return;
    }
    float lse = row_lse(row, V);
    if (threadIdx.x == 0) per[blockIdx.x] = lse - row[y];
}

// cross_entropy_grad_f32: grad[t] = dl·(softmax(logits[t]) − onehot(y)),
// 0 on rows without a target; dl is the loss's gradient, on the device.
__global__ void cross_entropy_grad_f32(float* grad, const float* logits, const int* targets, const float* dl, int V) {
    const float* row = logits + (size_t)blockIdx.x * V;
    float* g = grad + (size_t)blockIdx.x * V;
    int y = targets[blockIdx.x];
    if (y < 0) {
        for (int i = threadIdx.x; i < V; i += blockDim.x) g[i] = 0.0f;
        return;
    }
    float lse = row_lse(row, V), s = *dl;
    for (int i = threadIdx.x; i < V; i += blockDim.x) g[i] = s * (__expf(row[i] - lse) - (i == y ? 1.0f : 0.0f));
}

// kl_div_rows_f32: per[t] = KL(softmax(teacher[t]) ‖ softmax(logits[t])).
__global__ void kl_div_rows_f32(float* per, const float* logits, const float* teacher, int V) {
    const float* s = logits + (size_t)blockIdx.x * V;
    const float* q = teacher + (size_t)blockIdx.x * V;
    float ls = row_lse(s, V), lq = row_lse(q, V);
    float kl = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float lp = q[i] - lq, p = __expf(lp);
        if (p > 0.0f) kl += p * (lp - (s[i] - ls));
    }
    kl = block_sum(kl);
    if (threadIdx.x == 0) per[blockIdx.x] = kl;
}

// kl_div_grad_f32: grad[t] = dl·(softmax(logits[t]) − softmax(teacher[t])).
__global__ void kl_div_grad_f32(float* grad, const float* logits, const float* teacher, const float* dl, int V) {
    const float* s = logits + (size_t)blockIdx.x * V;
    const float* q = teacher + (size_t)blockIdx.x * V;
    float* g = grad + (size_t)blockIdx.x * V;
    float ls = row_lse(s, V), lq = row_lse(q, V), d = *dl;
    for (int i = threadIdx.x; i < V; i += blockDim.x) g[i] = d * (__expf(s[i] - ls) - __expf(q[i] - lq));
}

// sum_in_order_f32: out[0] = Σ per[t] in order, by one thread: a loss is a
// few hundred rows.
__global__ void sum_in_order_f32(float* out, const float* per, int n) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        float s = 0.0f;
        for (int t = 0; t < n; t++) s += per[t];
        out[0] = s;
    }
}

} // extern "C"

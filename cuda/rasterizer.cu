// Orthographic Gaussian rasterizer: projection (+ fused motion / opacity life-cycle) -> tile counts ->
// prefix sum -> (image, tile, depth) keys -> radix sort -> tile ranges -> tiled front-to-back blend;
// backward: back-to-front blend with warp reductions, then projection backward.
// Exact semantics: docs/rasterizer.md (both backends agree to float rounding).
#include "rasterizer.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cub/cub.cuh>
#include <cuda_runtime.h>

#include <cstdint>

namespace ssns {
namespace {

constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kTMin = 1e-4f;
constexpr float kEps2d = 0.3f;
constexpr float kDepthEps = 1e-6f;

// NaN flag bits (reported back to Python, which names the tensor)
enum : int {
    F_MEANS = 1, F_QUATS = 2, F_SCALES = 4, F_OPAC = 8, F_COLOURS = 16, F_MOTION = 32, F_T0 = 64,
    F_GAMMA0 = 128, F_GAMMA1 = 256, F_TIMES = 512, F_VIEWMATS = 1024, F_KS = 2048, F_BG = 4096
};

#define SSNS_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

struct Params {
    int I, N, S, P, K;  // images, Gaussians per set, sets, images per set, motion order
    int W, H, ts, TW, TH;
    float near_plane, far_plane, depth_a, depth_b, alpha_clamp;
};

__device__ __forceinline__ bool isnan3(float a, float b, float c) { return isnan(a) || isnan(b) || isnan(c); }

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// rotation matrix of a normalised (w, x, y, z) quaternion, row-major
__device__ __forceinline__ void quat_to_rot(float w, float x, float y, float z, float R[9]) {
    R[0] = 1.f - 2.f * (y * y + z * z);
    R[1] = 2.f * (x * y - w * z);
    R[2] = 2.f * (x * z + w * y);
    R[3] = 2.f * (x * y + w * z);
    R[4] = 1.f - 2.f * (x * x + z * z);
    R[5] = 2.f * (y * z - w * x);
    R[6] = 2.f * (x * z - w * y);
    R[7] = 2.f * (y * z + w * x);
    R[8] = 1.f - 2.f * (x * x + y * y);
}

// Everything the projection computes for one (image, Gaussian); shared by forward and backward.
struct Proj {
    bool live;
    float3 p_world;  // world position (after motion / inverse depth)
    float3 p_canon;  // canonical position (dynamic only)
    float dt, opac_raw, su, sw, opac;  // life-cycle terms (dynamic only) and effective opacity
    float Rv[9], tv[3], fx, fy, cx, cy;
    float qn[4], qnorm, Rq[9], s[3], M[9];
    float a, b, c, det;
    float2 xy;
    float depth;
    float4 conic_opac;
    int radius;
};

template <bool DYN>
__device__ __forceinline__ void project_one(
    const Params& p, int i, int64_t g, const float* __restrict__ means, const float* __restrict__ quats,
    const float* __restrict__ scales, const float* __restrict__ opacities, const float* __restrict__ motion,
    const float* __restrict__ t0, const float* __restrict__ gamma0, const float* __restrict__ gamma1,
    const float* __restrict__ times, const float* __restrict__ viewmats, const float* __restrict__ Ks,
    Proj& o, int* flags) {
    o.live = false;
    o.radius = 0;
    float mx = means[g * 3 + 0], my = means[g * 3 + 1], mz = means[g * 3 + 2];
    float op = opacities[g];
    if (flags) {
        int f = 0;
        if (isnan3(mx, my, mz)) f |= F_MEANS;
        if (isnan(op)) f |= F_OPAC;
        if (isnan3(quats[g * 4], quats[g * 4 + 1], quats[g * 4 + 2]) || isnan(quats[g * 4 + 3])) f |= F_QUATS;
        if (isnan3(scales[g * 3], scales[g * 3 + 1], scales[g * 3 + 2])) f |= F_SCALES;
        if (f) atomicOr(flags, f);
    }
    o.opac_raw = op;
    if (DYN) {
        float tt = times[i], tz = t0[g], g0 = gamma0[g], g1 = gamma1[g];
        if (flags) {
            int f = 0;
            if (isnan(tt)) f |= F_TIMES;
            if (isnan(tz)) f |= F_T0;
            if (isnan(g0)) f |= F_GAMMA0;
            if (isnan(g1)) f |= F_GAMMA1;
            if (f) atomicOr(flags, f);
        }
        float dt = tt - tz;
        o.dt = dt;
        float pw = 1.f;
        for (int k = 0; k < p.K; ++k) {
            pw *= dt;
            const float* mk = motion + (g * p.K + k) * 3;
            if (flags && isnan3(mk[0], mk[1], mk[2])) atomicOr(flags, F_MOTION);
            mx = mx + mk[0] * pw;
            my = my + mk[1] * pw;
            mz = mz + mk[2] * pw;
        }
        o.p_canon = make_float3(mx, my, mz);
        o.su = sigmoidf_(-g0 * (fabsf(dt) - g1));
        o.sw = sigmoidf_(g0 * g1);
        op = op * o.su / o.sw;
        if (!(my >= 0.f && my <= 1.f)) return;  // left the canonical inverse-depth range: culled
        my = 1.f / (p.depth_a + p.depth_b * my + kDepthEps);
    }
    o.opac = op;
    o.p_world = make_float3(mx, my, mz);
    const float* V = viewmats + (int64_t)i * 16;
    o.Rv[0] = V[0]; o.Rv[1] = V[1]; o.Rv[2] = V[2]; o.tv[0] = V[3];
    o.Rv[3] = V[4]; o.Rv[4] = V[5]; o.Rv[5] = V[6]; o.tv[1] = V[7];
    o.Rv[6] = V[8]; o.Rv[7] = V[9]; o.Rv[8] = V[10]; o.tv[2] = V[11];
    const float* Kc = Ks + (int64_t)i * 9;
    o.fx = Kc[0]; o.cx = Kc[2]; o.fy = Kc[4]; o.cy = Kc[5];
    float pcx = o.Rv[0] * mx + o.Rv[1] * my + o.Rv[2] * mz + o.tv[0];
    float pcy = o.Rv[3] * mx + o.Rv[4] * my + o.Rv[5] * mz + o.tv[1];
    float pcz = o.Rv[6] * mx + o.Rv[7] * my + o.Rv[8] * mz + o.tv[2];
    if (!(pcz >= p.near_plane && pcz <= p.far_plane)) return;
    // covariance
    float qw = quats[g * 4], qx = quats[g * 4 + 1], qy = quats[g * 4 + 2], qz = quats[g * 4 + 3];
    float qn = fmaxf(sqrtf(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12f);
    o.qnorm = qn;
    o.qn[0] = qw / qn; o.qn[1] = qx / qn; o.qn[2] = qy / qn; o.qn[3] = qz / qn;
    quat_to_rot(o.qn[0], o.qn[1], o.qn[2], o.qn[3], o.Rq);
    o.s[0] = scales[g * 3]; o.s[1] = scales[g * 3 + 1]; o.s[2] = scales[g * 3 + 2];
#pragma unroll
    for (int r = 0; r < 3; ++r)
#pragma unroll
        for (int c = 0; c < 3; ++c) o.M[r * 3 + c] = o.Rq[r * 3 + c] * o.s[c];
    // Sigma = M M^T ; only rows 0,1 of Sigma_c = Rv Sigma Rv^T are needed: Sc_rc = (Rv M)_r . (Rv M)_c
    float A[6];  // rows 0 and 1 of Rv M
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int c = 0; c < 3; ++c)
            A[r * 3 + c] = o.Rv[r * 3] * o.M[c] + o.Rv[r * 3 + 1] * o.M[3 + c] + o.Rv[r * 3 + 2] * o.M[6 + c];
    float S00 = A[0] * A[0] + A[1] * A[1] + A[2] * A[2];
    float S01 = A[0] * A[3] + A[1] * A[4] + A[2] * A[5];
    float S11 = A[3] * A[3] + A[4] * A[4] + A[5] * A[5];
    o.a = o.fx * o.fx * S00 + kEps2d;
    o.b = o.fx * o.fy * S01;
    o.c = o.fy * o.fy * S11 + kEps2d;
    o.det = o.a * o.c - o.b * o.b;
    if (!(o.det > 0.f)) return;
    o.xy = make_float2(o.fx * pcx + o.cx, o.fy * pcy + o.cy);
    o.depth = pcz;
    float half = 0.5f * (o.a + o.c);
    float v1 = half + sqrtf(fmaxf(half * half - o.det, 0.01f));
    float radius = ceilf(3.f * sqrtf(v1));
    if (!(radius > 0.f)) return;
    if (o.xy.x + radius <= 0.f || o.xy.x - radius >= (float)p.W || o.xy.y + radius <= 0.f ||
        o.xy.y - radius >= (float)p.H)
        return;
    o.conic_opac = make_float4(o.c / o.det, -o.b / o.det, o.a / o.det, op);
    o.radius = (int)radius;
    o.live = true;
}

__device__ __forceinline__ void tile_rect(const Params& p, float2 xy, int radius, int& x0, int& x1, int& y0,
                                          int& y1) {
    float r = (float)radius / (float)p.ts;
    float tx = xy.x / (float)p.ts, ty = xy.y / (float)p.ts;
    x0 = min(max((int)floorf(tx - r), 0), p.TW);
    x1 = min(max((int)ceilf(tx + r), 0), p.TW);
    y0 = min(max((int)floorf(ty - r), 0), p.TH);
    y1 = min(max((int)ceilf(ty + r), 0), p.TH);
}

template <bool DYN>
__global__ void project_fwd_kernel(Params p, const float* __restrict__ means, const float* __restrict__ quats,
                                   const float* __restrict__ scales, const float* __restrict__ opacities,
                                   const float* __restrict__ colours, const float* __restrict__ motion,
                                   const float* __restrict__ t0, const float* __restrict__ gamma0,
                                   const float* __restrict__ gamma1, const float* __restrict__ times,
                                   const float* __restrict__ viewmats, const float* __restrict__ Ks,
                                   const float* __restrict__ bgs, float2* __restrict__ xy_out,
                                   float4* __restrict__ conic_out, float* __restrict__ z_out,
                                   int32_t* __restrict__ radii, int32_t* __restrict__ ntiles, int* flags) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)p.I * p.N) return;
    int i = (int)(idx / p.N);
    int n = (int)(idx - (int64_t)i * p.N);
    int64_t g = (int64_t)(i / p.P) * p.N + n;
    if (n == 0) {  // per-image inputs, checked once
        int f = 0;
        for (int k = 0; k < 12; ++k) if (isnan(viewmats[(int64_t)i * 16 + k])) f |= F_VIEWMATS;
        for (int k = 0; k < 9; ++k) if (isnan(Ks[(int64_t)i * 9 + k])) f |= F_KS;
        if (isnan3(bgs[i * 3], bgs[i * 3 + 1], bgs[i * 3 + 2])) f |= F_BG;
        if (f) atomicOr(flags, f);
    }
    if (isnan3(colours[g * 3], colours[g * 3 + 1], colours[g * 3 + 2])) atomicOr(flags, F_COLOURS);
    Proj o;
    project_one<DYN>(p, i, g, means, quats, scales, opacities, motion, t0, gamma0, gamma1, times, viewmats, Ks,
                     o, flags);
    if (!o.live) {
        ntiles[idx] = 0;
        radii[idx] = 0;
        xy_out[idx] = make_float2(0.f, 0.f);
        conic_out[idx] = make_float4(0.f, 0.f, 0.f, 0.f);
        z_out[idx] = 0.f;
        return;
    }
    int x0, x1, y0, y1;
    tile_rect(p, o.xy, o.radius, x0, x1, y0, y1);
    ntiles[idx] = (x1 - x0) * (y1 - y0);
    radii[idx] = o.radius;
    xy_out[idx] = o.xy;
    conic_out[idx] = o.conic_opac;
    z_out[idx] = o.depth;
}

__global__ void finish_scan_kernel(const int32_t* cum, int64_t n, int* info) {
    info[0] = n > 0 ? cum[n - 1] : 0;
}

// order-preserving map of a float onto uint32 (negative depths sort before positive ones)
__device__ __forceinline__ uint32_t depth_key(float z) {
    uint32_t u = __float_as_uint(z);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}


__global__ void isect_kernel(Params p, const float2* __restrict__ xy, const float* __restrict__ z,
                             const int32_t* __restrict__ radii, const int32_t* __restrict__ cum,
                             uint64_t* __restrict__ keys, int32_t* __restrict__ vals) {
    int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)p.I * p.N) return;
    int radius = radii[idx];
    if (radius <= 0) return;
    int i = (int)(idx / p.N);
    int x0, x1, y0, y1;
    tile_rect(p, xy[idx], radius, x0, x1, y0, y1);
    int64_t cnt = (int64_t)(x1 - x0) * (y1 - y0);
    int64_t off = (int64_t)cum[idx] - cnt;
    uint64_t zk = depth_key(z[idx]);
    uint64_t img_base = (uint64_t)i * (uint64_t)(p.TW * p.TH);
    for (int ty = y0; ty < y1; ++ty)
        for (int tx = x0; tx < x1; ++tx) {
            uint64_t tile = img_base + (uint64_t)(ty * p.TW + tx);
            keys[off] = (tile << 32) | zk;
            vals[off] = (int32_t)idx;
            ++off;
        }
}

__global__ void tile_offsets_kernel(int M, int num_tiles, const uint64_t* __restrict__ keys,
                                    int32_t* __restrict__ offsets) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= M) return;
    int tile = (int)(keys[k] >> 32);
    if (k == 0) {
        for (int t = 0; t <= tile; ++t) offsets[t] = 0;
    } else {
        int prev = (int)(keys[k - 1] >> 32);
        for (int t = prev + 1; t <= tile; ++t) offsets[t] = k;
    }
    if (k == M - 1)
        for (int t = tile + 1; t < num_tiles; ++t) offsets[t] = M;
}

// Conservative pixel box outside which alpha < 1/255 for certain: 0.5 d^T Q d >= 0.5 dx^2 det(Q) / Q_yy, so no
// pixel with |dx| > sqrt(2 L Q_yy / det Q), L = ln(255 opacity), passes the 1/255 test (1% margin for rounding).
// Used only to let whole warps skip a Gaussian: outputs are bit-for-bit those of the plain loop.
__device__ __forceinline__ float4 contrib_box(float2 m, float4 co) {
    const float L = logf(255.f * co.w);
    if (!(L >= 0.f)) return make_float4(1e30f, -1e30f, 1e30f, -1e30f);  // never passes: empty box
    const float detc = co.x * co.z - co.y * co.y;
    if (!(detc > 0.f)) return make_float4(-1e30f, 1e30f, -1e30f, 1e30f);  // degenerate: never skip
    const float ex = sqrtf(2.f * L * co.z / detc) * 1.01f + 1e-3f;
    const float ey = sqrtf(2.f * L * co.x / detc) * 1.01f + 1e-3f;
    return make_float4(m.x - ex, m.x + ex, m.y - ey, m.y + ey);
}

// pixel-centre bounds of this thread's warp inside its tile (x0, x1, y0, y1)
__device__ __forceinline__ float4 warp_rect(int tid, int ts, int tile_x0, int tile_y0) {
    const int wbase = tid & ~31;
    const int r0 = wbase / ts, r1 = (wbase + 31) / ts;
    float x0 = (float)tile_x0 + 0.5f, x1 = (float)(tile_x0 + ts) - 0.5f;
    if (r0 == r1) {
        x0 = (float)(tile_x0 + wbase % ts) + 0.5f;
        x1 = (float)(tile_x0 + (wbase + 31) % ts) + 0.5f;
    }
    return make_float4(x0, x1, (float)(tile_y0 + r0) + 0.5f, (float)(tile_y0 + r1) + 0.5f);
}

__device__ __forceinline__ bool box_misses(float4 box, float4 wr) {
    return box.y < wr.x || box.x > wr.y || box.w < wr.z || box.z > wr.w;
}

// Front-to-back blend of one tile; one thread per pixel, Gaussians staged through shared memory.
__global__ void raster_fwd_kernel(Params p, int M, const int32_t* __restrict__ tile_offsets,
                                  const int32_t* __restrict__ flat_ids, const float2* __restrict__ xy,
                                  const float4* __restrict__ conic_opac, const float* __restrict__ zz,
                                  const float* __restrict__ colours, const float* __restrict__ bgs,
                                  float* __restrict__ out_rgb, float* __restrict__ out_depth,
                                  float* __restrict__ out_alpha, float* __restrict__ out_T,
                                  int32_t* __restrict__ out_last) {
    extern __shared__ float4 smem[];
    const int BS = blockDim.x * blockDim.y;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    float4* s_co = smem;
    float4* s_cz = smem + BS;
    float4* s_box = smem + 2 * BS;
    float2* s_xy = reinterpret_cast<float2*>(smem + 3 * BS);

    const int tiles_per_img = p.TW * p.TH;
    const int tile_g = blockIdx.x;
    const int i = tile_g / tiles_per_img;
    const int t = tile_g - i * tiles_per_img;
    const int row = (t / p.TW) * p.ts + threadIdx.y;
    const int col = (t % p.TW) * p.ts + threadIdx.x;
    const bool inside = row < p.H && col < p.W;
    const float px = (float)col + 0.5f, py = (float)row + 0.5f;
    const int start = tile_offsets[tile_g];
    const int end = (tile_g + 1 < p.I * tiles_per_img) ? tile_offsets[tile_g + 1] : M;
    const int64_t set_base = (int64_t)(i / p.P) * p.N;
    const int64_t img_base = (int64_t)i * p.N;
    const float4 wr = warp_rect(tid, p.ts, (t % p.TW) * p.ts, (t / p.TW) * p.ts);

    float T = 1.f, r = 0.f, g = 0.f, b = 0.f, d = 0.f;
    int last = start - 1;
    bool done = !inside;
    for (int bstart = start; bstart < end; bstart += BS) {
        if (__syncthreads_count(done) == BS) break;
        int k = bstart + tid;
        if (k < end) {
            int id = flat_ids[k];
            int64_t gi = set_base + (id - img_base);
            const float2 m = xy[id];
            const float4 co = conic_opac[id];
            s_xy[tid] = m;
            s_co[tid] = co;
            s_box[tid] = contrib_box(m, co);
            s_cz[tid] = make_float4(colours[gi * 3], colours[gi * 3 + 1], colours[gi * 3 + 2], zz[id]);
        }
        __syncthreads();
        int cnt = min(BS, end - bstart);
        for (int j = 0; j < cnt && !done; ++j) {
            if (box_misses(s_box[j], wr)) continue;  // warp-uniform: no pixel of this warp can pass 1/255
            float4 co = s_co[j];
            float2 m = s_xy[j];
            float dx = px - m.x, dy = py - m.y;
            float sigma = 0.5f * (co.x * dx * dx + co.z * dy * dy) + co.y * dx * dy;
            float alpha = fminf(p.alpha_clamp, co.w * __expf(-sigma));
            if (sigma < 0.f || alpha < kAlphaMin) continue;
            float nT = T * (1.f - alpha);
            if (nT <= kTMin) {
                done = true;
                break;
            }
            float w = alpha * T;
            float4 cz = s_cz[j];
            r += w * cz.x;
            g += w * cz.y;
            b += w * cz.z;
            d += w * cz.w;
            T = nT;
            last = bstart + j;
        }
    }
    if (inside) {
        int64_t pix = ((int64_t)i * p.H + row) * p.W + col;
        out_rgb[pix * 3 + 0] = r + T * bgs[i * 3 + 0];
        out_rgb[pix * 3 + 1] = g + T * bgs[i * 3 + 1];
        out_rgb[pix * 3 + 2] = b + T * bgs[i * 3 + 2];
        out_depth[pix] = d;
        out_alpha[pix] = 1.f - T;
        out_T[pix] = T;
        out_last[pix] = last;
    }
}

// Back-to-front replay of the forward blend. Per Gaussian: warp-reduce the 10 partial gradients, add
// them into a shared accumulator slot, and flush each slot to global memory once per tile.
constexpr int kNGrad = 10;  // x, y, conic a, b, c, opacity, z, r, g, b
constexpr int kAccStride = kNGrad + 1;  // odd stride: a Gaussian's 10 accumulators sit in 10 different banks

// Reduce 16 per-lane values over the warp with 16 shuffles (instead of 16 x 5): at each butterfly step a lane
// keeps one half of its values and sends the other half to its partner. Returns the sum of value lane / 2.
template <int STEP, int NV>
__device__ __forceinline__ void butterfly_half(float* v, unsigned lane) {
    const bool up = (lane & (unsigned)STEP) != 0u;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
        const float send = up ? v[k] : v[k + NV];
        const float keep = up ? v[k + NV] : v[k];
        v[k] = keep + __shfl_xor_sync(0xffffffffu, send, STEP);
    }
}

// 10 values: halves of 5, then 3 + pad, then 2 (+ pad), then 1; 12 shuffles in all. Lane L ends with the warp
// sum of value *q (q = -1 for lanes holding a pad slot); both lanes of an even/odd pair hold the same value.
__device__ __forceinline__ float warp_transpose_sum10(float* v, unsigned lane, int* q) {
    butterfly_half<16, 5>(v, lane);
    v[5] = 0.f;
    butterfly_half<8, 3>(v, lane);
    v[3] = 0.f;
    butterfly_half<4, 2>(v, lane);
    butterfly_half<2, 1>(v, lane);
    const int b4 = (lane >> 4) & 1, b3 = (lane >> 3) & 1, b2 = (lane >> 2) & 1, b1 = (lane >> 1) & 1;
    const bool real = b3 ? (b2 == 0) : !(b2 && b1);
    *q = real ? 5 * b4 + 3 * b3 + 2 * b2 + b1 : -1;
    return v[0] + __shfl_xor_sync(0xffffffffu, v[0], 1);
}

__global__ void raster_bwd_kernel(Params p, int M, const int32_t* __restrict__ tile_offsets,
                                  const int32_t* __restrict__ flat_ids, const float2* __restrict__ xy,
                                  const float4* __restrict__ conic_opac, const float* __restrict__ zz,
                                  const float* __restrict__ colours, const float* __restrict__ bgs,
                                  const float* __restrict__ T_final, const int32_t* __restrict__ last_idx,
                                  const float* __restrict__ v_rgb, const float* __restrict__ v_depth,
                                  const float* __restrict__ v_alpha, float* __restrict__ v_proj,
                                  float* __restrict__ v_colours) {
    extern __shared__ float4 smem[];
    __shared__ int s_maxlast;
    const int BS = blockDim.x * blockDim.y;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const unsigned lane = tid & 31u;
    float4* s_co = smem;
    float4* s_cz = smem + BS;
    float4* s_box = smem + 2 * BS;
    float2* s_xy = reinterpret_cast<float2*>(smem + 3 * BS);
    int* s_id = reinterpret_cast<int*>(s_xy + BS);
    float* s_acc = reinterpret_cast<float*>(s_id + BS);  // [BS][kAccStride]

    const int tiles_per_img = p.TW * p.TH;
    const int tile_g = blockIdx.x;
    const int i = tile_g / tiles_per_img;
    const int t = tile_g - i * tiles_per_img;
    const int row = (t / p.TW) * p.ts + threadIdx.y;
    const int col = (t % p.TW) * p.ts + threadIdx.x;
    const bool inside = row < p.H && col < p.W;
    const float px = (float)col + 0.5f, py = (float)row + 0.5f;
    const int start = tile_offsets[tile_g];
    const int end = (tile_g + 1 < p.I * tiles_per_img) ? tile_offsets[tile_g + 1] : M;
    const int64_t set_base = (int64_t)(i / p.P) * p.N;
    const int64_t img_base = (int64_t)i * p.N;
    const float4 wr = warp_rect(tid, p.ts, (t % p.TW) * p.ts, (t / p.TW) * p.ts);

    float T = 1.f, vr = 0.f, vg = 0.f, vb = 0.f, vd = 0.f, vAT = 0.f;
    float aft_r = 0.f, aft_g = 0.f, aft_b = 0.f, aft_d = 0.f;
    int last = start - 1;
    if (inside) {
        int64_t pix = ((int64_t)i * p.H + row) * p.W + col;
        T = T_final[pix];
        last = last_idx[pix];
        vr = v_rgb[pix * 3];
        vg = v_rgb[pix * 3 + 1];
        vb = v_rgb[pix * 3 + 2];
        vd = v_depth[pix];
        vAT = v_alpha[pix] * T;  // d alpha_out / d alpha_j = T_final / (1 - alpha_j)
        aft_r = T * bgs[i * 3];
        aft_g = T * bgs[i * 3 + 1];
        aft_b = T * bgs[i * 3 + 2];
    }
    if (tid == 0) s_maxlast = start - 1;
    for (int q = 0; q < kNGrad; ++q) s_acc[tid * kAccStride + q] = 0.f;
    __syncthreads();
    if (inside && last >= start) atomicMax(&s_maxlast, last);
    __syncthreads();
    const int range_end = min(end, s_maxlast + 1);

    for (int bend = range_end; bend > start; bend -= BS) {
        const int cnt = min(BS, bend - start);
        __syncthreads();
        if (tid < cnt) {
            int id = flat_ids[bend - 1 - tid];
            int64_t gi = set_base + (id - img_base);
            s_id[tid] = id;
            const float2 m = xy[id];
            const float4 co = conic_opac[id];
            s_xy[tid] = m;
            s_co[tid] = co;
            s_box[tid] = contrib_box(m, co);
            s_cz[tid] = make_float4(colours[gi * 3], colours[gi * 3 + 1], colours[gi * 3 + 2], zz[id]);
        }
        __syncthreads();
        for (int j = 0; j < cnt; ++j) {
            if (box_misses(s_box[j], wr)) continue;  // warp-uniform skip
            const int k = bend - 1 - j;
            bool valid = inside && k <= last;
            float4 co = s_co[j];
            float2 m = s_xy[j];
            float dx = px - m.x, dy = py - m.y;
            float sigma = 0.5f * (co.x * dx * dx + co.z * dy * dy) + co.y * dx * dy;
            float vis = __expf(-sigma);
            float raw = co.w * vis;
            float alpha = fminf(p.alpha_clamp, raw);
            valid = valid && !(sigma < 0.f || alpha < kAlphaMin);
            if (!__any_sync(0xffffffffu, valid)) continue;
            float gr[kNGrad];
#pragma unroll
            for (int q = 0; q < kNGrad; ++q) gr[q] = 0.f;
            if (valid) {
                float4 cz = s_cz[j];
                float ra = 1.f / (1.f - alpha);
                T *= ra;
                float w = alpha * T;
                gr[6] = w * vd;
                gr[7] = w * vr;
                gr[8] = w * vg;
                gr[9] = w * vb;
                float v_al = vr * (cz.x * T - aft_r * ra) + vg * (cz.y * T - aft_g * ra) +
                             vb * (cz.z * T - aft_b * ra) + vd * (cz.w * T - aft_d * ra) + vAT * ra;
                aft_r += cz.x * w;
                aft_g += cz.y * w;
                aft_b += cz.z * w;
                aft_d += cz.w * w;
                if (raw <= p.alpha_clamp) {  // the clamp passes no gradient
                    float vs = -raw * v_al;  // d L / d sigma
                    gr[0] = -vs * (co.x * dx + co.y * dy);
                    gr[1] = -vs * (co.y * dx + co.z * dy);
                    gr[2] = 0.5f * vs * dx * dx;
                    gr[3] = vs * dx * dy;
                    gr[4] = 0.5f * vs * dy * dy;
                    gr[5] = vis * v_al;
                }
            }
            // transposing butterfly: 12 shuffles leave each of 10 lanes with one warp sum
            int q;
            const float sum = warp_transpose_sum10(gr, lane, &q);
            if (!(lane & 1u) && q >= 0 && sum != 0.f) atomicAdd(&s_acc[j * kAccStride + q], sum);
        }
        __syncthreads();
        if (tid < cnt) {
            int id = s_id[tid];
            int64_t gi = set_base + (id - img_base);
#pragma unroll
            for (int q = 0; q < 7; ++q) {
                float v = s_acc[tid * kAccStride + q];
                if (v != 0.f) atomicAdd(&v_proj[(int64_t)id * 8 + q], v);
                s_acc[tid * kAccStride + q] = 0.f;
            }
#pragma unroll
            for (int q = 7; q < kNGrad; ++q) {
                float v = s_acc[tid * kAccStride + q];
                if (v != 0.f) atomicAdd(&v_colours[gi * 3 + (q - 7)], v);
                s_acc[tid * kAccStride + q] = 0.f;
            }
        }
    }
}

// One thread per (set, Gaussian), looping over the set's images: the per-set gradients are sums over images,
// accumulated in registers and written once (no atomics).
template <bool DYN>
__global__ void project_bwd_kernel(Params p, const float* __restrict__ means, const float* __restrict__ quats,
                                   const float* __restrict__ scales, const float* __restrict__ opacities,
                                   const float* __restrict__ motion, const float* __restrict__ t0,
                                   const float* __restrict__ gamma0, const float* __restrict__ gamma1,
                                   const float* __restrict__ times, const float* __restrict__ viewmats,
                                   const float* __restrict__ Ks, const float* __restrict__ v_proj,
                                   float* __restrict__ v_means, float* __restrict__ v_quats,
                                   float* __restrict__ v_scales, float* __restrict__ v_opac,
                                   float* __restrict__ v_motion, float* __restrict__ v_g0,
                                   float* __restrict__ v_g1) {
    const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (int64_t)p.S * p.N) return;
    const int s = (int)(g / p.N);
    const int n = (int)(g - (int64_t)s * p.N);
    float a_mean[3] = {0.f, 0.f, 0.f}, a_q[4] = {0.f, 0.f, 0.f, 0.f}, a_s[3] = {0.f, 0.f, 0.f};
    float a_op = 0.f, a_g0 = 0.f, a_g1 = 0.f;
    for (int pi = 0; pi < p.P; ++pi) {
        const int i = s * p.P + pi;
        const int64_t idx = (int64_t)i * p.N + n;
        const float4 va = reinterpret_cast<const float4*>(v_proj)[idx * 2];
        const float4 vb4 = reinterpret_cast<const float4*>(v_proj)[idx * 2 + 1];
        const float v_x = va.x, v_y = va.y, v_ca = va.z, v_cb = va.w, v_cc = vb4.x, v_op = vb4.y, v_z = vb4.z;
        if (v_x == 0.f && v_y == 0.f && v_ca == 0.f && v_cb == 0.f && v_cc == 0.f && v_op == 0.f && v_z == 0.f)
            continue;  // culled or invisible here
        Proj o;
        project_one<DYN>(p, i, g, means, quats, scales, opacities, motion, t0, gamma0, gamma1, times, viewmats, Ks,
                         o, nullptr);
        if (!o.live) continue;
        // conic = inverse(cov2d) -> cov2d (a, b, c)
        const float a = o.a, b = o.b, c = o.c;
        const float id2 = 1.f / (o.det * o.det);
        const float v_a = (-c * c * v_ca + b * c * v_cb - b * b * v_cc) * id2;
        const float v_b = (2.f * b * c * v_ca - (a * c + b * b) * v_cb + 2.f * a * b * v_cc) * id2;
        const float v_c = (-b * b * v_ca + a * b * v_cb - a * a * v_cc) * id2;
        // Sc2 = A A^T with A = Rv[0:2] M: dL/dA = 2 G A, G = [[fx^2 v_a, fx fy v_b / 2], [., fy^2 v_c]]
        const float G00 = o.fx * o.fx * v_a, G01 = 0.5f * o.fx * o.fy * v_b, G11 = o.fy * o.fy * v_c;
        float A[6], GA[6], GM[9];
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int cc = 0; cc < 3; ++cc)
                A[r * 3 + cc] =
                    o.Rv[r * 3] * o.M[cc] + o.Rv[r * 3 + 1] * o.M[3 + cc] + o.Rv[r * 3 + 2] * o.M[6 + cc];
#pragma unroll
        for (int cc = 0; cc < 3; ++cc) {
            GA[cc] = 2.f * (G00 * A[cc] + G01 * A[3 + cc]);
            GA[3 + cc] = 2.f * (G01 * A[cc] + G11 * A[3 + cc]);
        }
#pragma unroll
        for (int r = 0; r < 3; ++r)
#pragma unroll
            for (int cc = 0; cc < 3; ++cc) GM[r * 3 + cc] = o.Rv[r] * GA[cc] + o.Rv[3 + r] * GA[3 + cc];
        // M = Rq diag(s)
        float G[9];
#pragma unroll
        for (int r = 0; r < 3; ++r)
#pragma unroll
            for (int cc = 0; cc < 3; ++cc) {
                G[r * 3 + cc] = GM[r * 3 + cc] * o.s[cc];
                a_s[cc] += GM[r * 3 + cc] * o.Rq[r * 3 + cc];
            }
        const float w = o.qn[0], x = o.qn[1], y = o.qn[2], z = o.qn[3];
        float vq[4];
        vq[0] = 2.f * (-z * G[1] + y * G[2] + z * G[3] - x * G[5] - y * G[6] + x * G[7]);
        vq[1] = 2.f * (y * G[1] + z * G[2] + y * G[3] - 2.f * x * G[4] - w * G[5] + z * G[6] + w * G[7] -
                       2.f * x * G[8]);
        vq[2] = 2.f * (-2.f * y * G[0] + x * G[1] + w * G[2] + x * G[3] + z * G[5] - w * G[6] + z * G[7] -
                       2.f * y * G[8]);
        vq[3] = 2.f * (-2.f * z * G[0] - w * G[1] + x * G[2] + w * G[3] - 2.f * z * G[4] + y * G[5] + x * G[6] +
                       y * G[7]);
        const float dotq = vq[0] * w + vq[1] * x + vq[2] * y + vq[3] * z;
        const float inv_n = 1.f / o.qnorm;
#pragma unroll
        for (int k = 0; k < 4; ++k) a_q[k] += (vq[k] - o.qn[k] * dotq) * inv_n;
        // mean: p_c = Rv p + t, mean2d = (fx p_c.x + cx, fy p_c.y + cy), depth = p_c.z
        const float vpx = o.fx * v_x, vpy = o.fy * v_y, vpz = v_z;
        float vw[3];
#pragma unroll
        for (int k = 0; k < 3; ++k) vw[k] = o.Rv[k] * vpx + o.Rv[3 + k] * vpy + o.Rv[6 + k] * vpz;
        if (DYN) {
            const float dep = o.p_world.y;
            vw[1] = vw[1] * (-p.depth_b * dep * dep);  // d depth / d y_hat
            float pw = 1.f;
            for (int k = 0; k < p.K; ++k) {  // this thread owns these motion entries: plain read-modify-write
                pw *= o.dt;
                float* vm = v_motion + (g * p.K + k) * 3;
                vm[0] += vw[0] * pw;
                vm[1] += vw[1] * pw;
                vm[2] += vw[2] * pw;
            }
            const float g0 = gamma0[g], g1 = gamma1[g];
            a_op += v_op * o.su / o.sw;
            const float vo = v_op * o.opac;
            a_g0 += vo * ((1.f - o.su) * (g1 - fabsf(o.dt)) - (1.f - o.sw) * g1);
            a_g1 += vo * (o.sw - o.su) * g0;
        } else {
            a_op += v_op;
        }
#pragma unroll
        for (int k = 0; k < 3; ++k) a_mean[k] += vw[k];
    }
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        v_means[g * 3 + k] = a_mean[k];
        v_scales[g * 3 + k] = a_s[k];
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) v_quats[g * 4 + k] = a_q[k];
    v_opac[g] = a_op;
    if (DYN) {
        v_g0[g] = a_g0;
        v_g1[g] = a_g1;
    }
}

inline int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

Params make_params(const at::Tensor& means, const at::Tensor& motion, const at::Tensor& viewmats, int64_t width,
                   int64_t height, double alpha_clamp, double near_plane, double far_plane, double depth_a,
                   double depth_b, int64_t tile_size, int64_t imgs_per_set, bool dynamic) {
    Params p;
    p.S = (int)means.size(0);
    p.N = (int)means.size(1);
    p.I = (int)viewmats.size(0);
    p.P = (int)imgs_per_set;
    p.K = dynamic ? (int)motion.size(2) : 0;
    p.W = (int)width;
    p.H = (int)height;
    p.ts = (int)tile_size;
    p.TW = (int)((width + tile_size - 1) / tile_size);
    p.TH = (int)((height + tile_size - 1) / tile_size);
    p.near_plane = (float)near_plane;
    p.far_plane = (float)far_plane;
    p.depth_a = (float)depth_a;
    p.depth_b = (float)depth_b;
    p.alpha_clamp = (float)alpha_clamp;
    TORCH_CHECK(p.P >= 1 && (int64_t)p.S * p.P == p.I, "rasterize: sets x images-per-set must equal images");
    TORCH_CHECK((int64_t)p.I * p.N < (int64_t)INT32_MAX, "rasterize: images x Gaussians must stay below 2^31");
    TORCH_CHECK(p.ts * p.ts <= 1024 && (p.ts * p.ts) % 32 == 0, "rasterize: tile_size^2 must be a multiple of 32, <= 1024");
    return p;
}

inline const float* fptr(const at::Tensor& t) { return t.numel() ? t.data_ptr<float>() : nullptr; }

}  // namespace

std::vector<at::Tensor> rasterize_forward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales, const at::Tensor& opacities,
    const at::Tensor& colours, const at::Tensor& motion, const at::Tensor& t0, const at::Tensor& gamma0,
    const at::Tensor& gamma1, const at::Tensor& times, const at::Tensor& viewmats, const at::Tensor& Ks,
    const at::Tensor& backgrounds, int64_t width, int64_t height, double alpha_clamp, double near_plane,
    double far_plane, double depth_a, double depth_b, int64_t tile_size, int64_t imgs_per_set, bool dynamic) {
    const at::cuda::CUDAGuard guard(means.device());
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    Params p = make_params(means, motion, viewmats, width, height, alpha_clamp, near_plane, far_plane, depth_a,
                           depth_b, tile_size, imgs_per_set, dynamic);
    auto fopt = means.options();
    auto iopt = fopt.dtype(at::kInt);
    const int64_t IN = (int64_t)p.I * p.N;
    at::Tensor xy = at::empty({IN, 2}, fopt), conic = at::empty({IN, 4}, fopt), z = at::empty({IN}, fopt);
    at::Tensor info = at::zeros({2}, iopt);
    int M = 0;
    at::Tensor radii, cum;
    if (IN > 0) {
        radii = at::empty({IN}, iopt);
        at::Tensor ntiles = at::empty({IN}, iopt);
        cum = at::empty({IN}, iopt);
        const int blocks = ceil_div(IN, 256);
#define SSNS_PROJ_ARGS                                                                                           \
    p, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(), opacities.data_ptr<float>(),    \
        colours.data_ptr<float>(), fptr(motion), fptr(t0), fptr(gamma0), fptr(gamma1), fptr(times),               \
        viewmats.data_ptr<float>(), Ks.data_ptr<float>(), backgrounds.data_ptr<float>(),                          \
        reinterpret_cast<float2*>(xy.data_ptr<float>()), reinterpret_cast<float4*>(conic.data_ptr<float>()),      \
        z.data_ptr<float>(), radii.data_ptr<int32_t>(), ntiles.data_ptr<int32_t>(), info.data_ptr<int32_t>() + 1
        if (dynamic)
            project_fwd_kernel<true><<<blocks, 256, 0, stream>>>(SSNS_PROJ_ARGS);
        else
            project_fwd_kernel<false><<<blocks, 256, 0, stream>>>(SSNS_PROJ_ARGS);
#undef SSNS_PROJ_ARGS
        SSNS_CHECK_LAUNCH();
        size_t tmp_bytes = 0;
        cub::DeviceScan::InclusiveSum(nullptr, tmp_bytes, ntiles.data_ptr<int32_t>(), cum.data_ptr<int32_t>(),
                                      (int)IN, stream);
        at::Tensor tmp = at::empty({(int64_t)tmp_bytes + 1}, fopt.dtype(at::kByte));
        cub::DeviceScan::InclusiveSum(tmp.data_ptr(), tmp_bytes, ntiles.data_ptr<int32_t>(),
                                      cum.data_ptr<int32_t>(), (int)IN, stream);
        finish_scan_kernel<<<1, 1, 0, stream>>>(cum.data_ptr<int32_t>(), IN, info.data_ptr<int32_t>());
        SSNS_CHECK_LAUNCH();
    }
    at::Tensor info_h = info.to(at::kCPU).to(at::kLong);  // the one host sync: the intersection count
    M = (int)info_h[0].item<int64_t>();
    if (info_h[1].item<int64_t>() != 0) {
        at::Tensor e = at::empty({0}, fopt);
        return {e, e, e, e, e, e, e, e, e, e, info_h};
    }
    const int64_t num_tiles = (int64_t)p.I * p.TW * p.TH;
    int tile_bits = 0;
    while (tile_bits < 63 && ((int64_t)1 << tile_bits) < num_tiles) ++tile_bits;
    TORCH_CHECK(tile_bits <= 32, "rasterize: too many images x tiles for a 64-bit sort key");
    at::Tensor offsets = at::zeros({num_tiles}, iopt);
    at::Tensor flat_ids;
    if (M > 0) {
        auto lopt = fopt.dtype(at::kLong);
        at::Tensor keys_a = at::empty({M}, lopt), keys_b = at::empty({M}, lopt);
        at::Tensor vals_a = at::empty({M}, iopt), vals_b = at::empty({M}, iopt);
        isect_kernel<<<ceil_div(IN, 256), 256, 0, stream>>>(
            p, reinterpret_cast<const float2*>(xy.data_ptr<float>()), z.data_ptr<float>(),
            radii.data_ptr<int32_t>(), cum.data_ptr<int32_t>(),
            reinterpret_cast<uint64_t*>(keys_a.data_ptr<int64_t>()), vals_a.data_ptr<int32_t>());
        SSNS_CHECK_LAUNCH();
        radii.reset();
        cum.reset();
        cub::DoubleBuffer<uint64_t> dk(reinterpret_cast<uint64_t*>(keys_a.data_ptr<int64_t>()),
                                       reinterpret_cast<uint64_t*>(keys_b.data_ptr<int64_t>()));
        cub::DoubleBuffer<int32_t> dv(vals_a.data_ptr<int32_t>(), vals_b.data_ptr<int32_t>());
        size_t tmp_bytes = 0;
        cub::DeviceRadixSort::SortPairs(nullptr, tmp_bytes, dk, dv, M, 0, 32 + tile_bits, stream);
        at::Tensor tmp = at::empty({(int64_t)tmp_bytes + 1}, fopt.dtype(at::kByte));
        // stable radix sort: equal (image, tile, depth) keys keep ascending Gaussian index
        cub::DeviceRadixSort::SortPairs(tmp.data_ptr(), tmp_bytes, dk, dv, M, 0, 32 + tile_bits, stream);
        const bool in_a = dk.Current() == reinterpret_cast<uint64_t*>(keys_a.data_ptr<int64_t>());
        flat_ids = (dv.Current() == vals_a.data_ptr<int32_t>()) ? vals_a : vals_b;
        tile_offsets_kernel<<<ceil_div(M, 256), 256, 0, stream>>>(M, (int)num_tiles, dk.Current(),
                                                                 offsets.data_ptr<int32_t>());
        SSNS_CHECK_LAUNCH();
        (void)in_a;
    } else {
        flat_ids = at::empty({0}, iopt);
    }
    at::Tensor rgb = at::empty({p.I, p.H, p.W, 3}, fopt);
    at::Tensor depth = at::empty({p.I, p.H, p.W, 1}, fopt);
    at::Tensor alpha = at::empty({p.I, p.H, p.W, 1}, fopt);
    at::Tensor T_final = at::empty({p.I, p.H, p.W}, fopt);
    at::Tensor last = at::empty({p.I, p.H, p.W}, iopt);
    if (num_tiles > 0) {
        const int BS = p.ts * p.ts;
        const size_t smem = (size_t)BS * (3 * sizeof(float4) + sizeof(float2));
        raster_fwd_kernel<<<(unsigned)num_tiles, dim3(p.ts, p.ts), smem, stream>>>(
            p, M, offsets.data_ptr<int32_t>(), M > 0 ? flat_ids.data_ptr<int32_t>() : nullptr,
            reinterpret_cast<const float2*>(xy.data_ptr<float>()),
            reinterpret_cast<const float4*>(conic.data_ptr<float>()), z.data_ptr<float>(), fptr(colours),
            backgrounds.data_ptr<float>(), rgb.data_ptr<float>(), depth.data_ptr<float>(), alpha.data_ptr<float>(),
            T_final.data_ptr<float>(), last.data_ptr<int32_t>());
        SSNS_CHECK_LAUNCH();
    }
    return {rgb, depth, alpha, T_final, last, xy, conic, z, flat_ids, offsets, info_h};
}

std::vector<at::Tensor> rasterize_backward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales, const at::Tensor& opacities,
    const at::Tensor& colours, const at::Tensor& motion, const at::Tensor& t0, const at::Tensor& gamma0,
    const at::Tensor& gamma1, const at::Tensor& times, const at::Tensor& viewmats, const at::Tensor& Ks,
    const at::Tensor& backgrounds, const at::Tensor& xy, const at::Tensor& conic_opac, const at::Tensor& z,
    const at::Tensor& flat_ids, const at::Tensor& tile_offsets, const at::Tensor& T_final,
    const at::Tensor& last, const at::Tensor& v_rgb, const at::Tensor& v_depth, const at::Tensor& v_alpha,
    int64_t width, int64_t height, double alpha_clamp, double near_plane, double far_plane, double depth_a,
    double depth_b, int64_t tile_size, int64_t imgs_per_set, bool dynamic) {
    const at::cuda::CUDAGuard guard(means.device());
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    Params p = make_params(means, motion, viewmats, width, height, alpha_clamp, near_plane, far_plane, depth_a,
                           depth_b, tile_size, imgs_per_set, dynamic);
    const int64_t IN = (int64_t)p.I * p.N;
    const int M = (int)flat_ids.numel();
    auto fopt = means.options();
    at::Tensor v_means = at::zeros_like(means), v_quats = at::zeros_like(quats), v_scales = at::zeros_like(scales);
    at::Tensor v_opac = at::zeros_like(opacities), v_colours = at::zeros_like(colours);
    at::Tensor v_motion = dynamic ? at::zeros_like(motion) : at::empty({0}, fopt);
    at::Tensor v_g0 = dynamic ? at::zeros_like(gamma0) : at::empty({0}, fopt);
    at::Tensor v_g1 = dynamic ? at::zeros_like(gamma1) : at::empty({0}, fopt);
    at::Tensor v_bg = (v_rgb * T_final.unsqueeze(-1)).sum({1, 2});
    if (IN > 0 && M > 0) {
        at::Tensor v_proj = at::zeros({IN, 8}, fopt);
        const int64_t num_tiles = (int64_t)p.I * p.TW * p.TH;
        const int BS = p.ts * p.ts;
        const size_t smem = (size_t)BS * (3 * sizeof(float4) + sizeof(float2) + sizeof(int) + kAccStride * sizeof(float));
        raster_bwd_kernel<<<(unsigned)num_tiles, dim3(p.ts, p.ts), smem, stream>>>(
            p, M, tile_offsets.data_ptr<int32_t>(), flat_ids.data_ptr<int32_t>(),
            reinterpret_cast<const float2*>(xy.data_ptr<float>()),
            reinterpret_cast<const float4*>(conic_opac.data_ptr<float>()), z.data_ptr<float>(),
            colours.data_ptr<float>(), backgrounds.data_ptr<float>(), T_final.data_ptr<float>(),
            last.data_ptr<int32_t>(), v_rgb.data_ptr<float>(), v_depth.data_ptr<float>(), v_alpha.data_ptr<float>(),
            v_proj.data_ptr<float>(), v_colours.data_ptr<float>());
        SSNS_CHECK_LAUNCH();
        const int blocks = ceil_div((int64_t)p.S * p.N, 256);
#define SSNS_PBWD_ARGS                                                                                         \
    p, means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(), opacities.data_ptr<float>(),  \
        fptr(motion), fptr(t0), fptr(gamma0), fptr(gamma1), fptr(times), viewmats.data_ptr<float>(),            \
        Ks.data_ptr<float>(), v_proj.data_ptr<float>(), v_means.data_ptr<float>(), v_quats.data_ptr<float>(),    \
        v_scales.data_ptr<float>(), v_opac.data_ptr<float>(), dynamic ? v_motion.data_ptr<float>() : nullptr,   \
        dynamic ? v_g0.data_ptr<float>() : nullptr, dynamic ? v_g1.data_ptr<float>() : nullptr
        if (dynamic)
            project_bwd_kernel<true><<<blocks, 256, 0, stream>>>(SSNS_PBWD_ARGS);
        else
            project_bwd_kernel<false><<<blocks, 256, 0, stream>>>(SSNS_PBWD_ARGS);
#undef SSNS_PBWD_ARGS
        SSNS_CHECK_LAUNCH();
    }
    return {v_means, v_quats, v_scales, v_opac, v_colours, v_motion, v_g0, v_g1, v_bg};
}

}  // namespace ssns

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


// Shared by the kernels of projection.cu, forward.cu and backward.cu: constants, launch parameters, small
// device helpers (quaternion, tile rectangle, contribution box, tile set-up) and the host-side glue.
// Semantics: docs/rasterizer.md.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ssns {
namespace detail {

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

__device__ __forceinline__ void tile_rect(const Params& p, float2 xy, int radius, int& x0, int& x1, int& y0,
                                          int& y1) {
    float r = (float)radius / (float)p.ts;
    float tx = xy.x / (float)p.ts, ty = xy.y / (float)p.ts;
    x0 = min(max((int)floorf(tx - r), 0), p.TW);
    x1 = min(max((int)ceilf(tx + r), 0), p.TW);
    y0 = min(max((int)floorf(ty - r), 0), p.TH);
    y1 = min(max((int)ceilf(ty + r), 0), p.TH);
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

// Where one thread of a tile-raster kernel sits (one block per (image, tile), one thread per pixel): the image,
// the pixel, and the tile's range [start, end) of sorted intersections. Shared by the forward and backward blends.
struct TileCtx {
    int i, t, row, col;
    bool inside;
    float px, py;
    int start, end;
    int64_t set_base, img_base;
    float4 wr;
};

__device__ __forceinline__ TileCtx tile_setup(const Params& p, int M, const int32_t* __restrict__ tile_offsets,
                                              int tid) {
    TileCtx c;
    const int tiles_per_img = p.TW * p.TH;
    const int tile_g = blockIdx.x;
    c.i = tile_g / tiles_per_img;
    c.t = tile_g - c.i * tiles_per_img;
    c.row = (c.t / p.TW) * p.ts + threadIdx.y;
    c.col = (c.t % p.TW) * p.ts + threadIdx.x;
    c.inside = c.row < p.H && c.col < p.W;
    c.px = (float)c.col + 0.5f;
    c.py = (float)c.row + 0.5f;
    c.start = tile_offsets[tile_g];
    c.end = (tile_g + 1 < p.I * tiles_per_img) ? tile_offsets[tile_g + 1] : M;
    c.set_base = (int64_t)(c.i / p.P) * p.N;
    c.img_base = (int64_t)c.i * p.N;
    c.wr = warp_rect(tid, p.ts, (c.t % p.TW) * p.ts, (c.t / p.TW) * p.ts);
    return c;
}

// The Gaussians of a tile, staged through shared memory a block at a time (BS = threads per block).
struct TileSmem {
    float4* co;   // conic + opacity
    float4* cz;   // colour + depth
    float4* box;  // contrib_box
    float2* xy;   // mean 2D
};

__device__ __forceinline__ TileSmem tile_smem(float4* smem, int BS) {
    return {smem, smem + BS, smem + 2 * BS, reinterpret_cast<float2*>(smem + 3 * BS)};
}

// Stage intersection `id` (an (image, Gaussian) index; its colour row is gi) into shared slot `slot`.
__device__ __forceinline__ void stage_gaussian(const TileSmem& s, int slot, int id, int64_t gi,
                                               const float2* __restrict__ xy, const float4* __restrict__ conic_opac,
                                               const float* __restrict__ colours, const float* __restrict__ zz) {
    const float2 m = xy[id];
    const float4 co = conic_opac[id];
    s.xy[slot] = m;
    s.co[slot] = co;
    s.box[slot] = contrib_box(m, co);
    s.cz[slot] = make_float4(colours[gi * 3], colours[gi * 3 + 1], colours[gi * 3 + 2], zz[id]);
}

// Raw pointers of one render's inputs (motion, t0, gamma0, gamma1, times are null when not dynamic).
struct Inputs {
    const float *means, *quats, *scales, *opacities, *colours, *motion, *t0, *gamma0, *gamma1, *times, *viewmats, *Ks,
        *bgs;
};

inline int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

inline Params make_params(const at::Tensor& means, const at::Tensor& motion, const at::Tensor& viewmats, int64_t width,
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

inline Inputs inputs_of(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                        const at::Tensor& opacities, const at::Tensor& colours, const at::Tensor& motion,
                        const at::Tensor& t0, const at::Tensor& gamma0, const at::Tensor& gamma1,
                        const at::Tensor& times, const at::Tensor& viewmats, const at::Tensor& Ks,
                        const at::Tensor& backgrounds) {
    return {means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(), opacities.data_ptr<float>(),
            colours.data_ptr<float>(), fptr(motion), fptr(t0), fptr(gamma0), fptr(gamma1), fptr(times),
            viewmats.data_ptr<float>(), Ks.data_ptr<float>(), backgrounds.data_ptr<float>()};
}

// projection.cu: one thread per (image, Gaussian) -> mean 2D, conic + opacity, depth, radius, tile count
// (flags collects the NaN bits of the inputs).
void project_forward(const Params& p, bool dynamic, const Inputs& in, float2* xy, float4* conic, float* z,
                     int32_t* radii, int32_t* ntiles, int* flags, cudaStream_t stream);

// projection.cu: one thread per (set, Gaussian): the per-image 2D gradients v_proj [I*N, 8] -> parameter gradients.
void project_backward(const Params& p, bool dynamic, const Inputs& in, const float* v_proj, float* v_means,
                      float* v_quats, float* v_scales, float* v_opac, float* v_motion, float* v_g0, float* v_g1,
                      cudaStream_t stream);

}  // namespace detail
}  // namespace ssns

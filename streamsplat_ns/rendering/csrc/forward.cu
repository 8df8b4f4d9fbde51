// Forward pass of the orthographic rasterizer: projection -> tile counts -> prefix sum -> (image, tile, depth)
// keys -> radix sort -> tile ranges -> tiled front-to-back blend.
// Exact semantics: docs/rasterizer.md (both backends agree to float rounding).
#include "common.cuh"
#include "rasterizer.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cub/cub.cuh>

namespace ssns {
namespace detail {
namespace {

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
    const TileSmem s = tile_smem(smem, BS);
    const TileCtx c = tile_setup(p, M, tile_offsets, tid);

    float T = 1.f, r = 0.f, g = 0.f, b = 0.f, d = 0.f;
    int last = c.start - 1;
    bool done = !c.inside;
    for (int bstart = c.start; bstart < c.end; bstart += BS) {
        if (__syncthreads_count(done) == BS) break;
        int k = bstart + tid;
        if (k < c.end) {
            int id = flat_ids[k];
            int64_t gi = c.set_base + (id - c.img_base);
            stage_gaussian(s, tid, id, gi, xy, conic_opac, colours, zz);
        }
        __syncthreads();
        int cnt = min(BS, c.end - bstart);
        for (int j = 0; j < cnt && !done; ++j) {
            if (box_misses(s.box[j], c.wr)) continue;  // warp-uniform: no pixel of this warp can pass 1/255
            float4 co = s.co[j];
            float2 m = s.xy[j];
            float dx = c.px - m.x, dy = c.py - m.y;
            float sigma = 0.5f * (co.x * dx * dx + co.z * dy * dy) + co.y * dx * dy;
            float alpha = fminf(p.alpha_clamp, co.w * __expf(-sigma));
            if (sigma < 0.f || alpha < kAlphaMin) continue;
            float nT = T * (1.f - alpha);
            if (nT <= kTMin) {
                done = true;
                break;
            }
            float w = alpha * T;
            float4 cz = s.cz[j];
            r += w * cz.x;
            g += w * cz.y;
            b += w * cz.z;
            d += w * cz.w;
            T = nT;
            last = bstart + j;
        }
    }
    if (c.inside) {
        int64_t pix = ((int64_t)c.i * p.H + c.row) * p.W + c.col;
        out_rgb[pix * 3 + 0] = r + T * bgs[c.i * 3 + 0];
        out_rgb[pix * 3 + 1] = g + T * bgs[c.i * 3 + 1];
        out_rgb[pix * 3 + 2] = b + T * bgs[c.i * 3 + 2];
        out_depth[pix] = d;
        out_alpha[pix] = 1.f - T;
        out_T[pix] = T;
        out_last[pix] = last;
    }
}

}  // namespace
}  // namespace detail

using namespace detail;

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
        project_forward(p, dynamic,
                        inputs_of(means, quats, scales, opacities, colours, motion, t0, gamma0, gamma1, times, viewmats,
                                  Ks, backgrounds),
                        reinterpret_cast<float2*>(xy.data_ptr<float>()), reinterpret_cast<float4*>(conic.data_ptr<float>()),
                        z.data_ptr<float>(), radii.data_ptr<int32_t>(), ntiles.data_ptr<int32_t>(),
                        info.data_ptr<int32_t>() + 1, stream);
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

}  // namespace ssns

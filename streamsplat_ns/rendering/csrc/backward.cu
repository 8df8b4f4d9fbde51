// Backward pass of the orthographic rasterizer: back-to-front replay of the blend with warp reductions, then
// the projection backward (projection.cu). Exact semantics: docs/rasterizer.md.
#include "common.cuh"
#include "rasterizer.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

namespace ssns {
namespace detail {
namespace {

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
    const TileSmem s = tile_smem(smem, BS);
    int* s_id = reinterpret_cast<int*>(s.xy + BS);
    float* s_acc = reinterpret_cast<float*>(s_id + BS);  // [BS][kAccStride]
    const TileCtx c = tile_setup(p, M, tile_offsets, tid);

    float T = 1.f, vr = 0.f, vg = 0.f, vb = 0.f, vd = 0.f, vAT = 0.f;
    float aft_r = 0.f, aft_g = 0.f, aft_b = 0.f, aft_d = 0.f;
    int last = c.start - 1;
    if (c.inside) {
        int64_t pix = ((int64_t)c.i * p.H + c.row) * p.W + c.col;
        T = T_final[pix];
        last = last_idx[pix];
        vr = v_rgb[pix * 3];
        vg = v_rgb[pix * 3 + 1];
        vb = v_rgb[pix * 3 + 2];
        vd = v_depth[pix];
        vAT = v_alpha[pix] * T;  // d alpha_out / d alpha_j = T_final / (1 - alpha_j)
        aft_r = T * bgs[c.i * 3];
        aft_g = T * bgs[c.i * 3 + 1];
        aft_b = T * bgs[c.i * 3 + 2];
    }
    if (tid == 0) s_maxlast = c.start - 1;
    for (int q = 0; q < kNGrad; ++q) s_acc[tid * kAccStride + q] = 0.f;
    __syncthreads();
    if (c.inside && last >= c.start) atomicMax(&s_maxlast, last);
    __syncthreads();
    const int range_end = min(c.end, s_maxlast + 1);

    for (int bend = range_end; bend > c.start; bend -= BS) {
        const int cnt = min(BS, bend - c.start);
        __syncthreads();
        if (tid < cnt) {
            int id = flat_ids[bend - 1 - tid];
            int64_t gi = c.set_base + (id - c.img_base);
            s_id[tid] = id;
            stage_gaussian(s, tid, id, gi, xy, conic_opac, colours, zz);
        }
        __syncthreads();
        for (int j = 0; j < cnt; ++j) {
            if (box_misses(s.box[j], c.wr)) continue;  // warp-uniform skip
            const int k = bend - 1 - j;
            bool valid = c.inside && k <= last;
            float4 co = s.co[j];
            float2 m = s.xy[j];
            float dx = c.px - m.x, dy = c.py - m.y;
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
                float4 cz = s.cz[j];
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
            int64_t gi = c.set_base + (id - c.img_base);
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

}  // namespace
}  // namespace detail

using namespace detail;

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
        project_backward(p, dynamic,
                         inputs_of(means, quats, scales, opacities, colours, motion, t0, gamma0, gamma1, times,
                                   viewmats, Ks, backgrounds),
                         v_proj.data_ptr<float>(), v_means.data_ptr<float>(), v_quats.data_ptr<float>(),
                         v_scales.data_ptr<float>(), v_opac.data_ptr<float>(),
                         dynamic ? v_motion.data_ptr<float>() : nullptr, dynamic ? v_g0.data_ptr<float>() : nullptr,
                         dynamic ? v_g1.data_ptr<float>() : nullptr, stream);
    }
    return {v_means, v_quats, v_scales, v_opac, v_colours, v_motion, v_g0, v_g1, v_bg};
}

}  // namespace ssns

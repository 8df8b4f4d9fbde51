// Projection of the orthographic rasterizer (+ fused motion / opacity life-cycle) and its backward.
// Semantics: docs/rasterizer.md.
#include "common.cuh"

namespace ssns {
namespace detail {
namespace {

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

}  // namespace

void project_forward(const Params& p, bool dynamic, const Inputs& in, float2* xy, float4* conic, float* z,
                     int32_t* radii, int32_t* ntiles, int* flags, cudaStream_t stream) {
    const int blocks = ceil_div((int64_t)p.I * p.N, 256);
    auto* kernel = dynamic ? project_fwd_kernel<true> : project_fwd_kernel<false>;
    kernel<<<blocks, 256, 0, stream>>>(p, in.means, in.quats, in.scales, in.opacities, in.colours, in.motion, in.t0,
                                       in.gamma0, in.gamma1, in.times, in.viewmats, in.Ks, in.bgs, xy, conic, z,
                                       radii, ntiles, flags);
    SSNS_CHECK_LAUNCH();
}

void project_backward(const Params& p, bool dynamic, const Inputs& in, const float* v_proj, float* v_means,
                      float* v_quats, float* v_scales, float* v_opac, float* v_motion, float* v_g0, float* v_g1,
                      cudaStream_t stream) {
    const int blocks = ceil_div((int64_t)p.S * p.N, 256);
    auto* kernel = dynamic ? project_bwd_kernel<true> : project_bwd_kernel<false>;
    kernel<<<blocks, 256, 0, stream>>>(p, in.means, in.quats, in.scales, in.opacities, in.motion, in.t0, in.gamma0,
                                       in.gamma1, in.times, in.viewmats, in.Ks, v_proj, v_means, v_quats, v_scales,
                                       v_opac, v_motion, v_g0, v_g1);
    SSNS_CHECK_LAUNCH();
}

}  // namespace detail
}  // namespace ssns

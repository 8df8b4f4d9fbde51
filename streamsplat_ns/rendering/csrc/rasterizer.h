// Orthographic Gaussian rasterizer (forward + backward) with optional fused motion / opacity life-cycle.
// Semantics: docs/rasterizer.md. Host entry points are implemented in rasterizer.cu and bound in ext.cpp.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace ssns {

// Gaussians are given per "set" ([S, N, ...]); image i uses set i / imgs_per_set. Static renders use
// imgs_per_set = I (shared Gaussians) or 1 (one set per image); dynamic renders use imgs_per_set = T.
// When `dynamic` is false, motion/t0/gamma0/gamma1/times are ignored (pass empty tensors).
//
// Returns {rgb [I,H,W,3], depth [I,H,W,1], alpha [I,H,W,1], T_final [I,H,W], last [I,H,W] int32,
//          xy [I*N,2], conic_opac [I*N,4], z [I*N], flat_ids [M] int32, tile_offsets [I*TW*TH] int32,
//          info (CPU int64 [2] = {M, nan flags})}.
// When info[1] != 0 the render was not done (an input holds NaN) and the other outputs are empty.
std::vector<at::Tensor> rasterize_forward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales, const at::Tensor& opacities,
    const at::Tensor& colours, const at::Tensor& motion, const at::Tensor& t0, const at::Tensor& gamma0,
    const at::Tensor& gamma1, const at::Tensor& times, const at::Tensor& viewmats, const at::Tensor& Ks,
    const at::Tensor& backgrounds, int64_t width, int64_t height, double alpha_clamp, double near_plane,
    double far_plane, double depth_a, double depth_b, int64_t tile_size, int64_t imgs_per_set, bool dynamic);

// Returns {v_means, v_quats, v_scales, v_opacities, v_colours, v_motion, v_gamma0, v_gamma1, v_backgrounds}
// (v_motion / v_gamma* are empty when not dynamic).
std::vector<at::Tensor> rasterize_backward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales, const at::Tensor& opacities,
    const at::Tensor& colours, const at::Tensor& motion, const at::Tensor& t0, const at::Tensor& gamma0,
    const at::Tensor& gamma1, const at::Tensor& times, const at::Tensor& viewmats, const at::Tensor& Ks,
    const at::Tensor& backgrounds, const at::Tensor& xy, const at::Tensor& conic_opac, const at::Tensor& z,
    const at::Tensor& flat_ids, const at::Tensor& tile_offsets, const at::Tensor& T_final,
    const at::Tensor& last, const at::Tensor& v_rgb, const at::Tensor& v_depth, const at::Tensor& v_alpha,
    int64_t width, int64_t height, double alpha_clamp, double near_plane, double far_plane, double depth_a,
    double depth_b, int64_t tile_size, int64_t imgs_per_set, bool dynamic);

}  // namespace ssns

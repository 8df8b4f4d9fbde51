"""Exact pure-PyTorch orthographic rasterizer (the reference the CUDA kernels are tested against).

It follows docs/rasterizer.md step by step, including gsplat's tile membership (a Gaussian is only
evaluated in the 16x16 tiles its 3-sigma box touches), the 1/255 skip and the 1e-4 transmittance stop,
so its output equals the CUDA backend's and gsplat's up to float rounding. Compositing is vectorised
per tile: each tile's depth-sorted list is padded, front-to-back transmittance is a cumulative product,
and the early stop is the prefix where that product stays above 1e-4. Tiles are processed in chunks of
similar list length so memory stays bounded and little work is spent on padding. Everything is plain
autograd, so it runs on CPU and GPU and supports float64 gradcheck.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.utils.checkpoint import checkpoint

ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
EPS2D = 0.3


class Projected(NamedTuple):
    means2d: Float[Tensor, "I N 2"]
    conics: Float[Tensor, "I N 3"]
    depths: Float[Tensor, "I N"]
    radii: Int[Tensor, "I N"]  # 0 = culled


def quat_to_rotmat(quats: Float[Tensor, "*b 4"]) -> Float[Tensor, "*b 3 3"]:
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def project(
    means: Float[Tensor, "Ib N 3"],
    quats: Float[Tensor, "Ib N 4"],
    scales: Float[Tensor, "Ib N 3"],
    viewmats: Float[Tensor, "I 4 4"],
    Ks: Float[Tensor, "I 3 3"],
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
) -> Projected:
    """EWA projection with the constant orthographic Jacobian diag(fx, fy)."""
    R = viewmats[:, None, :3, :3]  # [I,1,3,3]
    t = viewmats[:, None, :3, 3]  # [I,1,3]
    p_c = (R @ means[..., None]).squeeze(-1) + t  # [I,N,3]
    M = quat_to_rotmat(quats) * scales[..., None, :]  # R S
    cov = M @ M.transpose(-1, -2)  # [Ib,N,3,3]
    cov_c = R @ cov @ R.transpose(-1, -2)  # [I,N,3,3]
    fx, fy = Ks[:, None, 0, 0], Ks[:, None, 1, 1]
    cx, cy = Ks[:, None, 0, 2], Ks[:, None, 1, 2]
    a = fx * fx * cov_c[..., 0, 0] + EPS2D
    b = fx * fy * cov_c[..., 0, 1]
    c = fy * fy * cov_c[..., 1, 1] + EPS2D
    det = a * c - b * b
    mean2d = torch.stack([fx * p_c[..., 0] + cx, fy * p_c[..., 1] + cy], dim=-1)
    depth = p_c[..., 2]
    with torch.no_grad():
        valid = (depth >= near_plane) & (depth <= far_plane) & (det > 0)
        half = 0.5 * (a + c)
        v1 = half + torch.sqrt(torch.clamp(half * half - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))
        mx, my = mean2d[..., 0], mean2d[..., 1]
        valid &= radius > 0
        valid &= ~((mx + radius <= 0) | (mx - radius >= width) | (my + radius <= 0) | (my - radius >= height))
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    conics = torch.where(valid[..., None], conics, torch.zeros_like(conics))
    return Projected(mean2d, conics, depth, radii)


def tile_intersections(
    proj: Projected, width: int, height: int, tile_size: int
) -> Tuple[Tensor, Tensor, Tensor, int, int]:
    """Sorted (image, tile, depth, index) intersection list, as gsplat's isect_tiles + radix sort.

    Returns flat tile ids (image * n_tiles + tile), Gaussian ids and tile offsets (CSR, length
    I * n_tiles + 1) plus the tile grid size.
    """
    I, N = proj.radii.shape
    device = proj.radii.device
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    with torch.no_grad():
        r = proj.radii.to(proj.means2d.dtype) / tile_size
        tx = proj.means2d[..., 0].detach() / tile_size
        ty = proj.means2d[..., 1].detach() / tile_size
        x0 = torch.floor(tx - r).clamp(0, tw).long()
        x1 = torch.ceil(tx + r).clamp(0, tw).long()
        y0 = torch.floor(ty - r).clamp(0, th).long()
        y1 = torch.ceil(ty + r).clamp(0, th).long()
        live = proj.radii > 0
        nx = torch.where(live, x1 - x0, torch.zeros_like(x0))
        ny = torch.where(live, y1 - y0, torch.zeros_like(y0))
        counts = (nx * ny).reshape(-1)  # [I*N]
        total = int(counts.sum())
        flat = torch.repeat_interleave(torch.arange(I * N, device=device), counts)  # image-major, then n
        start = torch.cumsum(counts, 0) - counts
        k = torch.arange(total, device=device) - start[flat]
        nxf = nx.reshape(-1)[flat]
        tile_x = x0.reshape(-1)[flat] + k % nxf.clamp_min(1)
        tile_y = y0.reshape(-1)[flat] + k // nxf.clamp_min(1)
        img = flat // N
        tile_key = img * (tw * th) + tile_y * tw + tile_x
        depth = proj.depths.detach().reshape(-1)[flat]
        order = torch.argsort(depth, stable=True)  # ties keep ascending Gaussian index
        order = order[torch.argsort(tile_key[order], stable=True)]
        tile_key, flat = tile_key[order], flat[order]
        offsets = torch.zeros(I * tw * th + 1, dtype=torch.long, device=device)
        offsets[1:] = torch.cumsum(torch.bincount(tile_key, minlength=I * tw * th), 0)
    return tile_key, flat, offsets, tw, th


def composite(
    proj: Projected,
    opacities: Float[Tensor, "Ib N"],
    colours: Float[Tensor, "Ib N 3"],
    backgrounds: Float[Tensor, "I 3"],
    width: int,
    height: int,
    alpha_clamp: float,
    tile_size: int,
    max_chunk_elems: int = 1 << 22,
) -> Tuple[Float[Tensor, "I H W 3"], Float[Tensor, "I H W 1"], Float[Tensor, "I H W 1"]]:
    I, N = proj.radii.shape
    dtype, device = proj.means2d.dtype, proj.means2d.device
    tile_key, flat, offsets, tw, th = tile_intersections(proj, width, height, tile_size)
    n_tiles = I * tw * th
    P = tile_size * tile_size
    Ib = opacities.shape[0]
    # per-intersection attributes (gathered with autograd)
    gid = flat % N
    src = gid if Ib == 1 else flat  # index into [Ib*N]
    m2d = proj.means2d.reshape(-1, 2)[flat]
    con = proj.conics.reshape(-1, 3)[flat]
    dep = proj.depths.reshape(-1)[flat]
    opa = opacities.reshape(-1)[src]
    col = colours.reshape(-1, 3)[src]
    feat = torch.cat([col, dep[:, None]], dim=-1)  # rgb + depth composited together

    counts = offsets[1:] - offsets[:-1]
    # pixel centres of every tile, [n_tiles, P, 2]
    py, px = torch.meshgrid(
        torch.arange(tile_size, device=device), torch.arange(tile_size, device=device), indexing="ij"
    )
    local = torch.stack([px.reshape(-1), py.reshape(-1)], -1).to(dtype) + 0.5  # [P,2]

    out_feat = torch.zeros(n_tiles, P, 4, dtype=dtype, device=device)
    out_T = torch.ones(n_tiles, P, dtype=dtype, device=device)
    nonempty = torch.nonzero(counts > 0).squeeze(1)
    if nonempty.numel() > 0:
        # chunks of tiles with similar list lengths
        order = nonempty[torch.argsort(counts[nonempty])]
        cnt_sorted = counts[order].tolist()
        i0 = 0
        pieces_idx, pieces_feat, pieces_T = [], [], []
        while i0 < len(order):
            K = cnt_sorted[i0]
            i1 = i0
            # grow the chunk while padded size stays within budget
            while i1 < len(order) and (i1 - i0 + 1) * P * cnt_sorted[i1] <= max_chunk_elems:
                i1 += 1
            i1 = max(i1, i0 + 1)
            tiles = order[i0:i1]
            K = cnt_sorted[i1 - 1]
            args = (tiles, offsets, counts, K, m2d, con, opa, feat, local, tw, th, tile_size, alpha_clamp)
            if torch.is_grad_enabled() and any(t.requires_grad for t in (m2d, con, opa, feat)):
                # recompute each chunk in backward: memory stays at one chunk's [tiles, pixels, K] tensors
                f, T = checkpoint(_composite_tiles, *args, use_reentrant=False)
            else:
                f, T = _composite_tiles(*args)
            pieces_idx.append(tiles)
            pieces_feat.append(f)
            pieces_T.append(T)
            i0 = i1
        idx = torch.cat(pieces_idx)
        out_feat = out_feat.index_put((idx,), torch.cat(pieces_feat))
        out_T = out_T.index_put((idx,), torch.cat(pieces_T))

    # [I, th, tw, ts, ts, C] -> [I, H, W, C]
    def untile(x: Tensor) -> Tensor:
        C = x.shape[-1]
        x = x.reshape(I, th, tw, tile_size, tile_size, C).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(I, th * tile_size, tw * tile_size, C)[:, :height, :width]

    feat_img = untile(out_feat)
    T_img = untile(out_T[..., None])
    rgb = feat_img[..., :3] + T_img * backgrounds[:, None, None, :]
    depth = feat_img[..., 3:4]
    alpha = 1.0 - T_img
    return rgb, depth, alpha


def _composite_tiles(
    tiles: Tensor,
    offsets: Tensor,
    counts: Tensor,
    K: int,
    m2d: Tensor,
    con: Tensor,
    opa: Tensor,
    feat: Tensor,
    local: Tensor,
    tw: int,
    th: int,
    tile_size: int,
    alpha_clamp: float,
) -> Tuple[Tensor, Tensor]:
    device = m2d.device
    ar = torch.arange(K, device=device)
    idx = offsets[tiles][:, None] + ar  # [Tc,K]
    pad = ar[None, :] < counts[tiles][:, None]
    idx = torch.where(pad, idx, torch.zeros_like(idx))
    t_in_img = tiles % (tw * th)
    origin = torch.stack([(t_in_img % tw) * tile_size, (t_in_img // tw) * tile_size], -1).to(m2d.dtype)
    pix = origin[:, None, :] + local[None]  # [Tc,P,2]
    mu = m2d[idx]  # [Tc,K,2]
    cn = con[idx]
    d = pix[:, :, None, :] - mu[:, None, :, :]  # [Tc,P,K,2]
    dx, dy = d[..., 0], d[..., 1]
    sigma = 0.5 * (cn[:, None, :, 0] * dx * dx + cn[:, None, :, 2] * dy * dy) + cn[:, None, :, 1] * dx * dy
    alpha = torch.clamp(opa[idx][:, None, :] * torch.exp(-sigma), max=alpha_clamp)
    keep = (sigma >= 0) & (alpha >= ALPHA_MIN) & pad[:, None, :]
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    T_incl = torch.cumprod(one_minus, dim=-1)
    with torch.no_grad():
        include = T_incl > T_MIN  # prefix: the first Gaussian that would drop T to <= 1e-4 stops the pixel
    T_excl = torch.cat([torch.ones_like(T_incl[..., :1]), T_incl[..., :-1]], dim=-1)
    w = torch.where(include, alpha * T_excl, torch.zeros_like(alpha))  # [Tc,P,K]
    f = torch.einsum("tpk,tkc->tpc", w, feat[idx])
    T_final = torch.prod(torch.where(include, one_minus, torch.ones_like(one_minus)), dim=-1)
    return f, T_final


def rasterize_images(
    means: Float[Tensor, "Ib N 3"],
    quats: Float[Tensor, "Ib N 4"],
    scales: Float[Tensor, "Ib N 3"],
    opacities: Float[Tensor, "Ib N"],
    colours: Float[Tensor, "Ib N 3"],
    viewmats: Float[Tensor, "I 4 4"],
    Ks: Float[Tensor, "I 3 3"],
    width: int,
    height: int,
    backgrounds: Float[Tensor, "I 3"],
    alpha_clamp: float = 0.99,
    near_plane: float = 1e-4,
    far_plane: float = 1e4,
    tile_size: int = 16,
) -> Tuple[Float[Tensor, "I H W 3"], Float[Tensor, "I H W 1"], Float[Tensor, "I H W 1"]]:
    """Render I images; Gaussians are shared (Ib = 1) or per image (Ib = I). See docs/rasterizer.md."""
    I = viewmats.shape[0]
    if means.shape[1] == 0:
        z = backgrounds.new_zeros(I, height, width, 1)
        rgb = backgrounds[:, None, None, :].expand(I, height, width, 3) + 0.0 * z
        return rgb, z, z.clone()
    proj = project(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane)
    return composite(proj, opacities, colours, backgrounds, width, height, alpha_clamp, tile_size)


def rasterize_bruteforce(
    means,
    quats,
    scales,
    opacities,
    colours,
    viewmat,
    K,
    width,
    height,
    background,
    alpha_clamp=0.99,
    near_plane=1e-4,
    far_plane=1e4,
    tile_size=16,
):
    """Slow per-pixel Python loop over the same semantics, for tests only (tiny images)."""
    import numpy as np

    proj = project(means[None], quats[None], scales[None], viewmat[None], K[None], width, height, near_plane, far_plane)
    m2d = proj.means2d[0].detach().double().cpu().numpy()
    con = proj.conics[0].detach().double().cpu().numpy()
    dep = proj.depths[0].detach().double().cpu().numpy()
    rad = proj.radii[0].cpu().numpy()
    op = opacities.detach().double().cpu().numpy()
    col = colours.detach().double().cpu().numpy()
    bg = background.detach().double().cpu().numpy()
    order = np.argsort(dep, kind="stable")
    rgb = np.zeros((height, width, 3))
    depth = np.zeros((height, width, 1))
    alpha = np.zeros((height, width, 1))
    for py in range(height):
        for px in range(width):
            tx, ty = px // tile_size, py // tile_size
            T = 1.0
            acc = np.zeros(3)
            accd = 0.0
            for g in order:
                if rad[g] <= 0:
                    continue
                rr = rad[g] / tile_size
                gx, gy = m2d[g, 0] / tile_size, m2d[g, 1] / tile_size
                in_x = math.floor(gx - rr) <= tx < math.ceil(gx + rr)
                if not (in_x and math.floor(gy - rr) <= ty < math.ceil(gy + rr)):
                    continue
                dx, dy = px + 0.5 - m2d[g, 0], py + 0.5 - m2d[g, 1]
                s = 0.5 * (con[g, 0] * dx * dx + con[g, 2] * dy * dy) + con[g, 1] * dx * dy
                a = min(alpha_clamp, op[g] * math.exp(-s))
                if s < 0 or a < ALPHA_MIN:
                    continue
                nT = T * (1 - a)
                if nT <= T_MIN:
                    break
                acc += a * T * col[g]
                accd += a * T * dep[g]
                T = nT
            rgb[py, px] = acc + T * bg
            depth[py, px, 0] = accd
            alpha[py, px, 0] = 1 - T
    return rgb, depth, alpha

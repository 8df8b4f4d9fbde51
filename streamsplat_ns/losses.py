"""Training losses of StreamSplat (method_spec.md §3 and §6), independent of nerfstudio.

- ``ssi_depth_loss``: scale/shift-invariant disparity L1. Rendered depth is turned into disparity,
  prediction and target are each normalised per sample by median and mean absolute deviation.
- ``robust_weights``: stage 2 down-weights pixels whose normalised residual is large (stop-gradient).
- ``masked_mse``: the stage-2 foreground loss the released code accidentally drops; here it is applied.
- ``coarse_mse``: not in the paper; MSE of box-filtered images, an option for small recipes (below).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def _ssi_normalise(x: Float[Tensor, "B P"], mask: Optional[Tensor]) -> Tensor:
    if mask is None:
        med = x.median(dim=1, keepdim=True).values
        mad = (x - med).abs().mean(dim=1, keepdim=True)
        return (x - med) / mad.clamp_min(1e-6)
    out = torch.empty_like(x)
    for b in range(x.shape[0]):  # masks differ per sample: median over the valid pixels only
        m = mask[b]
        v = x[b][m] if m.any() else x[b]
        med = v.median()
        mad = (v - med).abs().mean()
        out[b] = (x[b] - med) / mad.clamp_min(1e-6)
    return out


def ssi_depth_loss(
    rendered_depth: Float[Tensor, "B *pix"],  # noqa: F821
    target_disparity: Float[Tensor, "B *pix"],  # noqa: F821
    valid: Optional[Tensor] = None,
    robust_threshold: float = 0.0,
    robust_width: float = 0.06,
    robust_min: float = 0.1,
) -> Tensor:
    """L1 between median/MAD-normalised disparities, jointly over all pixels (and views) of a sample.

    ``robust_threshold > 0`` enables the stage-2 weighting ``sigmoid(-(d^2 - thr) / width)`` clamped
    at ``robust_min`` and applied as a constant (no gradient) on the residual.
    """
    B = rendered_depth.shape[0]
    pred = 1.0 / (rendered_depth.reshape(B, -1).float() + 1e-8)
    tgt = target_disparity.reshape(B, -1).float()
    m = None if valid is None else valid.reshape(B, -1).bool()
    d = _ssi_normalise(pred, m) - _ssi_normalise(tgt, m)
    if robust_threshold > 0:
        with torch.no_grad():
            w = torch.sigmoid(-(d.square() - robust_threshold) / robust_width).clamp_min(robust_min)
        d = d * w
    d = d.abs()
    if m is None:
        return d.mean()
    return (d * m).sum() / m.sum().clamp_min(1)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """MSE on foreground pixels (mask > 0) of ``pred * mask`` vs ``target * mask``; 0 with no foreground."""
    m = (mask > 0).to(pred.dtype)
    if m.sum() == 0:
        return pred.new_zeros(())
    return F.mse_loss(pred * m, target * m)


def _pyramid_down(x: Float[Tensor, "N C H W"]) -> Float[Tensor, "N C h w"]:
    """One level of a Gaussian pyramid: 5-tap binomial blur (reflect padding), then every other pixel."""
    k = x.new_tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode=mode), k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode=mode), k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
    return x[..., ::2, ::2]


def coarse_mse(
    pred: Float[Tensor, "*b H W 3"], target: Float[Tensor, "*b H W 3"], factors: Sequence[int] = (4, 16)
) -> Tensor:
    """Mean over ``factors`` (powers of two) of the MSE between Gaussian-pyramid levels ``H/f x W/f``.

    Why: one Gaussian per pixel gets a useful position gradient from a full-resolution MSE only while it is
    within about its own width of where it belongs; motion of many pixels between key frames sits in a flat
    region of that loss, and a decoder that cannot find the motion settles on cross-fading. A pyramid level
    blurs by about ``f`` pixels and keeps a gradient over that distance (coarse-to-fine, as in unsupervised
    optical flow)."""
    if not factors:
        raise ValueError("coarse_mse: factors must not be empty")
    bad = [f for f in factors if f < 1 or f & (f - 1)]
    if bad:
        raise ValueError(f"coarse_mse: factors must be powers of two >= 1, got {bad}")
    h, w, c = pred.shape[-3:]
    a = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    b = target.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    total, level = pred.new_zeros(()), 1
    for f in sorted(factors):
        while level < f and min(a.shape[-2:]) > 1:
            a, b, level = _pyramid_down(a), _pyramid_down(b), level * 2
        total = total + F.mse_loss(a, b)
    return total / len(factors)


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR on images clipped to [0, 1], averaged over the leading dims (all but H, W, C)."""
    mse = (pred.clamp(0, 1) - target.clamp(0, 1)).square().flatten(-3).mean(-1)
    return (-10.0 * torch.log10(mse.clamp_min(1e-10))).mean()


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    return g / g.sum()


def ssim(pred: Float[Tensor, "*b H W 3"], target: Float[Tensor, "*b H W 3"]) -> Tensor:
    """SSIM as scikit-image computes it for pixelSplat-style metrics (Gaussian window 11, sigma 1.5,
    sample covariance, data range 1, borders cropped), averaged over images and channels."""
    lead = pred.shape[:-3]
    x = pred.clamp(0, 1).reshape(-1, *pred.shape[-3:]).permute(0, 3, 1, 2).float()
    y = target.clamp(0, 1).reshape(-1, *target.shape[-3:]).permute(0, 3, 1, 2).float()
    C = x.shape[1]
    g = _gaussian_window(device=x.device)
    k = (g[:, None] * g[None, :]).expand(C, 1, 11, 11)
    filt = lambda z: F.conv2d(z, k, groups=C)  # noqa: E731  'valid' conv == skimage's border crop
    np_ = 11 * 11
    cov_norm = np_ / (np_ - 1)
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (0.01) ** 2, (0.03) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    del lead
    return s.mean()

"""Gaussian heads (always fp32, autocast off, as in the paper).

* :func:`truncated_normal_sample`: reparameterised inverse-CDF sample of a normal truncated to (a, b).
* :class:`GaussianHeads`: colour, opacity, scale, position (truncated-normal offset in the grid cell and
  normalised inverse depth), optional rotation / SH.
* :class:`DynamicHeads`: velocity polynomial (truncated normal, bounded, scaled) and opacity life-cycle.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from ..gaussians import SH_C0, Gaussians
from .config import EncoderConfig


def truncated_normal_sample(
    mean: Tensor, log_std: Tensor, low: float, high: float, eps: float = 1e-3, u: Optional[Tensor] = None
) -> Tensor:
    """Sample N(mean, exp(log_std)) truncated to (low, high) by inverse CDF.

    Differentiable w.r.t. ``mean`` and ``log_std`` through both the inverse CDF and the CDF bounds, so the
    "exploration" of a wide early sigma is trained by the rendering loss alone. ``u ~ U(eps, 1 - eps)``.
    Fallbacks (as the authors): in-interval mass <= 1e-3 gives ``low``; log_std <= -5 gives clamp(mean).
    """
    if u is None:
        u = torch.rand_like(mean) * (1 - 2 * eps) + eps
    std = log_std.exp()
    sqrt2 = math.sqrt(2.0)
    cdf_lo = 0.5 * (1 + torch.erf((low - mean) / (std * sqrt2)))
    cdf_hi = 0.5 * (1 + torch.erf((high - mean) / (std * sqrt2)))
    mass = cdf_hi - cdf_lo
    p = cdf_lo + u * mass
    z = (2 * p - 1).clamp(-1 + 1e-6, 1 - 1e-6)  # keep erfinv (and its gradient) finite
    x = mean + std * sqrt2 * torch.erfinv(z)
    x = x.clamp(low, high)
    x = torch.where(mass <= 1e-3, torch.full_like(x, low), x)
    x = torch.where(log_std <= -5, mean.clamp(low, high), x)
    return x


def _xavier_small(layer: nn.Linear, gain: float = 0.01) -> None:
    nn.init.xavier_normal_(layer.weight, gain=gain)


class TruncatedNormalHead(nn.Module):
    """Per-axis mean (tanh-bounded) and raw log-std of a truncated normal in (-1, 1)."""

    def __init__(
        self, cin: int, cout: int, with_std: bool = True, mean_scale: float = 1 - 1e-3, eps: float = 1e-3
    ) -> None:
        super().__init__()
        self.mean = nn.Linear(cin, cout)
        _xavier_small(self.mean)
        self.log_std = nn.Linear(cin, cout) if with_std else None
        if self.log_std is not None:
            _xavier_small(self.log_std)
        self.mean_scale, self.eps = mean_scale, eps

    def forward(self, f: Tensor, sample: bool) -> Tensor:
        mu = torch.tanh(self.mean(f)) * self.mean_scale
        if sample and self.log_std is not None:
            return truncated_normal_sample(mu, self.log_std(f), -1 + self.eps, 1 - self.eps, self.eps)
        return mu


def grid_maps(grid_h: int, grid_w: int) -> Tuple[Tensor, Tensor]:
    """Cell-centre x (image-right) and z (image-up) of the row-major Gaussian grid over [-1, 1]^2."""
    xs = torch.linspace(-1, 1, grid_w + 1)
    zs = torch.linspace(1, -1, grid_h + 1)
    xc = (xs[:-1] + xs[1:]) / 2
    zc = (zs[:-1] + zs[1:]) / 2
    return xc.repeat(grid_h), zc.repeat_interleave(grid_w)


class GaussianHeads(nn.Module):
    """Linear heads from per-Gaussian features to canonical static Gaussians."""

    def __init__(self, cfg: EncoderConfig, position_std_head: bool = True) -> None:
        super().__init__()
        c = cfg.feature_width
        self.grid = cfg.gaussian_grid
        x_map, z_map = grid_maps(*self.grid)
        self.register_buffer("x_map", x_map, persistent=True)
        self.register_buffer("z_map", z_map, persistent=True)
        self.rgb = nn.Linear(c, 3)
        self.opacity = nn.Linear(c, 1)
        self.scale = nn.Linear(c, 2)
        self.position = TruncatedNormalHead(c, 3, position_std_head, cfg.position_mean_scale, cfg.position_bound_eps)
        self.opacity_min, self.scale_mult = cfg.opacity_min, cfg.scale_multiplier
        self.rotation = None
        if cfg.learned_rotation:
            self.rotation = nn.Linear(c, 4)
            nn.init.zeros_(self.rotation.weight)
            with torch.no_grad():
                self.rotation.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.sh_rest = None
        self.sh_degree = cfg.sh_degree
        if cfg.sh_degree > 0:
            self.sh_rest = nn.Linear(c, 3 * ((cfg.sh_degree + 1) ** 2 - 1))
            nn.init.zeros_(self.sh_rest.weight)
            nn.init.zeros_(self.sh_rest.bias)

    def forward(self, features: Float[Tensor, "B N C"]) -> Gaussians:
        with torch.autocast(features.device.type, enabled=False):
            f = features.float()
            b, n, _ = f.shape
            if n != self.x_map.numel():
                raise ValueError(f"heads expect {self.x_map.numel()} Gaussians, got {n}")
            if self.training:
                rgb, op, sc = self.rgb(f), self.opacity(f), self.scale(f)
                t = self.position(f, sample=True)
            else:  # one GEMM for the four heads: the [N, C] fp32 features are read once, not four times
                lin = (self.rgb, self.opacity, self.scale, self.position.mean)
                y = F.linear(f, torch.cat([m.weight for m in lin]), torch.cat([m.bias for m in lin]))
                rgb, op, sc, t = y.split([3, 1, 2, 3], dim=-1)
                t = torch.tanh(t) * self.position.mean_scale
            colours = torch.sigmoid(rgb)
            opac = self.opacity_min + (1 - self.opacity_min) * torch.sigmoid(op[..., 0])
            s = self.scale_mult * F.softplus(sc)
            scales = torch.stack([s[..., 0], 0.5 * (s[..., 0] + s[..., 1]), s[..., 1]], dim=-1)
            gh, gw = self.grid
            means = torch.stack(
                [self.x_map + t[..., 0] / gw, 0.5 + 0.5 * t[..., 1], self.z_map + t[..., 2] / gh], dim=-1
            )
            if self.rotation is not None:
                quats = F.normalize(self.rotation(f), dim=-1)
            else:
                quats = f.new_zeros(b, n, 4)
                quats[..., 0] = 1.0
            sh = None
            if self.sh_rest is not None:
                dc = ((colours - 0.5) / SH_C0).unsqueeze(2)
                sh = torch.cat([dc, self.sh_rest(f).view(b, n, -1, 3)], dim=2)
        return Gaussians(means=means, quats=quats, scales=scales, opacities=opac, colours=colours, sh=sh)


def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(cin, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, cout)
    )


class DynamicHeads(nn.Module):
    """Velocity polynomial and opacity life-cycle per Gaussian, from ``cat(proj(static), dynamic)`` features."""

    def __init__(
        self,
        cin: int,
        hidden: int,
        order: int = 1,
        velocity_scale: Tuple[float, float, float] = (0.5, 0.1, 0.5),
        eps: float = 1e-3,
        log_std_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.order, self.eps = order, eps
        self.log_std_offset = float(log_std_offset)  # DecoderConfig.velocity_log_std_offset (training only)
        self.velocity = _mlp(cin, hidden, 3 * order)
        for m in self.velocity:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.velocity_log_std = nn.Linear(cin, 3 * order, bias=False)
        _xavier_small(self.velocity_log_std)
        self.lifecycle = _mlp(cin, hidden, 2)
        self.register_buffer("velocity_scale", torch.tensor(velocity_scale, dtype=torch.float32), persistent=True)

    def forward(self, f: Float[Tensor, "B N C"]) -> Tuple[Tensor, Tensor, Tensor]:
        """Returns motion ``[B, N, order, 3]`` (coefficients of (t - t0)^k), gamma0 ``[B, N]``, gamma1 ``[B, N]``."""
        with torch.autocast(f.device.type, enabled=False):
            f = f.float()
            mu = torch.tanh(self.velocity(f)) * (1 - self.eps)
            if self.training:
                log_std = self.velocity_log_std(f)
                if self.log_std_offset:
                    log_std = log_std + self.log_std_offset
                v = truncated_normal_sample(mu, log_std, -1 + self.eps, 1 - self.eps, self.eps)
            else:
                v = mu
            return self._outputs(v, self.lifecycle(f))

    def first_layer(self) -> Tuple[Float[Tensor, "2H C"], Float[Tensor, "2H"]]:
        """Both MLPs' first layers stacked (velocity rows first). Being linear in the input, they can be split
        by input columns and the static part precomputed once per frame (``DynamicDecoder.static_terms``)."""
        v, life = self.velocity[0], self.lifecycle[0]
        return torch.cat([v.weight, life.weight]), torch.cat([v.bias, life.bias])

    def forward_from_hidden(self, h1: Float[Tensor, "B N 2H"]) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` from the stacked first-layer pre-activations (``f @ first_layer()``, velocity
        first). Eval only: the training velocity sample needs ``f`` itself for its log-std head."""
        if self.training:
            raise RuntimeError("DynamicHeads.forward_from_hidden is inference-only; call eval() first")
        with torch.autocast(h1.device.type, enabled=False):
            a = F.silu(h1.float())  # one pass for both MLPs' first activations
            hidden = self.velocity[0].out_features
            mu = torch.tanh(self.velocity[2:](a[..., :hidden])) * (1 - self.eps)
            return self._outputs(mu, self.lifecycle[2:](a[..., hidden:]))

    def _outputs(self, v: Float[Tensor, "B N 3K"], o: Float[Tensor, "B N 2"]) -> Tuple[Tensor, Tensor, Tensor]:
        b, n = v.shape[:2]
        motion = v.view(b, n, self.order, 3) * self.velocity_scale
        return motion, F.relu(o[..., 0]), torch.sigmoid(o[..., 1])

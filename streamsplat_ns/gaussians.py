"""Named Gaussian containers shared by the networks, the renderer, export and streaming.

Positions live in StreamSplat's canonical orthographic space: ``means[..., 0]`` is image-right x in
[-1, 1], ``means[..., 1]`` is the *normalised inverse depth* y-hat in (0, 1) (1 = near), and
``means[..., 2]`` is image-up z in [-1, 1]. The renderer maps y-hat to metric depth
``1 / (a + b * y_hat)`` (see :mod:`streamsplat_ns.rendering.dynamic`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical-harmonic constant: colour = SH_C0 * dc + 0.5 (networks, renderer and PLY share it)."""


@dataclass
class Gaussians:
    """Static Gaussians with a leading batch dimension ``B`` (one set per input frame)."""

    means: Float[Tensor, "B N 3"]
    quats: Float[Tensor, "B N 4"]  # (w, x, y, z); identity in the paper
    scales: Float[Tensor, "B N 3"]  # canonical-space standard deviations (x, depth, z)
    opacities: Float[Tensor, "B N"]
    colours: Float[Tensor, "B N 3"]  # RGB in [0, 1], or the DC term when ``sh`` is given
    sh: Optional[Float[Tensor, "B N K 3"]] = None  # optional SH coefficients (K = (deg+1)^2)

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    def map(self, fn) -> "Gaussians":
        """Apply ``fn`` to every tensor field (e.g. ``.detach()``, ``.to(device)``)."""
        return replace(
            self,
            **{f.name: (None if getattr(self, f.name) is None else fn(getattr(self, f.name))) for f in fields(self)},
        )

    def to(self, *args, **kwargs) -> "Gaussians":
        return self.map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Gaussians":
        return self.map(lambda t: t.detach())

    def cat(self, other: "Gaussians", dim: int = 1) -> "Gaussians":
        """Concatenate along the Gaussian dimension (default) or the batch dimension."""
        kw = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if (a is None) != (b is None):
                raise ValueError(f"cannot concatenate Gaussians: field {f.name!r} is set on one side only")
            kw[f.name] = None if a is None else torch.cat([a, b], dim=dim)
        return type(self)(**kw)


@dataclass
class DynamicGaussians(Gaussians):
    """Gaussians of one key-frame pair with per-Gaussian motion and opacity life-cycle.

    ``motion[b, n, k]`` is the coefficient of ``(t - t0)^(k+1)`` added to ``means`` (canonical space,
    i.e. linear in x, inverse depth and z); ``t0`` is the anchor time (0 for frame-0 Gaussians, 1 for
    frame-1 Gaussians); the opacity at time t is
    ``opacity * sigmoid(-gamma0 * (|t - t0| - gamma1)) / sigmoid(gamma0 * gamma1)``.
    """

    motion: Float[Tensor, "B N K 3"] = None  # type: ignore[assignment]
    t0: Float[Tensor, "B N"] = None  # type: ignore[assignment]
    gamma0: Float[Tensor, "B N"] = None  # type: ignore[assignment]
    gamma1: Float[Tensor, "B N"] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for name in ("motion", "t0", "gamma0", "gamma1"):
            if getattr(self, name) is None:
                raise ValueError(f"DynamicGaussians needs {name!r}")

    def static(self) -> Gaussians:
        return Gaussians(self.means, self.quats, self.scales, self.opacities, self.colours, self.sh)

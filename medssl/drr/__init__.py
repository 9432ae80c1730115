"""medssl.drr: digitally reconstructed radiographs (X-ray rendering from CT).

- :func:`line_integrals`: line integrals along explicit rays (numba; exact
  Siddon/Jacobs or trilinear); :func:`line_integrals_torch` the torch path.
- :class:`Pose`, :func:`pose_rays`, :func:`standard_poses`: geometry from
  SDD/SOD, detector size and spacing, rotation and translation, named views.
- :func:`render`, :func:`render_xray`: images for a batch of poses, with
  the physics of :mod:`medssl.drr.physics`.

See docs/drr.md for the conventions.
"""

from .geometry import VIEWS, Pose, euler_matrix, fit_spacing, pose_rays, standard_poses, view_frame
from .physics import attenuation_coefficients, beer_lambert, hu_to_mu, noisy_line_integral, poisson_counts, window
from .project import render, render_xray
from .render import Projector, line_integrals


def line_integrals_torch(*args, **kwargs):
    """Torch line integrals; see :func:`medssl.drr.torch_render.line_integrals_torch`."""
    from .torch_render import line_integrals_torch as fn

    return fn(*args, **kwargs)


__all__ = [
    "VIEWS", "Pose", "Projector", "attenuation_coefficients", "beer_lambert", "euler_matrix", "fit_spacing",
    "hu_to_mu", "line_integrals", "line_integrals_torch", "noisy_line_integral", "poisson_counts",
    "pose_rays", "render", "render_xray", "standard_poses", "view_frame", "window",
]

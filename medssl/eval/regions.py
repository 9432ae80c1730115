"""Where frozen features look: the body or the lungs of a CT, found from its Hounsfield units.

The region feature modes (``body``, ``lungs``; :mod:`medssl.eval.features`)
keep only the sliding windows that lie mostly inside a region of the case, so
a case's embedding is the mean over the tissue a task is about instead of over
the air around the patient (``body``) or over the whole chest (``lungs``, for
emphysema and lung function). The masks need no labels:

- ``body``: voxels above -500 HU, the largest 3D component, holes filled slice
  by slice (the lungs and airways inside the chest belong to the body);
- ``lungs``: :func:`medssl.anatomy.lung_mask.lung_mask` (air inside the body,
  the two largest components, the central airway left out).

Both read HU, so the cache must record the CT window it mapped to [0, 1]
(every ``medssl preprocess`` cache does). Masks are computed once per case and
evaluation and kept on the :class:`~medssl.eval.data.EvalData`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import DataError
from .data import EvalData

REGIONS = ("body", "lungs")
BODY_HU = -500.0


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Bool mask of the patient's body in a CT ``hu`` (any axis order; slices along axis 0 are filled)."""
    tissue = np.asarray(hu) > BODY_HU
    lab, n = ndi.label(tissue)
    if n == 0:
        return np.zeros(tissue.shape, bool)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    body = lab == int(np.argmax(sizes))
    return np.stack([ndi.binary_fill_holes(s) for s in body])


def region_mask(hu: np.ndarray, region: str, spacing_zyx: Optional[Sequence[float]] = None) -> np.ndarray:
    """``region`` (``body`` or ``lungs``) of a ``[Z, Y, X]`` CT in HU, as a bool array of the same shape."""
    if region not in REGIONS:
        raise ValueError(f"region: expected one of {', '.join(REGIONS)}, got {region!r}")
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise ValueError(f"hu: region masks are for 3D volumes, got shape {hu.shape}")
    if region == "body":
        return body_mask(hu)
    from ..anatomy.lung_mask import lung_mask

    spacing = [float(v) for v in (spacing_zyx or (1.0, 1.0, 1.0))]
    return lung_mask(hu.transpose(2, 1, 0), spacing=spacing[::-1]).transpose(2, 1, 0)


def case_region(data: EvalData, case_id: str, region: str) -> np.ndarray:
    """The ``region`` mask of one case of ``data`` (computed once, then kept on ``data``)."""
    key = (case_id, region)
    if key not in data.regions:
        if data.spatial_dims != 3:
            raise DataError(data.source, f"feature mode '{region}' needs CT volumes; these are {data.spatial_dims}-D images")
        from ..normalisation import to_hu

        spec = data.normalization.get(case_id)
        try:
            if spec is None:
                raise ValueError("no intensity scaling recorded")
            hu = to_hu(data.image(case_id), spec)
        except ValueError:  # not a map of Hounsfield units
            raise DataError(data.source, f"case {case_id}: feature mode '{region}' reads Hounsfield units, but the cache "
                                         f"records no CT intensity scaling for it ({spec!r}); use --feature-mode sliding") from None
        data.regions[key] = region_mask(hu, region, data.spacing.get(case_id))
    return data.regions[key]

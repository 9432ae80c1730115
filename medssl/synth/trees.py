"""Branching trees (airways, pulmonary vessels) grown inside the lungs.

A tree is a list of tapered segments. Each branch splits into two daughters
that turn away from the parent's direction by 20-45 degrees in a random
plane; lengths and radii shrink by fixed ratios per generation (airway
radii close to Murray's law, 2^(-1/3) = 0.79 for a symmetric split: Murray,
PNAS 1926; Weibel, Morphometry of the Human Lung, 1963). A branch whose end
leaves the lung is shortened once and then dropped, so trees fill the lung
without crossing the pleura.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, List, Sequence, Tuple

import numpy as np

Segments = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to unit vector ``d``."""
    v = rng.standard_normal(3)
    v -= (v @ d) * d
    n = np.linalg.norm(v)
    return v / n if n > 1e-9 else np.array([1.0, 0.0, 0.0])


def grow_tree(
    rng: np.random.Generator,
    roots: Sequence[Tuple[np.ndarray, np.ndarray, float, float]],
    inside: Callable[[np.ndarray], np.ndarray],
    generations: int = 6,
    length_ratio: Tuple[float, float] = (0.85, 0.7),
    radius_ratio: Tuple[float, float] = (0.82, 0.7),
    taper: float = 0.9,
    min_radius: float = 0.3,
) -> Segments:
    """Grow a tree from ``roots`` = [(start (3,), unit direction (3,), length mm, radius mm)].

    ``inside(points (N, 3)) -> bool (N,)`` says whether world points lie where
    branches may go. The ratios are (major daughter, minor daughter).
    Returns (p0, p1, r0, r1): segment ends (S, 3) and end radii (S,), float32.
    """
    p0: List[np.ndarray] = []
    p1: List[np.ndarray] = []
    r0: List[float] = []
    r1: List[float] = []
    queue = deque((np.asarray(s, float), np.asarray(d, float) / np.linalg.norm(d), float(l), float(r), 0)
                  for s, d, l, r in roots)
    while queue:
        start, d, length, radius, gen = queue.popleft()
        end = start + d * length
        if gen > 0 and not inside(end[None])[0]:
            # shorten, then try a few other directions before giving the branch up
            tries = [(d, 0.55)]
            for _ in range(3):
                alt = d + 0.9 * _perpendicular(rng, d)
                tries.append((alt / np.linalg.norm(alt), 0.6))
            for nd, f in tries:
                if inside((start + nd * length * f)[None])[0]:
                    d, length = nd, length * f
                    end = start + d * length
                    break
            else:
                continue
        p0.append(start)
        p1.append(end)
        r0.append(radius)
        r1.append(radius * taper)
        if gen >= generations or radius * radius_ratio[1] < min_radius:
            continue
        perp = _perpendicular(rng, d)
        angles = np.deg2rad(rng.uniform(20.0, 45.0, size=2))
        for k, sign in enumerate((1.0, -1.0)):
            nd = np.cos(angles[k]) * d + sign * np.sin(angles[k]) * perp
            nd /= np.linalg.norm(nd)
            jitter = rng.uniform(0.85, 1.15)
            queue.append((end, nd, length * length_ratio[k] * jitter, radius * radius_ratio[k], gen + 1))
    if not p0:
        z = np.zeros((0, 3), np.float32)
        return z, z.copy(), np.zeros(0, np.float32), np.zeros(0, np.float32)
    return (np.asarray(p0, np.float32), np.asarray(p1, np.float32),
            np.asarray(r0, np.float32), np.asarray(r1, np.float32))


def concat(*trees: Segments) -> Segments:
    """Join several segment sets into one."""
    return tuple(np.concatenate([t[i] for t in trees]) for i in range(4))  # type: ignore[return-value]

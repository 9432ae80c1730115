"""The DINO self-distillation loss with a centred, sharpened teacher.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
ICCV 2021 (arXiv:2104.14294).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import _dist


def dino_loss(
    teacher_out: Sequence[torch.Tensor],
    student_out: Sequence[torch.Tensor],
    center: torch.Tensor,
    teacher_temp: float = 0.04,
    student_temp: float = 0.1,
) -> torch.Tensor:
    """Cross-entropy between teacher and student distributions of different views.

    Args:
        teacher_out: ``T`` tensors ``[B, K]``, the teacher's logits for the
            global views (view i of the teacher is view i of the student).
        student_out: ``S >= T`` tensors ``[B, K]``, the student's logits for
            all views (globals first, then local crops).
        center: ``[1, K]`` (or ``[K]``) running centre of the teacher logits.
        teacher_temp, student_temp: the two softmax temperatures.

    Returns:
        Scalar: the mean over ordered pairs (i, j), i != j, of
        ``mean_b -sum_k softmax((t_i - c)/tt) * log_softmax(s_j/st)``.
    """
    if len(teacher_out) == 0 or len(student_out) < 2:
        raise ValueError("dino_loss needs at least one teacher view and two student views")
    center = center.reshape(1, -1)
    t_probs = [F.softmax((t.detach() - center) / teacher_temp, dim=-1) for t in teacher_out]
    s_logp = [F.log_softmax(s / student_temp, dim=-1) for s in student_out]
    total = student_out[0].new_zeros(())
    pairs = 0
    for i, tp in enumerate(t_probs):
        for j, sl in enumerate(s_logp):
            if i == j:
                continue
            total = total + (-(tp * sl).sum(dim=-1)).mean()
            pairs += 1
    return total / pairs



def view_pairs_loss(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], center: torch.Tensor,
                    teacher_temp: float, student_temp: float, same_view: bool = False) -> torch.Tensor:
    """Mean DINO cross-entropy over view pairs ``(i, j)``: ``i != j`` only (:func:`dino_loss`), or all pairs with ``same_view``.

    Teacher view ``i`` and student view ``j`` are lists of ``[B, K]`` logits;
    with ``same_view`` each pair's term is the DINO loss over that single
    pair (UniMiSS+'s pair-wise terms, Xie et al., TPAMI 2024).
    """
    if not same_view:
        return dino_loss(teacher, student, center, teacher_temp, student_temp)
    terms = [dino_loss([t], [s, s], center, teacher_temp, student_temp) for t in teacher for s in student]
    return torch.stack(terms).mean()


class DINOLoss(nn.Module):
    """DINO loss holding the teacher centre (a buffer) and its EMA update.

    ``forward`` computes the loss with the current centre and then updates
    it with the mean teacher logit of this batch, averaged over all ranks:
    ``c <- m * c + (1 - m) * mean(teacher)``.

    Deferred (``defer_updates(True)``, what the trainer sets): updates are
    summed instead of applied, and :meth:`commit_pending` applies them once,
    with the mean over every batch since the last commit. The trainer
    commits after each optimiser step, so under gradient accumulation the
    centre moves once per step with the statistics of the whole accumulated
    batch (as one large batch would move it, and as DINO's once-per-iteration
    update does), every micro-batch of a step is centred with the same
    centre, and a skipped step drops its updates (:meth:`discard_pending`).
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        if not (student_temp > 0 and teacher_temp > 0):
            raise ValueError("student_temp and teacher_temp must be > 0")
        self.student_temp = float(student_temp)
        self.teacher_temp = float(teacher_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.deferred = False
        self._pending: Optional[torch.Tensor] = None  # sum of teacher rows since the last commit (this rank)
        self._pending_rows = 0

    def defer_updates(self, enabled: bool = True) -> None:
        """Sum centre updates until :meth:`commit_pending` (on) or apply each at once (off, the default)."""
        if not enabled:
            self.commit_pending()
        self.deferred = bool(enabled)

    def forward(
        self,
        teacher_out: Sequence[torch.Tensor],
        student_out: Sequence[torch.Tensor],
        teacher_temp: Optional[float] = None,
    ) -> torch.Tensor:
        tt = self.teacher_temp if teacher_temp is None else float(teacher_temp)
        loss = dino_loss(teacher_out, student_out, self.center, tt, self.student_temp)
        if self.training:
            self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[torch.Tensor]) -> None:
        t = torch.cat([x.detach().float() for x in teacher_out], dim=0)  # [T*B, K]
        if self.deferred:
            rows = t.sum(dim=0, keepdim=True)
            self._pending = rows if self._pending is None else self._pending + rows
            self._pending_rows += t.shape[0]
            return
        self._move_center(t.sum(dim=0, keepdim=True), t.shape[0])

    @torch.no_grad()
    def _move_center(self, local_sum: torch.Tensor, rows: int) -> None:
        batch_sum = _dist.all_reduce_sum(local_sum)
        count = rows * _dist.world_size()  # every rank holds as many rows (the trainer's equal shares)
        m = self.center_momentum
        self.center.mul_(m).add_(batch_sum / count, alpha=1.0 - m)

    @torch.no_grad()
    def commit_pending(self) -> None:
        """Apply the summed deferred updates as one (a collective under DDP: every rank commits together)."""
        if self._pending is not None and self._pending_rows:
            pending, rows = self._pending, self._pending_rows
            self._pending, self._pending_rows = None, 0
            self._move_center(pending, rows)

    def discard_pending(self) -> None:
        """Drop the deferred updates (a skipped step)."""
        self._pending, self._pending_rows = None, 0

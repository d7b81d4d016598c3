"""How hard each distillation term pulls, relative to the task loss.

Every ``interval`` training iterations (off by default), for each term:
the L2 norm of the term's gradient on the parameters of the student layer
it distils (e.g. the FPN for ``student='neck'``: parameters that both the
task loss and the term reach; for a layer without parameters, e.g. an
activation, those of the nearest module around it that the term's
gradient reaches, :func:`layer_norm`), divided by the task loss's gradient
norm on the same parameters. A share far above 1 means the term dominates the
student's update there (weights off by orders of magnitude on a new
dataset); near 0 means it does nothing. One ``torch.autograd.grad`` per
term and per distinct layer on that small parameter subset, with
``retain_graph=True``; the optimizer's backward is unchanged.
The shares go to mmengine's message hub as ``train/grad_share_<term>``, so
the logger prints them and ``plot_curves.py`` can draw them.
:mod:`visionkd.engine.hooks.auto_weight_hook` (and the calibration and
doctor tools built on it) measure the same shares to choose the weights.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MessageHub

__all__ = ['GradShare', 'layer_norm', 'split_losses']


def _grad_norm(loss: torch.Tensor, params: List[nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True,
                                allow_unused=True)
    sq = [g.float().square().sum() for g in grads if g is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


class GradShare:
    """Computes and logs the per-term gradient shares.

    Args:
        interval: Every how many training iterations; 0 turns it off.
    """

    def __init__(self, interval: int = 0) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or \
                interval < 0:
            raise TypeError('grad_share_interval must be an int >= 0 (0: '
                            f'off), got {interval!r}')
        self.interval = interval
        self._calls = 0

    def due(self) -> bool:
        """Whether this training step computes the shares."""
        if self.interval == 0 or not torch.is_grad_enabled():
            return False
        hub = MessageHub.get_current_instance()
        it = hub.get_info('iter')
        it = self._calls if it is None else it
        self._calls += 1
        return it % self.interval == 0

    @staticmethod
    def compute(student: nn.Module, terms: nn.ModuleDict,
                losses: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """``{term name: share}`` for this step's ``losses``."""
        modules = dict(student.named_modules())
        task_total, term_totals = split_losses(terms, losses)
        if task_total is None:
            return {}
        task_norms: Dict[str, float] = {}
        shares = {}
        for name, total in term_totals.items():
            if getattr(terms[name].source, 'learner', 'student') != 'student':
                continue  # trains an online teacher, not the student
            found = layer_norm(modules, terms[name].student_path, total)
            if found is None:
                continue
            path, params, norm = found
            if path not in task_norms:
                task_norms[path] = _grad_norm(task_total, params)
            shares[name] = norm / max(task_norms[path], 1e-12)
        return shares

    def log(self, shares: Dict[str, float]) -> None:
        hub = MessageHub.get_current_instance()
        for name, value in shares.items():
            hub.update_scalar(f'train/grad_share_{name}', value)


def split_losses(
    terms: nn.ModuleDict, losses: Dict[str, torch.Tensor]
) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
    """The task loss and each term's loss, as scalars with their graphs.

    Args:
        terms: The distiller's ``distill_terms``.
        losses: One step's loss dict (``loss`` mode of the distiller).

    Returns:
        ``(task total, {term name: term total})``: the sum of every loss
        (a key containing ``'loss'`` that requires grad) that no term owns,
        or None if there is none; per term, the sum of its keys (terms
        without a key in ``losses`` are left out).
    """
    kd_keys = {k for t in terms.values() for k in t.loss_keys}
    task = [_total(v) for k, v in losses.items()
            if 'loss' in k and k not in kd_keys and _is_loss(v)]
    task_total = torch.stack(task).sum() if task else None
    totals = {}
    for name, term in terms.items():
        values = [_total(losses[k]) for k in term.loss_keys
                  if k in losses and _is_loss(losses[k])]
        if values:
            totals[name] = torch.stack(values).sum()
    return task_total, totals


def _is_loss(v: object) -> bool:
    if isinstance(v, (list, tuple)):
        return bool(v) and all(_is_loss(x) for x in v)
    return isinstance(v, torch.Tensor) and v.requires_grad


def _total(v: object) -> torch.Tensor:
    if isinstance(v, (list, tuple)):
        return torch.stack([_total(x) for x in v]).sum()
    return v.sum()


def layer_norm(modules: Dict[str, nn.Module], path: str,
               loss: torch.Tensor
               ) -> Optional[Tuple[str, List[nn.Parameter], float]]:
    """``(path, params, norm)``: the norm of ``loss``'s gradient on the
    trainable parameters of the student layer at ``path``.

    A layer without parameters (an activation, a pooling), or one whose
    parameters the gradient does not reach (an RoI extractor's output does
    not depend on the RoI head around it), is measured on the nearest
    enclosing module the gradient reaches: DDRNet's
    ``decode_head.head.0.activate`` on ``decode_head.head.0`` (the
    ConvModule whose conv and norm feed it), up to the whole student
    (path ``''``). None if the student has no trainable parameters.

    Args:
        modules: ``dict(student.named_modules())``.
        path: The term's student layer.
        loss: The term's loss (with its graph).
    """
    while True:
        params = _params(modules.get(path))
        norm = _grad_norm(loss, params) if params else 0.0
        if norm > 0 or not path:
            return (path, params, norm) if params else None
        path = path.rpartition('.')[0]


def _params(module: Optional[nn.Module]) -> List[nn.Parameter]:
    if module is None:
        return []
    return [p for p in module.parameters() if p.requires_grad]

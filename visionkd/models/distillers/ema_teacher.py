"""EMA teacher: an exponential moving average of the student's weights.

The mean teacher of Tarvainen & Valpola ("Mean teachers are better role
models", NeurIPS 2017, Eq. 1): after every training step ``t``

    theta'_t = decay * theta'_{t-1} + (1 - decay) * theta_t

where ``theta`` are the student's weights and ``theta'`` the teacher's.
As in the authors' code (CuriousAI/mean-teacher, ``update_ema_variables``)
the decay ramps up by default (``warmup=True``): update ``t`` (1, 2, ...)
uses ``min(decay, 1 - 1 / (t + 1))``, so the first updates average the
few student weights there are instead of keeping the random start (with
0.999 and no ramp, 67 % of the EMA is still the initialisation after 400
steps).
The teacher starts as a copy of the (initialised) student and runs in eval
mode under ``no_grad`` like a frozen teacher; buffers (BatchNorm running
statistics) are copied from the student at every update, as mmengine's
``ExponentialMovingAverage`` does by default. The distiller applies the
update at the start of each training forward, i.e. with the weights the
last optimizer step produced, so the teacher of iteration ``k`` is the EMA
after ``k - 1`` steps; the teacher's weights and its update count are in
the distiller's checkpoint (``ema_teachers.<name>.*``), which makes
``--resume`` exact.
"""
import copy
from typing import Dict

import torch
import torch.nn as nn

__all__ = ['make_ema_teacher', 'ema_decay', 'ema_update', 'ema_state',
           'load_ema_state']

#: Checkpoint key prefix of EMA teachers' weights.
PREFIX = 'ema_teachers.'


def make_ema_teacher(student: nn.Module, where: str) -> nn.Module:
    """A frozen copy of ``student`` to average into.

    Raises:
        TypeError: the student cannot be copied, or has parameters that are
            not floating point (an average of them is undefined); the
            message names the fix.
    """
    bad = [n for n, p in student.named_parameters()
           if not p.is_floating_point()]
    if bad:
        raise TypeError(
            f"{where}: kind='ema' averages the student's parameters, but "
            f'{len(bad)} are not floating point (first: {bad[:3]}); a '
            f'quantized or integer student has no moving average: use a '
            f'frozen teacher (teacher=<model>, teacher_ckpt=...) instead')
    try:
        teacher = copy.deepcopy(student)
    except Exception as e:  # noqa: B902 - any failure means: cannot copy
        raise TypeError(
            f"{where}: kind='ema' needs a copy of the student, but "
            f'copy.deepcopy failed ({type(e).__name__}: {e}); build the '
            f'student without the uncopyable part (a compiled or hooked '
            f'module) or use a frozen teacher') from e
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def ema_decay(decay: float, done: int, warmup: bool = True) -> float:
    """The decay of the next update after ``done`` updates: ``decay``,
    or with ``warmup`` ``min(decay, 1 - 1 / (done + 2))`` (update ``t =
    done + 1`` of the mean teacher's ramp: 0.5, 0.667, 0.75, ...)."""
    if not warmup:
        return decay
    return min(decay, 1.0 - 1.0 / (done + 2))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module,
               decay: float) -> None:
    """``teacher <- decay * teacher + (1 - decay) * student`` (parameters);
    buffers copied."""
    t_params = dict(teacher.named_parameters())
    for name, p in student.named_parameters():
        t = t_params[name]
        t.mul_(decay).add_(p.detach().to(t.dtype), alpha=1.0 - decay)
    t_buffers = dict(teacher.named_buffers())
    for name, b in student.named_buffers():
        if name in t_buffers:
            t_buffers[name].copy_(b)


def ema_state(name: str, teacher: nn.Module,
              steps: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The checkpoint entries of EMA teacher ``name``."""
    out = {f'{PREFIX}{name}.{k}': v.detach()
           for k, v in teacher.state_dict().items()}
    out[f'{PREFIX}{name}._steps'] = steps.detach().clone()
    return out


def load_ema_state(name: str, teacher: nn.Module, steps: torch.Tensor,
                   state: dict, prefix: str = '') -> bool:
    """Load and remove EMA teacher ``name``'s entries from ``state``.

    Args:
        name: The teacher's name.
        teacher: Its model.
        steps: Its update count (set in place).
        state: A state dict holding ``<prefix>ema_teachers.<name>.*``.
        prefix: The distiller's prefix in ``state`` (a wrapped model's).

    Returns:
        Whether ``state`` had them (False: a checkpoint of another run,
        e.g. a plain student's, the teacher keeps its weights).
    """
    head = f'{prefix}{PREFIX}{name}.'
    own = {k[len(head):]: state.pop(k) for k in list(state)
           if k.startswith(head)}
    if not own:
        return False
    count = own.pop('_steps', None)
    teacher.load_state_dict(own, strict=True)
    if count is not None:
        steps.copy_(count)
    return True

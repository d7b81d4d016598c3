"""One teacher of a distiller at run time: model, input, loading."""
import logging
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from visionkd.utils import without_pretrained_init

from .teacher_input import input_divisor, scale_data_samples, scale_inputs
from .teacher_loading import load_teacher_weights
from .teacher_specs import TeacherSpec

__all__ = ['DistillTeacher', 'converts_bgr_to_rgb', 'init_from_scratch']


def converts_bgr_to_rgb(data_preprocessor: nn.Module) -> bool:
    """Whether a preprocessor flips the channels (``bgr_to_rgb``): mmdet's
    ``DetDataPreprocessor`` stores it as ``_channel_conversion``, mmseg's
    ``SegDataPreProcessor`` as ``channel_conversion``."""
    for attr in ('_channel_conversion', 'channel_conversion'):
        if getattr(data_preprocessor, attr, False):
            return True
    return False


def init_from_scratch(model: nn.Module) -> None:
    """Run ``model.init_weights()`` with every pretrained ``init_cfg``
    skipped, so nothing is read or downloaded.

    A teacher without checkpoint (tests, benchmarks, dry runs) must still
    hold initialised weights: DETR-family models create some parameters
    (Deformable DETR's ``level_embed``) as uninitialised memory that only
    their ``init_weights`` fills, and a frozen teacher is not a child the
    runner initialises. The global random state is left as it was.
    """
    if not hasattr(model, 'init_weights'):
        return
    saved = []
    for module in model.modules():
        init_cfg = getattr(module, 'init_cfg', None)
        if init_cfg is not None:
            saved.append((module, init_cfg))
            module.init_cfg = without_pretrained_init(init_cfg)
    # mmengine logs every parameter's init at INFO without a log file
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        # its own random stream, seeded from the global one, which is left
        # as it was: what is drawn after (the student's init, the data)
        # does not depend on whether a teacher was initialised here
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, ())) + 1)
            model.init_weights()
    finally:
        logger.setLevel(level)
        for module, init_cfg in saved:
            module.init_cfg = init_cfg
        # mmengine initialises a module once: a later explicit
        # init_weights() (e.g. kd_doctor's random teachers) must still run
        for module in model.modules():
            if hasattr(module, '_is_init'):
                module._is_init = False


def _stats(dp: nn.Module) -> Tuple[Optional[torch.Tensor], ...]:
    if getattr(dp, '_enable_normalize', False):
        return dp.mean.detach().clone(), dp.std.detach().clone()
    return None, None


def input_affine(student: nn.Module, teacher: nn.Module) -> Optional[tuple]:
    """How the student's normalised batch maps to the teacher's.

    Both preprocessors usually share mean/std/channel order (None); if
    not, the teacher gets ``(flip(x * std_s + mean_s) - mean_t) / std_t``
    and this returns ``(mean_s, std_s, flip, mean_t, std_t)``.
    """
    m_s, s_s = _stats(student.data_preprocessor)
    m_t, s_t = _stats(teacher.data_preprocessor)
    flip = converts_bgr_to_rgb(student.data_preprocessor) != \
        converts_bgr_to_rgb(teacher.data_preprocessor)
    same = not flip and ((m_s is None and m_t is None) or (
        m_s is not None and m_t is not None and torch.allclose(m_s, m_t)
        and torch.allclose(s_s, s_t)))
    return None if same else (m_s, s_s, flip, m_t, s_t)


class DistillTeacher:
    """A teacher as the distiller runs it.

    Args:
        spec: Its configuration.
        model: Its model (for ``'self'``: the student).
        student: The student (its preprocessor is the reference).
    """

    def __init__(self, spec: TeacherSpec, model: nn.Module,
                 student: nn.Module) -> None:
        self.spec = spec
        self.model = model
        self.loaded = False
        #: EMA updates applied so far (``'ema'``; saved in checkpoints).
        self.steps = torch.zeros((), dtype=torch.long)
        #: Restart an EMA teacher from the student at the next update (a
        #: checkpoint without its weights was loaded).
        self.resync = False
        self.affine = None
        #: The multiple its scaled input is rounded to (teacher_input).
        self.divisor = input_divisor(model)
        if spec.has_own_model:
            self.affine = input_affine(student, model)
            if self.affine is not None:
                MMLogger.get_current_instance().info(
                    f'{spec.role} and student preprocessors differ: the '
                    f'{spec.role} gets the student batch re-normalised to '
                    f'its own mean/std')

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def runs_alone(self) -> bool:
        """Whether it runs a forward of its own under ``no_grad`` (frozen
        and EMA teachers; online teachers run their task loss, ``'self'``
        is the student's forward)."""
        return self.kind in ('frozen', 'ema')

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's input from the student's normalised batch."""
        if self.affine is not None:
            m_s, s_s, flip, m_t, s_t = self.affine
            if m_s is not None:
                x = x * s_s.to(x) + m_s.to(x)
            if flip:
                x = x.flip(1)
            if m_t is not None:
                x = (x - m_t.to(x)) / s_t.to(x)
        return scale_inputs(x, self.spec.scale_factor, self.divisor)

    def data_samples(self, samples: Optional[list],
                     input_size: Tuple[int, int]) -> Optional[list]:
        """The batch's data samples at the teacher's input scale."""
        return scale_data_samples(samples, self.spec.scale_factor,
                                  input_size, self.divisor)

    def load(self) -> None:
        """Load the checkpoint, once (frozen and online teachers)."""
        spec = self.spec
        if spec.ckpt is None or self.loaded:
            return
        load_teacher_weights(self.model, spec.ckpt, strict=spec.ckpt_strict,
                             role=spec.role, key=spec.ckpt_key)
        if self.kind == 'frozen':
            self.model.eval()
        self.loaded = True

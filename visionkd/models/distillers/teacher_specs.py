"""The teachers of a distiller, read from its config.

A distiller has one teacher (``teacher=``, ``teacher_ckpt=``, ...) or
several (``teachers=dict(<name>=dict(...), ...)``). Each teacher is of one
*kind* (the student-teacher frameworks of Wang & Yoon, "Knowledge
Distillation and Student-Teacher Learning for Visual Intelligence", TPAMI
2022, Sec. 3):

* ``'frozen'``: a trained model, loaded from its checkpoint, never
  updated (offline distillation; the default);
* ``'online'``: a model that trains together with the student, with its own
  task loss (online / mutual distillation, Zhang et al., "Deep Mutual
  Learning", CVPR 2018), in the optimizer and the checkpoint;
* ``'ema'``: an exponential moving average of the student's own weights
  (mean teacher, Tarvainen & Valpola, NeurIPS 2017), no checkpoint;
* ``'self'``: the student itself: a deeper layer or head teaches a shallower
  one of the same forward (self-distillation, e.g. Zhang et al., "Be Your
  Own Teacher", ICCV 2019).

The one-teacher form::

    teacher='mmdet::...', teacher_ckpt='...',      # frozen (default)
    teacher_trainable=True,                        # online
    teacher_input=dict(scale_factor=1.5),          # its own input scale
    teacher=dict(kind='ema', decay=0.999),         # EMA of the student
    teacher='self',                                # self-distillation

The several-teacher form (the same fields per teacher)::

    teachers=dict(
        frcnn=dict(model='mmdet::...', ckpt='...'),
        gfl=dict(model='mmdet::...', ckpt='...',
                 input=dict(scale_factor=1.5)),
        peer=dict(model='mmdet::...', trainable=True, ckpt=None),
        mean=dict(kind='ema', decay=0.999))

A term picks its teacher with ``from_teacher='<name>'`` (see
:mod:`visionkd.models.distillers.teacher_fusion`).
"""
import difflib
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

__all__ = ['TeacherSpec', 'TEACHER_KINDS', 'DEFAULT_TEACHER',
           'teacher_specs', 'unknown_teacher_message']

#: The kinds of teacher (see the module docstring).
TEACHER_KINDS = ('frozen', 'online', 'ema', 'self')
#: The name of the teacher of the one-teacher form.
DEFAULT_TEACHER = 'teacher'
#: Keys only an EMA teacher takes.
EMA_KEYS = ('decay', 'warmup')
#: Keys of one entry of ``teachers``.
ENTRY_KEYS = ('model', 'ckpt', 'ckpt_strict', 'input', 'trainable',
              'kind') + EMA_KEYS
#: Keys of ``teacher_input`` / an entry's ``input``.
INPUT_KEYS = ('scale_factor', )


@dataclass
class TeacherSpec:
    """One teacher as configured.

    Attributes:
        name: Its name (``'teacher'`` in the one-teacher form).
        kind: One of :data:`TEACHER_KINDS`.
        model: Its model (a config reference or dict); None for ``'ema'``
            and ``'self'`` (the student's architecture).
        ckpt: Checkpoint path or URL (``'frozen'``/``'online'``).
        ckpt_strict: Load ``ckpt`` strictly.
        scale_factor: The teacher's input is the student's batch resized by
            this factor (1.0: the same batch).
        decay: EMA decay (``'ema'``).
        warmup: Ramp the EMA decay up as the mean teacher's code does,
            ``min(decay, 1 - 1 / (t + 1))`` at update ``t`` (``'ema'``).
        ckpt_key: How messages name its checkpoint setting.
        role: How messages name the teacher.
    """

    name: str
    kind: str = 'frozen'
    model: Optional[Union[str, dict]] = None
    ckpt: Optional[str] = None
    ckpt_strict: bool = True
    scale_factor: float = 1.0
    decay: float = 0.999
    warmup: bool = True
    ckpt_key: str = 'teacher_ckpt'
    role: str = 'teacher'

    @property
    def has_own_model(self) -> bool:
        """Whether the teacher is a model of its own (not the student's
        forward): every kind but ``'self'``."""
        return self.kind != 'self'


def _scale_factor(where: str, cfg: Optional[dict]) -> float:
    if cfg is None:
        return 1.0
    if not isinstance(cfg, dict):
        raise TypeError(f'{where} must be a dict like '
                        f'dict(scale_factor=1.5), got {cfg!r}')
    unknown = [k for k in cfg if k not in INPUT_KEYS]
    if unknown:
        raise KeyError(f'{where}: unknown key(s) {unknown}; allowed: '
                       f'{list(INPUT_KEYS)}')
    scale = cfg.get('scale_factor', 1.0)
    if isinstance(scale, bool) or not isinstance(
            scale, (int, float)) or scale <= 0:
        raise ValueError(f'{where}.scale_factor must be a positive number, '
                         f'got {scale!r}')
    return float(scale)


def _decay(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(
            value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f'{where}: decay must be in [0, 1) (the weight '
                         f'of the old EMA weights, e.g. 0.999), got '
                         f'{value!r}')
    return float(value)


def _special_kind(teacher) -> Optional[dict]:
    """``teacher`` as an entry if it is ``'self'`` or ``dict(kind=...)``."""
    if teacher == 'self':
        return dict(kind='self')
    if isinstance(teacher, dict) and 'kind' in teacher:
        return dict(teacher)
    return None


def _check_bool(key: str, value) -> bool:
    """``value``, which must be True or False."""
    if not isinstance(value, bool):
        raise TypeError(f'{key} must be True or False, got {value!r}')
    return value


def _check_kind(where: str, entry: dict) -> str:
    kind = entry.get('kind', 'frozen')
    if kind not in TEACHER_KINDS:
        raise ValueError(f'{where}: unknown kind {kind!r}; kinds: '
                         f'{list(TEACHER_KINDS)}')
    trainable = _check_bool(f'{where}.trainable',
                            entry.get('trainable', False))
    if trainable and kind in ('ema', 'self'):
        raise ValueError(
            f"{where}: a kind='{kind}' teacher follows the student, it "
            f'cannot be trainable; drop trainable=True (or use a model of '
            f'its own with trainable=True for mutual learning)')
    if trainable:
        return 'online'
    return kind


def _spec_of_entry(name: str, entry: dict, where: str) -> TeacherSpec:
    """A :class:`TeacherSpec` from one validated-shape entry."""
    kind = _check_kind(where, entry)
    spec = TeacherSpec(name=name, kind=kind,
                       role=f'teacher {name!r}',
                       ckpt_key=f'{where}.ckpt')
    spec.scale_factor = _scale_factor(f'{where}.input', entry.get('input'))
    if kind in ('ema', 'self'):
        extra = [k for k in ('model', 'ckpt', 'ckpt_strict') if k in entry]
        if kind == 'self':
            extra += [k for k in EMA_KEYS if k in entry]
            if spec.scale_factor != 1.0:
                extra.append('input')
        if extra:
            raise ValueError(
                f"{where}: a kind='{kind}' teacher is the student's own "
                f'{"weights" if kind == "ema" else "forward"}; drop '
                f'{extra}')
        spec.decay = _decay(where, entry.get('decay', 0.999))
        spec.warmup = _check_bool(f'{where}.warmup',
                                  entry.get('warmup', True))
        return spec
    for key in EMA_KEYS:
        if key in entry:
            raise ValueError(
                f"{where}: {key} is for kind='ema' teachers only")
    if entry.get('model') is None:
        raise KeyError(f'{where} needs `model` (a config reference or a '
                       f"model dict), or kind='ema' / kind='self'")
    spec.model = entry['model']
    spec.ckpt = entry.get('ckpt')
    spec.ckpt_strict = _check_bool(f'{where}.ckpt_strict',
                                   entry.get('ckpt_strict', True))
    if kind == 'online' and 'ckpt' not in entry:
        raise KeyError(
            f'{where}: a trainable teacher needs `ckpt`: the checkpoint it '
            f'starts from (online distillation from a trained teacher), or '
            f'ckpt=None to train it from scratch with the student (deep '
            f'mutual learning)')
    return spec


def _several(teachers: dict) -> List[TeacherSpec]:
    if not isinstance(teachers, dict) or not teachers:
        raise TypeError('teachers must be a non-empty dict '
                        '{name: dict(model=..., ckpt=...)}, got '
                        f'{teachers!r}')
    specs = []
    for name, entry in teachers.items():
        where = f'teachers[{name!r}]'
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f'{where}: a teacher name must be an '
                             f'identifier (it names loss keys)')
        if not isinstance(entry, dict):
            raise TypeError(f'{where} must be a dict like dict(model=..., '
                            f'ckpt=...), got {entry!r}')
        unknown = [k for k in entry if k not in ENTRY_KEYS]
        if unknown:
            raise KeyError(f'{where}: unknown key(s) {unknown}; allowed: '
                           f'{list(ENTRY_KEYS)}')
        specs.append(_spec_of_entry(name, entry, where))
    return specs


def _one(teacher, ckpt: Optional[str], strict: bool,
         teacher_input: Optional[dict], trainable: bool) -> TeacherSpec:
    special = _special_kind(teacher)
    if special is not None:
        where = 'teacher'
        allowed = ['kind', *EMA_KEYS]
        unknown = [k for k in special if k not in allowed]
        if unknown:
            raise KeyError(f"teacher=dict(kind=...): unknown key(s) "
                           f"{unknown}; allowed: {allowed}")
        if ckpt is not None:
            special['ckpt'] = ckpt
        if teacher_input is not None:
            special['input'] = teacher_input
        if trainable:
            special['trainable'] = True
        spec = _spec_of_entry(DEFAULT_TEACHER, special, where)
    else:
        trainable = _check_bool('teacher_trainable', trainable)
        spec = TeacherSpec(
            name=DEFAULT_TEACHER, kind='online' if trainable else 'frozen',
            model=teacher, ckpt=ckpt,
            ckpt_strict=strict,
            scale_factor=_scale_factor('teacher_input', teacher_input))
    spec.role, spec.ckpt_key = 'teacher', 'teacher_ckpt'
    return spec


def teacher_specs(teacher, teachers: Optional[dict],
                  teacher_ckpt: Optional[str] = None,
                  teacher_ckpt_strict: bool = True,
                  teacher_input: Optional[dict] = None,
                  teacher_trainable: bool = False
                  ) -> Dict[str, TeacherSpec]:
    """The distiller's teachers by name, checked.

    Args:
        teacher: The one-teacher form's ``teacher`` (None with
            ``teachers``).
        teachers: The several-teacher form (None with ``teacher``).
        teacher_ckpt: One-teacher form: checkpoint.
        teacher_ckpt_strict: One-teacher form: strict loading.
        teacher_input: One-teacher form: ``dict(scale_factor=...)``.
        teacher_trainable: One-teacher form: an online teacher.

    Returns:
        ``{name: spec}`` in config order.

    Raises:
        ValueError / KeyError / TypeError: naming the offending key.
    """
    _check_bool('teacher_ckpt_strict', teacher_ckpt_strict)
    if teachers is not None:
        one = dict(teacher=teacher, teacher_ckpt=teacher_ckpt,
                   teacher_input=teacher_input,
                   teacher_trainable=teacher_trainable or None)
        given = [k for k, v in one.items() if v is not None]
        if given:
            raise ValueError(
                f'give either teachers=dict(...) or the one-teacher '
                f'{given}, not both: move them into an entry of teachers '
                f'(model=, ckpt=, input=, trainable=)')
        return {s.name: s for s in _several(teachers)}
    if teacher is None:
        raise ValueError('a distiller needs teacher=<model> (one teacher) '
                         'or teachers=dict(<name>=dict(model=..., '
                         'ckpt=...), ...)')
    spec = _one(teacher, teacher_ckpt, teacher_ckpt_strict, teacher_input,
                teacher_trainable)
    return {spec.name: spec}


def unknown_teacher_message(name, known: List[str]) -> str:
    """'unknown teacher 'x'; teachers: [...] (close: ...)'."""
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.4)
    hint = f'; did you mean {close}?' if close else ''
    return f'unknown teacher {name!r}; teachers: {known}{hint}'

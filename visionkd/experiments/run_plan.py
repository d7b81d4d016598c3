"""Which runs an experiment needs, in execution order."""
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .methods import MethodSpec

__all__ = ['Run', 'family_order', 'teacher_families', 'plan_runs',
           'teacher_run_name', 'assistant_run_name']


@dataclass(frozen=True)
class Run:
    """One training run (or, for a given teacher checkpoint, one test).

    Attributes:
        name: Unique name, also its folder under ``<work_dir>/runs``.
        role: ``'teacher'``, ``'assistant'`` (a teacher assistant: a
            model between teacher and student, trained distilled from the
            teacher, then the teacher of the via-assistant students),
            ``'baseline'`` or ``'distill'``.
        arch: Model family.
        seed: Random seed (None for the teacher's test-only run).
        method: The method of a ``'distill'`` or ``'assistant'`` run.
        config_name: Its config under ``<work_dir>/configs`` (shared by
            the seeds; the seed is passed on the command line).
        iters: Training iterations (0: evaluation only).
        teacher: Name of the run whose checkpoint is its teacher
            (``'distill'`` and ``'assistant'`` runs); None: its family's
            teacher, or none for a method without a teacher run
            (``MethodSpec.needs_teacher_run``: an EMA or self teacher, a
            teacher trained from scratch with the student).
        teachers: Several teachers (``MethodSpec.teacher_archs``): the
            teacher runs whose checkpoints it learns from, in the method's
            order (``teacher`` is None then).
        assistant: Name of the family's assistant model
            (``ModelPair.assistants``): the model an ``'assistant'`` run
            trains, or the teacher of a ``'distill'`` run via the
            assistant; None otherwise.
    """

    name: str
    role: str
    arch: str
    seed: Optional[int]
    method: Optional[MethodSpec]
    config_name: str
    iters: int
    teacher: Optional[str] = None
    assistant: Optional[str] = None
    teachers: Tuple[str, ...] = ()

    def work_dir(self, root: str) -> str:
        return osp.join(root, 'runs', self.name)

    def config_path(self, root: str) -> str:
        return osp.join(root, 'configs', self.config_name + '.py')


def _suffix(arch: str, default_arch: str) -> str:
    return '' if arch == default_arch else f'_{arch}'


def teacher_run_name(arch: str, default_arch: str) -> str:
    """``'teacher'`` for the default family, ``'teacher_<arch>'`` else."""
    return f'teacher{_suffix(arch, default_arch)}'


def assistant_run_name(assistant: str, method: MethodSpec) -> str:
    """``'assistant_<assistant>_<method>'``: the assistant model trained
    distilled from the teacher with ``method``."""
    return f'assistant_{assistant}_{method.name}'


def family_order(methods: Sequence[MethodSpec],
                 default_arch: str) -> List[str]:
    """Model families the methods need, in order of first use.

    ``[default_arch]`` when there are no methods.
    """
    archs: List[str] = []
    for m in methods:
        arch = m.arch or default_arch
        if arch not in archs:
            archs.append(arch)
    if default_arch in archs:  # the default family first, as always
        archs.remove(default_arch)
        archs.insert(0, default_arch)
    return archs or [default_arch]


def teacher_families(methods: Sequence[MethodSpec], default_arch: str,
                     archs: Sequence[str]) -> List[str]:
    """The families whose teachers are trained: the students' families
    (``archs``), then those only a method's ``teacher_archs`` names."""
    out = list(archs)
    for m in methods:
        for arch in m.teacher_families(default_arch):
            if arch not in out:
                out.append(arch)
    return out


def _teacher_fields(m: MethodSpec, default_arch: str) -> dict:
    """``teacher`` / ``teachers`` of a method's run."""
    families = m.teacher_families(default_arch)
    names = tuple(teacher_run_name(a, default_arch) for a in families)
    if len(names) > 1:
        return dict(teachers=names)
    return dict(teacher=names[0] if names else None)


def _assistant_methods(methods: Sequence[MethodSpec], default_arch: str,
                       assistant_method: Optional[MethodSpec]
                       ) -> Dict[str, MethodSpec]:
    """Method name -> the method its assistant is trained with.

    Each method's own (the TAKD chain: the same distillation at both
    steps) or, with ``assistant_method``, that one for every method, which
    must then all be of its model family.
    """
    if not methods:
        raise ValueError('--assistant needs --methods: the assistant is '
                         'the teacher of the distilled students')
    other = [m.name for m in [*methods, assistant_method]
             if m is not None and m.teacher_archs]
    if other:
        raise ValueError(
            f'--assistant: the methods {other} learn from the teachers of '
            f'other families (teacher_archs), not from one assistant; run '
            f'them without --assistant')
    own = [m.name for m in [*methods, assistant_method]
           if m is not None and not m.needs_teacher_run]
    if own:
        raise ValueError(
            f'--assistant: the methods {own} learn from no trained teacher '
            f'(an EMA or the student itself, or a teacher trained with the '
            f'student), so no assistant can stand between; run them without '
            f'--assistant')
    if assistant_method is None:
        return {m.name: m for m in methods}
    arch = assistant_method.arch or default_arch
    other = [m.name for m in methods if (m.arch or default_arch) != arch]
    if other:
        raise ValueError(
            f'--assistant-method {assistant_method.name} trains an '
            f'assistant of the {arch!r} family, but the methods {other} '
            f'distil another family; drop --assistant-method (each method '
            f'trains its own assistant) or run those methods separately')
    return {m.name: assistant_method for m in methods}


def _assistant_runs(methods: Sequence[MethodSpec], default_arch: str,
                    teacher_iters: int, assistant: str,
                    assistant_method: Optional[MethodSpec]) -> List[Run]:
    """One run per distinct assistant, trained from its family's teacher
    for the teacher's iterations (it is the next step's teacher)."""
    runs: Dict[str, Run] = {}
    for spec in _assistant_methods(methods, default_arch,
                                   assistant_method).values():
        name = assistant_run_name(assistant, spec)
        arch = spec.arch or default_arch
        runs.setdefault(name, Run(
            name, 'assistant', arch, 0, spec, name, teacher_iters,
            teacher=teacher_run_name(arch, default_arch),
            assistant=assistant))
    return list(runs.values())


def _teacher_runs(archs: Sequence[str], default_arch: str,
                  teacher_iters: int, train_teacher: bool) -> List[Run]:
    """One teacher per family; the default family's evaluation-only when
    its checkpoint was given."""
    runs = []
    for arch in archs:
        name = teacher_run_name(arch, default_arch)
        given = arch == default_arch and not train_teacher
        runs.append(Run(name, 'teacher', arch, None if given else 0, None,
                        name, 0 if given else teacher_iters))
    return runs


def _check_plan(methods: Sequence[MethodSpec], default_arch: str,
                archs: Sequence[str], train_teacher: bool,
                assistant: Optional[str],
                assistant_method: Optional[MethodSpec]) -> None:
    """Fail on options :func:`plan_runs` cannot honour."""
    if not train_teacher and default_arch not in archs:
        raise ValueError(
            f'--teacher-ckpt is a teacher of the default model family '
            f'{default_arch!r}, which none of the methods '
            f'{[m.name for m in methods]} uses (they need {archs}); drop '
            f'--teacher-ckpt or add a method of that family')
    if assistant_method is not None and assistant is None:
        raise ValueError('--assistant-method needs --assistant')


def plan_runs(methods: Sequence[MethodSpec], seeds: Sequence[int],
              default_arch: str, teacher_iters: int, student_iters: int,
              train_teacher: bool = True, assistant: Optional[str] = None,
              assistant_method: Optional[MethodSpec] = None) -> List[Run]:
    """Teacher(s) first, then per seed the baseline(s) and every method.

    Only the model families the methods need are trained: a method whose
    ``arch`` differs from ``default_arch`` adds that family's teacher and
    baseline (named ``teacher_<arch>``, ``baseline_<arch>``); the default
    family's (``teacher``, ``baseline``) are planned when a method uses it
    or when there are no methods (teacher and baseline only). A family
    that only teaches (a method's ``teacher_archs``) gets its teacher run
    and no baseline.
    ``train_teacher=False`` (a teacher checkpoint was given) makes the
    default teacher an evaluation-only run; it is an error when no method
    uses the default family.

    With ``assistant`` (a name of the families' ``ModelPair.assistants``)
    the teachers are followed by the assistant runs
    (``assistant_<name>_<method>``, seed 0, ``teacher_iters``, distilled
    from the family's teacher with each method, or with
    ``assistant_method`` only), and every method's run of a seed by its
    run via the assistant, ``<method>_via_<name>_seed<N>``, whose teacher
    is that assistant.
    """
    archs = family_order(methods, default_arch)
    _check_plan(methods, default_arch, archs, train_teacher, assistant,
                assistant_method)
    runs = _teacher_runs(teacher_families(methods, default_arch, archs),
                         default_arch, teacher_iters, train_teacher)
    via: Dict[str, str] = {}
    if assistant is not None:
        trained = _assistant_methods(methods, default_arch,
                                     assistant_method)
        runs += _assistant_runs(methods, default_arch, teacher_iters,
                                assistant, assistant_method)
        via = {m: assistant_run_name(assistant, spec)
               for m, spec in trained.items()}
    for seed in seeds:
        for arch in archs:
            sfx = _suffix(arch, default_arch)
            runs.append(Run(f'baseline{sfx}_seed{seed}', 'baseline', arch,
                            seed, None, f'baseline{sfx}', student_iters))
        for m in methods:
            arch = m.arch or default_arch
            # an EMA / self teacher or one trained with the student from
            # scratch needs no teacher run
            runs.append(Run(f'{m.name}_seed{seed}', 'distill', arch, seed,
                            m, m.name, student_iters,
                            **_teacher_fields(m, default_arch)))
            if m.name in via:
                config = f'{m.name}_via_{assistant}'
                runs.append(Run(f'{config}_seed{seed}', 'distill', arch,
                                seed, m, config, student_iters,
                                teacher=via[m.name], assistant=assistant))
    return runs

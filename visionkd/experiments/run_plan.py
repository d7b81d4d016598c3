"""Which runs an experiment needs, in execution order."""
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence

from .methods import MethodSpec

__all__ = ['Run', 'family_order', 'plan_runs']


@dataclass(frozen=True)
class Run:
    """One training run (or, for a given teacher checkpoint, one test).

    Attributes:
        name: Unique name, also its folder under ``<work_dir>/runs``.
        role: ``'teacher'``, ``'baseline'`` or ``'distill'``.
        arch: Model family.
        seed: Random seed (None for the teacher's test-only run).
        method: The method of a ``'distill'`` run.
        config_name: Its config under ``<work_dir>/configs`` (shared by
            the seeds; the seed is passed on the command line).
        iters: Training iterations (0: evaluation only).
    """

    name: str
    role: str
    arch: str
    seed: Optional[int]
    method: Optional[MethodSpec]
    config_name: str
    iters: int

    def work_dir(self, root: str) -> str:
        return osp.join(root, 'runs', self.name)

    def config_path(self, root: str) -> str:
        return osp.join(root, 'configs', self.config_name + '.py')


def _suffix(arch: str, default_arch: str) -> str:
    return '' if arch == default_arch else f'_{arch}'


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


def plan_runs(methods: Sequence[MethodSpec], seeds: Sequence[int],
              default_arch: str, teacher_iters: int, student_iters: int,
              train_teacher: bool = True) -> List[Run]:
    """Teacher(s) first, then per seed the baseline(s) and every method.

    Only the model families the methods need are trained: a method whose
    ``arch`` differs from ``default_arch`` adds that family's teacher and
    baseline (named ``teacher_<arch>``, ``baseline_<arch>``); the default
    family's (``teacher``, ``baseline``) are planned when a method uses it
    or when there are no methods (teacher and baseline only).
    ``train_teacher=False`` (a teacher checkpoint was given) makes the
    default teacher an evaluation-only run; it is an error when no method
    uses the default family.
    """
    archs = family_order(methods, default_arch)
    if not train_teacher and default_arch not in archs:
        raise ValueError(
            f'--teacher-ckpt is a teacher of the default model family '
            f'{default_arch!r}, which none of the methods '
            f'{[m.name for m in methods]} uses (they need {archs}); drop '
            f'--teacher-ckpt or add a method of that family')
    runs = []
    for arch in archs:
        sfx = _suffix(arch, default_arch)
        given = arch == default_arch and not train_teacher
        runs.append(Run(f'teacher{sfx}', 'teacher', arch,
                        None if given else 0, None, f'teacher{sfx}',
                        0 if given else teacher_iters))
    for seed in seeds:
        for arch in archs:
            sfx = _suffix(arch, default_arch)
            runs.append(Run(f'baseline{sfx}_seed{seed}', 'baseline', arch,
                            seed, None, f'baseline{sfx}', student_iters))
        for m in methods:
            arch = m.arch or default_arch
            runs.append(Run(f'{m.name}_seed{seed}', 'distill', arch, seed,
                            m, m.name, student_iters))
    return runs

"""Automatic pairing: ``student='auto'`` terms and ``distill_terms`` presets.

A feature term may leave its layers to the distiller::

    distill_terms=dict(
        fpn=dict(student='auto', teacher='auto',      # all FPN levels
                 loss=dict(type='PKDLoss', loss_weight=6.0)))
    distill_terms='fpn'        # the same with the preset's default loss
    distill_terms='auto'       # 'fpn' for detection, 'logits' for
                               # segmentation

At build time, before the terms are checked, both models run once on the
zero image of ``dry_run_input_size`` with forward hooks on every module
(:mod:`.layer_survey`, the analysis of
``tools/analysis_tools/list_layers.py``); the teacher-student pairs of
equal kind and stride (:mod:`.layer_pairing`) are matched against the
term's preset, and ``student``/``teacher`` become module paths, with the
``connector`` the pair needs (unless the term gives one), the ``levels``
of equal stride when the two layers differ in levels (unless the term
gives them) and the preset's default ``loss`` (unless the term gives
one). Every other key of the term is kept. The resolved ``distill_terms``
are logged (INFO, mmengine's logger) as a ``distill_terms=dict(...)`` to
paste, so a run is reproducible from its log.

A term's preset is its ``preset`` key, else its name when that is a
preset (``fpn=dict(student='auto', ...)``). With one side given
(``student='neck', teacher='auto'``) the preset may be left out: the pair
is the one of that layer. No pair, or more than one, is a build error
naming the term and the fix.
"""
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, Union

from mmengine.logging import MMLogger

from .layer_pairing import (
    DEFAULT_LOSSES,
    pairing_notes,
    suggest_pairs,
    terms_snippet,
)
from .layer_survey import CANDIDATE_KINDS, survey

if TYPE_CHECKING:  # pragma: no cover
    from .base_distiller import BaseDistiller

__all__ = ['AUTO', 'PRESETS', 'PairingPreset', 'expand_preset',
           'format_terms', 'has_auto_terms', 'resolve_auto_terms',
           'resolve_term']

#: The value of ``student`` / ``teacher`` that asks for automatic pairing.
AUTO = 'auto'
#: What the list_layers tool suggests for the candidates it cannot pair.
_LIST_HINT = ('python tools/analysis_tools/list_layers.py CONFIG lists the '
              'layers and the pairs')


@dataclass(frozen=True)
class PairingPreset:
    """What a preset pairs and the loss it gives a term without one.

    Attributes:
        name: Preset name (also the term name of a string preset).
        what: Description used in messages.
        select: ``(pair, task) -> bool``: whether a suggested pair (see
            :func:`.layer_pairing.make_pair`) belongs to the preset.
        loss: ``task -> loss config`` of a term that gives none.
    """

    name: str
    what: str
    select: Callable[[dict, str], bool]
    loss: Callable[[str], dict]


def _is_neck(pair: dict, task: str) -> bool:
    return pair['kind'].startswith('neck')


def _is_logits(pair: dict, task: str) -> bool:
    if pair['kind'] != 'logits':
        return False
    if task == 'segmentation':
        return pair['student'].split('.')[0] == 'decode_head'
    # the class-score layer of a head: rpn_cls, retina_cls, rtm_cls.<i>
    return any('cls' in part for part in pair['student'].split('.')[1:])


def _logits_loss(task: str) -> dict:
    if task == 'segmentation':
        return dict(DEFAULT_LOSSES['seg_logits'])
    # sigmoid class scores of dense heads: the teacher's scores as soft
    # labels (CrossKD's classification KD, Wang et al., CVPR 2024)
    return dict(type='KDQualityFocalLoss', beta=1.0, loss_weight=1.0)


#: The presets: ``'fpn'`` (every neck level of equal stride on both
#: models, PKD with loss weight 6 by default) and ``'logits'``
#: (segmentation: the decode head's ``conv_seg``, CWD tau 4 weight 3;
#: detection: the dense head's class logits of equal shape, e.g.
#: ``bbox_head.retina_cls`` or ``rpn_head.rpn_cls``, quality focal KD).
PRESETS: Dict[str, PairingPreset] = {
    'fpn': PairingPreset(
        'fpn', 'neck (FPN) levels of equal stride', _is_neck,
        lambda task: dict(DEFAULT_LOSSES['feature'])),
    'logits': PairingPreset(
        'logits', 'decode-head logits (segmentation) or dense-head class '
        'logits of equal shape (detection)', _is_logits, _logits_loss),
}


def expand_preset(cfgs: Union[str, dict, None],
                  task: str) -> Dict[str, dict]:
    """``distill_terms`` as ``{name: term}``; a preset name becomes one
    ``student='auto'`` term named after it.

    Args:
        cfgs: ``None``, a dict of terms, or ``'auto'`` / a preset name.
        task: ``'detection'`` or ``'segmentation'`` (``'auto'`` means
            ``'fpn'`` for detection, ``'logits'`` for segmentation).

    Raises:
        ValueError: an unknown preset name.
        TypeError: neither a dict nor a string.
    """
    if cfgs is None:
        return {}
    if isinstance(cfgs, str):
        name = cfgs
        if name == AUTO:
            name = 'fpn' if task == 'detection' else 'logits'
        if name not in PRESETS:
            raise ValueError(
                f'distill_terms={cfgs!r}: unknown preset; use '
                f"'{AUTO}' or one of {sorted(PRESETS)}, or a dict "
                f'{{name: term}}')
        return {name: dict(student=AUTO, teacher=AUTO)}
    if not isinstance(cfgs, dict):
        raise TypeError(
            f'distill_terms must be a dict {{name: term}} or a preset name '
            f"('{AUTO}', {', '.join(repr(p) for p in sorted(PRESETS))}), "
            f'got {type(cfgs).__name__}')
    return cfgs


def _is_auto(cfg: dict) -> bool:
    return isinstance(cfg, dict) and AUTO in (cfg.get('student'),
                                              cfg.get('teacher'))


def has_auto_terms(cfgs: Dict[str, dict]) -> bool:
    """Whether a term of ``cfgs`` has ``student='auto'`` or
    ``teacher='auto'``."""
    return any(_is_auto(cfg) for cfg in cfgs.values())


def _term_preset(name: str, cfg: dict) -> Optional[PairingPreset]:
    """The preset of an auto term (None: pair by its given side)."""
    key = cfg.get('preset')
    if key is not None:
        if key not in PRESETS:
            raise ValueError(f'distill term {name!r}: unknown preset '
                             f'{key!r}; presets: {sorted(PRESETS)}')
        return PRESETS[key]
    if name in PRESETS:
        return PRESETS[name]
    if cfg.get('student') == AUTO and cfg.get('teacher') == AUTO:
        raise ValueError(
            f"distill term {name!r}: student='auto' and teacher='auto' "
            f'need to know what to pair: name the term after a preset '
            f"({', '.join(repr(p) for p in sorted(PRESETS))}) or add "
            f"preset='fpn' / preset='logits'")
    return None


def _check_auto_cfg(name: str, cfg: dict) -> None:
    mode = cfg.get('mode', 'feature')
    if mode != 'feature':
        raise ValueError(
            f"distill term {name!r}: student='auto' / teacher='auto' is for "
            f"feature terms (mode='feature'), not mode={mode!r}; write the "
            f'module paths of student and teacher')


def _candidates(name: str, cfg: dict, preset: Optional[PairingPreset],
                pairs: List[dict], task: str) -> List[dict]:
    """The suggested pairs an auto term may mean."""
    found = [p for p in pairs if preset is None or preset.select(p, task)]
    for side in ('student', 'teacher'):
        if cfg.get(side) != AUTO:
            found = [p for p in found if p[side] == cfg.get(side)]
    return found


def _describe_request(name: str, cfg: dict,
                      preset: Optional[PairingPreset]) -> str:
    sides = ', '.join(f'{s}={cfg.get(s)!r}' for s in ('student', 'teacher'))
    what = f"preset '{preset.name}' ({preset.what})" if preset else (
        'a pair with the given layer')
    return f'distill term {name!r} ({sides}): {what}'


def _pick_pair(name: str, cfg: dict, preset: Optional[PairingPreset],
               survey_out: Tuple[List[dict], List[str]],
               task: str) -> dict:
    """The one pair of an auto term; raises if none or several."""
    pairs, notes = survey_out
    found = _candidates(name, cfg, preset, pairs, task)
    request = _describe_request(name, cfg, preset)
    if not found:
        # why the necks did not pair (the RoI note is about other modes)
        why = ''.join(f'; {n}' for n in notes if n.startswith('necks'))
        raise ValueError(
            f'{request}: automatic pairing found no teacher-student pair '
            f'of equal kind and stride{why}. Write student= and teacher= '
            f'module paths (and levels=[...] for FPNs of other strides); '
            f'{_LIST_HINT}')
    if len(found) > 1:
        listed = ', '.join(f"{p['student']} -> {p['teacher']}"
                           for p in found)
        first = found[0]
        raise ValueError(
            f'{request}: automatic pairing is ambiguous, {len(found)} pairs '
            f'match ({listed}); write student= and teacher= explicitly, '
            f"e.g. student='{first['student']}', "
            f"teacher='{first['teacher']}'")
    return found[0]


def _levels(name: str, cfg: dict, pair: dict) -> Optional[List[int]]:
    """The term's levels: its own (checked against the pair) or the
    pair's (None: all levels)."""
    paired = pair['term'].get('levels')
    given = cfg.get('levels')
    if given is None:
        return None if paired is None else list(paired)
    if paired is not None:
        bad = [i for i in given if i not in paired]
        if bad:
            raise ValueError(
                f'distill term {name!r}: levels {bad} are not of equal '
                f"stride on {pair['student']!r} and {pair['teacher']!r} "
                f'(automatic pairing keeps levels {list(paired)}); drop '
                f'them or write the module paths')
    return list(given)


def resolve_term(name: str, cfg: dict, pair: dict,
                 preset: Optional[PairingPreset], task: str) -> dict:
    """The explicit entry of an auto term paired with ``pair``.

    ``student``, ``teacher``, ``connector`` (the pair's unless given),
    ``levels`` (see above), then the term's other keys in their order,
    with the preset's ``loss`` if the term gives none. ``preset`` is
    dropped.
    """
    out = dict(student=pair['student'], teacher=pair['teacher'])
    connector = cfg.get('connector', pair['connector'])
    if connector is not None:
        out['connector'] = copy.deepcopy(connector)
    levels = _levels(name, cfg, pair)
    if levels is not None:
        out['levels'] = levels
    for key, value in cfg.items():
        if key not in out and key not in ('preset', 'student', 'teacher',
                                          'connector', 'levels'):
            out[key] = copy.deepcopy(value)
    if 'loss' not in out:
        out['loss'] = (preset.loss(task) if preset is not None else
                       copy.deepcopy(pair['loss']))
    return out


def _surveyed_pairs(distiller: 'BaseDistiller') -> Tuple[List[dict],
                                                         List[str]]:
    """Suggested pairs of the distiller's models, and the pairing notes."""
    layers = survey(distiller, distiller.dry_run_input_size)
    cands = {role: [x for x in layers[role] if x.kind in CANDIDATE_KINDS]
             for role in ('student', 'teacher')}
    pairs = suggest_pairs(cands['student'], cands['teacher'],
                          distiller.task)
    return pairs, pairing_notes(cands['student'], cands['teacher'], pairs)


def resolve_auto_terms(distiller: 'BaseDistiller',
                       cfgs: Union[str, dict, None]) -> Dict[str, dict]:
    """``distill_terms`` with every ``'auto'`` layer resolved.

    Args:
        distiller: The distiller being built (teacher and student built,
            no term recorded yet).
        cfgs: Its ``distill_terms``: a dict, a preset name or None.

    Returns:
        ``{name: term}`` with module paths only; the terms without
        ``'auto'`` are returned as given. When something was resolved,
        the whole dict is logged as a pasteable ``distill_terms=dict(...)``.
    """
    terms = expand_preset(cfgs, distiller.task)
    if not has_auto_terms(terms):
        return terms
    for name, cfg in terms.items():
        if _is_auto(cfg):
            _check_auto_cfg(name, cfg)
            _term_preset(name, cfg)  # errors before the survey
    surveyed = _surveyed_pairs(distiller)
    out = {}
    for name, cfg in terms.items():
        if not _is_auto(cfg):
            out[name] = cfg
            continue
        preset = _term_preset(name, cfg)
        pair = _pick_pair(name, cfg, preset, surveyed, distiller.task)
        out[name] = resolve_term(name, cfg, pair, preset, distiller.task)
    MMLogger.get_current_instance().info(
        'automatic pairing resolved distill_terms (paste them into the '
        'config to pin these layers):\n' + format_terms(out))
    return out


def format_terms(terms: Dict[str, dict]) -> str:
    """``terms`` as a pasteable ``distill_terms=dict(...)``."""
    return terms_snippet([dict(name=n, term=t) for n, t in terms.items()])

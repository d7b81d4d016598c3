"""Teacher-student term pairs from two models' surveyed layers.

Layers of the same kind and stride (:mod:`.layer_survey`) are paired: the
necks (all levels of equal stride), head logits and segmentation head
features, backbone stages. Each pair has the connector(s) it needs
(``ConvConnector`` for other channels, ``ResizeConnector`` for another
spatial size) and a default loss, and is written as a ``distill_terms``
entry. ``tools/analysis_tools/list_layers.py`` prints the pairs;
:mod:`.auto_pairing` resolves ``student='auto'`` terms with them.
"""
from typing import Any, Dict, List, Optional, Sequence

from .layer_survey import Layer, Stride

__all__ = ['DEFAULT_LOSSES', 'connector_for', 'make_pair', 'pairing_notes',
           'py_repr', 'suggest_pairs', 'terms_snippet']

#: The loss each suggested pair gets: features (PKD, Cao et al., NeurIPS
#: 2022, the weight of its official FPN setting), segmentation logits (CWD,
#: Shu et al., ICCV 2021, its logits-only setting) and detection head
#: outputs (MSE).
DEFAULT_LOSSES = dict(
    feature=dict(type='PKDLoss', loss_weight=6.0),
    seg_logits=dict(type='ChannelWiseDivergence', tau=4.0, loss_weight=3.0),
    det_logits=dict(type='FeatureMSELoss', loss_weight=1.0))


def connector_for(student: Layer, teacher: Layer,
                  level_ids: Sequence[int]) -> Any:
    """The connector(s) a term from ``student`` to ``teacher`` needs.

    Returns:
        None for equal shapes, ``dict(type='ConvConnector')`` if the
        channels differ, plus ``dict(type='ResizeConnector')`` (a list)
        if the spatial sizes differ.
    """
    pairs = [(student.shapes[i], teacher.shapes[i]) for i in level_ids]
    conns = []
    if any(s[1] != t[1] for s, t in pairs):
        conns.append(dict(type='ConvConnector'))
    if any(s[2:] != t[2:] for s, t in pairs):
        conns.append(dict(type='ResizeConnector'))
    if not conns:
        return None
    return conns[0] if len(conns) == 1 else conns


def _loss_for(kind: str, task: str) -> dict:
    if kind == 'logits':
        return dict(DEFAULT_LOSSES['seg_logits' if task == 'segmentation'
                                   else 'det_logits'])
    return dict(DEFAULT_LOSSES['feature'])


def _term_name(kind: str, student: Layer) -> str:
    if kind.startswith('neck'):
        return 'fpn' if kind == 'neck (FPN)' else 'neck'
    if kind == 'backbone stage':
        return f'backbone_s{student.strides[0]}'
    parts = student.path.split('.')
    if kind == 'head conv' or parts[-1] == 'conv_seg':
        head = parts[0].replace('_head', '')
        if kind == 'head conv':
            base = f'{head}_feat'
        else:
            base = 'logits' if head == 'decode' else f'{head}_logits'
        return '_'.join([base] + parts[1:-1])
    return '_'.join(parts[1:]) if len(parts) > 1 else parts[0]


def make_pair(kind: str, student: Layer, teacher: Layer, task: str,
              level_ids: Optional[List[int]] = None) -> dict:
    """A suggested term between two layers.

    Args:
        kind: Kind of both layers.
        student: Student layer.
        teacher: Teacher layer.
        task: ``'detection'`` or ``'segmentation'`` (chooses the loss).
        level_ids: Levels kept when the two differ in levels.

    Returns:
        ``dict(name, kind, student, teacher, levels, connector, loss,
        term)``; ``term`` is the ``distill_terms`` entry.
    """
    ids = list(range(student.levels)) if level_ids is None else level_ids
    connector = connector_for(student, teacher, ids)
    term = dict(student=student.path, teacher=teacher.path)
    if connector is not None:
        term['connector'] = connector
    if level_ids is not None:
        term['levels'] = list(level_ids)
    term['loss'] = _loss_for(kind, task)
    return dict(name=_term_name(kind, student), kind=kind,
                student=student.path, teacher=teacher.path,
                levels=len(ids), strides=[student.strides[i] for i in ids],
                connector=connector, loss=term['loss'], term=term)


def _pair_necks(students: List[Layer], teachers: List[Layer],
                task: str) -> List[dict]:
    """Neck to neck, all levels of equal stride (``levels`` if not all)."""
    s = next((x for x in students if x.kind.startswith('neck')), None)
    t = next((x for x in teachers if x.kind.startswith('neck')), None)
    if s is None or t is None or s.kind != t.kind or not (
            s.is_map and t.is_map):
        return []
    n = min(s.levels, t.levels)
    common = [i for i in range(n) if s.strides[i] == t.strides[i]]
    if not common:
        return []
    same = s.levels == t.levels and len(common) == n
    return [make_pair(s.kind, s, t, task, None if same else common)]


def _pair_stages(students: List[Layer], teachers: List[Layer],
                 task: str) -> List[dict]:
    """The deepest backbone stage of each stride both models have (among
    the stages the backbone returns, if it returns any)."""
    def by_stride(layers: List[Layer]) -> Dict[Stride, Layer]:
        stages = [x for x in layers if x.kind == 'backbone stage'
                  and x.levels == 1 and x.is_map]
        outs = {s for x in layers if x.kind == 'backbone' for s in x.shapes}
        returned = [x for x in stages if x.shapes[0] in outs]
        # the last one of each stride
        return {x.strides[0]: x for x in returned or stages}

    s_map, t_map = by_stride(students), by_stride(teachers)
    return [make_pair('backbone stage', s_map[k], t_map[k], task)
            for k in s_map if k in t_map]


def _pair_heads(students: List[Layer], teachers: List[Layer],
                task: str) -> List[dict]:
    """Logits to logits (same path, same channels) and the feature of the
    same segmentation head (``head conv``)."""
    def key(x: Layer) -> Optional[str]:
        if x.kind == 'logits':
            return x.path
        if x.kind == 'head conv':
            return 'feat:' + x.path.rsplit('.', 1)[0]
        return None

    t_map = {key(x): x for x in teachers if key(x) and x.is_map}
    pairs = []
    for s in students:
        t = t_map.get(key(s)) if key(s) and s.is_map else None
        if t is None or t.levels != s.levels:
            continue
        if s.kind == 'logits' and any(
                a[1] != b[1] for a, b in zip(s.shapes, t.shapes)):
            continue  # other classes/anchors: not comparable
        pairs.append(make_pair(s.kind, s, t, task))
    return sorted(pairs, key=lambda p: p['kind'] != 'logits')


def suggest_pairs(students: List[Layer], teachers: List[Layer],
                  task: str) -> List[dict]:
    """Suggested terms: neck, logits and head features, backbone stages.

    Args:
        students: Layers of the student (:func:`layers_of`).
        teachers: Layers of the teacher.
        task: ``'detection'`` or ``'segmentation'``.

    Returns:
        The pairs (see :func:`make_pair`), term names made unique.
    """
    pairs = (_pair_necks(students, teachers, task) +
             _pair_heads(students, teachers, task) +
             _pair_stages(students, teachers, task))
    seen: Dict[str, int] = {}
    for pair in pairs:
        name = pair['name']
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            pair['name'] = f'{name}_{seen[name]}'
    return pairs


def pairing_notes(students: List[Layer], teachers: List[Layer],
                  pairs: List[dict]) -> List[str]:
    """What the pairs leave out, and why."""
    notes = []
    s = next((x for x in students if x.kind.startswith('neck')), None)
    t = next((x for x in teachers if x.kind.startswith('neck')), None)
    if s and t and not any(p['kind'] == s.kind for p in pairs):
        notes.append(
            f'necks not paired: student strides {s.strides}, teacher '
            f'strides {t.strides} (a term compares level i with level i; '
            f'levels=[...] keeps the same indices on both)')
    if any(x.kind.startswith('roi') for x in students + teachers):
        notes.append("RoI head layers: use mode='roi' "
                     '(docs/head_level_kd.md), not a feature term')
    return notes


def py_repr(value: Any) -> str:
    """``value`` in config syntax (``dict(k=v)``, lists, literals)."""
    if isinstance(value, dict):
        return 'dict(' + ', '.join(f'{k}={py_repr(v)}'
                                   for k, v in value.items()) + ')'
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(py_repr(v) for v in value) + ']'
    return repr(value)


def terms_snippet(pairs: List[dict]) -> str:
    """The pairs as a ready-to-paste ``distill_terms=dict(...)``."""
    if not pairs:
        return 'distill_terms=dict()'
    lines = ['distill_terms=dict(']
    for i, pair in enumerate(pairs):
        items = list(pair['term'].items())
        lines.append(f"    {pair['name']}=dict(")
        for j, (key, value) in enumerate(items):
            end = ')' if j == len(items) - 1 else ','
            lines.append(f'        {key}={py_repr(value)}{end}')
        lines[-1] += ',' if i < len(pairs) - 1 else ')'
    return '\n'.join(lines)

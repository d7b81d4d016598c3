"""``results.png``: metric bars with the seed spread, and loss curves."""
import os
from typing import Dict, List, Optional

from .results_report import has_default_family, mean_std

__all__ = ['plot_results']


def _smooth(ys: List[float], k: int = 5) -> List[float]:
    out = []
    for i in range(len(ys)):
        window = ys[max(0, i - k + 1):i + 1]
        out.append(sum(window) / len(window))
    return out


def _bar_groups(doc: dict):
    """Bars of the metric panel, one group per model family.

    Its baseline (grey), then its methods (each followed by its run via
    the teacher assistant, if any); the family's teacher is a dashed line
    over its group. Returns (names, per-seed values per bar, indices
    of the grey bars, (arch, first bar, last bar, teacher) per family).
    """
    groups: Dict[Optional[str], List[str]] = {}
    for name, entry in doc['methods'].items():
        groups.setdefault(entry.get('arch'), []).append(name)
    if has_default_family(doc):
        groups.setdefault(None, [])
    # the default family (key None) first, each family once
    order = sorted(groups, key=lambda a: a is not None)
    names, series, greys, spans = [], [], [], []
    for arch in order:
        methods = groups[arch]
        if arch is None:
            base, teacher = doc['baseline']['metric'], doc['teacher']['metric']
        else:
            first = doc['methods'][methods[0]]
            base, teacher = first['baseline']['metric'], \
                first['teacher']['metric']
        start = len(names)
        greys.append(start)
        names.append('baseline' if arch is None else f'baseline ({arch})')
        series.append(base)
        for n in methods:
            names.append(n)
            series.append(doc['methods'][n]['metric'])
            via = doc['methods'][n].get('via_assistant')
            if via is not None:
                model = doc['assistants'][via['assistant']]['model']
                names.append(f'{n} via {model}')
                series.append(via['metric'])
        spans.append((arch, start, len(names) - 1, teacher))
    return names, series, greys, spans


def _plot_metrics(ax, doc: dict) -> None:
    """Metric bars with the seed spread and the teachers' lines."""
    names, series, greys, spans = _bar_groups(doc)
    for i, values in enumerate(series):
        mean, std, n = mean_std(values)
        if mean is None:
            continue
        ax.bar(i, mean, yerr=std if n > 1 else None, capsize=4,
               color='0.6' if i in greys else 'C0', alpha=0.8)
        pts = [v for v in values if v is not None]
        ax.scatter([i] * len(pts), pts, color='k', s=12, zorder=3)
    teachers = []
    for k, (arch, lo_i, hi_i, teacher) in enumerate(spans):
        if teacher is None:
            continue
        teachers.append(teacher)
        label = 'teacher' if arch is None else f'teacher ({arch})'
        ax.hlines(teacher, lo_i - 0.45, hi_i + 0.45, colors=f'C{3 + k}',
                  linestyles='--', label=f'{label} {teacher:.1f}')
    if teachers:
        ax.legend(loc='upper right', fontsize=8, ncol=len(teachers))
    vals = [v for s in series for v in s if v is not None]
    if vals:
        lo = min(vals + teachers)
        hi = max(vals + teachers)
        # headroom above the tallest bar for the legend
        ax.set_ylim(max(0.0, lo - 0.25 * (hi - lo + 1)), hi + 0.3 *
                    (hi - lo + 1))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha='right')
    ax.set_ylabel(f'{doc["metric"]} (val)')
    ax.set_title('mean ± std over seeds (dots: seeds)')


def _plot_curves(ax, curves: Dict[str, Dict[str, Dict[int, float]]],
                 key: str, label: str) -> None:
    """One loss (``'task'`` or ``'kd'``) of every run, smoothed."""
    for name, c in curves.items():
        pts = sorted(c.get(key, {}).items())
        if not pts:
            continue
        xs, ys = zip(*pts)
        style = dict(color='k', lw=2) if name.startswith(
            ('baseline', 'teacher')) else dict(lw=1.2)
        ax.plot(xs, _smooth(list(ys)), label=name, **style)
    ax.set_xlabel('iteration')
    ax.set_title(label + ' (first seed, smoothed)')
    if key == 'kd':
        ax.set_yscale('log')
    if ax.lines:
        ax.legend(fontsize=7)


def plot_results(doc: dict, curves: Dict[str, Dict[str, Dict[int, float]]],
                 path: str, title: Optional[str] = None) -> None:
    """Write the figure.

    Args:
        doc: The ``results.json`` document.
        curves: Run label -> ``scalars_log.train_curves`` of that run (one
            seed per model).
        path: Output ``.png``.
        title: Figure title.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    _plot_metrics(axes[0], doc)
    _plot_curves(axes[1], curves, 'task', 'task loss (student)')
    _plot_curves(axes[2], curves, 'kd', 'distillation loss')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)

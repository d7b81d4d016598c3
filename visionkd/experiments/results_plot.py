"""``results.png``: metric bars with the seed spread, and loss curves."""
import os
from typing import Dict, List, Optional

from .results_report import mean_std

__all__ = ['plot_results']


def _smooth(ys: List[float], k: int = 5) -> List[float]:
    out = []
    for i in range(len(ys)):
        window = ys[max(0, i - k + 1):i + 1]
        out.append(sum(window) / len(window))
    return out


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
    ax = axes[0]
    names = ['baseline'] + list(doc['methods'])
    series = [doc['baseline']['metric']] + [
        doc['methods'][n]['metric'] for n in doc['methods']]
    for i, values in enumerate(series):
        mean, std, n = mean_std(values)
        if mean is None:
            continue
        ax.bar(i, mean, yerr=std if n > 1 else None, capsize=4,
               color='0.6' if i == 0 else 'C0', alpha=0.8)
        pts = [v for v in values if v is not None]
        ax.scatter([i] * len(pts), pts, color='k', s=12, zorder=3)
    teacher = doc['teacher']['metric']
    if teacher is not None:
        ax.axhline(teacher, color='C3', ls='--', label=f'teacher '
                   f'{teacher:.1f}')
        ax.legend(loc='lower right')
    vals = [v for s in series for v in s if v is not None]
    if vals:
        lo = min(vals + ([teacher] if teacher is not None else []))
        hi = max(vals + ([teacher] if teacher is not None else []))
        ax.set_ylim(max(0.0, lo - 0.25 * (hi - lo + 1)), hi + 0.15 *
                    (hi - lo + 1))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha='right')
    ax.set_ylabel(f'{doc["metric"]} (val)')
    ax.set_title('mean ± std over seeds (dots: seeds)')

    for ax, key, label in ((axes[1], 'task', 'task loss (student)'),
                           (axes[2], 'kd', 'distillation loss')):
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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path + '.tmp.png'
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)

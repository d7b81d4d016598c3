"""The demo's two PNGs: predictions side by side, and metrics with losses.

``predictions.png``: the first val images, one row each; the columns are
the ground truth and the boxes of every model (``tools/test.py --out``
dumps) above a score threshold, coloured by class. ``results.png``: the
experiment runner's figure (``visionkd.experiments.results_plot``) for one
seed: mAP bars with the teacher's line, the task loss and the
distillation loss over the iterations.
"""
import pickle
from typing import Dict, List, Sequence

#: Box colours per class (matplotlib names), cycled.
COLOURS = ('tab:red', 'tab:blue', 'tab:green', 'tab:orange', 'tab:purple')


def _boxes(instances: dict, scale=None, score_thr=None):
    """(x1, y1, x2, y2, label) rows of a dumped ``*_instances`` dict."""
    bboxes = instances['bboxes'].tolist()
    labels = instances['labels'].tolist()
    keep = range(len(bboxes))
    if score_thr is not None:
        scores = instances['scores'].tolist()
        keep = [i for i in keep if scores[i] >= score_thr]
    sx, sy = (scale[0], scale[1]) if scale else (1.0, 1.0)
    return [(bboxes[i][0] / sx, bboxes[i][1] / sy, bboxes[i][2] / sx,
             bboxes[i][3] / sy, int(labels[i])) for i in keep]


def _draw(ax, image, boxes, title: str) -> None:
    import matplotlib.patches as patches
    ax.imshow(image)
    for x1, y1, x2, y2, label in boxes:
        ax.add_patch(patches.Rectangle(
            (x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.2,
            edgecolor=COLOURS[label % len(COLOURS)]))
    ax.set_title(f'{title} ({len(boxes)})', fontsize=9)
    ax.axis('off')


def draw_predictions(dumps: Dict[str, str], titles: Dict[str, str],
                     out: str, classes: Sequence[str], images: int = 4,
                     score_thr: float = 0.3) -> str:
    """Write ``predictions.png``.

    Args:
        dumps: Model name -> its ``tools/test.py --out`` pickle (the same
            val images in each).
        titles: Model name -> column title.
        out: The ``.png`` to write.
        classes: Class names (the legend).
        images: Rows: the first ``images`` val images (by image id).
        score_thr: Boxes scored below it are not drawn.

    Returns:
        ``out``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.image as mpimg
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt
    preds: Dict[str, List[dict]] = {}
    for name, path in dumps.items():
        with open(path, 'rb') as f:
            preds[name] = sorted(pickle.load(f), key=lambda r: r['img_id'])
    first = next(iter(preds.values()))[:images]
    cols = 1 + len(preds)
    fig, axes = plt.subplots(len(first), cols, squeeze=False,
                             figsize=(3.2 * cols, 2.5 * len(first)))
    for row, sample in enumerate(first):
        image = mpimg.imread(sample['img_path'])
        _draw(axes[row][0], image, _boxes(sample['gt_instances'],
                                          sample.get('scale_factor')),
              'ground truth')
        for col, (name, records) in enumerate(preds.items(), start=1):
            _draw(axes[row][col], image,
                  _boxes(records[row]['pred_instances'],
                         score_thr=score_thr), titles.get(name, name))
    handles = [patches.Patch(edgecolor=COLOURS[i % len(COLOURS)],
                             fill=False, label=c)
               for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc='lower center', ncol=len(classes))
    fig.suptitle(f'val predictions, score >= {score_thr} (box count)')
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def draw_results(metrics: Dict[str, float], method: str,
                 work_dirs: Dict[str, str], out: str) -> str:
    """Write ``results.png``: mAP bars and the training losses.

    Args:
        metrics: ``'teacher'``, ``'baseline'``, ``'distilled'`` -> bbox
            mAP (0-100).
        method: The distillation method (the distilled bar's label).
        work_dirs: ``'baseline'``, ``'distilled'`` -> their work dirs
            (their ``scalars.json`` give the loss curves).
        out: The ``.png`` to write.
    """
    from visionkd.experiments.results_plot import plot_results
    from visionkd.experiments.scalars_log import train_curves
    doc = dict(metric='bbox_mAP',
               teacher=dict(metric=metrics['teacher']),
               baseline=dict(metric=[metrics['baseline']]),
               methods={method: dict(metric=[metrics['distilled']])})
    curves = {'baseline': train_curves(work_dirs['baseline']),
              method: train_curves(work_dirs['distilled'])}
    plot_results(doc, curves, out, f'README demo: {method} on BCCD mini '
                 '(one seed)')
    return out

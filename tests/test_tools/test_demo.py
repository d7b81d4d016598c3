"""make demo: the method comes from the ranking; summary, config, PNGs."""
import json
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO
from tools.demo import figures, ranking, run_demo

RANKING = osp.join(REPO, 'docs', 'results', 'ranking.json')


def _doc(teacher, base, methods, task='det'):
    return dict(task=task, metric='bbox_mAP', teacher=dict(metric=teacher),
                baseline=dict(metric=base), methods=methods,
                schedule=dict(preset='cpu-small', student_iters=300,
                              seeds=[0, 1]))


def _write_docs(tmp_path, **docs):
    """Each document as ``<name>/results.json``; name -> path."""
    paths = {}
    for name, doc in docs.items():
        (tmp_path / name).mkdir()
        paths[name] = str(tmp_path / name / 'results.json')
        with open(paths[name], 'w') as f:
            json.dump(doc, f)
    return paths


def test_ranking_averages_the_gap_closed_over_datasets(tmp_path):
    a = _doc(50.0, [40.0, 42.0], {
        'good': dict(metric=[45.0, 46.0]),     # +4.5 of a 9 gap: 0.5
        'tie': dict(metric=[43.75, 43.75]),    # +2.75 / 9 = 0.306
        'ld': dict(metric=[35.0, 36.0], arch='gfl',
                   teacher=dict(metric=40.0),
                   baseline=dict(metric=[30.0, 32.0]))})
    b = _doc(30.0, [20.0, 20.0], {
        'good': dict(metric=[21.0, 21.0]),     # 0.1: mean 0.3
        'tie': dict(metric=[23.0, 23.0])})     # 0.3: mean 0.303
    paths = _write_docs(tmp_path, a=a, b=b)
    det = ranking.build_ranking(paths)['tasks']['det']
    rows = det['ranking']
    assert [r['method'] for r in rows] == ['tie', 'good']
    assert rows[0]['rank'] == 1 and rows[0]['gap_closed'] == 0.303
    assert rows[1]['gap_closed'] == 0.3 and rows[1]['gain'] == 2.75
    assert rows[1]['datasets']['a'] == dict(
        metric=45.5, gain=4.5, gap_closed=0.5,
        beats_every_baseline_seed=True, seeds=2, paired_gains=[5.0, 4.0],
        # 4.5 +- t(0.95, 1) x sd 0.7071 / sqrt(2) = 4.5 +- 6.3138 x 0.5
        interval=[1.34, 7.66], interval_above_zero=True)
    assert rows[1]['datasets_above_zero'] == 2  # b: +1 twice, sd 0
    assert rows[1]['datasets']['b']['interval'] == [1.0, 1.0]
    # another family is listed against its own baseline, not ranked
    assert det['other_families']['ld']['a']['gain'] == 4.5
    assert det['datasets']['b']['baseline'] == 20.0
    # rank per dataset by the mean paired gain: good 1st on a, 2nd on b
    assert rows[1]['ranks'] == {'a': 1, 'b': 2} and rows[1]['mean_rank'] \
        == 1.5
    assert rows[0]['ranks'] == {'a': 2, 'b': 1}
    assert rows[0]['datasets_below_zero'] == 0


def test_ranking_markdown_table_marks_the_intervals(tmp_path):
    a = _doc(50.0, [40.0, 42.0], {
        'good': dict(metric=[45.0, 46.0]),     # +4.5 [1.34, 7.66]
        'bad': dict(metric=[38.0, 39.0])})     # -2.5 [-5.7, 0.7]
    b = _doc(30.0, [20.0, 21.0], {
        'bad': dict(metric=[17.0, 18.5])})     # -3 / -2.5: [-4.3, -1.2]
    paths = _write_docs(tmp_path, a=a, b=b)
    doc = ranking.build_ranking(paths)
    text = ranking.markdown_table(doc)
    assert '| a | 0, 1 | cpu-small, 300, iters | 50.0 | 41.0 |' in text
    assert '| good | +4.5 [+1.3, +7.7] **>0** | - | 1.0 | 1 of 1 | 0 |' \
        in text
    assert '| bad | -2.5 [-5.7, +0.7] | -2.8 [-4.3, -1.2] **<0** | 1.5 | ' \
        '0 of 2 | 1 |' in text
    out = tmp_path / 'table.md'
    ranking.main([paths['a'], paths['b'], '--out',
                  str(tmp_path / 'r.json'), '--markdown', str(out)])
    assert out.read_text() == text


def test_ranking_keeps_time_matched_datasets_apart(tmp_path):
    a = _doc(50.0, [40.0, 42.0], {'good': dict(metric=[45.0, 46.0])})
    t = _doc(50.0, [40.0, 42.0], {'good': dict(metric=[41.0, 41.0]),
                                  'other': dict(metric=[43.0, 44.0])})
    t['schedule']['budget'] = 'time'
    paths = _write_docs(tmp_path, a=a, a_time=t)
    det = ranking.build_ranking(paths)['tasks']['det']
    assert list(det['datasets']) == ['a']
    assert [r['method'] for r in det['ranking']] == ['good']
    timed = det['time_matched']
    assert list(timed['datasets']) == ['a_time']
    assert timed['datasets']['a_time']['budget'] == 'time'
    assert [r['method'] for r in timed['ranking']] == ['other', 'good']
    assert timed['ranking'][1]['datasets']['a_time']['paired_gains'] == [
        1.0, -1.0]
    text = ranking.markdown_table(ranking.build_ranking(paths))
    head, tail = text.split('### det, equal wall-clock time')
    assert '| a | 0, 1 | cpu-small, 300, iters |' in head
    assert 'a_time' not in head and 'other' not in head
    assert '| a_time | 0, 1 | cpu-small, 300, time |' in tail
    assert '| other | +2.5 [-0.7, +5.7] | 1.0 | 0 of 1 | 0 |' in tail


def test_one_dataset_from_documents_of_two_sessions(tmp_path):
    """Runs of two sessions (other teacher, other baselines) rank on one
    dataset: each method paired with its own document's baseline."""
    s1 = _doc(50.0, [40.0, 42.0], {'good': dict(metric=[45.0, 46.0])})
    s2 = _doc(48.0, [38.0, 38.0], {'other': dict(metric=[40.0, 41.0]),
                                   'bad': dict(metric=[37.0, 37.5])})
    paths = _write_docs(tmp_path, s1=s1, s2=s2, b=_doc(
        30.0, [20.0, 20.0], {'good': dict(metric=[21.0, 21.0]),
                             'other': dict(metric=[23.0, 23.0])}))
    doc = ranking.build_ranking({'a': [paths['s1'], paths['s2']],
                                 'b': paths['b']})
    det = doc['tasks']['det']
    rows = {r['method']: r for r in det['ranking']}
    assert rows['good']['datasets']['a']['paired_gains'] == [5.0, 4.0]
    assert rows['other']['datasets']['a']['paired_gains'] == [2.0, 3.0]
    assert rows['bad']['datasets']['a']['gain'] == -0.75
    # ranked together on a: good +4.5 > other +2.5 > bad -0.75
    assert [rows[m]['ranks']['a'] for m in ('good', 'other', 'bad')] == \
        [1, 2, 3]
    assert rows['other']['ranks'] == {'a': 2, 'b': 1}
    # one gap for the dataset, the mean of 50 - 41 and 48 - 38: 9.5
    info = det['datasets']['a']
    assert info['gap'] == 9.5
    assert rows['other']['datasets']['a']['gap_closed'] == 0.263
    assert rows['good']['datasets']['a']['gap_closed'] == 0.474
    assert [(p['teacher'], p['baseline'], p['methods'])
            for p in info['parts']] == [(50.0, 41.0, ['good']),
                                        (48.0, 38.0, ['bad', 'other'])]
    assert ranking.sources_of(doc)['a'] == [
        ranking.osp.relpath(paths['s1'], ranking.REPO),
        ranking.osp.relpath(paths['s2'], ranking.REPO)]
    assert f'a={ranking.osp.relpath(paths["s2"], ranking.REPO)}' in \
        doc['command']
    text = ranking.markdown_table(doc)
    assert '| a (good) | 0, 1 | cpu-small, 300, iters | 50.0 | 41.0 |' in text
    assert '| a (bad, other) | 0, 1 | cpu-small, 300, iters | 48.0 | 38.0 |' \
        in text
    # the same through the command line, NAME=PATH twice
    out = tmp_path / 'r.json'
    ranking.main([f'a={paths["s1"]}', f'a={paths["s2"]}', paths['b'],
                  '--out', str(out)])
    assert json.loads(out.read_text()) == doc
    # a method in two documents of a dataset is refused, so is a folder
    # name twice without NAME=
    s2['methods']['good'] = dict(metric=[41.0, 41.0])
    with open(paths['s2'], 'w') as f:
        json.dump(s2, f)
    with pytest.raises(ValueError, match='method good is in two'):
        ranking.build_ranking({'a': [paths['s1'], paths['s2']]})
    (tmp_path / 'x').mkdir()
    (tmp_path / 'x' / 'b').mkdir()
    (tmp_path / 'x' / 'b' / 'results.json').write_text(json.dumps(s1))
    with pytest.raises(SystemExit):
        ranking.main([paths['b'], str(tmp_path / 'x' / 'b' / 'results.json'),
                      '--out', str(out)])


def test_published_ranking_is_up_to_date_and_ordered():
    with open(RANKING) as f:
        published = json.load(f)
    det = published['tasks']['det']
    sources = {name: [osp.join(REPO, p) for p in paths]
               for name, paths in ranking.sources_of(published).items()}
    assert published == ranking.build_ranking(sources), (
        f'docs/results/ranking.json is stale: run {published["command"]}')
    closed = [r['gap_closed'] for r in det['ranking']]
    assert closed == sorted(closed, reverse=True)
    # the cross-dataset evidence: three detection sets are not yet all in
    assert set(det['datasets']) >= {'bccd', 'facemask'}


def test_demo_uses_the_best_ranked_method_it_can_run():
    with open(RANKING) as f:
        published = json.load(f)
    rows = published['tasks']['det']['ranking']
    available = run_demo.demo_methods()
    assert 'roi_kd' in available and 'ld' not in available  # GFL family
    top = rows[0]
    method, why = run_demo.choose_method(published, available)
    assert method == top['method']
    assert why.startswith(f'{method}, ranked 1st of {len(rows)} detection '
                          f'methods in docs/results/ranking.json')
    bccd = top['datasets']['bccd']
    assert (f'bccd: {bccd["gain"]:+.2f} bbox_mAP, '
            f'{100 * bccd["gap_closed"]:.0f} % of the gap, '
            f'{bccd["seeds"]} seed(s)') in why
    # a top method that does not run on the demo's Faster R-CNN is skipped
    # with a note, and --method overrides the ranking
    fake = json.loads(json.dumps(published))
    fake['tasks']['det']['ranking'].insert(0, dict(
        rank=0, method='crosskd', gap_closed=1.2, gain=4.8, datasets={}))
    method, why = run_demo.choose_method(fake, available)
    assert method == top['method'] and 'not on these models: crosskd' in why
    last = rows[-1]
    method, why = run_demo.choose_method(published, available,
                                         last['method'])
    assert method == last['method']
    assert (f'chosen with --method; ranked '
            f'{run_demo._ordinal(len(rows))}') in why
    with pytest.raises(SystemExit, match='does not run on the demo'):
        run_demo.choose_method(published, available, 'crosskd')


@pytest.mark.parametrize('method', ['roi_kd', 'fgd'])
def test_demo_config_has_the_runners_terms(tmp_path, method):
    from visionkd.experiments import get_preset, methods_for
    from visionkd.experiments.dataset_configs import DataSpec
    from visionkd.experiments.run_configs import run_config
    spec, = methods_for('det', [method])
    path = run_demo.write_distill_config(spec, str(tmp_path / 'kd.py'))
    cfg = Config.fromfile(path)
    data = DataSpec(osp.join(REPO, 'tools', 'demo', 'data', 'bccd_mini'),
                    'annotations/train.json', 'annotations/val.json',
                    classes=run_demo.CLASSES)
    runner = run_config(get_preset('det', 'cpu-small'), data,
                        run_demo.CLASSES, 'distill', 'faster_rcnn', spec)
    assert cfg.model.distill_terms.to_dict() == \
        runner['model']['distill_terms']
    assert cfg.model.type == 'visionkd.DetectionDistiller'
    assert cfg.train_cfg.max_iters == 300  # the baseline's schedule
    assert cfg.train_dataloader.dataset.data_root.endswith('bccd_mini/')


def test_summary_reports_gain_gap_pngs_and_log():
    results = {n: {'coco/bbox_mAP': v, 'coco/bbox_mAP_50': v + 0.3}
               for n, v in (('teacher', 0.47), ('baseline', 0.40),
                            ('distilled', 0.421))}
    seconds = dict(teacher=300.0, baseline=200.0, distilled=250.0)
    lines = run_demo.summary(results, seconds, 'roi_kd', 'roi_kd, ranked',
                             ['w/predictions.png', 'w/results.png'],
                             'w/demo.log')
    text = '\n'.join(lines)
    assert 'Distillation method: roi_kd, ranked' in text
    assert 'teacher                  47.0    77.0      300' in text
    assert 'distilled (roi_kd)       42.1    72.1      250' in text
    assert ('gain: +2.1 mAP (distilled - baseline); gap closed: 30 % of '
            'the 7.0-point teacher-baseline gap') in text
    assert 'PNGs: w/predictions.png, w/results.png' in text
    assert 'log: w/demo.log' in text
    results['teacher']['coco/bbox_mAP'] = 0.39
    assert 'gap closed: n/a' in '\n'.join(run_demo.summary(
        results, seconds, 'roi_kd', '', [], 'log'))


def test_predictions_png_draws_ground_truth_and_each_model(tmp_path):
    image = osp.join(REPO, 'tools', 'demo', 'data', 'bccd_mini', 'images',
                     'BloodImage_00000.jpg')
    box = torch.tensor([[10.0, 10.0, 60.0, 50.0], [5.0, 5.0, 9.0, 9.0]])
    record = dict(img_id=0, img_path=image, scale_factor=(1.0, 1.0),
                  gt_instances=dict(bboxes=box[:1],
                                    labels=torch.tensor([0])),
                  pred_instances=dict(bboxes=box, labels=torch.tensor([0, 2]),
                                      scores=torch.tensor([0.9, 0.1])))
    dump = tmp_path / 'p.pkl'
    dump.write_bytes(pickle.dumps([record]))
    assert figures._boxes(record['pred_instances'], score_thr=0.3) == [
        (10.0, 10.0, 60.0, 50.0, 0)]
    out = figures.draw_predictions({'baseline': str(dump),
                                    'distilled': str(dump)},
                                   {'distilled': 'roi_kd 42.1'},
                                   str(tmp_path / 'p.png'), run_demo.CLASSES)
    assert osp.getsize(out) > 10000

"""tools/analysis_tools/kd_doctor.py: every check fires on a setup broken
its way and stays quiet on a good one.

Most setups are a tiny SegmentationDistiller on a toy task a tiny teacher
learns in seconds (tests/test_tools/synthetic_seg.py: 20 SGD steps take
its mIoU from ~16 to ~68 on the val images), so the good setup has a
teacher that really is trained; one detection setup runs the COCO-metric
path on the embedded BCCD subset."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO
from tests.test_tools import synthetic_seg as S
from tests.test_tools.synthetic_seg import restore_mmengine_globals  # noqa: F401,E501
from tools.analysis_tools import kd_doctor

CHECKS = ('teacher_ckpt', 'student_init', 'preprocessors', 'teacher_trained',
          'terms')


@pytest.fixture(scope='module')
def squares(tmp_path_factory):
    """The toy data, a trained teacher and an untrained one."""
    root = tmp_path_factory.mktemp('squares')
    data = S.make_dataset(str(root / 'data'))
    teacher_cfg = S.write_teacher_config(str(root / 'teacher.py'), data)
    trained = S.train_teacher(teacher_cfg, str(root / 'trained.pth'),
                              iters=20)
    untrained = S.save_random(teacher_cfg, str(root / 'untrained.pth'),
                              seed=1)
    return dict(data=data, trained=trained, untrained=untrained)


def doctor(tmp_path, squares, ckpt='trained', skip=('teacher_trained', ),
           **kwargs):
    """Findings of the doctor on a seg KD config (``kwargs`` go to
    ``write_kd_config``); the slow teacher check is skipped unless asked."""
    teacher_ckpt = squares.get(ckpt, ckpt)
    path = S.write_kd_config(str(tmp_path / 'kd.py'), squares['data'],
                             teacher_ckpt, **kwargs)
    return kd_doctor.run_doctor(Config.fromfile(path), val_batches=2,
                                train_batches_=2, skip=skip)


def by_check(findings):
    out = {}
    for f in findings:
        out.setdefault(f.check, []).append(f)
    return out


def only_problem(findings, check, level='error'):
    """The findings of ``check`` are ``level``; every other one is ok."""
    found = by_check(findings)
    assert [f.level for f in found[check]] == [level], found[check]
    others = [f for f in findings if f.check != check and f.level != 'ok']
    assert not others, [f.line() for f in others]
    return found[check][0]


def test_good_setup_is_quiet_and_exits_0(tmp_path, squares, capsys):
    path = S.write_kd_config(str(tmp_path / 'kd.py'), squares['data'],
                             squares['trained'])
    assert kd_doctor.main([path, '--val-batches', '2']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines[:-1]] == ['ok'] * 5, lines
    assert [ln.split()[1] for ln in lines[:-1]] == list(CHECKS)
    assert lines[-1] == 'kd_doctor: 0 error(s), 0 warning(s)'
    trained = [ln for ln in lines if 'teacher_trained' in ln][0]
    assert 'teacher mIoU' in trained and 'margin 10' in trained


def test_untrained_teacher_is_an_error_and_exits_1(tmp_path, squares,
                                                   capsys):
    path = S.write_kd_config(str(tmp_path / 'kd.py'), squares['data'],
                             squares['untrained'])
    assert kd_doctor.main([path, '--val-batches', '2']) == 1
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if 'teacher_trained' in ln][0]
    assert line.startswith('ERROR') and 'not trained on this data' in line
    assert 'fix: give a teacher checkpoint trained on this dataset' in line
    assert out.splitlines()[-1] == 'kd_doctor: 1 error(s), 0 warning(s)'


@pytest.mark.parametrize('ckpt, says', [
    (None, 'model.teacher_ckpt is not set'),
    ('/nonexistent/teacher.pth', 'does not exist'),
])
def test_missing_teacher_ckpt(tmp_path, squares, ckpt, says):
    findings = doctor(tmp_path, squares, ckpt=ckpt)
    f = only_problem(findings, 'teacher_ckpt')
    assert says in f.message and f.fix
    # nothing to compare a teacher that did not load with
    assert 'teacher_trained' not in by_check(
        doctor(tmp_path, squares, ckpt=ckpt, skip=()))


def test_teacher_ckpt_of_another_architecture(tmp_path, squares):
    narrow = S.model_cfg().replace('base_channels=16', 'base_channels=8')
    narrow = narrow.replace('in_channels=128', 'in_channels=64')
    f = only_problem(doctor(tmp_path, squares, teacher=narrow),
                     'teacher_ckpt')
    assert 'does not match the teacher' in f.message
    assert 'shape mismatches' in f.message


def test_pretrained_student_init_that_loads_nothing(tmp_path, squares):
    # a whole-segmentor checkpoint given to the backbone: its keys are
    # 'backbone.*', the backbone's are not, so mmengine loads nothing
    ckpt = squares['trained']
    bad = S.model_cfg(init_cfg=f"dict(type='Pretrained', checkpoint={ckpt!r})")
    f = only_problem(doctor(tmp_path, squares, student=bad), 'student_init')
    assert 'student.backbone init_cfg Pretrained' in f.message
    assert '0 of' in f.message and "'backbone.stem.0.weight'" in f.message
    assert "prefix='backbone.'" in f.fix
    good = S.model_cfg(init_cfg=f"dict(type='Pretrained', checkpoint="
                       f"{ckpt!r}, prefix='backbone.')")
    found = by_check(doctor(tmp_path, squares, student=good))
    (ok, ) = found['student_init']
    assert ok.level == 'ok' and 'weights equal the checkpoint' in ok.message


def test_load_from_missing_or_of_the_plain_model(tmp_path, squares):
    f = only_problem(doctor(tmp_path, squares,
                            extra="load_from = '/nonexistent/s.pth'\n"),
                     'student_init')
    assert 'does not exist' in f.message
    # a plain segmentor checkpoint: keys lack the distiller's 'student.'
    plain = squares['trained']
    f = only_problem(doctor(tmp_path, squares,
                            extra=f'load_from = {plain!r}\n'),
                     'student_init')
    assert 'nothing is loaded' in f.message and 'init_cfg' in f.fix


def test_student_init_student_matching_nothing(tmp_path, squares):
    extra = ("init_student=True, init_student_skip=('backbone', "
             "'decode_head'),\n")
    f = only_problem(doctor(tmp_path, squares, model_extra=extra),
                     'student_init')
    assert 'init_student=True but no student weight' in f.message
    (ok, ) = by_check(doctor(tmp_path, squares, model_extra='init_student'
                             '=True,\n'))['student_init']
    assert ok.level == 'ok' and 'inherited from the teacher' in ok.message


@pytest.mark.parametrize('weight, says', [
    (1e6, 'outside [0.001, 1000]'),
    (1e-6, 'outside [0.001, 1000]'),
    (0.0, 'loss is 0 on every batch'),
])
def test_term_out_of_band_or_zero(tmp_path, squares, weight, says):
    terms = ("dict(logits=dict(student='decode_head.conv_seg', "
             "teacher='decode_head.conv_seg', loss=dict("
             f"type='ChannelWiseDivergence', tau=1.0), weight={weight!r}))")
    f = only_problem(doctor(tmp_path, squares, terms=terms), 'terms')
    assert says in f.message and f.message.startswith('logits: ')
    if weight:
        # the fix names the weight that gives share 1
        share = float(f.message.split('gradient share ')[1].split()[0])
        fixed = float(f.fix.split('about ')[1].split()[0])
        assert fixed == pytest.approx(weight / share, rel=1e-2)


def test_nan_term(tmp_path, squares):
    terms = ("dict(logits=dict(student='decode_head.conv_seg', "
             "teacher='decode_head.conv_seg', loss=dict("
             "type='ChannelWiseDivergence', tau=0.0)))")
    f = only_problem(doctor(tmp_path, squares, terms=terms), 'terms')
    assert 'logits: loss not finite on 2 of 2 batches' in f.message
    assert 'tau > 0' in f.fix


def test_teacher_normalised_differently(tmp_path, squares):
    teacher = S.model_cfg(mean='[0.0, 0.0, 0.0]')
    f = only_problem(doctor(tmp_path, squares, teacher=teacher),
                     'preprocessors', level='warning')
    assert 'mean [123.7, 116.3, 103.5] (student) vs [0.0, 0.0, 0.0]' \
        in f.message
    flipped = S.model_cfg().replace('bgr_to_rgb=True', 'bgr_to_rgb=False')
    f = only_problem(doctor(tmp_path, squares, teacher=flipped),
                     'preprocessors', level='warning')
    assert 'bgr_to_rgb True (student) vs False (teacher)' in f.message


DET_CFG = """_base_ = [{base!r}]
model = dict(
    _delete_=True,
    type='visionkd.DetectionDistiller',
    student={student!r},
    teacher={student!r},
    teacher_ckpt={ckpt!r},
    dry_run_input_size=(64, 64),
    distill_terms=dict(fpn=dict(
        student='neck', teacher='neck',
        loss=dict(type='PKDLoss', loss_weight=1.0))))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 120), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                          'img_shape', 'scale_factor'))]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(160, 120), keep_ratio=True),
    dict(type='PackDetInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""


def test_detection_teacher_not_trained_on_bccd(tmp_path):
    """The COCO-metric path on the embedded BCCD subset: an untrained
    detector teacher scores like the random ones (mAP ~0) and is named."""
    from mmengine.registry import MODELS, init_default_scope
    student = osp.join(REPO, 'tests', 'data', 'configs',
                       'faster_rcnn_bccd_tiny.py')
    init_default_scope('mmdet')
    torch.manual_seed(3)
    teacher = MODELS.build(Config.fromfile(student).model)
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=teacher.state_dict()), ckpt)
    path = tmp_path / 'kd.py'
    path.write_text(DET_CFG.format(base=student, student=student, ckpt=ckpt))
    findings = kd_doctor.run_doctor(Config.fromfile(str(path)),
                                    val_batches=1, train_batches_=1)
    f = only_problem(findings, 'teacher_trained')
    assert 'teacher coco/bbox_mAP' in f.message
    assert 'on 2 val images' in f.message
    assert [x.check for x in findings] == list(CHECKS)


def _two_teachers(tmp_path, squares, b_ckpt):
    """The good config with two teachers: 'a' (trained) and 'b'
    (``b_ckpt``), one CWD term from each."""
    path = S.write_kd_config(str(tmp_path / 'kd.py'), squares['data'],
                             squares['trained'])
    cfg = Config.fromfile(path)
    model = cfg.model
    teacher = model.pop('teacher')
    model.pop('teacher_ckpt')
    model.teachers = dict(a=dict(model=teacher, ckpt=squares['trained']),
                          b=dict(model=teacher, ckpt=b_ckpt))
    term = model.distill_terms.pop('logits')
    model.distill_terms = dict(from_a=dict(term, from_teacher='a'),
                               from_b=dict(term, from_teacher='b'))
    return cfg


def test_several_teachers_each_checked_and_named(tmp_path, squares):
    cfg = _two_teachers(tmp_path, squares, squares['untrained'])
    findings = kd_doctor.run_doctor(cfg, val_batches=2, train_batches_=2)
    found = by_check(findings)
    ckpt = found['teacher_ckpt']
    assert [f.level for f in ckpt] == ['ok', 'ok']
    assert ckpt[0].message.startswith("teacher 'a': ")
    assert ckpt[1].message.startswith("teacher 'b': ")
    trained = found['teacher_trained']
    assert [(f.level, f.message.split(':')[0]) for f in trained] == [
        ('ok', "teacher 'a'"), ('error', "teacher 'b'")], \
        [f.line() for f in trained]
    assert 'not trained on this data' in trained[1].message
    assert [f.level for f in found['terms']] == ['ok', 'ok']
    # a teacher without a checkpoint is named with its setting
    cfg = _two_teachers(tmp_path, squares, None)
    found = by_check(kd_doctor.run_doctor(
        cfg, val_batches=2, train_batches_=2, skip=('teacher_trained', )))
    a, b = found['teacher_ckpt']
    assert a.level == 'ok' and b.level == 'error'
    assert b.message.startswith(
        "teacher 'b': model.teachers['b'].ckpt is not set"), b.message
    assert b.fix.startswith("set model.teachers['b'].ckpt=")


def test_ema_teacher_needs_no_checkpoint(tmp_path, squares):
    path = S.write_kd_config(str(tmp_path / 'kd.py'), squares['data'], None)
    cfg = Config.fromfile(path)
    cfg.model.teacher = dict(kind='ema', decay=0.99)
    findings = kd_doctor.run_doctor(cfg, val_batches=2, train_batches_=2,
                                    skip=())
    found = by_check(findings)
    assert [(f.level, f.message) for f in found['teacher_ckpt']] == [
        ('ok', 'an EMA of the student: no checkpoint')]
    assert 'teacher_trained' not in found
    # (the CWD term starts near 0, the EMA being the student: a warning
    # about its size may come, no error)
    assert not [f for f in findings if f.level == 'error'], \
        [f.line() for f in findings]

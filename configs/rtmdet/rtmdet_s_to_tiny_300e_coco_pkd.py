# PKD (Cao et al., NeurIPS 2022) on the three neck outputs of RTMDet-s ->
# RTMDet-tiny: ours, not a paper setting (PKD's paper distils RetinaNet /
# FCOS / Faster R-CNN FPNs). One entry covers P3-P5 (`neck` returns the
# three maps), each student map through a 1x1 ConvConnector (96 -> 128
# channels); loss weight 6 as PKD's Faster R-CNN / FCOS configs. Data,
# schedule, EMA and the epoch-280 stop: the CWD recipe of this folder.
_base_ = ['./rtmdet_s_to_tiny_300e_coco_cwd.py']

model = dict(
    distill_terms=dict(
        _delete_=True,
        fpn=dict(
            student='neck',
            teacher='neck',
            connector=dict(type='ConvConnector'),
            loss=dict(type='PKDLoss', loss_weight=6.0))))

"""Turn a training checkpoint into a weights-only file that loads anywhere.

mmengine's training checkpoints also hold the optimizer, the log buffers
(``message_hub``) and RNG states; the log buffers are Python objects, so
visionkd refuses such a file from outside a work dir (unpickling can run
code, see :mod:`visionkd.utils.checkpoint`). The output keeps the
``state_dict`` and the plain-data part of ``meta`` (epoch, iteration,
``dataset_meta``, ...), and loads with ``torch.load(weights_only=True)``::

    python tools/export_weights.py work_dirs/teacher/iter_4000.pth teacher.pth

Only run it on a file you trust: the input is fully unpickled.
"""
import argparse
import os.path as osp
import sys
from typing import Any, List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch

PLAIN = (str, int, float, bool, type(None))


def is_plain(value: Any) -> bool:
    """True for numbers, strings, tensors and containers of them."""
    if isinstance(value, PLAIN + (torch.Tensor, )):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, PLAIN) and is_plain(v)
                   for k, v in value.items())
    return False


def export_weights(src: str, dst: str) -> int:
    """Write ``src``'s state dict and plain meta to ``dst``.

    Returns:
        The number of tensors written.
    """
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f'{src} holds no state dict')
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    meta = {k: v for k, v in (ckpt.get('meta') or {}).items()
            if is_plain(v)}
    meta['visionkd_exported_from'] = osp.abspath(src)
    torch.save(dict(state_dict=state, meta=meta), dst)
    return len(state)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='training checkpoint (trusted)')
    parser.add_argument('dst', help='output weights-only checkpoint')
    args = parser.parse_args(argv)
    num = export_weights(args.src, args.dst)
    print(f'wrote {num} tensors to {args.dst}')


if __name__ == '__main__':
    main()

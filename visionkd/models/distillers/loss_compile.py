"""``compile_losses``: run the distillation losses through ``torch.compile``.

A loss on small feature maps is launch-bound on a GPU (every ATen call is a
kernel launch); ``torch.compile`` fuses its element-wise work into few
kernels. Off by default: compiling costs time at the first steps (minutes
on a 2-core CPU with the default inductor backend) and needs a working
compiler tool chain. If compiling a loss fails, that loss falls back to
eager mode with one warning; an error that eager mode raises too (a real
input error) is raised as usual. The first call with new input shapes also
runs the compiled backward once on copies of the inputs, so a backward
graph that does not compile falls back too instead of failing training.
"""
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

__all__ = ['CompiledForward', 'compile_term_losses']


class CompiledForward:
    """A loss module's ``forward``, compiled, with an eager fallback.

    Args:
        module: The loss module (its ``forward`` is replaced by this).
        options: Keyword arguments of ``torch.compile`` (``backend``,
            ``mode``, ``dynamic``, ...).
    """

    def __init__(self, module: nn.Module, options: Dict[str, Any]) -> None:
        self.name = type(module).__name__
        self.eager: Callable = module.forward
        self.compiled: Callable = torch.compile(self.eager, **options)
        self.failed: Optional[str] = None
        self._probed: set = set()

    def __call__(self, *args, **kwargs) -> Any:
        if self.failed is not None:
            return self.eager(*args, **kwargs)
        sig = _signature((args, kwargs))
        if sig not in self._probed:
            try:
                self._probe(args, kwargs)
            except Exception as err:  # compile failure or a real error
                out = self.eager(*args, **kwargs)  # re-raises a real one
                text = ' '.join(str(err).split())
                self.failed = f'{type(err).__name__}: {text[:300]}'
                MMLogger.get_current_instance().warning(
                    f'compile_losses: {self.name} could not be compiled, '
                    f'it runs eagerly ({self.failed})')
                return out
            self._probed.add(sig)
        return self.compiled(*args, **kwargs)

    def _probe(self, args: tuple, kwargs: dict) -> None:
        """Forward and backward once on copies of the floating inputs:
        compile errors of the backward graph show here, not in training."""
        leaves: List[torch.Tensor] = []

        def copy(x: Any) -> Any:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                leaves.append(x.detach().clone().requires_grad_(True))
                return leaves[-1]
            if isinstance(x, (list, tuple)):
                return type(x)(copy(v) for v in x)
            return x

        out = self.compiled(*copy(args), **{k: copy(v)
                                             for k, v in kwargs.items()})
        outs = [o for o in _tensors(out) if o.requires_grad]
        if outs and leaves:
            torch.autograd.grad(sum(o.sum() for o in outs), leaves,
                                allow_unused=True)


def _tensors(obj: Any) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _signature(obj: Any) -> tuple:
    """Shapes and dtypes of the tensors in ``obj`` (a compile key)."""
    return tuple((tuple(t.shape), t.dtype, t.requires_grad)
                 for t in _tensors(obj))


def compile_term_losses(terms: nn.Module,
                        options: Union[bool, Dict[str, Any]]) -> List[str]:
    """Compile every distillation loss module inside ``terms``.

    Args:
        terms: The distiller's terms (an ``nn.ModuleDict``).
        options: ``True`` (``torch.compile`` defaults) or a dict of
            ``torch.compile`` keyword arguments; falsy: nothing is done.

    Returns:
        ``'<module path> (<class>)'`` of each compiled loss.
    """
    from visionkd.models import losses
    if not options:
        return []
    if not isinstance(options, (bool, dict)):
        raise TypeError('compile_losses must be True/False or a dict of '
                        f'torch.compile arguments, got {options!r}')
    kwargs = {} if options is True else dict(options)
    loss_classes = tuple(getattr(losses, n) for n in losses.__all__
                         if isinstance(getattr(losses, n), type))
    done = []
    for path, module in terms.named_modules():
        cls = type(module)
        if not isinstance(module, loss_classes):
            continue
        if isinstance(module.forward, CompiledForward):
            continue
        module.forward = CompiledForward(module, kwargs)
        done.append(f'{path} ({cls.__name__})')
    return done

"""Test-only loss that turns NaN after a number of calls (imported by the
NaN-stop test through ``custom_imports``)."""
import torch

from visionkd.models.losses import FeatureMSELoss
from visionkd.registry import MODELS

__all__ = ['NaNInjectionLoss']


@MODELS.register_module(force=True)
class NaNInjectionLoss(FeatureMSELoss):
    """:class:`FeatureMSELoss` that returns NaN from call ``nan_from`` on.

    Args:
        nan_from: 1-based call (= training iteration) of the first NaN.
    """

    def __init__(self, nan_from: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_from = nan_from
        self.calls = 0

    def forward(self, preds_S: torch.Tensor,
                preds_T: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = super().forward(preds_S, preds_T)
        if self.calls >= self.nan_from:
            loss = loss * float('nan')
        return loss

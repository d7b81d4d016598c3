"""Training hooks."""
from .auto_weight_hook import AutoWeightHook
from .distill_loss_weight_schedule_hook import DistillLossWeightScheduleHook
from .distill_stop_hook import DistillStopHook
from .distill_summary_hook import DistillSummaryHook
from .rng_state_hook import RNGStateHook

__all__ = ['AutoWeightHook', 'DistillLossWeightScheduleHook',
           'DistillStopHook', 'DistillSummaryHook', 'RNGStateHook']

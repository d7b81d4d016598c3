"""Training hooks."""
from .distill_loss_weight_schedule_hook import DistillLossWeightScheduleHook
from .distill_stop_hook import DistillStopHook
from .rng_state_hook import RNGStateHook

__all__ = ['DistillLossWeightScheduleHook', 'DistillStopHook', 'RNGStateHook']

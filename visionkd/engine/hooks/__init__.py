"""Training hooks."""
from .distill_stop_hook import DistillStopHook

__all__ = ['DistillStopHook']

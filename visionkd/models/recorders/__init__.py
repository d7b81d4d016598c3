"""Recorders that capture intermediate tensors with forward hooks."""
from .module_recorder import ModuleRecorder

__all__ = ['ModuleRecorder']

"""Recorders that capture intermediate tensors and call arguments."""
from .method_recorder import MethodRecorder
from .module_recorder import ModuleRecorder

__all__ = ['MethodRecorder', 'ModuleRecorder']

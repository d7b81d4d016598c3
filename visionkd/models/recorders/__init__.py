"""Recorders that capture intermediate tensors and call arguments."""
from .distill_records import DistillRecords
from .method_recorder import MethodRecorder
from .model_recorders import ModelRecorders, RecordingComplete, RecordKey
from .module_recorder import ModuleRecorder

__all__ = [
    'DistillRecords', 'MethodRecorder', 'ModelRecorders', 'ModuleRecorder',
    'RecordKey', 'RecordingComplete'
]

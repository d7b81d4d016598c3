"""Connectors that adapt student features to the teacher's shape."""
from .conv_connector import ConvConnector
from .norm_connector import NormConnector
from .resize_connector import ResizeConnector

__all__ = ['ConvConnector', 'NormConnector', 'ResizeConnector']

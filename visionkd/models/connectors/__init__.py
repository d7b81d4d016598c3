"""Connectors that adapt student features to the teacher's shape."""
from .conv_connector import ConvConnector
from .resize_connector import ResizeConnector

__all__ = ['ConvConnector', 'ResizeConnector']

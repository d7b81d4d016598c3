"""Connectors that adapt student features to the teacher's shape."""
from .avg_pool_connector import AvgPoolConnector
from .conv_connector import ConvConnector
from .inference import class_logits_of, infer_connectors
from .norm_connector import NormConnector
from .resize_connector import ResizeConnector
from .tokens_to_map_connector import (
    TokensToMapConnector,
    input_size_scope,
    token_grid,
)

__all__ = [
    'AvgPoolConnector', 'ConvConnector', 'NormConnector', 'ResizeConnector',
    'TokensToMapConnector', 'class_logits_of', 'infer_connectors',
    'input_size_scope', 'token_grid'
]

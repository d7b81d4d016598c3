"""A plain MMSegmentation project module that uses a visionkd loss alone."""
from .self_distill_encoder_decoder import SelfDistillEncoderDecoder

__all__ = ['SelfDistillEncoderDecoder']

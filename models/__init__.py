"""Models: ResNet backbones, the CSRA head, the registry and weight loading.

Entry point: ``build_model(name, num_classes, num_heads=1, lam=0.1, attention=None, pretrained=None)``.
"""
from models.model import MODELS, build_model

__all__ = ["MODELS", "build_model"]

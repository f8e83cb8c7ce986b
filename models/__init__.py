"""Models: ResNet backbones, the CSRA head, the registry and weight loading.

Entry point: ``build_model(name, num_classes, num_heads=1, lam=0.1, attention=None, pretrained=None)``.
``MODELS`` and ``build_model`` import Paddle and are loaded on first use, so that importing
``models.spec`` (names, defaults, ``ModelSettings``) stays Paddle-free (``--help``).
"""
from typing import Any

from models.spec import DEFAULT_IMG_SIZE, ModelSettings

__all__ = ["DEFAULT_IMG_SIZE", "MODELS", "ModelSettings", "build_model"]


def __getattr__(name: str) -> Any:
    """``models.MODELS`` / ``models.build_model``: import ``models.model`` (and Paddle) when first asked for."""
    if name in ("MODELS", "build_model"):
        from models import model

        return getattr(model, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")

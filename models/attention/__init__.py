"""Attention blocks that can be placed inside the ResNet residual blocks.

``ATTENTIONS`` maps a block name to its class. Blocks arrive with the attention issue;
until then the registry is empty and only ``attention=None`` is accepted.
"""
from __future__ import annotations

from models.registry import Registry

ATTENTIONS: Registry = Registry("attention block")


def validate_attention(name: str | None) -> str | None:
    """Return the canonical attention name (None or 'none' -> None); UserError if unknown."""
    if name is None or str(name).lower() in ("", "none", "null"):
        return None
    return ATTENTIONS.canonical(str(name))

"""Shared pytest setup: make the repository root importable, locate shared data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_VOC_SMALL = REPO_ROOT.parent / "shared" / "data" / "voc2007_small" / "VOCdevkit"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def voc_small() -> Path:
    """The VOCdevkit folder holding 33 real VOC 2007 images under ../shared."""
    if not SHARED_VOC_SMALL.exists():
        pytest.fail(f"shared VOC data missing at {SHARED_VOC_SMALL}")
    return SHARED_VOC_SMALL

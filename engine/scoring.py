"""Run a model over a loader and collect sigmoid scores (used by train-time eval and val.py)."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm


@paddle.no_grad()
def predict_scores(model: paddle.nn.Layer, loader: paddle.io.DataLoader, desc: str = "eval") -> np.ndarray:
    """Sigmoid probabilities for every image of ``loader``, in loader order.

    Args:
        model: a CSRA model; put in eval mode here.
        loader: yields ``(images [B,3,S,S], targets [B,C])`` without shuffling.
    Returns:
        float32 array [N, C].
    """
    model.eval()
    chunks = []
    for images, _ in tqdm(loader, desc=desc, leave=False, disable=None):
        chunks.append(F.sigmoid(model(images)).numpy())
    return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 0), np.float32)

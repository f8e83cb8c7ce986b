"""Pretrained weights: resolve a file / URL / ``imagenet``, read it, check it, load it.

``load_pretrained(model, spec)`` accepts
- a local ``.pdparams`` (Paddle) or ``.pth``/``.pt`` (PyTorch zip format, read without torch
  and without executing anything from the file, then converted);
- an http(s) URL, downloaded once into the weights cache (``$CSRA_WEIGHTS_HOME`` or Paddle's
  ``~/.cache/paddle/hapi/weights``) and md5-checked when the md5 is known;
- a weights tag of the model's spec, e.g. ``imagenet``: the URL + md5 (or sha256 prefix) that
  the model's ``ModelSpec.weights`` carries (Paddle's official ImageNet ResNets for
  resnet18..152, timm's ViTs).
The checkpoint must fit the model exactly, except that a backbone-only (ImageNet) source
may lack the classifier and, when it holds no attention-block tensor at all, the model's
attention blocks (they keep their initialisation; the 3x3 conv weights a mixer replaces are
dropped) and the family's ImageNet classifier (``BackboneFamily.head_keys``, ResNet's ``fc.*``)
is dropped. Anything else is a UserError naming the first bad keys.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import paddle
from paddle import nn

from models.convert import CLASSIFIER_PREFIX, attention_state_keys, convert_torch_state
from models.family import FAMILIES, MODELS, WeightsSource, family_of, load_families
from models.state_check import diff_state
from utils.errors import UserError
from utils.fileio import file_sha256
from utils.logger import get_logger
from utils.safetensors_io import SAFETENSORS_SUFFIX

log = get_logger("weights")

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")  # .tar: timm training files (model_best.pth.tar)
IMAGENET = "imagenet"  # the weights tag every family is expected to offer


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded into a model."""

    source: str
    loaded: int = 0
    dropped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # classifier keys left at their initialisation
    fresh_attention: list[str] = field(default_factory=list)  # attention-block keys left at their initialisation
    replaced: list[str] = field(default_factory=list)  # source 3x3 conv weights a mixer replaces (not loaded)
    notes: list[str] = field(default_factory=list)  # the family's adaptations (e.g. ViT's pos_embed resampled)


def weights_cache_dir() -> Path:
    """Directory where downloaded weights are cached ($CSRA_WEIGHTS_HOME or Paddle's default)."""
    env = os.environ.get("CSRA_WEIGHTS_HOME")
    if env:
        return Path(env).expanduser()
    from paddle.utils.download import WEIGHTS_HOME

    return Path(WEIGHTS_HOME)


def download_weights(url: str, md5: str | None = None, sha256_prefix: str | None = None) -> Path:
    """Download ``url`` into the weights cache once; return the file.

    Args:
        url: http(s) address of the file.
        md5: its md5 (checked by the download and on every later use), or None.
        sha256_prefix: the first hex digits of its sha256 (checked on every use, cached copy
            included), or None. A mismatch deletes the cached file and is a UserError.
    """
    from paddle.utils.download import get_path_from_url

    cache = weights_cache_dir()
    try:
        path = Path(get_path_from_url(url, str(cache), md5sum=md5, decompress=False))
    except Exception as exc:  # network errors, md5 mismatch after retries
        raise UserError(
            f"could not download weights from {url} into {cache} ({exc}). Without network access, "
            "download the file elsewhere and pass its local path instead"
        ) from None
    if sha256_prefix:
        digest = file_sha256(path)
        if not digest.startswith(sha256_prefix.lower()):
            path.unlink(missing_ok=True)
            raise UserError(f"{path} (downloaded from {url}) has sha256 {digest[:len(sha256_prefix)]}..., not the expected "
                            f"{sha256_prefix}...: the file is damaged or not the published one, so it was deleted. "
                            "Run again to download it anew, or pass a checked local copy")
    return path


def known_weights(model_name: str) -> dict[str, WeightsSource]:
    """The weights tags of a registered model (its ``ModelSpec.weights``); {} for an unknown name."""
    load_families()
    return dict(MODELS.get(model_name).weights) if model_name and model_name in MODELS else {}


def resolve_weights(spec: str, model_name: str) -> Path:
    """Turn a ``--pretrained`` value into a local file.

    Args:
        spec: a path, an http(s) URL, or a weights tag of the model's spec (``imagenet``).
        model_name: the registered model name (its spec's ``weights`` give the tags' URL + md5).
    Returns:
        the local path of the weights file. A folder (e.g. a training run's save_dir) is a
        UserError listing the checkpoint files in it, never a guess among them.
    """
    tags = known_weights(model_name)
    tag = spec.lower()
    if tag in tags:
        return download_weights(tags[tag].url, tags[tag].md5, tags[tag].sha256_prefix)
    if tag == IMAGENET:
        raise UserError(f"--pretrained imagenet: no ImageNet weights are known for the model '{model_name}' "
                        f"(its spec lists {', '.join(tags) or 'none'}); pass a weights file or URL instead")
    if spec.startswith(("http://", "https://")):
        return download_weights(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".pdparams", SAFETENSORS_SUFFIX, *TORCH_SUFFIXES)
                       and p.is_file())
        if not found:
            raise UserError(f"{path} is a folder with no weights file (.pdparams/.pth) in it; pass the path of a checkpoint file")
        listed = ", ".join(str(p) for p in found[:6]) + (f" (and {len(found) - 6} more)" if len(found) > 6 else "")
        raise UserError(f"{path} is a folder, not a weights file; pass one of its checkpoints: {listed}")
    if not path.is_file():
        raise UserError(f"weights file not found: {path} (give a .pdparams/.pth path, an http(s) URL or 'imagenet')")
    return path


def read_paddle_state(path: Path) -> dict[str, Any]:
    """Read a ``.pdparams`` file safely (nothing in it runs) into name -> array.

    UserError if it is not a Paddle state dict; UnsafePickleError if it asks for code.
    """
    from utils.paddle_io import load_paddle

    state = load_paddle(path, return_numpy=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise UserError(f"{path} holds no parameter dictionary; expected a model state dict (.pdparams)")
    return state


def load_state(model: nn.Layer, state: Mapping[str, Any], source: str, allow_missing_classifier: bool = True) -> LoadReport:
    """Check ``state`` against ``model`` and load it.

    Args:
        model: the target model.
        state: name -> array/Tensor in Paddle names.
        source: a name for messages (file path or URL).
        allow_missing_classifier: accept a backbone-only source: the classifier, and the
            attention blocks when the source has no attention-block tensor at all, stay
            fresh; the 3x3 conv weights that the model's mixers replace are then ignored.
    Returns:
        a ``LoadReport``; UserError when keys or shapes do not fit.
    """
    from models.attention import Mixer, attention_blocks

    report = LoadReport(source=source)
    target = model.state_dict()
    state = dict(state)
    family = family_of(model)
    head_keys = family.head_keys if family else tuple(k for name in FAMILIES.names() for k in FAMILIES.get(name).head_keys)
    for key in head_keys:  # the family's ImageNet classifier (ResNet: fc.weight, fc.bias)
        if key in state and key not in target:
            state.pop(key)
            report.dropped.append(key)
    if family is not None and family.fit_state is not None:  # e.g. ViT: pos_embed to the model's grid
        report.notes.extend(family.fit_state(state, model))
    block_keys = attention_state_keys(model)
    source_has_blocks = any(k in block_keys for k in state)
    if allow_missing_classifier and block_keys and not source_has_blocks:
        for prefix, layer in attention_blocks(model):
            key = f"{prefix}weight"  # the plain conv2 this mixer replaced
            if isinstance(layer, Mixer) and key in state and key not in target:
                state.pop(key)
                report.replaced.append(key)
    diff = diff_state(target, state)
    has_classifier = any(k.startswith(CLASSIFIER_PREFIX) for k in state)
    if allow_missing_classifier and not has_classifier:
        report.fresh = [k for k in diff.missing if k.startswith(CLASSIFIER_PREFIX)]
    if allow_missing_classifier and not source_has_blocks:
        report.fresh_attention = [k for k in diff.missing if k in block_keys]
    left_fresh = set(report.fresh) | set(report.fresh_attention)
    diff.missing = [k for k in diff.missing if k not in left_fresh]
    if diff.unexpected or diff.mismatched or diff.missing:
        cfg = getattr(model, "config", {})
        what = f"{cfg.get('model', type(model).__name__)} ({cfg.get('num_classes', '?')} classes, {cfg.get('num_heads', '?')} head(s)"
        if cfg.get("attention"):
            what += f", attention {cfg['attention']} in stage(s) {','.join(map(str, cfg.get('attention_stages') or []))}"
        what += ")"
        hint = ""
        if any(k in block_keys for k, _, _ in diff.mismatched) and cfg.get("attention") == "ge":
            hint = "; GE kernels follow the input size: use the --img_size the checkpoint was trained at"
        raise UserError(
            f"checkpoint {source} does not fit the model {what}: {diff.describe()}. "
            "Check that --model, --num_cls, --num_heads (and --attention, --attention_stages) match the checkpoint" + hint
        )
    arrays = {k: (v if isinstance(v, paddle.Tensor) else paddle.to_tensor(np.asarray(v))) for k, v in state.items()}
    for k, v in arrays.items():
        if v.dtype != target[k].dtype:
            arrays[k] = v.astype(target[k].dtype)
    missing, unexpected = model.set_state_dict(arrays)
    missing = [k for k in missing if k not in left_fresh]
    if missing or unexpected:  # should not happen after diff_state, but never load silently
        raise UserError(f"loading {source} left keys unset: {', '.join((list(missing) + list(unexpected))[:5])}")
    report.loaded = len(arrays)
    return report


def load_pretrained(model: nn.Layer, spec: str, allow_missing_classifier: bool = True) -> LoadReport:
    """Resolve ``spec`` (path, URL or ``imagenet``), read it (Paddle or PyTorch format) and load it.

    Returns a ``LoadReport``; logs one info line, plus one when the classifier starts fresh.
    """
    model_name = getattr(model, "config", {}).get("model", "")
    path = resolve_weights(spec, model_name)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:  # torch layout (timm / Hugging Face hub), read without torch
        from utils.safetensors_io import load_safetensors

        state = convert_torch_state(load_safetensors(path), model).state
    elif path.suffix.lower() in TORCH_SUFFIXES:
        from utils.pth_io import load_pth, select_weights

        weights, entry_notes = select_weights(load_pth(path))  # a training file: its state_dict (not the EMA copy)
        for note in entry_notes:
            log.info("%s: %s", path.name, note)
        conversion = convert_torch_state(weights, model)
        state: Mapping[str, Any] = conversion.state
    else:
        state = read_paddle_state(path)
    report = load_state(model, state, str(path), allow_missing_classifier)
    log.info("loaded %d tensors from %s", report.loaded, path)
    for note in report.notes:
        log.info("%s", note)
    if report.fresh:
        log.info("the classifier is not in %s (a backbone-only checkpoint): it starts from its initialisation", path.name)
    if report.fresh_attention:
        attention = getattr(model, "config", {}).get("attention") or "attention"
        log.info("the %s blocks are not in %s (%d tensors): they start from their initialisation%s", attention, path.name,
                 len(report.fresh_attention), f"; {len(report.replaced)} replaced 3x3 conv weight(s) ignored" if report.replaced else "")
    return report

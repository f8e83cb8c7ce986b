"""The Vision Transformer family (ViT-B/16, ViT-L/16) with a CSRA head on its patch tokens.

The backbone is the original ViT as the CSRA reference uses it: a 16x16/16 patch
convolution (tokens flattened row by row), a learned class token and position embedding,
``depth`` pre-norm blocks (``x + Attn(LN1(x))``, then ``x + MLP(LN2(x))``; every LayerNorm
has eps 1e-6; exact-erf GELU; attention scale ``head_dim ** -0.5``; the fused ``qkv``
projection's output channels are ordered (q|k|v, head, channel)) and a final LayerNorm.
``forward_features`` drops the class token and returns the patch tokens as a map
``[B, D, H/16, W/16]``, on which the CSRA head works as on a ResNet's last feature map.

Input size: the position embedding is a parameter for the grid of the size the model is
built for (``img_size // 16`` per side; 14 x 14 at 224, where the model is exactly the
reference). A checkpoint with another grid is resampled when it is loaded
(``fit_position_embedding``, the family's ``fit_state`` hook), and an input of another
size (any multiple of 16, not necessarily square) resamples the embedding on the fly.
Resampling is separable antialiased bicubic interpolation (cubic kernel a = -0.5,
widened by the scale factor when shrinking, rows normalised): the convention of current
timm releases, so that a model at 448 equals timm's built with ``img_size=448`` from the
same weights. The class token's entry is never resampled.

Parameter names are those of timm's and PaddleClas's ViTs (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``); their ImageNet ``head`` is dropped. Checkpoints of other ViT variants (register
tokens, layer scale, q/k norm, pre-norm CLIP, average-pooled heads, bias-free projections)
are refused with the keys that give them away.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Collection, Mapping

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from models.csra import CSRAModel
from models.family import BackboneFamily, ModelSpec, WeightsSource, register_family
from utils.errors import UserError

PATCH_SIZE = 16
LN_EPS = 1e-6  # the ViT weights were trained with this; Paddle's LayerNorm default is 1e-5
POS_EMBED_KEY = "pos_embed"


@dataclass(frozen=True)
class ViTPreset:
    """Size of a ViT: width ``dim`` D, ``depth`` blocks, attention ``heads``, MLP width ``mlp_ratio`` x D."""

    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0


VIT_PRESETS: dict[str, ViTPreset] = {
    "B16": ViTPreset(dim=768, depth=12, heads=12),
    "L16": ViTPreset(dim=1024, depth=24, heads=16),
}


# ----------------------------------------------------------------------------- initialisers
def _normal_attr(std: float = 0.02) -> paddle.ParamAttr:
    # The reference's truncated normal is cut at +-2 (absolute), i.e. 100 std: in effect N(0, std^2).
    return paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, std))


def _const_attr(value: float) -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=nn.initializer.Constant(value))


def _uniform_attr(bound: float) -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound))


class RowLinear(nn.Linear):
    """``nn.Linear`` on rows, ``x [M, in] -> [M, out]``, computed as one ``addmm``.

    Same parameters and values as ``nn.Linear`` (``weight [in, out]``, ``bias [out]``). Paddle's
    ``linear`` is a matmul followed by a separate broadcast add, which the CPU predictor without
    oneDNN never fuses and oneDNN turns into its slower ``fc``; ``addmm`` adds the bias inside the
    GEMM (the ViT-B/16 predictor 4-11 % faster). paddle2onnx cannot read ``addmm``: with
    ``portable`` set (``models.portable.portable_ops``) the layer traces as ``F.linear``.
    """

    portable = False

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.portable:
            return F.linear(x, self.weight, self.bias)
        return paddle.addmm(self.bias, x, self.weight)


def _linear(fan_in: int, fan_out: int) -> RowLinear:
    """Linear layer with the ViT init: weight N(0, 0.02^2), bias 0 (Paddle's default would be Xavier)."""
    return RowLinear(fan_in, fan_out, weight_attr=_normal_attr(), bias_attr=_const_attr(0.0))


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, epsilon=LN_EPS, weight_attr=_const_attr(1.0), bias_attr=_const_attr(0.0))


def _dropout(rate: float) -> nn.Layer:
    # At rate 0 (the reference) no op at all, so exported programs carry no dropout/scale op.
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


# ----------------------------------------------------------------------------- layers
class DropPath(nn.Layer):
    """Stochastic depth on a residual branch: in training, zero a sample's branch with probability
    ``rate`` and scale the kept ones by ``1 / (1 - rate)``; identity in eval.
    ``x [B * N, D]`` (the rows of B samples of N tokens each) -> same shape."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: paddle.Tensor, tokens: int) -> paddle.Tensor:
        if not self.training or self.rate <= 0:
            return x
        keep = 1.0 - self.rate
        rows = x.reshape([-1, tokens, x.shape[-1]])
        mask = paddle.floor(keep + paddle.rand([rows.shape[0], 1, 1], dtype=x.dtype))
        return (rows * mask / keep).reshape(x.shape)


class Attention(nn.Layer):
    """Multi-head self-attention over B samples of N tokens: ``x [B * N, D] -> [B * N, D]``.

    ``qkv`` is one Linear(D, 3D) whose output channel ``s*D + h*(D/heads) + j`` is channel j of
    head h of s in (q, k, v); each head computes ``softmax(q k^T * (D/heads)^-0.5) v``; the
    heads are concatenated in order and projected by ``proj``.
    """

    def __init__(self, dim: int, heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = _linear(dim, 3 * dim)
        self.attn_drop = _dropout(attn_drop)
        self.proj = _linear(dim, dim)
        self.proj_drop = _dropout(proj_drop)

    def forward(self, x: paddle.Tensor, tokens: int) -> paddle.Tensor:
        dim = x.shape[-1]
        qkv = self.qkv(x).reshape([-1, tokens, 3, self.heads, self.head_dim]).transpose([2, 0, 3, 1, 4])  # [3, B, h, N, dh]
        q, k, v = paddle.unbind(qkv, axis=0)  # one op in the exported program instead of three slices
        attn = paddle.matmul(q * self.scale, k, transpose_y=True)  # [B, h, N, N]
        attn = self.attn_drop(F.softmax(attn, axis=-1))
        out = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([-1, dim])  # [B * N, D]
        return self.proj_drop(self.proj(out))


class Mlp(nn.Layer):
    """``fc1`` (D -> hidden), exact GELU, ``fc2`` (hidden -> D): ``[M, D] -> [M, D]``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = _linear(dim, hidden)
        self.act = nn.GELU(approximate=False)
        self.fc2 = _linear(hidden, dim)
        self.drop = _dropout(drop)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Layer):
    """Pre-norm transformer block: ``x + Attn(LN1(x))`` then ``x + MLP(LN2(x))``.

    ``forward(x [B * N, D], tokens=N) -> [B * N, D]``: the token stream stays 2-D through the
    blocks, so every Linear is one GEMM without reshapes around it.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = Attention(dim, heads, proj_drop=drop)
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def forward(self, x: paddle.Tensor, tokens: int) -> paddle.Tensor:
        branch = self.attn(self.norm1(x), tokens)
        x = x + (self.drop_path(branch, tokens) if self.drop_path is not None else branch)
        branch = self.mlp(self.norm2(x))
        return x + (self.drop_path(branch, tokens) if self.drop_path is not None else branch)


class PatchEmbed(nn.Layer):
    """``proj``: Conv2D(3, D, 16, stride 16) with bias; ``[B, 3, H, W] -> [B, D, H/16, W/16]``."""

    def __init__(self, dim: int, patch: int = PATCH_SIZE, in_channels: int = 3) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_channels * patch * patch)  # PyTorch's default conv init, as the reference
        self.proj = nn.Conv2D(in_channels, dim, patch, stride=patch, weight_attr=_uniform_attr(bound),
                              bias_attr=_uniform_attr(bound))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.proj(x)


# ----------------------------------------------------------------------------- position-embedding resampling
def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a`` (support [-2, 2])."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The [n_out, n_in] float64 matrix of 1-D antialiased bicubic resampling (half-pixel centres).

    Output sample i sits at ``c = (i + 0.5) * n_in / n_out`` in input coordinates; input j
    (centre j + 0.5) gets weight ``cubic((j + 0.5 - c) / max(scale, 1))``, the kernel widened
    by the scale factor when shrinking (antialiasing); each row is normalised to sum 1. Equal
    sizes give the identity. Cached per (n_in, n_out).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"cannot resample {n_in} -> {n_out} samples")
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    out = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        taps = np.arange(lo, hi)
        weights = _cubic((taps - centre + 0.5) / stretch)
        out[i, lo:hi] = weights / weights.sum()
    out.setflags(write=False)
    return out


def resample_grid(tokens: np.ndarray, grid_in: tuple[int, int], grid_out: tuple[int, int]) -> np.ndarray:
    """Resample patch position embeddings from one grid to another (NumPy, float64 inside).

    Args:
        tokens: [N_in, D] with N_in = gh_in * gw_in, row-major (token = row * gw_in + col).
        grid_in, grid_out: (rows, cols) of the input and output grids.
    Returns:
        [gh_out * gw_out, D] in the dtype of ``tokens``, row-major. Identity for equal grids.
    """
    (hi, wi), (ho, wo) = grid_in, grid_out
    if (hi, wi) == (ho, wo):
        return tokens
    grid = tokens.astype(np.float64).reshape(hi, wi, -1)
    grid = np.einsum("ia,abd->ibd", resample_matrix(hi, ho), grid)
    grid = np.einsum("jb,ibd->ijd", resample_matrix(wi, wo), grid)
    return grid.reshape(ho * wo, -1).astype(tokens.dtype)


def grid_of(num_patch_tokens: int) -> tuple[int, int]:
    """The square grid (g, g) of a position embedding with ``num_patch_tokens`` = g * g entries.

    Raises UserError when the count is not a square (checkpoints of non-square models are not supported).
    """
    side = math.isqrt(num_patch_tokens)
    if side * side != num_patch_tokens:
        raise UserError(f"a position embedding of {num_patch_tokens} patch tokens is not a square grid; "
                        "only checkpoints trained on square inputs can be loaded")
    return side, side


def fit_position_embedding(pos_embed: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A stored ``pos_embed`` [1, 1 + g*g, D] resampled to ``grid`` (the class-token entry kept as is).

    Args:
        pos_embed: the checkpoint's embedding, [1, 1 + N, D] (N a square).
        grid: the target (rows, cols).
    Returns:
        [1, 1 + rows * cols, D], the same array when the grid already fits.
    """
    array = np.asarray(pos_embed)
    if array.ndim != 3 or array.shape[0] != 1:
        raise UserError(f"pos_embed has shape {list(array.shape)}; expected [1, 1 + patches, width]")
    source = grid_of(array.shape[1] - 1)
    if source == tuple(grid):
        return array
    patches = resample_grid(array[0, 1:], source, tuple(grid))
    return np.concatenate([array[:, :1], patches[None]], axis=1)


# ----------------------------------------------------------------------------- the backbone
class VisionTransformer(nn.Layer):
    """ViT trunk without its classification head.

    Args:
        preset: a ``ViTPreset`` or the name of one (``B16``, ``L16``).
        img_size: square input side S the position embedding is built for (a multiple of 16).
        drop_rate: dropout after the position embedding, the attention projection and in the MLP (reference 0).
        drop_path_rate: stochastic depth, rising linearly from 0 in the first block to this in the last (reference 0).
    ``forward_features(x [B, 3, H, W]) -> [B, D, H/16, W/16]`` (H, W multiples of 16).
    """

    patch_size = PATCH_SIZE

    def __init__(self, preset: ViTPreset | str, img_size: int = 224, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        preset = VIT_PRESETS[preset] if isinstance(preset, str) else preset
        check_img_size(img_size)
        for name, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if not 0.0 <= rate < 1.0:
                raise UserError(f"--{name} must be in [0, 1), got {rate}")
        dim = preset.dim
        self.preset = preset
        self.grid = (img_size // PATCH_SIZE, img_size // PATCH_SIZE)
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = self.create_parameter([1, 1, dim], attr=_normal_attr())
        self.pos_embed = self.create_parameter([1, 1 + self.grid[0] * self.grid[1], dim], attr=_normal_attr())
        self.pos_drop = _dropout(drop_rate)
        rates = np.linspace(0.0, drop_path_rate, preset.depth) if preset.depth > 1 else [drop_path_rate]
        self.blocks = nn.LayerList([Block(dim, preset.heads, preset.mlp_ratio, drop_rate, float(r)) for r in rates])
        self.norm = _layer_norm(dim)
        self.feature_channels = dim
        self._pos_cache: dict[tuple[int, int], tuple[paddle.Tensor, paddle.Tensor]] = {}

    def position_embedding(self, grid: tuple[int, int]) -> paddle.Tensor:
        """``pos_embed`` for an input grid: the parameter itself at the built grid, else resampled.

        Args:
            grid: (H/16, W/16) of the input.
        Returns:
            [1, 1 + rows * cols, D]; differentiable with respect to ``pos_embed``.
        """
        if grid == self.grid:
            return self.pos_embed
        if grid not in self._pos_cache:
            self._pos_cache[grid] = (
                paddle.to_tensor(resample_matrix(self.grid[0], grid[0]).astype(np.float32)),
                paddle.to_tensor(resample_matrix(self.grid[1], grid[1]).astype(np.float32)),
            )
        rows, cols = self._pos_cache[grid]
        dim = self.feature_channels
        patches = self.pos_embed[0, 1:].reshape([self.grid[0], self.grid[1] * dim])
        patches = paddle.matmul(rows, patches).reshape([grid[0], self.grid[1], dim])  # [rows_out, cols_in, D]
        patches = paddle.matmul(cols, patches)  # [cols_out, cols_in] x [rows_out, cols_in, D] -> [rows_out, cols_out, D]
        return paddle.concat([self.pos_embed[:, :1], patches.reshape([1, grid[0] * grid[1], dim])], axis=1)

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """x [B, 3, H, W] float32 (H, W multiples of 16) -> patch-token map [B, D, H/16, W/16]."""
        height, width = x.shape[2], x.shape[3]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise UserError(f"a ViT needs input sides that are multiples of {PATCH_SIZE}, got {height} x {width}")
        grid = (height // PATCH_SIZE, width // PATCH_SIZE)
        dim = self.feature_channels
        tokens = self.patch_embed(x).flatten(2).transpose([0, 2, 1])  # [B, N, D], token = row * cols + col
        cls = paddle.expand(self.cls_token, [paddle.shape(x)[0], 1, dim])
        tokens = self.pos_drop(paddle.concat([cls, tokens], axis=1) + self.position_embedding(grid))
        count = 1 + grid[0] * grid[1]
        rows = tokens.reshape([-1, dim])  # [B * N, D]
        for block in self.blocks:
            rows = block(rows, count)
        tokens = self.norm(rows).reshape([-1, count, dim])
        return tokens[:, 1:].transpose([0, 2, 1]).reshape([0, dim, grid[0], grid[1]])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.forward_features(x)


class ViTCSRA(CSRAModel, VisionTransformer):
    """ViT trunk + CSRA classifier on its patch-token map:
    ``ViTCSRA(preset, img_size=, drop_rate=, drop_path_rate=, num_classes=, num_heads=, lam=)``.

    ``forward(x [B,3,H,W]) -> logits [B, num_classes]``; ``forward_features(x) -> [B, D, H/16, W/16]``.
    Backbone parameters at the top level (timm's names), the classifier under
    ``classifier.multi_head.{h}.head.weight`` (the reference's).
    """


def check_img_size(img_size: int) -> None:
    """UserError unless ``img_size`` is a positive multiple of the patch size (16)."""
    if img_size < PATCH_SIZE or img_size % PATCH_SIZE:
        raise UserError(f"--img_size {img_size}: a ViT needs a multiple of {PATCH_SIZE} "
                        f"(e.g. 224 as the reference, or 448); the patch convolution would drop the remainder")


# ----------------------------------------------------------------------------- checkpoints
FAMILY = "vit"
FORMAT_TIMM_VIT = "timm-vit"
# ImageNet classifiers of timm / PaddleClas ViTs, and the pre-logits layer of old 21k files:
# CSRA has its own classifier, so these are dropped.
HEAD_KEYS = ("head.weight", "head.bias", "pre_logits.fc.weight", "pre_logits.fc.bias")
# Keys of ViT variants this family does not implement -> what they are.
_UNSUPPORTED = (
    ("reg_token", "register tokens"),
    ("norm_pre.", "a pre-norm before the blocks (CLIP)"),
    ("fc_norm.", "average-pooled features (no final norm)"),
    (".ls1.", "layer scale"),
    (".ls2.", "layer scale"),
    (".attn.q_norm.", "q/k normalisation"),
    (".attn.k_norm.", "q/k normalisation"),
)


def looks_like_vit(keys: Collection[str]) -> bool:
    """``BackboneFamily.signature``: a patch embedding and transformer blocks (any ViT variant;
    ``check_vit_keys`` then refuses the variants this family does not implement)."""
    return "patch_embed.proj.weight" in keys and any(k.startswith("blocks.") for k in keys)


def check_vit_keys(keys: Collection[str]) -> None:
    """UserError when a ViT checkpoint is a variant this family does not implement (naming the giveaway keys)."""
    found: dict[str, list[str]] = {}
    for key in keys:
        for marker, what in _UNSUPPORTED:
            if key.startswith(marker) or marker in f".{key}":
                found.setdefault(what, []).append(key)
    keyset = set(keys)
    if "cls_token" not in keyset:
        found.setdefault("no class token", []).append("cls_token (absent)")
    if "patch_embed.proj.weight" in keyset and "patch_embed.proj.bias" not in keyset:
        found.setdefault("a patch convolution without bias", []).append("patch_embed.proj.bias (absent)")
    if any(k.endswith(".attn.qkv.weight") for k in keyset) and not any(k.endswith(".attn.qkv.bias") for k in keyset):
        found.setdefault("a qkv projection without bias", []).append("blocks.*.attn.qkv.bias (absent)")
    if found:
        what = "; ".join(f"{name} ({', '.join(sorted(ks)[:2])})" for name, ks in found.items())
        raise UserError(f"this ViT checkpoint is a variant that vit_b16/vit_l16 do not implement: {what}. "
                        "Use an original ViT checkpoint (timm's vit_*_patch16_224 or PaddleClas's ViT_*_patch16_224)")


def fit_vit_state(state: dict[str, Any], model: nn.Layer) -> list[str]:
    """``BackboneFamily.fit_state``: adapt a checkpoint (Paddle names) to ``model`` in place.

    Refuses unsupported ViT variants, and resamples ``pos_embed`` when its grid differs from
    the model's (e.g. ImageNet weights at 224 into a model built for 448).

    Returns:
        notes for the user (one per change made).
    """
    if looks_like_vit(state):  # another family's checkpoint is reported by the shape check instead
        check_vit_keys(list(state))
    notes: list[str] = []
    grid = getattr(model, "grid", None)
    if POS_EMBED_KEY in state and grid is not None:
        value = state[POS_EMBED_KEY]
        array = value.numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)
        fitted = fit_position_embedding(array, grid)
        if fitted is not array:
            source = grid_of(array.shape[1] - 1)
            state[POS_EMBED_KEY] = fitted
            notes.append(f"pos_embed resampled from a {source[0]}x{source[1]} grid to the model's "
                         f"{grid[0]}x{grid[1]} (input {grid[0] * PATCH_SIZE} px)")
    return notes


def vit_checkpoint_img_size(state: Mapping[str, Any]) -> int | None:
    """``BackboneFamily.checkpoint_img_size``: the input side of a ViT checkpoint's position grid
    (16 x its side: 224 for a 197-entry ``pos_embed``), or None without one."""
    value = state.get(POS_EMBED_KEY)
    if value is None or len(np.shape(value)) != 3:
        return None
    return grid_of(int(np.shape(value)[1]) - 1)[0] * PATCH_SIZE


def build_vit(spec: ModelSpec, *, img_size: int, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
              **kwargs: Any) -> ViTCSRA:
    """``BackboneFamily.build``: ``ViTCSRA(spec.preset, img_size=, drop_rate=, drop_path_rate=, **kwargs)``."""
    if any(key in kwargs for key in ("recalibrator_factory", "mixer_factory")):  # build_model checks attention_kinds first
        raise UserError(f"{spec.name} hosts no attention block")
    return ViTCSRA(spec.preset, img_size=img_size, drop_rate=drop_rate, drop_path_rate=drop_path_rate, **kwargs)


# Timm's release of the JAX ViTs (ImageNet-21k pretrained, 1k fine-tuned at 224): the weights
# the reference downloads. No md5 is published; each name ends with the first 8 hex digits of
# the file's sha256, which the download checks.
_TIMM_JX = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"


def _timm_jx(filename: str) -> WeightsSource:
    """The release's file ``name-<first 8 hex of sha256>.pth`` with that sha256 prefix to check."""
    return WeightsSource(_TIMM_JX + filename, sha256_prefix=filename.rsplit("-", 1)[1].split(".")[0])


VIT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(name="vit_b16", family=FAMILY, preset="B16", block="transformer", feature_channels=768, stride=PATCH_SIZE,
              aliases=("vit_B16_224",), weights={"imagenet": _timm_jx("jx_vit_base_p16_224-80ecf9dd.pth")},
              summary="ViT-B/16 + CSRA"),
    ModelSpec(name="vit_l16", family=FAMILY, preset="L16", block="transformer", feature_channels=1024, stride=PATCH_SIZE,
              aliases=("vit_L16_224",), weights={"imagenet": _timm_jx("jx_vit_large_p16_224-4ee7a4dc.pth")},
              summary="ViT-L/16 + CSRA"),
)

register_family(
    BackboneFamily(
        name=FAMILY,
        build=build_vit,
        signature=looks_like_vit,
        key_hint="'patch_embed.proj.weight' and 'blocks.*'",
        torch_format=FORMAT_TIMM_VIT,
        head_keys=HEAD_KEYS,
        rename=None,  # timm names = Paddle names; Linear weights are transposed by the converter
        build_options=frozenset({"img_size", "drop_rate", "drop_path_rate"}),
        fit_state=fit_vit_state,
        checkpoint_img_size=vit_checkpoint_img_size,
        # ViT-B/16 at 224, batch 1, 2-core AMD EPYC: ONNX Runtime 1.05-1.11x the compute floor, the
        # Paddle predictor 1.25-1.36x (the glue ops between its GEMMs); docs/benchmarks.md
        cpu_fp32_backends=("onnxruntime", "paddle"),
    ),
    VIT_MODELS,
)


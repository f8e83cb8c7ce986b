"""Convert a PyTorch backbone / CSRA checkpoint (.pth) into Paddle weights (.pdparams).

Reads PyTorch's zip checkpoint format without torch and without executing anything from
the file; detects the format from the keys with the registries (``models.convert``): a
registered backbone family (torchvision ImageNet ResNet, timm ViT, EfficientMod), the reference CSRA checkpoints, or
an attention block's reference checkpoints (the channel-attention ResNets
``layerX.Y.rclb.*``, the PRM ResNets ``layerX.Y.prm.*``, the AT-kernel mmcls backbone
``backbone.*``); optionally ``module.``-prefixed. It builds the target model from the model
flags and checks every tensor's shape against it. Without ``--attention``, the attention
block (and its stages; GE's input size) is taken from the checkpoint's keys.

    python tools/convert_torch_weights.py --src resnet101-63fe2227.pth --dst r101.pdparams --model resnet101
    python tools/convert_torch_weights.py --src voc_csra.pth --dst voc.pdparams --model resnet101 --num_heads 1 --lam 0.1 --num_cls 20
    python tools/convert_torch_weights.py --src se50.pth.tar --dst se50.pdparams --model resnet50   # --attention se implied
    python tools/convert_torch_weights.py --src model_best.pth.tar --dst emod_s.pdparams --model efficientmod_s   # timm training file
    python tools/convert_torch_weights.py --src wider_vit_b16.pth --dst wider_vit.pdparams --model vit_b16 --num_heads 1 --lam 0.3 --num_cls 14
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.args import add_model_args, model_fields  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The converter's argument parser."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, type=Path,
                        help="PyTorch checkpoint (.pth, zip format of torch >= 1.6) or .safetensors (torch layout)")
    parser.add_argument("--dst", required=True, type=Path, help="output Paddle weights (.pdparams)")
    parser.add_argument("--use_ema", action="store_true",
                        help="a training checkpoint's EMA copy (state_dict_ema) instead of its state_dict")
    add_model_args(parser, num_cls_default=20, defaults_from=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Convert ``--src`` to ``--dst``; prints what was converted and skipped. Returns 0."""
    args = build_parser().parse_args(argv)
    import numpy as np

    from models import build_model
    from models.convert import checkpoint_img_size, convert_torch_state, infer_attention
    from models.weights import load_state
    from utils.fileio import atomic_paddle_save
    from utils.pth_io import load_pth, select_weights

    if args.dst.suffix != ".pdparams":
        raise UserError(f"--dst must end in .pdparams, got {args.dst}")
    if not args.src.is_file():
        raise UserError(f"--src not found: {args.src}")
    entry_notes: list[str] = []
    if args.src.suffix.lower() == ".safetensors":
        from utils.safetensors_io import load_safetensors

        source = load_safetensors(args.src)
    else:
        source, entry_notes = select_weights(load_pth(args.src), use_ema=args.use_ema)
    implied = infer_attention(source) if args.attention is None else {}
    img_size = implied.pop("img_size", None) or checkpoint_img_size(source)  # GE kernels / a ViT's position grid
    fields = model_fields({**implied, **{k: v for k, v in vars(args).items() if v is not None}})  # flags win
    model = build_model(fields["model"], args.num_cls, fields["num_heads"], fields["lam"], attention=fields["attention"],
                        attention_stages=fields["attention_stages"], img_size=img_size)
    conv = convert_torch_state(source, model)
    load_state(model, conv.state, str(args.src))  # proves the result loads
    atomic_paddle_save({k: np.asarray(v) for k, v in conv.state.items()}, args.dst)

    print(f"source format: {conv.format}" + (f" (prefix '{conv.prefix_stripped}' stripped)" if conv.prefix_stripped else ""))
    for note in entry_notes:  # a training checkpoint: which weights, what else was in the file
        print(note)
    if implied:
        print(f"attention from the checkpoint: {implied['attention']} in stage(s) {','.join(map(str, implied['attention_stages']))}"
              + (f" (GE kernels for --img_size {img_size})" if img_size else ""))
    for note in conv.notes:
        print(note)
    if img_size:
        print(f"input size of the checkpoint: {img_size} px (the converted weights keep it)")
    print(f"converted {len(conv.state)} tensors ({len(conv.renamed)} renamed, e.g. running_mean -> _mean)")
    skipped_by_reason: dict[str, list[str]] = {}
    for key, reason in conv.skipped:
        skipped_by_reason.setdefault(reason, []).append(key)
    for reason, keys in skipped_by_reason.items():
        print(f"skipped {len(keys)}: {reason} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if conv.missing_ok:
        print(f"not in source: {len(conv.missing_ok)} classifier tensor(s), initialised fresh when the model is built")
    if conv.missing_attention:
        print(f"not in source: {len(conv.missing_attention)} attention-block tensor(s) ({model.config['attention']}), "
              "initialised fresh when the model is built")
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

"""Cost of every attention block on ResNet-50 + CSRA: parameters, FLOPs and CPU latency.

For each block (default: all registered, at their default stages) and the plain model:
trainable parameters, multiply-adds (conv/linear MACs plus each block's own count, see
``AttentionBlock.flops``), and the latency overhead over the plain model at every
``--sizes`` x ``--batches`` in Paddle Inference (static graph via ``paddle.jit.save`` into a
temporary directory, oneDNN, ``--threads`` threads) and/or dygraph (eval, no_grad). Models of
one setting are timed round-robin (plain, se, srm, ... plain, se, ...) so that load changes
on the machine hit them all alike; each model's fastest run is reported (``--stat min``, the
estimate of its own cost least disturbed by other processes) or the median. The last column is the original
paper's GPU overhead (RTX 2080 Ti, PyTorch fp32, 224, batch 1; R50 4.6 ms).

    OMP_NUM_THREADS=2 python bench/attention_overhead.py
    python bench/attention_overhead.py --sizes 448 --batches 1 --modes predictor --blocks ab,eca,se
    python bench/attention_overhead.py --json results.json   # also write the raw numbers
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Published GPU overheads (Klomp et al.): ResNet-50 4.6 ms at 224, batch 1, RTX 2080 Ti.
PAPER_GPU_OVERHEAD = {"ab": "+20 %", "eca": "+45 %", "se": "+63 %", "srm": "+75 %", "multise": "+165 %"}
PLAIN = "none"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--num_cls", type=int, default=20)
    parser.add_argument("--blocks", default="all", help="comma-separated attention names, or 'all' (default)")
    parser.add_argument("--sizes", default="224,448", help="input sides (default 224,448)")
    parser.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    parser.add_argument("--modes", default="predictor,dygraph", help="predictor and/or dygraph (default both)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--iters", type=int, default=0,
                        help="timed runs per model and setting (default: 12 at batch 1 / 224, fewer for bigger work)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per model and setting (default 1)")
    parser.add_argument("--stat", choices=["min", "median"], default="min", help="statistic of the timed runs (default min)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    return parser.parse_args(argv)


def _default_iters(size: int, batch: int) -> int:
    work = batch * (size / 224) ** 2  # in units of one 224 image
    return max(3, min(12, int(round(24 / work))))


def count_macs(model, size: int) -> int:
    """Multiply-adds of one image: Conv2D/Linear outside attention blocks plus each block's ``flops``."""
    import paddle
    from paddle import nn

    from models.attention import AttentionBlock

    total = [0]
    inside = set()
    for _, layer in model.named_sublayers():
        if isinstance(layer, AttentionBlock):
            inside.update(id(sub) for sub in layer.sublayers())

    def conv_hook(layer, inputs, output):
        if id(layer) in inside:
            return
        w = layer.weight.shape  # [out, in/groups, kh, kw]
        total[0] += int(output.numel()) * w[1] * w[2] * w[3]

    def linear_hook(layer, inputs, output):
        if id(layer) not in inside:
            total[0] += int(output.numel()) * layer.weight.shape[0]

    def block_hook(layer, inputs, output):
        total[0] += int(layer.flops(list(inputs[0].shape)))

    handles = []
    for _, layer in model.named_sublayers():
        if isinstance(layer, AttentionBlock):
            handles.append(layer.register_forward_post_hook(block_hook))
        elif isinstance(layer, nn.Conv2D):
            handles.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_post_hook(linear_hook))
    model.eval()
    with paddle.no_grad():
        model(paddle.zeros([1, 3, size, size]))
    for h in handles:
        h.remove()
    return total[0]


def _predictor(model, size: int, threads: int, workdir: str, tag: str):
    import paddle
    from paddle import inference

    prefix = os.path.join(workdir, tag)
    paddle.jit.save(model, prefix, input_spec=[paddle.static.InputSpec([None, 3, size, size], "float32", "image")])
    model_file = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
    config = inference.Config(model_file, prefix + ".pdiparams")
    config.disable_gpu()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    inp = predictor.get_input_handle(predictor.get_input_names()[0])
    out = predictor.get_output_handle(predictor.get_output_names()[0])

    def run(x):
        inp.copy_from_cpu(x)
        predictor.run()
        return out.copy_to_cpu()

    return run


def _dygraph(model):
    import paddle

    model.eval()

    def run(x):
        with paddle.no_grad():
            return model(paddle.to_tensor(x)).numpy()

    return run


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before paddle is imported
    import numpy as np
    import paddle

    from models import build_model
    from models.attention import ATTENTIONS

    paddle.set_device("cpu")
    blocks = ATTENTIONS.names() if args.blocks == "all" else [ATTENTIONS.canonical(b) for b in args.blocks.split(",")]
    names = [PLAIN] + blocks
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    load = os.getloadavg()
    print(f"{args.model} + CSRA ({args.num_cls} classes), {args.threads} threads, {os.cpu_count()} cores, {args.stat} of the "
          f"timed runs, load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)

    results: dict = {"params": {}, "macs": {}, "ms": {}, "load_before": load}
    t_start = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        for size in sizes:
            models = {}
            for name in names:
                paddle.seed(0)
                model = build_model(args.model, args.num_cls, attention=None if name == PLAIN else name, img_size=size)
                model.eval()
                models[name] = model
                results["params"][f"{name}@{size}"] = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
                results["macs"][f"{name}@{size}"] = count_macs(model, size)
            for mode in modes:
                runners = {name: (_predictor(m, size, args.threads, workdir, f"{name}_{size}") if mode == "predictor" else _dygraph(m))
                           for name, m in models.items()}
                for batch in batches:
                    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
                    iters = args.iters or _default_iters(size, batch)
                    for _ in range(args.warmup):
                        for run in runners.values():
                            run(x)
                    times: dict[str, list[float]] = {name: [] for name in runners}
                    for _ in range(iters):  # round-robin: one run of every model per round
                        for name, run in runners.items():
                            t0 = time.perf_counter()
                            run(x)
                            times[name].append(time.perf_counter() - t0)
                    stat = np.min if args.stat == "min" else np.median
                    for name, ts in times.items():
                        results["ms"][f"{name}|{mode}|{size}|{batch}"] = 1000 * float(stat(ts))
                    base = results["ms"][f"{PLAIN}|{mode}|{size}|{batch}"]
                    line = ", ".join(f"{n} {100 * (results['ms'][f'{n}|{mode}|{size}|{batch}'] / base - 1):+.1f}%" for n in blocks)
                    print(f"[{mode} {size} b{batch}, {iters} runs] plain {base:.1f} ms; {line}", flush=True)
                del runners
            del models
    results["seconds"] = time.time() - t_start
    results["load_after"] = os.getloadavg()
    print()
    print(format_table(results, blocks, sizes, batches, modes))
    print(f"\nwall time {results['seconds'] / 60:.1f} min; load average after: "
          + " ".join(f"{v:.2f}" for v in results["load_after"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def format_table(results: dict, blocks: list[str], sizes: list[int], batches: list[int], modes: list[str]) -> str:
    """Markdown table: one row per block, latency overhead per (mode, size, batch)."""
    settings = [(m, s, b) for m in modes for s in sizes for b in batches]
    short = {"predictor": "pred", "dygraph": "dyg"}
    head = ["block", "params", "GMACs@224", "GMACs@448"] + [f"{short.get(m, m)} {s} b{b}" for m, s, b in settings] + ["paper GPU 224 b1"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    def params(name: str) -> str:
        """Parameter delta over the plain model (per size when it depends on it, as GE's)."""
        cells = []
        for size in sizes:
            delta = results["params"][f"{name}@{size}"] - results["params"][f"{PLAIN}@{size}"]
            cell = f"{delta / 1e6:+.3f} M" if abs(delta) >= 1e5 else f"{delta:+,d}"
            if cell not in cells:
                cells.append(cell)
        return " / ".join(cells) + (f" ({'/'.join(map(str, sizes))})" if len(cells) > 1 else "")


    def macs(name: str, size: int) -> str:
        key = f"{name}@{size}"
        if key not in results["macs"]:
            return "-"
        value, base = results["macs"][key], results["macs"][f"{PLAIN}@{size}"]
        return f"{value / 1e9:.2f}" if name == PLAIN else f"{value / 1e9:.2f} ({100 * (value / base - 1):+.1f}%)"

    plain_cells = [PLAIN, f"{results['params'][f'{PLAIN}@{sizes[0]}'] / 1e6:.2f} M", macs(PLAIN, 224), macs(PLAIN, 448)]
    plain_cells += [f"{results['ms'][f'{PLAIN}|{m}|{s}|{b}']:.0f} ms" for m, s, b in settings] + ["4.6 ms"]
    rows.append("| " + " | ".join(plain_cells) + " |")
    for name in blocks:
        cells = [name, params(name), macs(name, 224), macs(name, 448)]
        for m, s, b in settings:
            t, base = results["ms"][f"{name}|{m}|{s}|{b}"], results["ms"][f"{PLAIN}|{m}|{s}|{b}"]
            cells.append(f"{100 * (t / base - 1):+.1f} %")
        cells.append(PAPER_GPU_OVERHEAD.get(name, "-"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

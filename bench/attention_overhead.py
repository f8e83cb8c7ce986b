"""Cost of every attention block on ResNet-50 + CSRA: parameters, FLOPs and CPU latency.

For each block (default: all registered, at their default stages) and the plain model:
trainable parameters, multiply-adds (conv/linear MACs plus each block's own count, see
``AttentionBlock.flops``), and the latency overhead over the plain model at every
``--sizes`` x ``--batches`` in Paddle Inference (static graph via ``paddle.jit.save``, run
with infer.py's settings: oneDNN, ``--threads`` threads) and/or dygraph (eval, no_grad).

Every model runs in its own worker process, as a deployed model would: models sharing one
process disturbed each other (a shared oneDNN kernel cache, one heap), which moved some
overheads by 10 points from run to run. Workers of one setting are timed round-robin (plain,
se, srm, ... plain, se, ...) so that load changes on the machine hit them all alike, at most
``--group`` blocks (plus a plain model) at a time to bound memory; a block's overhead is over
the plain model of its own group. Each worker reports its fastest run (``--stat min``, the
estimate of its own cost least disturbed by other processes) or the median; with
``--replicas R`` each model runs in R processes and the median of their figures is taken
(processes of one model differ by 1-3 %). The last column is the original paper's GPU
overhead (RTX 2080 Ti, PyTorch fp32, 224, batch 1; R50 4.6 ms).

    OMP_NUM_THREADS=2 python bench/attention_overhead.py
    python bench/attention_overhead.py --sizes 448 --batches 1 --modes predictor --replicas 3
    python bench/attention_overhead.py --blocks ab,eca,se --json results.json   # also the raw numbers
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
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
    parser.add_argument("--replicas", type=int, default=1, help="worker processes per model; median of their figures (default 1)")
    parser.add_argument("--pause", type=float, default=0.25,
                        help="seconds between two timed runs (default 0.25): Paddle's Intel OpenMP keeps a finished "
                             "run's threads spinning for 200 ms (KMP_BLOCKTIME), which would slow the next worker")
    parser.add_argument("--group", type=int, default=4, help="blocks timed together with one plain model (default 4)")
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
    """``run(x [B, 3, size, size]) -> [B, C]`` through Paddle Inference, configured as infer.py
    (``deploy.predictor.build_config``: oneDNN, ``threads`` threads, IR optimisation)."""
    import paddle
    from paddle import inference

    from deploy.inference_config import ModelFiles
    from deploy.predictor import RuntimeOptions, build_config

    prefix = os.path.join(workdir, tag)
    paddle.jit.save(model, prefix, input_spec=[paddle.static.InputSpec([None, 3, size, size], "float32", "image")])
    model_file = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
    files = ModelFiles(Path(model_file), Path(prefix + ".pdiparams"), None)
    predictor = inference.create_predictor(build_config(files, RuntimeOptions(cpu_threads=threads), size, "image"))
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


def _setup_process(threads: int) -> None:
    """Thread count and allocator settings of infer.py, before Paddle is imported."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from utils.memory import retain_freed_memory

    retain_freed_memory()


def _worker(conn, model_name: str, num_cls: int, name: str, size: int, mode: str, threads: int, workdir: str, tag: str) -> None:
    """One model in its own process: build (seed 0), export if needed, then answer
    ``batch -> (seconds, minor page faults)`` requests until it receives None."""
    _setup_process(threads)
    import numpy as np
    import paddle

    from models import build_model

    paddle.set_device("cpu")
    paddle.seed(0)
    model = build_model(model_name, num_cls, attention=None if name == PLAIN else name, img_size=size)
    model.eval()
    run = _predictor(model, size, threads, workdir, tag) if mode == "predictor" else _dygraph(model)
    inputs: dict[int, np.ndarray] = {}
    conn.send("ready")
    while (batch := conn.recv()) is not None:
        if batch not in inputs:
            inputs[batch] = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        run(inputs[batch])
        elapsed = time.perf_counter() - t0
        conn.send((elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0))
    conn.close()


def _time_group(args: argparse.Namespace, names: list[str], size: int, mode: str, batches: list[int], workdir: str) -> dict:
    """Round-robin timing of ``names`` (each in ``args.replicas`` processes) at one size and mode.

    Returns ``{batch: (iters, {name: {"runs_ms": [one list of run times per process],
    "faults_per_run": [one figure per process]}})}``."""
    ctx = mp.get_context("spawn")
    workers = []  # (name, connection, process)
    for replica in range(args.replicas):
        for name in names:
            parent, child = ctx.Pipe()
            tag = f"{name}_{size}_{mode}_{replica}"
            proc = ctx.Process(target=_worker, args=(child, args.model, args.num_cls, name, size, mode, args.threads, workdir, tag))
            proc.start()
            workers.append((name, parent, proc))
    try:
        for name, conn, proc in workers:
            if conn.recv() != "ready":
                raise RuntimeError(f"worker for {name} failed to start")
        out: dict = {}
        for batch in batches:
            iters = args.iters or _default_iters(size, batch)
            for _ in range(args.warmup):
                for _, conn, _ in workers:
                    conn.send(batch)
                    conn.recv()
                    time.sleep(args.pause)
            times = [[] for _ in workers]
            faults = [0 for _ in workers]
            for _ in range(iters):  # round-robin: one run of every worker per round
                for i, (_, conn, _) in enumerate(workers):
                    conn.send(batch)
                    elapsed, flt = conn.recv()
                    times[i].append(1000 * elapsed)
                    faults[i] += flt
                    time.sleep(args.pause)
            per_name: dict = {}
            for (name, _, _), ts, flt in zip(workers, times, faults):
                per_name.setdefault(name, {"runs_ms": [], "faults_per_run": []})
                per_name[name]["runs_ms"].append(ts)
                per_name[name]["faults_per_run"].append(flt / iters)
            out[batch] = (iters, per_name)
        return out
    finally:
        for _, conn, proc in workers:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for _, _, proc in workers:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    _setup_process(args.threads)
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
    groups = [blocks[i:i + max(1, args.group)] for i in range(0, len(blocks), max(1, args.group))] or [[]]
    load = os.getloadavg()
    print(f"{args.model} + CSRA ({args.num_cls} classes), {args.threads} threads, {os.cpu_count()} cores, one process per "
          f"model x {args.replicas}, {args.stat} of the timed runs, load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
          flush=True)

    results: dict = {"params": {}, "macs": {}, "ms": {}, "runs_ms": {}, "page_faults_per_run": {}, "load_before": load}
    stat = np.min if args.stat == "min" else np.median
    t_start = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        for size in sizes:
            for name in names:
                paddle.seed(0)
                model = build_model(args.model, args.num_cls, attention=None if name == PLAIN else name, img_size=size)
                results["params"][f"{name}@{size}"] = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
                results["macs"][f"{name}@{size}"] = count_macs(model, size)
                del model
            for mode in modes:
                for group in groups:
                    timed = _time_group(args, [PLAIN] + group, size, mode, batches, workdir)
                    for batch, (iters, per_name) in timed.items():
                        figures = {n: float(np.median([stat(ts) for ts in d["runs_ms"]])) for n, d in per_name.items()}
                        base = figures[PLAIN]
                        for name in group:
                            key = f"{name}|{mode}|{size}|{batch}"
                            results["ms"][key] = figures[name]
                            results["ms"][f"{PLAIN}-for-{key}"] = base
                            results["runs_ms"][key] = per_name[name]["runs_ms"]
                            results["page_faults_per_run"][key] = per_name[name]["faults_per_run"]
                        plain_key = f"{PLAIN}|{mode}|{size}|{batch}"
                        results["ms"].setdefault(plain_key, base)
                        results["runs_ms"].setdefault(plain_key, []).extend(per_name[PLAIN]["runs_ms"])
                        line = ", ".join(f"{n} {100 * (figures[n] / base - 1):+.1f}%" for n in group)
                        print(f"[{mode} {size} b{batch}, {iters} runs x {args.replicas}] plain {base:.1f} ms; {line}", flush=True)
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
    head = ["block", "params"] + [f"GMACs@{s}" for s in sizes] + [f"{short.get(m, m)} {s} b{b}" for m, s, b in settings] + ["paper GPU 224 b1"]
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

    plain_cells = [PLAIN, f"{results['params'][f'{PLAIN}@{sizes[0]}'] / 1e6:.2f} M"] + [macs(PLAIN, s) for s in sizes]
    plain_cells += [f"{results['ms'][f'{PLAIN}|{m}|{s}|{b}']:.0f} ms" for m, s, b in settings] + ["4.6 ms"]
    rows.append("| " + " | ".join(plain_cells) + " |")
    for name in blocks:
        cells = [name, params(name)] + [macs(name, s) for s in sizes]
        for m, s, b in settings:
            t, base = results["ms"][f"{name}|{m}|{s}|{b}"], results["ms"][f"{PLAIN}-for-{name}|{m}|{s}|{b}"]
            cells.append(f"{100 * (t / base - 1):+.1f} %")
        cells.append(PAPER_GPU_OVERHEAD.get(name, "-"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy cost of int8: test mAP of every backend of an export on a prepared split, side by side.

    .venv/bin/python bench/int8_accuracy.py --model_dir inference/demo --test_json data/demo/test_voc07.json

The export must have been made with ``export_model.py --quantize int8`` (so it holds the
Paddle program, model.onnx and model_int8.onnx). Every test image goes through infer.py's
preprocessing once (``load_rgb`` -> ``preprocess`` with inference.yml's size and mean/std);
the same arrays are then run by the Paddle predictor (fp32), ONNX Runtime fp32 and ONNX
Runtime int8 (batches of ``--batch_size``), and the scores are evaluated with the project's
evaluator (``evaluation.metrics.evaluate``, the dataset's label policy). Prints, per backend,
mAP, CF1, OF1, the largest score difference from the Paddle predictor, and how many
image-label decisions at the export's threshold differ from it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="an export made with --quantize int8")
    parser.add_argument("--test_json", required=True, help="prepared split (datasets.prepare.*) of the test images")
    parser.add_argument("--dataset", default=None, help="label policy of the split (default: inference.yml's dataset)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from utils.threads import configure_threads

    configure_threads()
    import numpy as np

    from datasets.config import label_policy
    from datasets.image_io import load_rgb
    from datasets.splits import read_split
    from datasets.transforms import preprocess
    from deploy.backends import create_backend
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions
    from evaluation.metrics import evaluate

    files = find_model_files(args.model_dir)
    deploy = DeployConfig.load(files.config_file)
    entries, targets = read_split(args.test_json, deploy.num_classes)
    policy = label_policy(args.dataset or deploy.dataset, bool((targets == -1).any()))
    t0 = time.perf_counter()
    x = np.stack([preprocess(load_rgb(e["img_path"]), deploy.img_size, deploy.mean, deploy.std) for e in entries])
    print(f"{len(entries)} test images preprocessed in {time.perf_counter() - t0:.0f} s; {deploy.num_classes} classes, "
          f"threshold {deploy.threshold}, label policy {policy}; int8: {deploy.int8}")
    runs = {"paddle fp32": ("paddle", "fp32"), "onnxruntime fp32": ("onnxruntime", "fp32"), "onnxruntime int8": ("onnxruntime", "int8")}
    scores = {}
    for label, (backend, precision) in runs.items():
        model = create_backend(backend, files, deploy, RuntimeOptions(precision=precision, cpu_threads=args.threads))
        scores[label] = np.concatenate([model(x[i:i + args.batch_size]) for i in range(0, len(x), args.batch_size)])
    ref = scores["paddle fp32"]
    print(f"{'backend':<20}{'mAP':>8}{'CF1':>8}{'OF1':>8}{'max |d score|':>15}{'labels changed':>16}")
    for label, s in scores.items():
        result = evaluate(s, targets, policy=policy, threshold=deploy.threshold, class_names=deploy.class_names)
        changed = int(((s >= deploy.threshold) != (ref >= deploy.threshold)).sum())
        print(f"{label:<20}{100 * result.map:>8.2f}{100 * result.cf1:>8.2f}{100 * result.of1:>8.2f}"
              f"{float(np.abs(s - ref).max()):>15.2e}{changed:>9d} / {ref.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

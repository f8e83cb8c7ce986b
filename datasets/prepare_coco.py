"""``python datasets/prepare_coco.py ...``: the same as ``python -m datasets.prepare.coco ...``.

Kept because the reference and its users type this form.
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.prepare.coco import main  # noqa: E402
from utils.errors import run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))

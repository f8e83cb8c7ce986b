#!/usr/bin/env bash
# `make demo`: the main job on built-in synthetic data, on the CPU, in a few minutes.
# generate demo data -> prepare its JSON -> train a small CSRA model (then tune per-class thresholds on the
# val split) -> evaluate (+ PR curves) -> predict (+ class-attention heatmaps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DEMO_DATA:-data/demo}
OUT=${DEMO_OUT:-output/demo}
NUM_IMAGES=${DEMO_IMAGES:-3000}     # 2600 trainval (2300 train + 300 val) + 400 test
TEST_IMAGES=${DEMO_TEST_IMAGES:-400}
VAL_IMAGES=${DEMO_VAL_IMAGES:-300}  # of trainval, for threshold tuning; the rest trains
GEN_SIZE=${DEMO_GEN_SIZE:-64}
IMG_SIZE=${DEMO_IMG_SIZE:-64}
BATCH=${DEMO_BATCH:-8}
EPOCHS=${DEMO_EPOCHS:-3}            # 6,900 training images in all
LR=${DEMO_LR:-0.05}
LR_STEP=${DEMO_LR_STEP:-2}          # x0.1 for the last epoch
WARMUP=${DEMO_WARMUP:-0.25}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

# how long each step took, printed after the step and again at the end
DEMO_START=$SECONDS
STEP_START=$SECONDS
TIMES=()
done_step() {  # done_step NAME
    local took=$((SECONDS - STEP_START))
    TIMES+=("$(printf '%-28s %4d s' "$1" "$took")")
    echo "   ($1 took ${took} s)"
    STEP_START=$SECONDS
}

echo "== 1/5 generating ${NUM_IMAGES} synthetic images in ${DATA}"
"$PY" -m datasets.make_demo --out "$DATA" --num_images "$NUM_IMAGES" --test_images "$TEST_IMAGES" --val_images "$VAL_IMAGES" \
    --img_size "$GEN_SIZE" --seed 0
done_step "generating data"
echo "== 2/5 preparing the JSON splits"
"$PY" datasets/prepare_voc.py --data_path "$DATA/VOCdevkit" --classes "$DATA/classes.txt" --out_dir "$DATA"
done_step "preparing splits"
echo "== 3/5 training resnet18 + CSRA for ${EPOCHS} epochs at ${IMG_SIZE}px (CPU)"
rm -rf "$OUT"
"$PY" train.py --dataset demo --train_json "$DATA/train_voc07.json" --test_json "$DATA/test_voc07.json" \
    --val_json "$DATA/val_voc07.json" --tune_thresholds --model resnet18 --num_heads 1 --lam 0.1 --img_size "$IMG_SIZE" --batch_size "$BATCH" --lr "$LR" \
    --lr_step "$LR_STEP" --warmup_epoch "$WARMUP" --total_epoch "$EPOCHS" --eval_interval "$EPOCHS" --print_freq 0 --save_dir "$OUT"
done_step "training"
echo "== 4/5 evaluating ${OUT}/best.pdparams on the test split (global and tuned thresholds, PR curves)"
"$PY" val.py --load_from "$OUT/best.pdparams" --test_json "$DATA/test_voc07.json" --save_scores "$OUT/test_scores.json" \
    --plots "$OUT/plots"
done_step "evaluating"
echo "== 5/5 predicting 5 test images, with class-attention heatmaps"
mkdir -p "$OUT/sample_images"
head -n 5 "$DATA/VOCdevkit/VOC2007/ImageSets/Main/test.txt" | while read -r id; do
    cp "$DATA/VOCdevkit/VOC2007/JPEGImages/${id}.jpg" "$OUT/sample_images/"
done
"$PY" predict.py --load_from "$OUT/best.pdparams" --img_dir "$OUT/sample_images" --heatmap_dir "$OUT/heatmaps"
echo "== ground truth of those images (from $DATA/test_voc07.json, difficult objects omitted)"
"$PY" - "$DATA" <<'PYEOF'
import json, sys
from pathlib import Path
data = Path(sys.argv[1])
names = (data / "classes.txt").read_text().split()
ids = (data / "VOCdevkit/VOC2007/ImageSets/Main/test.txt").read_text().split()[:5]
entries = {Path(e["img_path"]).stem: e["target"] for e in json.loads((data / "test_voc07.json").read_text())}
for i in ids:
    print(f"{i}.jpg truth: " + "".join(f"{n}," for n, t in zip(names, entries[i]) if t == 1))
PYEOF
done_step "predicting"
echo "== time per step"
printf '   %s\n' "${TIMES[@]}"
printf '   %-28s %4d s\n' "total" "$((SECONDS - DEMO_START))"
echo "demo finished: checkpoints, metrics and train.log in ${OUT}"
echo "   training curves:      ${OUT}/training_curves.png"
echo "   tuned thresholds:     ${OUT}/thresholds.json"
echo "   PR curves, AP bars:   ${OUT}/plots/pr_curves.png ${OUT}/plots/ap_per_class.png"
echo "   heatmaps:             ${OUT}/heatmaps/ (one PNG per predicted class, <image>__sheet.png per image)"

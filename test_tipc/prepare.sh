#!/usr/bin/env bash
# Builds (or checks) what test_train_inference_python.sh needs for CONFIG in MODE.
#
#   bash test_tipc/prepare.sh CONFIG MODE
#
# The data goes where the config's --train_json / --input_file lines say for MODE
# (test_tipc/data/<MODE>/ in the shipped configs).
#   lite_train_lite_infer   synthetic demo data (20 images), 4 inference images
#   lite_train_whole_infer  synthetic demo data (40 images), every test image for inference
#     TIPC_DATA=voc_small   instead: real VOC 2007 images from $VOC_ROOT, else from
#                           ../shared/data/voc2007_small/VOCdevkit (at most 24 train, 8 test)
#   whole_train_whole_infer PASCAL VOC 2007 at $VOC_ROOT (the VOCdevkit folder); 100 test
#                           images for inference
#   whole_infer             a trained weights file (config line 26 'train_model', or
#                           $TIPC_WEIGHTS) and images ($VOC_ROOT's test images, else the
#                           shared voc2007_small ones when present, else demo images)
# Environment: PYTHON (default .venv/bin/python when it exists), TIPC_DATA (demo|voc_small),
# VOC_ROOT, TIPC_WEIGHTS, TIPC_DEMO_IMAGES (number of demo images), TIPC_DATA_ROOT (replaces
# the ./test_tipc/data/ prefix of the config's data paths).
set -u

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[[ $# -ne 2 ]] && usage

CALLER_PWD=$PWD
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO_ROOT/test_tipc/common_func.sh"
CONFIG=$(func_abspath "$1")
MODE=$2
VOC_ROOT_ABS=""
[[ -n ${VOC_ROOT:-} ]] && VOC_ROOT_ABS=$(func_abspath "$VOC_ROOT")
WEIGHTS_OVERRIDE=""
[[ -n ${TIPC_WEIGHTS:-} ]] && WEIGHTS_OVERRIDE=$(func_abspath "$TIPC_WEIGHTS")
[[ -n ${TIPC_DATA_ROOT:-} ]] && TIPC_DATA_ROOT=$(func_abspath "$TIPC_DATA_ROOT")
cd "$REPO_ROOT" || exit 2
func_start "$CONFIG" "$MODE"
model_name=$(func_parser_value "$(func_line 2)")
python=$(func_python "$(func_parser_value "$(func_line 3)")")
train_json=$(func_data_path "$(func_parser_params "$(func_line 12)" "$MODE")")
infer_dir=$(func_data_path "$(func_parser_params "$(func_line 37)" "$MODE")")
train_model=$(func_data_path "$(func_parser_value "$(func_line 26)")")
SHARED_VOC_SMALL=../shared/data/voc2007_small/VOCdevkit

die() {
    echo "error: $*" >&2
    exit 1
}
run() {
    echo "+ $*"
    "$@" || die "command failed: $*"
}

# fresh_dir DIR: empties DIR for new data; refuses a non-empty folder prepare.sh did not make
fresh_dir() {
    if [[ -d $1 && -n $(ls -A "$1") && ! -f $1/.tipc_prepared ]]; then
        die "refusing to empty $1: it was not made by prepare.sh (check the config's data paths)"
    fi
    rm -rf "$1"
    mkdir -p "$1" && touch "$1/.tipc_prepared"
}

# make_demo DIR N SIZE: synthetic VOC-layout data + its JSON splits in DIR
make_demo() {
    fresh_dir "$1"
    run "$python" -m datasets.make_demo --out "$1" --num_images "$2" --img_size "$3" --seed 0
    run "$python" datasets/prepare_voc.py --data_path "$1/VOCdevkit" --classes "$1/classes.txt" --out_dir "$1"
}

# prepare_real VOCDEVKIT DIR [MAX_TRAIN MAX_TEST]: JSON splits of a VOC 2007 folder (absolute
# image paths, nothing copied), optionally cut to the first MAX_* images of each split
prepare_real() {
    fresh_dir "$2"
    run "$python" datasets/prepare_voc.py --data_path "$1" --out_dir "$2" --absolute
    if [[ $# -ge 4 ]]; then
        run "$python" - "$2" "$3" "$4" <<'PYEOF'
import json, sys
from pathlib import Path
out, n_train, n_test = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for name, n in (("trainval_voc07.json", n_train), ("test_voc07.json", n_test)):
    entries = json.loads((out / name).read_text())
    (out / name).write_text(json.dumps(entries[:n]))
    print(f"kept {min(n, len(entries))} of {len(entries)} images in {out / name}")
PYEOF
    fi
}

# infer_images VOCDEVKIT DEST N link|copy: the first N test images (all with N=0) into DEST
infer_images() {
    local voc=$1/VOC2007 dest=$2 n=$3 how=$4 id count=0 src
    [[ -f $voc/ImageSets/Main/test.txt ]] || die "no $voc/ImageSets/Main/test.txt"
    fresh_dir "$dest"
    while read -r id; do
        id=${id%$'\r'}
        [[ -z $id ]] && continue
        src=$voc/JPEGImages/$id.jpg
        [[ -f $src ]] || continue
        if [[ $how == link ]]; then
            ln -s "$(cd "$(dirname "$src")" && pwd)/$id.jpg" "$dest/$id.jpg"
        else
            cp "$src" "$dest/"
        fi
        count=$((count + 1))
        [[ $n -gt 0 && $count -ge $n ]] && break
    done < "$voc/ImageSets/Main/test.txt"
    [[ $count -gt 0 ]] || die "no test images found under $voc"
    echo "inference images: $count in $dest ($how)"
}

voc_howto() {
    cat >&2 <<EOF
PASCAL VOC 2007 is needed for $MODE: set VOC_ROOT to its VOCdevkit folder (the one holding
VOC2007/JPEGImages, VOC2007/Annotations and VOC2007/ImageSets/Main).
To get it (about 900 MB), e.g. into data/voc:
  mkdir -p data/voc && cd data/voc
  wget http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar
  wget http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar
  tar xf VOCtrainval_06-Nov-2007.tar && tar xf VOCtest_06-Nov-2007.tar   # both unpack into VOCdevkit/
  cd ../..
then run:
  VOC_ROOT=data/voc/VOCdevkit bash test_tipc/prepare.sh $1 $MODE
EOF
}

check_voc() {  # check_voc DIR: a VOCdevkit folder holding VOC2007
    [[ -d $1/VOC2007/JPEGImages && -d $1/VOC2007/Annotations && -d $1/VOC2007/ImageSets/Main ]]
}

[[ -z $train_json || $train_json == null ]] && [[ $MODE != whole_infer ]] && die "$CONFIG line 12 gives no --train_json for $MODE"
[[ -z $infer_dir || $infer_dir == null ]] && die "$CONFIG line 37 gives no --input_file for $MODE"
data_dir=$(dirname "$infer_dir")
[[ $MODE != whole_infer ]] && data_dir=$(dirname "$train_json")
echo "TIPC prepare: $model_name $MODE -> $data_dir"

case $MODE in
lite_train_lite_infer | lite_train_whole_infer)
    kind=${TIPC_DATA:-demo}
    if [[ $MODE == lite_train_lite_infer ]]; then n_demo=${TIPC_DEMO_IMAGES:-20}; size=64; n_infer=4
    else n_demo=${TIPC_DEMO_IMAGES:-40}; size=128; n_infer=0; fi
    case $kind in
    demo)
        make_demo "$data_dir" "$n_demo" "$size"
        infer_images "$data_dir/VOCdevkit" "$infer_dir" "$n_infer" copy
        ;;
    voc_small)
        src=${VOC_ROOT_ABS:-$SHARED_VOC_SMALL}
        if ! check_voc "$src"; then
            echo "error: TIPC_DATA=voc_small needs real VOC 2007 images: none at '$src'" >&2
            echo "(the project's checkout beside ../shared has 33 of them at $SHARED_VOC_SMALL; or set VOC_ROOT to a VOCdevkit folder; or leave TIPC_DATA unset for the synthetic demo data)" >&2
            exit 1
        fi
        prepare_real "$src" "$data_dir" 24 8
        [[ $n_infer -eq 0 ]] && n_infer=8
        infer_images "$src" "$infer_dir" "$n_infer" link
        ;;
    *) die "TIPC_DATA must be demo or voc_small, not '$kind'" ;;
    esac
    ;;
whole_train_whole_infer)
    if [[ -z $VOC_ROOT_ABS ]] || ! check_voc "$VOC_ROOT_ABS"; then
        [[ -n $VOC_ROOT_ABS ]] && echo "error: VOC_ROOT=$VOC_ROOT is not a VOCdevkit folder holding VOC2007/" >&2
        [[ -z $VOC_ROOT_ABS ]] && echo "error: VOC_ROOT is not set" >&2
        voc_howto "$1"
        exit 1
    fi
    prepare_real "$VOC_ROOT_ABS" "$data_dir"
    infer_images "$VOC_ROOT_ABS" "$infer_dir" 100 link
    echo "note: the recipe starts from ImageNet weights (--pretrained imagenet): train.py downloads them"
    echo "      once into ~/.cache/paddle/hapi/weights (or pass a local resnet .pdparams via line 9)"
    ;;
whole_infer)
    weights=${WEIGHTS_OVERRIDE:-$train_model}
    if [[ -z $weights || $weights == null || ! -f $weights ]]; then
        cat >&2 <<EOF
error: whole_infer exports and runs a trained model, and its weights file is missing: '$weights'
Provide one (a .pdparams written by train.py, or a reference CSRA .pth, for the model of
config line 27), either at that path or anywhere with TIPC_WEIGHTS=FILE:
  - train it: VOC_ROOT=... bash test_tipc/prepare.sh $1 whole_train_whole_infer
              bash test_tipc/test_train_inference_python.sh $1 whole_train_whole_infer
              -> test_tipc/output/$model_name/whole_train_whole_infer/norm_train_cpu/best.pdparams (or _gpus_0)
  - or use the reference's published VOC checkpoint (.pth, read directly by export_model.py;
    tools/convert_torch_weights.py turns it into .pdparams)
then re-run this command (with TIPC_WEIGHTS=FILE if it is elsewhere).
EOF
        exit 1
    fi
    echo "weights: $weights"
    if [[ -n $VOC_ROOT_ABS ]] && check_voc "$VOC_ROOT_ABS"; then
        infer_images "$VOC_ROOT_ABS" "$infer_dir" 100 link
    elif check_voc "$SHARED_VOC_SMALL"; then
        infer_images "$SHARED_VOC_SMALL" "$infer_dir" 0 link
    else
        make_demo "$data_dir/demo" 16 256
        infer_images "$data_dir/demo/VOCdevkit" "$infer_dir" 0 copy
    fi
    ;;
esac
echo "TIPC prepare: done; now run: bash test_tipc/test_train_inference_python.sh $1 $MODE"

#!/usr/bin/env bash
# The train -> eval -> export -> inference chain of one TIPC config in one mode.
#
#   bash test_tipc/test_train_inference_python.sh CONFIG MODE [GPU_ID]
#
# MODE: lite_train_lite_infer | lite_train_whole_infer | whole_train_whole_infer | whole_infer
# GPU_ID (optional) replaces the config's gpu_list: -1 (CPU), 0, or 0,1 (two-card launch).
# Run `bash test_tipc/prepare.sh CONFIG MODE` first. Logs: test_tipc/output/<model>/<MODE>/
# ($TIPC_OUTPUT replaces test_tipc/output). Exit status 0 only when every step succeeded.
# Environment: PYTHON (interpreter; default .venv/bin/python when it exists, else the
# config's), TIPC_WEIGHTS (whole_infer: weights file replacing the config's train_model),
# TIPC_DATA_ROOT (replaces the ./test_tipc/data/ prefix of the config's data paths).
set -u

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[[ $# -lt 2 || $# -gt 3 ]] && usage

CALLER_PWD=$PWD
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO_ROOT/test_tipc/common_func.sh"
CONFIG=$(func_abspath "$1")
MODE=$2
GPU_ID=${3:-}
WEIGHTS_OVERRIDE=""
[[ -n ${TIPC_WEIGHTS:-} ]] && WEIGHTS_OVERRIDE=$(func_abspath "$TIPC_WEIGHTS")
OUTPUT_OVERRIDE=""
[[ -n ${TIPC_OUTPUT:-} ]] && OUTPUT_OVERRIDE=$(func_abspath "$TIPC_OUTPUT")
[[ -n ${TIPC_DATA_ROOT:-} ]] && TIPC_DATA_ROOT=$(func_abspath "$TIPC_DATA_ROOT")
cd "$REPO_ROOT" || exit 2
func_start "$CONFIG" "$MODE"

# ---------------------------------------------------------------- config
L() { func_line "$1"; }
model_name=$(func_parser_value "$(L 2)")
python=$(func_python "$(func_parser_value "$(L 3)")")
gpu_list=$(func_parser_value "$(L 4)")
[[ -n $GPU_ID ]] && gpu_list=$GPU_ID
device_key=$(func_parser_key "$(L 5)")
device_values=$(func_parser_value "$(L 5)")
device_cpu=${device_values%%|*}
device_gpu=${device_values#*|}
epoch_key=$(func_parser_key "$(L 6)");       epoch_value=$(func_parser_params "$(L 6)" "$MODE")
save_key=$(func_parser_key "$(L 7)");        output_root=$(func_parser_value "$(L 7)")
batch_key=$(func_parser_key "$(L 8)");       batch_value=$(func_parser_params "$(L 8)" "$MODE")
pretrain_key=$(func_parser_key "$(L 9)");    pretrain_value=$(func_parser_params "$(L 9)" "$MODE")
train_model_name=$(func_parser_value "$(L 10)")
img_key=$(func_parser_key "$(L 11)");        img_value=$(func_parser_params "$(L 11)" "$MODE")
train_json_key=$(func_parser_key "$(L 12)"); train_json=$(func_data_path "$(func_parser_params "$(L 12)" "$MODE")")
test_json_key=$(func_parser_key "$(L 13)");  test_json=$(func_data_path "$(func_parser_params "$(L 13)" "$MODE")")
trainer=$(func_parser_value "$(L 15)")
trainer_line=$(L 16)
eval_cmd=$(func_parser_value "$(L 19)")
export_dir_key=$(func_parser_key "$(L 22)"); export_dir_name=$(func_parser_value "$(L 22)")
[[ -z $export_dir_name || $export_dir_name == null ]] && export_dir_name=inference
weights_key=$(func_parser_key "$(L 23)")
norm_export=$(func_parser_value "$(L 24)")
train_model=$(func_data_path "$(func_parser_value "$(L 26)")")
infer_export=$(func_parser_value "$(L 27)")
inference_py=$(func_parser_value "$(L 29)")
use_gpu_key=$(func_parser_key "$(L 30)");    use_gpu_list=$(func_parser_value "$(L 30)")
mkldnn_key=$(func_parser_key "$(L 31)");     mkldnn_list=$(func_parser_value "$(L 31)")
threads_key=$(func_parser_key "$(L 32)");    threads_list=$(func_parser_value "$(L 32)")
infer_bs_key=$(func_parser_key "$(L 33)");   infer_bs_list=$(func_parser_value "$(L 33)")
trt_key=$(func_parser_key "$(L 34)");        trt_list=$(func_parser_value "$(L 34)")
precision_key=$(func_parser_key "$(L 35)");  precision_list=$(func_parser_value "$(L 35)")
model_dir_key=$(func_parser_key "$(L 36)")
input_key=$(func_parser_key "$(L 37)");      infer_input=$(func_data_path "$(func_parser_params "$(L 37)" "$MODE")")
bench_key=$(func_parser_key "$(L 38)");      bench_value=$(func_parser_value "$(L 38)")

if [[ $(func_parser_key "$trainer_line") != "$trainer" ]]; then
    echo "error: $CONFIG line 16 should be '$trainer:<script> <args>' (line 15 names trainer '$trainer')" >&2
    exit 2
fi
train_cmd=$(func_parser_value "$trainer_line")
[[ -n $OUTPUT_OVERRIDE ]] && output_root=$OUTPUT_OVERRIDE
LOG_PATH=${output_root%/}/$model_name/$MODE
RESULT_LOG=$LOG_PATH/results_python.log
TIPC_FAILURES=0
TIPC_STEPS=0

# ---------------------------------------------------------------- inputs
need_file() {  # need_file PATH WHAT
    if [[ -z $1 || $1 == null || ! -e $1 ]]; then
        echo "error: $2 '${1}' not found (config $CONFIG, mode $MODE); run: bash test_tipc/prepare.sh $CONFIG $MODE" >&2
        exit 2
    fi
}
if [[ $MODE != whole_infer ]]; then
    need_file "$train_json" "training split"
    need_file "$test_json" "evaluation split"
fi
need_file "$infer_input" "inference images"
if [[ $MODE == whole_infer ]]; then
    weights=${WEIGHTS_OVERRIDE:-$train_model}
    if [[ -z $weights || $weights == null || ! -f $weights ]]; then
        echo "error: whole_infer needs a weights file: '$weights' not found (config line 26 'train_model', or TIPC_WEIGHTS); bash test_tipc/prepare.sh $CONFIG whole_infer explains how to get one" >&2
        exit 2
    fi
fi

rm -rf "$LOG_PATH"
mkdir -p "$LOG_PATH" || exit 2
: > "$RESULT_LOG"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

has_cuda=$("$python" -c "import paddle; print(paddle.is_compiled_with_cuda())" 2>/dev/null | tail -n 1)
if [[ $has_cuda != True && $has_cuda != False ]]; then
    echo "error: cannot import paddle with '$python' (set PYTHON to the interpreter that has paddle installed)" >&2
    exit 2
fi
NO_CUDA_REASON="this Paddle is not compiled with CUDA (paddle.is_compiled_with_cuda() is False)"
echo "TIPC $model_name $MODE: python $python, CUDA build: $has_cuda, logs in $LOG_PATH"

# ---------------------------------------------------------------- helpers
# run_step CMD LOG: runs CMD (split on spaces; a leading VAR=value sets the environment)
# with stdout+stderr in LOG; sets STEP_RC and STEP_CMD (the command as logged).
run_step() {
    local cmd=$1 log=$2
    local -a argv
    set -f
    read -r -a argv <<< "$cmd"
    set +f
    STEP_CMD="${argv[*]} > $log 2>&1"
    echo "+ ${argv[*]}" > "$log"
    env "${argv[@]}" < /dev/null >> "$log" 2>&1
    STEP_RC=$?
    TIPC_STEPS=$((TIPC_STEPS + 1))
}

# count_images DIR_OR_FILE: how many images infer.py should predict
count_images() {
    if [[ -d $1 ]]; then
        find -L "$1" -maxdepth 1 -type f ! -name '.*' \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \
            -o -iname '*.bmp' -o -iname '*.gif' -o -iname '*.tif' -o -iname '*.tiff' -o -iname '*.webp' \
            -o -iname '*.ppm' -o -iname '*.pgm' -o -iname '*.pbm' \) | wc -l
    else
        echo 1
    fi
}

# check_infer_log LOG BATCH [MKLDNN THREADS]: the log must hold one prediction line per
# image and, with the benchmark on, the whole benchmark block with the settings used.
# Prints the reason and returns 1 when it does not.
check_infer_log() {
    local log=$1 bs=$2 mkldnn=${3:-} threads=${4:-} want got section
    want=$(count_images "$infer_input")
    got=$(grep -c ' prediction: ' "$log")
    if [[ $got -lt 1 || $got -ne $want ]]; then
        echo "TIPC check failed: $got prediction lines for $want images in $infer_input"
        return 1
    fi
    if [[ ${bench_value,,} == true ]]; then
        for section in "Env info" "Paddle info" "Conf info" "Model info" "Data info" "Perf info" \
            "paddle_version:" "inference_time(ms):" "preprocess_time(ms):" "batch_size: $bs" "data_num: $want"; do
            if ! grep -qF -- "$section" "$log"; then
                echo "TIPC check failed: benchmark block lacks '$section'"
                return 1
            fi
        done
        if [[ -n $mkldnn ]]; then
            for section in "enable_mkldnn: $mkldnn" "cpu_math_library_num_threads: $threads"; do
                if ! grep -qF -- "$section" "$log"; then
                    echo "TIPC check failed: benchmark block lacks '$section'"
                    return 1
                fi
            done
        fi
    fi
    return 0
}

# infer_run CMD LOG BATCH [MKLDNN THREADS]
infer_run() {
    local cmd=$1 log=$2 reason
    run_step "$cmd" "$log"
    if [[ $STEP_RC -eq 0 ]]; then
        reason=$(check_infer_log "$log" "${@:3}")
        if [[ -n $reason ]]; then
            echo "$reason" | tee -a "$log"
            STEP_RC=1
        fi
    fi
    status_check "$STEP_RC" "$STEP_CMD" "$RESULT_LOG" "$model_name" "$log"
}

# func_inference MODEL_DIR LOG_DIR GPU_ENV: the inference grid over an exported model
func_inference() {
    local model_dir=$1 log_dir=$2 gpu_env=$3 use_gpu mkldnn threads bs trt precision log cmd common
    common="$(func_set_params "$model_dir_key" "$model_dir") $(func_set_params "$input_key" "$infer_input") $(func_set_params "$bench_key" "$bench_value")"
    while read -r use_gpu; do
        if [[ ${use_gpu,,} == false ]]; then
            while read -r mkldnn; do
                while read -r threads; do
                    while read -r bs; do
                        log=$log_dir/python_infer_cpu_usemkldnn_${mkldnn}_threads_${threads}_batchsize_${bs}.log
                        cmd="$python $inference_py $(func_set_params "$use_gpu_key" "$use_gpu") $(func_set_params "$mkldnn_key" "$mkldnn") $(func_set_params "$threads_key" "$threads") $(func_set_params "$infer_bs_key" "$bs") $common"
                        infer_run "$cmd" "$log" "$bs" "$mkldnn" "$threads"
                    done < <(func_split_alternatives "$infer_bs_list")
                done < <(func_split_alternatives "$threads_list")
            done < <(func_split_alternatives "$mkldnn_list")
        elif [[ $has_cuda != True ]]; then
            echo "skipped: GPU inference grid ($trt_key $trt_list x $precision_key $precision_list x $infer_bs_key $infer_bs_list): $NO_CUDA_REASON"
        else
            while read -r trt; do
                while read -r precision; do
                    if [[ ${trt,,} == false && $precision == int8 ]]; then
                        continue  # int8 needs TensorRT
                    fi
                    while read -r bs; do
                        log=$log_dir/python_infer_gpu_usetrt_${trt}_precision_${precision}_batchsize_${bs}.log
                        cmd="$gpu_env $python $inference_py $(func_set_params "$use_gpu_key" "$use_gpu") $(func_set_params "$trt_key" "$trt") $(func_set_params "$precision_key" "$precision") $(func_set_params "$infer_bs_key" "$bs") $common"
                        infer_run "$cmd" "$log" "$bs"
                    done < <(func_split_alternatives "$infer_bs_list")
                done < <(func_split_alternatives "$precision_list")
            done < <(func_split_alternatives "$trt_list")
        fi
    done < <(func_split_alternatives "$use_gpu_list")
}

# export_step WEIGHTS EXPORT_CMD EXPORT_DIR LOG: export and check the program files exist
export_step() {
    local weights=$1 script=$2 export_dir=$3 log=$4 cmd
    cmd="$python $script $(func_set_params "$weights_key" "$weights") $(func_set_params "$export_dir_key" "$export_dir")"
    run_step "$cmd" "$log"
    if [[ $STEP_RC -eq 0 && ! -f $export_dir/inference.json && ! -f $export_dir/inference.pdmodel ]]; then
        echo "TIPC check failed: no inference.json / inference.pdmodel in $export_dir" | tee -a "$log"
        STEP_RC=1
    fi
    status_check "$STEP_RC" "$STEP_CMD" "$RESULT_LOG" "$model_name" "$log"
}

# export_then_infer WEIGHTS EXPORT_CMD EXPORT_DIR LOG_DIR GPU_ENV LABEL: export, then the
# inference grid on the exported model (skipped with a line when the export failed)
export_then_infer() {
    export_step "$1" "$2" "$3" "$4/export.log"
    if [[ $STEP_RC -eq 0 ]]; then
        func_inference "$3" "$4" "$5"
    else
        echo "skipped: inference of $6: the export failed"
    fi
}

# ---------------------------------------------------------------- the chain
if [[ $MODE == whole_infer ]]; then
    gpu_env=""
    [[ -n $GPU_ID && $GPU_ID != -1 ]] && gpu_env="CUDA_VISIBLE_DEVICES=${GPU_ID%%,*}"
    export_then_infer "$weights" "$infer_export" "$LOG_PATH/$export_dir_name" "$LOG_PATH" "$gpu_env" "$model_name"
else
    while read -r gpu; do
        [[ -z $gpu ]] && continue
        if [[ $gpu == -1 ]]; then
            tag=cpu; device=$device_cpu; env_prefix=""; launcher=$python; gpu_env=""
        else
            tag=gpus_$gpu
            if [[ $has_cuda != True ]]; then
                echo "skipped: training on GPU $gpu (and its eval/export/inference): $NO_CUDA_REASON"
                continue
            fi
            device=$device_gpu
            gpu_env="CUDA_VISIBLE_DEVICES=${gpu%%,*}"
            if [[ $gpu == *,* ]]; then
                env_prefix=""; launcher="$python -m paddle.distributed.launch --gpus $gpu"
            else
                env_prefix=$gpu_env; launcher=$python
            fi
        fi
        run_dir=$LOG_PATH/${trainer}_$tag
        mkdir -p "$run_dir"

        # train
        cmd="$env_prefix $launcher $train_cmd $(func_set_params "$epoch_key" "$epoch_value") $(func_set_params "$batch_key" "$batch_value") $(func_set_params "$pretrain_key" "$pretrain_value") $(func_set_params "$img_key" "$img_value") $(func_set_params "$train_json_key" "$train_json") $(func_set_params "$test_json_key" "$test_json") $(func_set_params "$save_key" "$run_dir") $(func_set_params "$device_key" "$device")"
        log=$run_dir/train.log
        run_step "$cmd" "$log"
        weights=$run_dir/$train_model_name
        if [[ $STEP_RC -eq 0 && ! -f $weights ]]; then
            echo "TIPC check failed: training wrote no $weights" | tee -a "$log"
            STEP_RC=1
        fi
        status_check "$STEP_RC" "$STEP_CMD" "$RESULT_LOG" "$model_name" "$log"
        if [[ $STEP_RC -ne 0 ]]; then
            echo "skipped: eval, export and inference of ${trainer}_$tag: training failed"
            continue
        fi

        # eval
        cmd="$gpu_env $python $eval_cmd --load_from=$weights $(func_set_params "$test_json_key" "$test_json") $(func_set_params "$device_key" "$device")"
        log=$run_dir/eval.log
        run_step "$cmd" "$log"
        if [[ $STEP_RC -eq 0 ]] && ! grep -q 'mAP' "$log"; then
            echo "TIPC check failed: no mAP line in the evaluation output" | tee -a "$log"
            STEP_RC=1
        fi
        status_check "$STEP_RC" "$STEP_CMD" "$RESULT_LOG" "$model_name" "$log"

        # export, then inference
        export_then_infer "$weights" "$norm_export" "$run_dir/$export_dir_name" "$run_dir" "$gpu_env" "${trainer}_$tag"
    done < <(func_split_alternatives "$gpu_list")
fi

if [[ $TIPC_STEPS -eq 0 ]]; then
    echo "TIPC $model_name $MODE: no step ran (every gpu_list entry was skipped)" >&2
    exit 1
fi
if [[ $TIPC_FAILURES -gt 0 ]]; then
    echo "TIPC $model_name $MODE: $TIPC_FAILURES of $TIPC_STEPS steps FAILED (see $RESULT_LOG)"
    exit 1
fi
echo "TIPC $model_name $MODE: all $TIPC_STEPS steps succeeded (see $RESULT_LOG)"
exit 0

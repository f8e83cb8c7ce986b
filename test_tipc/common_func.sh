#!/usr/bin/env bash
# Helpers shared by prepare.sh and test_train_inference_python.sh (source this file).
#
# A TIPC config is a list of `key:value` lines read by line number (see README.md for the
# layout). In a value, '|' separates alternatives, `MODE=value|MODE=value` makes it depend
# on the run mode, and `null` means "not used".

TIPC_MODES="lite_train_lite_infer lite_train_whole_infer whole_train_whole_infer whole_infer"

# Expected key at each fixed line of the layout (line:key). Checked by func_read_config so
# that a shifted line is reported instead of silently feeding the wrong value to a step.
TIPC_LAYOUT="2:model_name 3:python 4:gpu_list 10:train_model_name 15:trainer 19:eval 24:norm_export 26:train_model 27:infer_export 29:inference"
TIPC_MIN_LINES=38

# func_abspath PATH -> PATH made absolute against $CALLER_PWD (the caller's folder; set it
# before the scripts cd into the repository)
function func_abspath() {
    case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "${CALLER_PWD:-$PWD}/$1" ;; esac
}

# func_start CONFIG MODE: refuse an unknown MODE, read and check CONFIG; exits 2 on error
function func_start() {
    if ! func_is_mode "$2"; then
        echo "error: unknown MODE '$2'; choose one of: $TIPC_MODES" >&2
        exit 2
    fi
    func_read_config "$1" || exit 2
}

# func_parser_key LINE -> the text before the first ':'
function func_parser_key() {
    local line=$1
    printf '%s\n' "${line%%:*}"
}

# func_parser_value LINE -> the text after the first ':' (empty when there is none)
function func_parser_value() {
    local line=$1
    if [[ $line != *:* ]]; then
        printf '\n'
        return
    fi
    printf '%s\n' "${line#*:}"
}

# func_is_mode NAME -> status 0 when NAME is one of the four run modes
function func_is_mode() {
    local m
    for m in $TIPC_MODES; do
        [[ $1 == "$m" ]] && return 0
    done
    return 1
}

# func_parser_params LINE MODE -> the value of LINE for MODE.
#   `--epochs:lite_train_lite_infer=1|whole_train_whole_infer=30` gives 1 in lite mode,
#   30 in whole mode and `null` in a mode it does not list. A value whose alternatives are
#   not all `MODE=...` is returned unchanged (the same for every mode).
function func_parser_params() {
    local value mode=$2 item
    value=$(func_parser_value "$1")
    local -a items
    IFS='|' read -r -a items <<< "$value"
    if [[ ${#items[@]} -eq 0 ]]; then
        printf '%s\n' "$value"
        return
    fi
    for item in "${items[@]}"; do
        if [[ $item != *=* ]] || ! func_is_mode "${item%%=*}"; then
            printf '%s\n' "$value"   # not mode-dependent
            return
        fi
    done
    for item in "${items[@]}"; do
        if [[ ${item%%=*} == "$mode" ]]; then
            printf '%s\n' "${item#*=}"
            return
        fi
    done
    printf 'null\n'
}

# func_set_params KEY VALUE -> `KEY=VALUE`, or a single blank when KEY or VALUE is null/empty
function func_set_params() {
    local key=$1 value=$2
    if [[ -z $key || $key == null || -z $value || $value == null ]]; then
        printf ' \n'
    else
        printf '%s=%s\n' "$key" "$value"
    fi
}

# func_split_alternatives VALUE -> one alternative per line ('|' separated)
function func_split_alternatives() {
    local -a items
    IFS='|' read -r -a items <<< "$1"
    printf '%s\n' "${items[@]}"
}

# func_read_config FILE: fills the global array TIPC_LINES (TIPC_LINES[0] is line 1).
# Rejects (status 1, message on stderr naming the file and line) a missing file, a blank
# line, a file shorter than the layout, or a fixed key found on another line.
function func_read_config() {
    local file=$1 line n=0
    TIPC_LINES=()
    if [[ ! -f $file ]]; then
        echo "error: config file $file not found" >&2
        return 1
    fi
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        line=${line%$'\r'}
        if [[ -z ${line//[[:space:]]/} ]]; then
            echo "error: $file line $n is blank: TIPC configs are read by line number, so blank lines are not allowed (delete it)" >&2
            return 1
        fi
        TIPC_LINES+=("$line")
    done < "$file"
    if [[ $n -lt $TIPC_MIN_LINES ]]; then
        echo "error: $file has $n lines, the layout needs $TIPC_MIN_LINES (see test_tipc/README.md)" >&2
        return 1
    fi
    local entry want got
    for entry in $TIPC_LAYOUT; do
        n=${entry%%:*}
        want=${entry#*:}
        got=$(func_parser_key "${TIPC_LINES[n - 1]}")
        if [[ $got != "$want" ]]; then
            echo "error: $file line $n should hold '$want:...' but holds '${TIPC_LINES[n - 1]}' (a line was added or removed?)" >&2
            return 1
        fi
    done
    return 0
}

# func_line N -> line N (1-based) of the config read by func_read_config
function func_line() {
    printf '%s\n' "${TIPC_LINES[$1 - 1]}"
}

# status_check RC CMD RESULT_LOG [MODEL_NAME] [STEP_LOG]
# Appends `Run successfully|failed with command - MODEL - CMD!` to RESULT_LOG; on failure
# also counts it in TIPC_FAILURES and prints the step log's tail.
function status_check() {
    local rc=$1 cmd=$2 result_log=$3 model=${4:-${model_name:-model}} step_log=${5:-}
    if [[ $rc -eq 0 ]]; then
        echo "Run successfully with command - ${model} - ${cmd}!" | tee -a "$result_log"
    else
        TIPC_FAILURES=$((${TIPC_FAILURES:-0} + 1))
        echo "Run failed with command - ${model} - ${cmd}!" | tee -a "$result_log"
        if [[ -n $step_log && -f $step_log ]]; then
            echo "---- last lines of $step_log ----"
            tail -n 15 "$step_log"
            echo "----"
        fi
    fi
}

# func_data_path VALUE -> VALUE, with a leading ./test_tipc/data/ replaced by
# $TIPC_DATA_ROOT/ when that is set (data elsewhere without editing the config)
function func_data_path() {
    local v=$1
    if [[ -n ${TIPC_DATA_ROOT:-} && $v == ./test_tipc/data/* ]]; then
        v=${TIPC_DATA_ROOT%/}/${v#./test_tipc/data/}
    fi
    printf '%s\n' "$v"
}

# func_python -> the Python interpreter to use: $PYTHON, else the repository's
# .venv/bin/python when it exists, else the config's value (given as $1).
function func_python() {
    if [[ -n ${PYTHON:-} ]]; then
        printf '%s\n' "$PYTHON"
    elif [[ -x .venv/bin/python ]]; then
        printf '%s\n' ".venv/bin/python"
    else
        printf '%s\n' "$1"
    fi
}

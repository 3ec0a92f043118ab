#!/usr/bin/env bash
# Sliding-window accuracy of a fixed-size ONNX Runtime export (README, "Large images"): CamVid-sized images at
# 360x480 through a FIXED 184x240 export (windows 184x240, default stride 122x160) against the PyTorch model's
# whole-image mIoU at 360x480, plus the PyTorch model through the same windows (separates the windows from the engine).
#
#   bash scripts/sliding_window_accuracy.sh MODEL_DIR DATASET [WORK_DIR] [extra msaf-hf evaluate flags...]
#   e.g. bash scripts/sliding_window_accuracy.sh outputs/dsnet-camvid/final data/camvid
#
# DATASET: a CamVid copy as a Hub dataset folder or id (the camvid recipe's layout). Prints a Markdown table.
set -euo pipefail
MODEL=$1; DATASET=$2; WORK=${3:-outputs/sliding-window-accuracy}; shift $(( $# >= 3 ? 3 : 2 ))
MSAF_HF=${MSAF_HF:-msaf-hf}
mkdir -p "$WORK"
COMMON=(--config camvid --dataset_name "$DATASET" --eval_size 360 480 --num_workers 0)
echo "== $(date -u +%FT%TZ) export $MODEL -> $WORK/onnx-184x240 (ONNX Runtime, fp32, fixed 184x240)"
$MSAF_HF export "$MODEL" "$WORK/onnx-184x240" --engine onnxruntime --precision fp32 --height 184 --width 240 \
    > "$WORK/export.log" 2>&1 || { tail -20 "$WORK/export.log"; exit 1; }
run() {  # name, model, extra flags
    local name=$1 model=$2; shift 2
    echo "== $(date -u +%FT%TZ) $name"
    $MSAF_HF evaluate --model_name_or_path "$model" "${COMMON[@]}" --output_file "$WORK/$name.json" "$@" \
        > "$WORK/$name.log" 2>&1 || { tail -20 "$WORK/$name.log"; exit 1; }
}
run torch-whole-360x480 "$MODEL" "$@"
run onnx-sliding-184x240 "$WORK/onnx-184x240" --sliding_window 184 240 "$@"
run torch-sliding-184x240 "$MODEL" --sliding_window 184 240 "$@"
python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
runs = {name: json.loads((work / f"{name}.json").read_text())
        for name in ("torch-whole-360x480", "onnx-sliding-184x240", "torch-sliding-184x240")}
whole = 100 * runs["torch-whole-360x480"]["mean_iou"]
print("\n| run | mIoU % | vs torch whole image | images |\n|---|---|---|---|")
for name, payload in runs.items():
    miou = 100 * payload["mean_iou"]
    print(f"| {name} | {miou:.2f} | {miou - whole:+.2f} | {payload['num_images']} |")
gap = abs(100 * runs["onnx-sliding-184x240"]["mean_iou"] - whole)
print(f"\nONNX 184x240 through windows vs torch whole image at 360x480: {gap:.2f} points")
PY

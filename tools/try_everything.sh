#!/usr/bin/env bash
# Every tool once, on the demo's own model and videos: no MSR-VTT, no CLIP weights, no GPU.
#
#   tools/try_everything.sh [WORK_DIR]        # what `make try` runs (work_dirs/try)
#
# Trains TempMe with `tools/demo.py --quick` (a small synthetic benchmark, 3 epochs), then
# tests it with --dump, draws its merges, indexes the test videos and queries them (text and
# a contact sheet), exports it to ONNX (float32 and int8), evaluates both exports and serves
# the index over HTTP for one request. DEMO_ARGS replaces the demo's --quick (the test runs
# a smaller benchmark); PORT sets the service's port (default 8765). Runs from any
# directory; each step prints its start time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${1:-work_dirs/try}
DATA=$WORK/data
CONFIG=configs/tempme_synthetic.py
PORT=${PORT:-8765}
read -r -a DEMO <<< "${DEMO_ARGS:---quick}"
step() { echo; echo "=== [${SECONDS} s] $*"; }

step "1/9 train TempMe on a synthetic benchmark (tools/demo.py ${DEMO[*]})"
$PY tools/demo.py "${DEMO[@]}" --methods tempme --data "$DATA" --work-dir "$WORK/demo"
CKPT=$(cat "$WORK/demo/tempme/last_checkpoint")
ON_DATA="test_dataloader.dataset.data_root=$DATA"

step "2/9 test the checkpoint, saving the similarity matrix (tools/test.py --dump)"
$PY tools/test.py $CONFIG "$CKPT" --work-dir "$WORK/test" --dump "$WORK/test/sim.pt" \
    --out "$WORK/test/metrics.json" --cfg-options "$ON_DATA"

step "3/9 draw what TempMe merges in one test video"
$PY tools/analysis/visualize_merging.py $CONFIG "$DATA/videos/test_00000.mp4" \
    --checkpoint "$CKPT" --out "$WORK/merge.png"

step "4/9 index the test videos"
mkdir -p "$WORK/videos"
cp "$DATA"/videos/test_*.mp4 "$WORK/videos/"
$PY tools/search.py index "$WORK/videos" --config $CONFIG --checkpoint "$CKPT" \
    --index "$WORK/index" --workers 0 --no-progress

step "5/9 query the index by text, then as a contact sheet"
$PY tools/search.py query "$WORK/index" "a red circle appears" --top-k 5
$PY tools/search.py query "$WORK/index" "a red circle appears" --top-k 3 --sheet "$WORK/hits.png"

step "6/9 export to ONNX, float32 and int8, each checked against PyTorch"
$PY tools/deployment/export_onnx.py $CONFIG --checkpoint "$CKPT" --out "$WORK/onnx"
$PY tools/deployment/export_onnx.py $CONFIG --checkpoint "$CKPT" --out "$WORK/onnx_int8" --int8 \
    --from "$WORK/onnx"

step "7/9 evaluate both exports on the test split"
$PY tools/deployment/test_onnx.py $CONFIG "$WORK/onnx" "$WORK/onnx_int8" \
    --out "$WORK/onnx_metrics.json" --cfg-options "$ON_DATA"

step "8/9 serve the index over HTTP (port $PORT) and ask it once"
$PY tools/deployment/serve_search.py "$WORK/index" --export "$WORK/onnx" --port "$PORT" \
    > "$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
    kill -0 $SERVER 2> /dev/null || { cat "$WORK/serve.log"; exit 1; }
    sleep 1
done
curl -sf "http://127.0.0.1:$PORT/search?q=a+red+circle+appears&k=3"
echo
kill $SERVER

step "9/9 done in ${SECONDS} s: outputs in $WORK"
ls "$WORK"

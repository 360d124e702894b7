#!/usr/bin/env bash
# The GPU checks of issue 14 (item 5), one prepared run on a machine with an NVIDIA GPU:
#   bash scripts/gpu_check.sh [OUT_DIR]        (default: $OUT, else gpu_out/)
# Uses the machine's own python3 + CUDA torch (nothing is downloaded). Packages it lacks travel as
# wheels in .whl/ (Python 3.12 manylinux), prepared on a machine with PyPI:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     rosbags apsw backports.zstd lz4 ruamel.yaml ruamel.yaml.clib
# Steps, each logged to OUT_DIR (a failed step does not stop the others; the exit code counts them):
#   1. environment (nvidia-smi, torch, onnxruntime providers)
#   2. exactness on CUDA: test/test_cuda.py (fp32/bf16/fp16, every query execution) + the CPU suite's
#      model tests, on this machine
#   3. spd-bench --device cuda: convnextv2_tiny at 416x544 and 480x640, fp32 and bf16
#      (encode ms, K=1/64/128 query ms, dense decode ms, the planner's choice)
#   4. onnxruntime CUDA / TensorRT execution providers, when installed (spd-bench --backend both)
#   5. a short spd-train on synthetic scenes with AMP (bf16, then fp16 with the grad scaler)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_out}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
failed=0
step() {  # step NAME COMMAND...: run, log to OUT_DIR/NAME.log, count a failure
    local name=$1; shift
    echo "== $name: $*"
    if "$@" >"$OUT_DIR/$name.log" 2>&1; then echo "   ok"; else echo "   FAILED (see $name.log)"; failed=$((failed + 1)); fi
    tail -n 40 "$OUT_DIR/$name.log"
}
step env bash -c "nvidia-smi; $PY -c 'import torch, timm; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), timm.__version__)'; $PY -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())' || true"
step exact_cuda $PY -m pytest -q -p no:cacheprovider test/test_cuda.py test/test_model_exact.py test/test_query_plan.py test/test_predictor.py
for size in 416x544 480x640; do
    for prec in fp32 bf16; do
        step "bench_${size}_${prec}" $PY -m spd_core.bench.cli --device cuda --precision "$prec" \
            --encoder convnextv2_tiny --size "$size" --ks 1,64,128 --resolutions none --macs-sizes "$size" \
            --repeats 20 --warmup 5 --out "$OUT_DIR/bench_${size}_${prec}"
    done
done
if $PY -c 'import onnxruntime as o, sys; sys.exit(not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(o.get_available_providers()))' 2>/dev/null; then
    step bench_onnxruntime $PY -m spd_core.bench.cli --device cuda --encoder convnextv2_tiny --size 480x640 \
        --ks 1,64,128 --resolutions none --macs-sizes 480x640 --backend both
else
    echo "== onnxruntime: no CUDA/TensorRT execution provider installed here, skipped" | tee "$OUT_DIR/bench_onnxruntime.log"
fi
for amp in bf16 fp16; do
    step "train_$amp" $PY -m spd_core.train.cli --config config/train_synthetic.yaml --overwrite \
        "train.amp=$amp" train.device=cuda train.epochs=1 train.max_steps=30 train.progress=false \
        train.tensorboard=false "train.output_dir=$OUT_DIR/train_$amp"
done
echo "$failed step(s) failed; logs in $OUT_DIR"
exit "$failed"

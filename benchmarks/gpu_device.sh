#!/bin/sh
# The GPU checks (benchmarks/gpu_trt.py: the plan's FP16 numerics in PyTorch CUDA, the trained segmenters and the trained
# promptable encoder, plain vs plan, one table at the end; the `gpu`/`tensorrt` tests) on a lent GPU machine that cannot reach a package index (see README,
# "GPU checks"). Run from the repository root after `make gpu-carry` here; the machine needs
# python3 with CUDA PyTorch, onnx, onnxruntime, scikit-image, scikit-learn, typer and rich.
#   .gpu-carry/wheels   what the machine lacks (onnxslim), installed without an index
#   .gpu-carry/trained  the trained segmenters, so the machine does not retrain them
# Results: $OUT/gpu_trt.json (or ./gpu_trt.json) and the `gpu`-marked tests' output.
set -eu
out="${OUT:-.}"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/evit-site .gpu-carry/wheels/*.whl
export PYTHONPATH="/tmp/evit-site:$PWD" EVITDEPLOY_CACHE="$PWD/.gpu-carry" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 benchmarks/gpu_trt.py --save "$out/gpu_trt.json" "$@"
python3 -m pytest -q -rs -p no:cacheprovider -m "gpu or tensorrt" tests/test_torch_plan.py tests/test_tensorrt.py

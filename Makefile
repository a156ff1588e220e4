# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install the
# package with the torch pin from constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EVIT := $(VENV)/bin/evitdeploy
DEMO := demo-out

.PHONY: install qemu demo lint references test test-fast test-slow bench-int8-kernels bench bench-gate bench-precision bench-deploy bench-tflite bench-executorch bench-coreml bench-openvino bench-sam bench-sam-precision bench-fp16-autocast bench-farm bench-eval bench-gpu bench-tiny gpu-carry clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(shell $(PYTHON) tools/extras.py),test]'
	# model-signing (through sigstore-models) needs typing-extensions>=4.14.1, which litert-converter's xdsl
	# declares it cannot take (<4.13); one resolve refuses the pair. A second step installs the signing extra
	# and its newer typing-extensions (pip warns about xdsl; the TFLite conversion tests pass with it).
	$(PY) -m pip install --quiet -c constraints.txt -e '.[signing]'
	# TensorRT's API listing for the name-check test; --no-deps: it would pull TensorRT itself
	$(PY) -m pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $@

install: $(VENV)/.installed

demo: install
	$(EVIT) deploy --profile intel-cpu --model efficientvit_b0 --precision fp32 -o $(DEMO)/b0-intel-cpu-fp32 --force --save $(DEMO)/deploy-fp32.json
	# --precision auto: every candidate of the profile (ONNX Runtime fp32/int8, OpenVINO fp32/bf16/int8) exported,
	# checked and timed here; the fastest that passes the profile's tolerances is deployed, and a table says why
	# each other one lost. The measurements stay in $(DEMO)/b0-intel-cpu-auto-candidates/.
	$(EVIT) deploy --profile intel-cpu --model efficientvit_b0 --precision auto -o $(DEMO)/b0-intel-cpu-auto --force --save $(DEMO)/deploy-auto.json
	cd $(DEMO)/b0-intel-cpu-auto && ../../$(PY) -I verify.py   # what the device runs: numpy + the chosen runtime only
	$(EVIT) report $(DEMO)/b0-intel-cpu-fp32/check.json $(DEMO)/b0-intel-cpu-fp32/bench.json $(DEMO)/b0-intel-cpu-auto/check.json $(DEMO)/b0-intel-cpu-auto/bench.json -o $(DEMO)/report.html
	# The chosen one against OpenVINO FP32, timed in turns on this host; --allow-mismatch: the two may differ in
	# backend and precision on purpose. The gate passes when the choice is not slower beyond noise.
	$(EVIT) gate --interleave $(DEMO)/b0-intel-cpu-fp32 $(DEMO)/b0-intel-cpu-auto --allow-mismatch --threads 2 --count 100 --markdown $(DEMO)/gate.md

# Every tier CI checks (fast, default and slow), on 2 workers: a module's tests share a worker (its module
# fixtures are built once) and the Ray tests share one (one cluster at a time); see tests/conftest.py.
# ruff's linter and formatter (configured in pyproject.toml); `ruff format .` fixes what the second line finds.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The trained references the tests judge numerics on (cached under ~/.cache/evitdeploy; a few seconds
# when cached): on a clean machine, trained one after the other with the machine to themselves
# (each uses 2 threads) before the tests start. Trained beside test workers, or two at once, each
# ran many times slower here (oversubscribed threads), and a worker waited on the other's lock.
references: install
	$(PY) -c "from evitdeploy.models import trained, trained_sam; trained.digits_checkpoint(); trained.mosaic_checkpoint(); trained_sam.promptable_checkpoint()"

test: install references
	$(PY) -m pytest -n 2 --dist loadgroup -m "not bench"

# The fast tier: no export above 64 px, no subprocess, no training, no Ray; under a minute.
test-fast: install
	$(PY) -m pytest -m fast

# QEMU user mode (Debian's qemu-user): the INT8 tests and make bench-int8-kernels also run the AVX2-only x86 kernels
qemu:
	command -v qemu-x86_64 >/dev/null || (apt-get update -qq && apt-get install -y -qq qemu-user)

test-slow: install
	$(PY) -m pytest -m slow -n 2 --dist loadgroup

bench: install
	$(PY) benchmarks/onnx_cpu.py

bench-gate: install
	$(PY) benchmarks/gate_noise.py

bench-precision: install
	$(PY) benchmarks/precision_cpu.py

bench-deploy: install
	$(PY) benchmarks/deploy_cpu.py

bench-openvino: install
	$(PY) benchmarks/openvino_cpu.py

bench-int8-kernels: install
	$(PY) benchmarks/int8_kernels.py

bench-sam: install
	$(PY) benchmarks/sam_cpu.py

# What FP16 and INT8 (planned, plain, NNCF's default) do to the trained SAM-tiny's masks on ONNX Runtime and OpenVINO.
bench-sam-precision: install
	$(PY) benchmarks/sam_precision.py

# Our FP16 plan vs NVIDIA ModelOpt's AutoCast vs plain FP16 on ONNX Runtime CPU. ModelOpt's [onnx] extra would downgrade
# onnx and replace onnxruntime with onnxruntime-gpu, so it lives in its own venv, pinned to this one's onnx/onnxruntime/numpy/torch.
MODELOPT := .modelopt-venv
$(MODELOPT)/.installed: $(VENV)/.installed
	test -x $(MODELOPT)/bin/python || $(PYTHON) -m venv $(MODELOPT)
	$(MODELOPT)/bin/pip install --quiet -c constraints.txt torch==2.13.0 nvidia-modelopt==0.47.0 onnx-graphsurgeon polygraphy onnxscript lief onnxslim ml_dtypes \
	    $$($(PY) -c 'from importlib.metadata import version as v; print(*(f"{p}=={v(p)}" for p in ("onnx", "onnxruntime", "numpy")))')
	touch $@

bench-fp16-autocast: install $(MODELOPT)/.installed
	$(PY) benchmarks/fp16_autocast.py --modelopt-python $(MODELOPT)/bin/python --seg-b1

# The same grid swept with --executor local and on a 2-node Ray cluster on 127.0.0.1; bench latency alone vs under the farm.
bench-farm: install
	$(PY) benchmarks/farm_cpu.py

bench-tflite: install
	$(PY) benchmarks/tflite_cpu.py

bench-executorch: install
	$(PY) benchmarks/executorch_cpu.py

bench-coreml: install
	$(PY) benchmarks/coreml_cpu.py

# The GPU checks (FP16 numerics of the plan on CUDA, PyTorch latency, TensorRT engines where
# TensorRT imports) on a host with an NVIDIA GPU and this venv; `gpu-carry` packs what a GPU machine
# without a package index needs (then `sh benchmarks/gpu_device.sh` there; see README).
bench-gpu: install
	$(PY) benchmarks/gpu_trt.py

# Every benchmark in its tiny mode (`--tiny`: every code path in seconds, figures meaningless), the slow ones too.
bench-eval: install
	$(PY) benchmarks/eval_cpu.py

bench-tiny: install
	$(PY) -m pytest -q -m "bench or not bench" tests/test_benchmarks.py -n 2 --dist loadgroup

gpu-carry: install
	rm -rf .gpu-carry && mkdir -p .gpu-carry/wheels .gpu-carry/trained
	$(PY) -m pip download --quiet --no-deps -d .gpu-carry/wheels onnxslim==$$($(PY) -c 'import onnxslim; print(onnxslim.__version__)')
	$(PY) -c 'import shutil; from evitdeploy.models import trained; [shutil.copy(trained.mosaic_checkpoint(family=f), ".gpu-carry/trained/") for f in ("b0", "b1")]'
	$(PY) -c 'import shutil; from evitdeploy.models import trained_sam; shutil.copy(trained_sam.promptable_checkpoint(), ".gpu-carry/trained/")'
	du -sh .gpu-carry

clean:
	rm -rf $(DEMO) .pytest_cache

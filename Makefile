# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install the
# package with the torch pin from constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EVIT := $(VENV)/bin/evitdeploy
DEMO := demo-out

.PHONY: install demo test test-slow bench bench-gate bench-precision bench-deploy bench-tflite bench-coreml clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,tflite,coreml]'
	# TensorRT's API listing for the name-check test; --no-deps: it would pull TensorRT itself
	$(PY) -m pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $@

install: $(VENV)/.installed

demo: install
	$(EVIT) deploy --profile x86-cpu --model efficientvit_b0 -o $(DEMO)/b0-x86-cpu-fp32 --force --save $(DEMO)/deploy-fp32.json
	$(EVIT) deploy --profile x86-cpu --model efficientvit_b0 --precision int8 -o $(DEMO)/b0-x86-cpu-int8 --force --save $(DEMO)/deploy-int8.json
	cd $(DEMO)/b0-x86-cpu-int8 && ../../$(PY) -I verify.py   # what the device runs: numpy + onnxruntime only
	$(EVIT) report $(DEMO)/b0-x86-cpu-fp32/check.json $(DEMO)/b0-x86-cpu-fp32/bench.json $(DEMO)/b0-x86-cpu-int8/check.json $(DEMO)/b0-x86-cpu-int8/bench.json -o $(DEMO)/report.html
	$(EVIT) gate --interleave $(DEMO)/b0-x86-cpu-fp32 $(DEMO)/b0-x86-cpu-fp32 --threads 2 --count 100 --markdown $(DEMO)/gate.md

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

bench: install
	$(PY) benchmarks/onnx_cpu.py

bench-gate: install
	$(PY) benchmarks/gate_noise.py

bench-precision: install
	$(PY) benchmarks/precision_cpu.py

bench-deploy: install
	$(PY) benchmarks/deploy_cpu.py

bench-tflite: install
	$(PY) benchmarks/tflite_cpu.py

bench-coreml: install
	$(PY) benchmarks/coreml_cpu.py

clean:
	rm -rf $(DEMO) .pytest_cache

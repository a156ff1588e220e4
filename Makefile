# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install the
# package with the torch pin from constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EVIT := $(VENV)/bin/evitdeploy
DEMO := demo-out

.PHONY: install demo test test-slow bench bench-gate bench-precision clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(EVIT) export --model efficientvit_b0 --output $(DEMO)/efficientvit_b0-onnx-fp32 --force
	$(EVIT) check $(DEMO)/efficientvit_b0-onnx-fp32 --save $(DEMO)/check.json
	$(EVIT) bench $(DEMO)/efficientvit_b0-onnx-fp32 --threads 2 --against-torch --save $(DEMO)/bench.json
	$(EVIT) report $(DEMO)/check.json $(DEMO)/bench.json -o $(DEMO)/report.html
	$(EVIT) gate --interleave $(DEMO)/efficientvit_b0-onnx-fp32 $(DEMO)/efficientvit_b0-onnx-fp32 --threads 2 --count 100 --markdown $(DEMO)/gate.md

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

clean:
	rm -rf $(DEMO) .pytest_cache

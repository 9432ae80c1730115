# The two entry points: `make demo` and `make test`. Both build .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0
# nnU-Net's own packages, without their declared dependencies (dynamic-network-architectures declares timm, which
# pulls torchvision and a CUDA torch); what their imports need is the `nnunet` extra of pyproject.toml.
NNUNET_NODEPS := nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 acvl-utils==0.2.6 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6
DEMO_DIR ?= demo_run

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Without a GPU, install the CPU build of torch first so nothing pulls a CUDA build.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q $(TORCH_CPU); fi
	$(PY) -m pip install -q -e ".[test,nnunet]"
	$(PY) -m pip install -q --no-deps $(NNUNET_NODEPS)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medssl demo --out $(DEMO_DIR)

test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache

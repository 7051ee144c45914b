# Two entry points (README):  make demo   |   make test
SHELL := /bin/bash
PY    := .venv/bin/python
PIP   := .venv/bin/pip
STAMP := .venv/.installed

.PHONY: setup system-deps demo test bench clean

system-deps:
	@if ! ldconfig -p | grep -q libusb-1.0 || ! ldconfig -p | grep -q 'libGL.so.1' || ! command -v xvfb-run >/dev/null; then \
	  echo "[setup] installing Debian packages open3d needs (libusb-1.0-0 libgl1 libegl1 libgomp1 xvfb)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 libgl1 libegl1 libgomp1 xvfb xauth >/dev/null; \
	fi

$(STAMP): requirements.txt setup.py
	@test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --disable-pip-version-check -r requirements.txt
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: system-deps $(STAMP)

# Main job: synthetic AnoVox -> train (CPU-sized) -> evaluate held-out scenarios -> heatmap pictures.
demo: setup
	$(PY) tools/run_demo.py

test: setup
	NUMBA_ENABLE_CUDASIM=1 xvfb-run -a $(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/bench_voxelize.py
	$(PY) benchmarks/bench_eval.py

clean:
	rm -rf output build *.egg-info

# Two commands for a fresh clone: `make demo` and `make test`. Each creates .venv from requirements
# (torch, torchvision, ...) on first use and installs this project into it in editable mode.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
# A local ImageNet MobileNetV2 weights file (torchvision's mobilenet_v2-b0353104.pth) for offline machines.
DEMO_WEIGHTS ?=

.PHONY: install test demo clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) scripts/demo.py --output-dir $(DEMO_DIR) $(if $(DEMO_WEIGHTS),--pretrained-path $(DEMO_WEIGHTS))

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

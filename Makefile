# spd_ros — two commands do everything on a fresh machine:
#   make demo   set up, then run the main job end to end
#   make test   set up, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# Every process that starts ROS stays on this machine and on its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 57
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test demo lint bench clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[ros,dev,onnx]' \
		> $(VENV)/pip-install.log 2>&1 || { tail -30 $(VENV)/pip-install.log; exit 1; }
	$(PY) -c "import torch, timm, rosbags, rclpy, spd_core" 
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m spd_core._layering

bench: $(STAMP)
	$(VENV)/bin/spd-bench

# Synthetic RGB-D bag -> short CPU training -> spd_node -> live replay with keypoint queries -> report.
demo: $(STAMP)
	rm -rf outputs/demo
	$(VENV)/bin/spd-demo --out outputs/demo

clean:
	rm -rf build install log outputs .pytest_cache

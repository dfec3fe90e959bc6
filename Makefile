# The two commands of the README. Both create .venv and install everything on first use.
#   make demo   synthetic BraTS data -> every pipeline stage that exists, end to end
#   make test   the pytest suite (what .ci/run runs)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmrobust-installed
DEMO_DIR ?= demo_data
DEMO_CASES ?= 20
DEMO_SHAPE ?= 96,96,96

.PHONY: install demo test clean

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch 2.13.0 lies on this machine's disk; never let pip pull a CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# The demo keeps all its data under $(DEMO_DIR); the variables point mmrobust there. Training is
# sized for a CPU: the GPU plan that plan_and_preprocess prints is replaced by a smaller one, and
# Adam (lr 3e-3) replaces nnU-Net's SGD: within the demo's 60-180 iterations SGD with momentum 0.99
# learns the whole tumour only (TC/ET Dice 0.1/0 against 0.5 with Adam; benchmarks/RESULTS.md).
# GMD's cost on a CPU is kept down with its cheapest scope in 3D (output layers) and 5 sampled
# subsets per step in 2D (exact scope); benchmarks/bench_strategies.py measures every variant.
DEMO_TRAIN := --optimizer adam --lr 3e-3 --num-workers 1
demo: export MMROBUST_RAW := $(abspath $(DEMO_DIR))/raw
demo: export MMROBUST_PREPROCESSED := $(abspath $(DEMO_DIR))/preprocessed
demo: export MMROBUST_RESULTS := $(abspath $(DEMO_DIR))/results
demo: $(STAMP)
	$(BIN)/mmrobust make-synthetic -o $(DEMO_DIR)/raw/BraTS2018 --layout brats2018 \
		--cases $(DEMO_CASES) --shape $(DEMO_SHAPE) --seed 0 --preview $(DEMO_DIR)/BraTS2018_first_case.png
	$(BIN)/mmrobust verify -d BraTS2018
	$(BIN)/mmrobust plan_and_preprocess -d BraTS2018 -np 2
	$(BIN)/mmrobust plan -d BraTS2018 -c 3d_fullres --patch-size 48,48,48 --batch-size 2 --base-features 8
	$(BIN)/mmrobust plan -d BraTS2018 -c 2d --patch-size 80,80 --batch-size 8 --base-features 8
	rm -rf $(DEMO_DIR)/results $(DEMO_DIR)/predictions
	$(BIN)/mmrobust train -d BraTS2018 -c 3d_fullres -f 0 --epochs 3 --iters-per-epoch 20 $(DEMO_TRAIN) \
		--strategy gmd+cggm --gmd-scope output
	$(BIN)/mmrobust train -d BraTS2018 -c 2d -f 0 --epochs 6 --iters-per-epoch 30 $(DEMO_TRAIN) \
		--strategy gmd+cggm --subsets k=5
	$(BIN)/mmrobust plot-gradients $(DEMO_DIR)/results/BraTS2018/2d__gmd+cggm/fold_0
	$(BIN)/mmrobust predict -i $(DEMO_DIR)/raw/BraTS2018 -o $(DEMO_DIR)/predictions/full -d BraTS2018 -c 2d --png
	$(BIN)/mmrobust predict -i $(DEMO_DIR)/raw/BraTS2018 -o $(DEMO_DIR)/predictions/t1_flair -d BraTS2018 -c 2d \
		--modalities t1,flair
	# The 15-subset robustness report of the 2D model on the validation cases of fold 0 (ends the demo
	# with its Dice tables; HD95, conventions and robustness.png are in the printed folder).
	$(BIN)/mmrobust evaluate -d BraTS2018 -c 2d

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(DEMO_DIR) build dist *.egg-info

# The two commands of the README. Both create .venv and install everything on first use.
#   make demo   synthetic BraTS data -> every pipeline stage that exists, end to end; then the
#               sentiment pipeline on synthetic CMU-MOSI
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
# Adam (lr 3e-3) replaces nnU-Net's SGD, which learns only the whole tumour within a few hundred
# iterations (benchmarks/RESULTS.md). Both runs use mmrobust train's defaults (DS network, learned
# weighted fusion, plain strategy over all 15 subsets: the robustness study's choice, README
# "Results"); the 3D run is a smoke test of the 3D path, the 2D run the model the rest uses.
# --diagnostics 30 logs the subset gradients once per epoch, for plot-gradients.
DEMO_TRAIN := --optimizer adam --lr 3e-3 --num-workers 1
SENTIMENT_DATA := $(DEMO_DIR)/sentiment/mosi/aligned_50.pkl
SENTIMENT_RUNS := $(DEMO_DIR)/results/sentiment
SENTIMENT_TRAIN := --epochs 3 --device cpu
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
	$(BIN)/mmrobust train -d BraTS2018 -c 3d_fullres -f 0 --epochs 2 --iters-per-epoch 10 $(DEMO_TRAIN)
	$(BIN)/mmrobust train -d BraTS2018 -c 2d -f 0 --epochs 10 --iters-per-epoch 30 $(DEMO_TRAIN) --diagnostics 30
	$(BIN)/mmrobust plot-gradients $(DEMO_DIR)/results/BraTS2018/2d__plain__weightedfusion/fold_0
	$(BIN)/mmrobust predict -i $(DEMO_DIR)/raw/BraTS2018 -o $(DEMO_DIR)/predictions/full -d BraTS2018 -c 2d --png
	$(BIN)/mmrobust predict -i $(DEMO_DIR)/raw/BraTS2018 -o $(DEMO_DIR)/predictions/t1_flair -d BraTS2018 -c 2d \
		--modalities t1,flair
	# The 15-subset robustness report of the 2D model on the validation cases of fold 0 (ends the demo
	# with its Dice tables; HD95, conventions and robustness.png are in the printed folder).
	$(BIN)/mmrobust evaluate -d BraTS2018 -c 2d
	# Sentiment (docs/design.md §10): synthetic CMU-MOSI in MMSA's format at the real split sizes
	# (1284/229/686), graded signal (audio and vision each know a part of the label; verify prints the
	# ideal ceilings); the DS model (plain, weighted fusion) and a dedicated audio model (the "U.
	# base." its audio column is compared with), each scored on the 686 test samples under its
	# subsets. About 70 seconds on two cores.
	$(BIN)/mmrobust sentiment make-synthetic -o $(SENTIMENT_DATA) --format mmsa --dataset mosi \
		--samples 1284,229,686 --seed 0 --overwrite
	$(BIN)/mmrobust sentiment verify --data $(SENTIMENT_DATA)
	$(BIN)/mmrobust sentiment train --data $(SENTIMENT_DATA) --strategy plain $(SENTIMENT_TRAIN)
	$(BIN)/mmrobust sentiment train --data $(SENTIMENT_DATA) --modalities a $(SENTIMENT_TRAIN)
	$(BIN)/mmrobust sentiment evaluate --data $(SENTIMENT_DATA) -m $(SENTIMENT_RUNS)/aligned_50__ds__plain__weightedfusion/seed_0
	$(BIN)/mmrobust sentiment evaluate --data $(SENTIMENT_DATA) \
		-m $(SENTIMENT_RUNS)/aligned_50__ds__plain__weightedfusion__only-a/seed_0
	@echo "The demo is a smoke test of every stage on CPU-sized runs; what the methods reach is in the robustness study and the sentiment study (README, Results)."

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(DEMO_DIR) build dist *.egg-info

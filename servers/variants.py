"""What the benchmarks serve: each variant is a frozen ServerSpec, found by name in an explicit map.

A spec says how to start a server (module + command-line options + environment); fixtures/server.py
starts it. Options are kept as (flag, value) pairs so the benchmark JSON records them verbatim.
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

INDUCTOR_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "inductor"
COMPILE_STARTUP_S = 900.0  # a cold torch.compile on the 2-core CPU took 94-153 s, plus warm-up and direct runs


@dataclass(frozen=True)
class ServerSpec:
    name: str
    module: str
    options: tuple = ()  # (("model", "resnet18"), ("flag", True)) -> --model resnet18 --flag
    env: tuple = ()  # (("VAR", "value"), ...) added to the server's environment
    startup_timeout_s: float = 180.0
    needs_gpu: bool = False
    min_compute_capability: Optional[tuple] = None  # e.g. (8, 9) for float8; checked before starting

    def argv(self, port: int) -> list:
        args = ["-m", self.module, "--port", str(port)]
        for flag, value in self.options:
            args += [f"--{flag}"] if value is True else [f"--{flag}", str(value)]
        return args

    def option(self, flag: str, default: Optional[str] = None) -> Optional[str]:
        return dict(self.options).get(flag, default)

    def capability_skip_reason(self, cuda_available: bool, capability: Optional[tuple]) -> Optional[str]:
        """Why this spec cannot run on this GPU (its compute capability is below the spec's minimum), or
        None. A spec without a minimum, or a machine without CUDA (the gpu marker decides there), runs."""
        if not self.min_compute_capability or not cuda_available:
            return None
        if tuple(capability) < tuple(self.min_compute_capability):
            return f"{self.name} needs compute capability >= {tuple(self.min_compute_capability)}, this GPU has {tuple(capability)}"
        return None

    def describe(self) -> dict:
        return {"name": self.name, "module": self.module, **{k: str(v) for k, v in self.options}}


@dataclass(frozen=True)
class ClassifierTier:
    """One device class's classifier workload: a model small enough that a CPU benchmark finishes
    in seconds, the seeds' sizes (resnet50 at 224) on a GPU."""

    device: str
    model: str
    input_size: int
    threads: int  # torch threads per inference worker
    concurrency: tuple  # closed-loop concurrency levels measured per variant
    requests_per_round: int  # at least; see round_requests
    rounds: int  # the figure is taken over this many consecutive rounds that agree ...
    max_round_cv: float  # ... within this coefficient of variation ...
    max_rounds: int  # ... found within this many rounds, or the run is invalid (fixtures/rounds.py)
    batched_max_batch_size: int
    batched_timeout_s: float
    batched_workers: int
    decode_threads: int  # parallel_decode's thread pool
    timeouts_ms: tuple  # timeout_<ms> steps
    max_batch_sizes: tuple  # maxbatch_<n> steps
    dropped_steps: tuple  # steps past the seeds measured on this tier and not faster there (README says so)
    model_presets: tuple  # keys of CLASSIFIER_MODEL_PRESETS, each served with batch_workers' options
    waves_per_round: int = 6  # a round sends at least this many requests per concurrent client

    def round_requests(self, concurrency: int) -> int:
        """Requests per measured round: at high concurrency a fixed count would be a few waves, and
        the closed loop's ramp-up and drain would weigh on the figure."""
        return max(self.requests_per_round, self.waves_per_round * concurrency)


CLASSIFIER_TIERS = {
    # 2-core CPU: server workers and the load generator share the cores, so each worker runs one
    # torch thread (the default of two was 3-13x slower, ../shared/NOTES-stack.md).
    "cpu": ClassifierTier(
        device="cpu", model="resnet18", input_size=112, threads=1, concurrency=(1, 8),
        # Rounds: the 2-core machine's rounds of one run varied by 1-8% (CV); perf_analyzer's rule is 10%.
        requests_per_round=48, rounds=3, max_round_cv=0.10, max_rounds=8, batched_max_batch_size=8, batched_timeout_s=0.01, batched_workers=2,
        decode_threads=2, timeouts_ms=(2, 50), max_batch_sizes=(4, 16),
        # Measured on the 2-core CPU (2026-11-23): compile 30/46 req/s with round CV 0.69 against 118 for
        # batch_workers; channels_last 116-120 against 110-122 and amp_fp16 78-85 (three runs, real photos).
        # pinned (page-locked host memory for the host-to-device copy) only means something on CUDA.
        dropped_steps=("compile", "channels_last", "amp_fp16", "pinned"),
        model_presets=("efficientnet_lite0",),
    ),
    "gpu": ClassifierTier(
        device="cuda", model="resnet50", input_size=224, threads=2, concurrency=(1, 8, 32, 64, 128, 256),
        requests_per_round=512, waves_per_round=16, rounds=3, max_round_cv=0.05, max_rounds=10, batched_max_batch_size=64, batched_timeout_s=0.005, batched_workers=4,
        decode_threads=8, timeouts_ms=(1, 20), max_batch_sizes=(16, 128), dropped_steps=(),
        model_presets=("resnet18", "resnet50", "mambaout_base", "efficientnet_lite0"),
    ),
}

# The seeds' model sizes at 224 px with random weights (speed does not depend on the weights), and the
# real efficientnet-lite0 (servers/pretrained.py). Options replace the ladder model's.
CLASSIFIER_MODEL_PRESETS = {
    "resnet18": (("model", "resnet18"), ("input-size", 224)),
    "resnet50": (("model", "resnet50"), ("input-size", 224)),
    "mambaout_base": (("model", "mambaout_base"), ("input-size", 224)),
    "efficientnet_lite0": (("pretrained", "efficientnet_lite0"),),
}


def classifier_variants(tier_name: str) -> dict:
    """The seeds' optimisation ladder for one tier, name -> ServerSpec, each step one change from the
    step it builds on. Steps past the seeds (channels_last, compile) are kept only where they measure
    faster somewhere; the README's ladder table says where."""
    tier = CLASSIFIER_TIERS[tier_name]
    needs_gpu = tier.device == "cuda"
    model = (("model", tier.model), ("input-size", tier.input_size), ("device", tier.device), ("threads", tier.threads))
    batching = (("max-batch-size", tier.batched_max_batch_size), ("batch-timeout", tier.batched_timeout_s))
    workers = (("workers-per-device", tier.batched_workers),)

    def spec(name, *options, precision="fp32"):
        compiled = ("compile", True) in options
        return ServerSpec(name=f"{tier_name}-{name}", module="servers.classifier", needs_gpu=needs_gpu,
                          options=model + (("precision", precision),) + tuple(options),
                          env=(("TORCHINDUCTOR_CACHE_DIR", str(INDUCTOR_CACHE)),) if compiled else (),
                          startup_timeout_s=COMPILE_STARTUP_S if compiled else 180.0)

    def with_batch(size=tier.batched_max_batch_size, timeout_s=tier.batched_timeout_s):
        return (("max-batch-size", size), ("batch-timeout", timeout_s)) + workers

    ladder = {
        "baseline": spec("baseline", ("max-batch-size", 1), ("workers-per-device", 1)),
        "batch": spec("batch", *batching, ("workers-per-device", 1)),
        "batch_workers": spec("batch_workers", *with_batch()),
        "parallel_decode": spec("parallel_decode", *with_batch(), ("decode-threads", tier.decode_threads)),
        "fp16": spec("fp16", *with_batch(), precision="fp16"),
        "bf16": spec("bf16", *with_batch(), precision="bf16"),
        # Mixed precision: half-precision convolutions, fp32 weights and normalisation. Kept beside the
        # full casts because full bf16 changed a top-1 on the real images (tests/test_pretrained.py).
        "amp_fp16": spec("amp_fp16", *with_batch(), precision="amp_fp16"),
        "amp_bf16": spec("amp_bf16", *with_batch(), precision="amp_bf16"),
        "channels_last": spec("channels_last", *with_batch(), ("channels-last", True)),
        "compile": spec("compile", *with_batch(), ("compile", True)),
        "pinned": spec("pinned", *with_batch(), ("pin-memory", True)),
    }
    for ms in tier.timeouts_ms:
        ladder[f"timeout_{ms}"] = spec(f"timeout_{ms}", *with_batch(timeout_s=ms / 1000))
    for size in tier.max_batch_sizes:
        ladder[f"maxbatch_{size}"] = spec(f"maxbatch_{size}", *with_batch(size=size))
    return {step: spec for step, spec in ladder.items() if step not in tier.dropped_steps}


def classifier_specs(tier_name: str) -> dict:
    """Every classifier spec a tier benchmarks, step name -> spec: the ladder, then the model presets."""
    return {**classifier_variants(tier_name), **classifier_model_variants(tier_name)}


def classifier_model_variants(tier_name: str) -> dict:
    """model_<preset> -> ServerSpec: other models served like the ladder's batch_workers step."""
    tier = CLASSIFIER_TIERS[tier_name]
    batch_workers = classifier_variants(tier_name)["batch_workers"]
    serving = tuple((flag, value) for flag, value in batch_workers.options if flag not in ("model", "input-size"))
    return {f"model_{name}": replace(batch_workers, name=f"{tier_name}-model_{name}",
                                     options=CLASSIFIER_MODEL_PRESETS[name] + serving)
            for name in tier.model_presets}


def with_pretrained(spec: ServerSpec, pretrained: str) -> ServerSpec:
    """The same serving options (batching, workers, precision, decoding, compile) on a real model at its
    own input size: how every ladder step is checked for correct answers on real images."""
    options = tuple((flag, value) for flag, value in spec.options if flag not in ("model", "input-size"))
    return replace(spec, name=f"{spec.name}-{pretrained}", options=options + (("pretrained", pretrained),))


@dataclass(frozen=True)
class LLMTier:
    """One device class's LLM workload: the real 135M model on a CPU, the seeds' 1.7B size on a GPU.
    Every request generates exactly max_new_tokens (ignore_eos), batch 1, one request at a time."""

    device: str
    model: str
    threads: int
    max_new_tokens: int
    requests_per_round: int
    rounds: int  # rounds that must agree within max_round_cv, found within max_rounds (fixtures/rounds.py)
    max_round_cv: float
    max_rounds: int
    recipes: tuple  # keys of servers.llm_models.RECIPES


LLM_TIERS = {
    # torchao_float8 needs a GPU (compute capability >= 8.9): only the GPU tier has it.
    "cpu": LLMTier(device="cpu", model="smollm2-135m", threads=1, max_new_tokens=32, requests_per_round=2, rounds=3,
                   max_round_cv=0.10, max_rounds=6,
                   recipes=("eager_bf16", "static_compile", "torchao_int8wo", "torchao_int4wo")),
    "gpu": LLMTier(device="cuda", model="smollm2-1.7b", threads=4, max_new_tokens=128, requests_per_round=3, rounds=3,
                   max_round_cv=0.05, max_rounds=10,
                   recipes=("eager_bf16", "static_compile", "torchao_int8wo", "torchao_int4wo", "torchao_float8")),
}


def llm_variants(tier_name: str) -> dict:
    """llm_<recipe> -> ServerSpec for one tier; `-k llm_torchao` selects exactly the torchao recipes."""
    from servers.llm_models import RECIPES

    tier = LLM_TIERS[tier_name]
    variants = {}
    for recipe_name in tier.recipes:
        recipe = RECIPES[recipe_name]
        variants[f"llm_{recipe_name}"] = ServerSpec(
            name=f"{tier_name}-llm_{recipe_name}", module="servers.llm",
            options=(("model", tier.model), ("recipe", recipe_name), ("device", tier.device),
                     ("threads", tier.threads), ("bench-max-tokens", tier.max_new_tokens)),
            # The inductor cache outlives the run: a warm cache cuts a CPU compile to about 20 s.
            env=(("TORCHINDUCTOR_CACHE_DIR", str(INDUCTOR_CACHE)),) if recipe.static_compile else (),
            startup_timeout_s=COMPILE_STARTUP_S if recipe.static_compile else 300.0,
            needs_gpu=tier.device == "cuda",
            min_compute_capability=recipe.min_compute_capability if tier.device == "cuda" else None,
        )
    return variants


@dataclass(frozen=True)
class LoadModelTier:
    """Open-loop rates, the latency SLO and the FastAPI comparison for one device class. The CPU rates
    bracket what the batch_workers CPU variant serves in a closed loop (125-140 req/s at c=8)."""

    classifier_tier: str
    poisson_rates: tuple  # offered req/s
    poisson_seconds: float  # schedule length per round
    slo_p99_s: float
    knee_low: float
    knee_high: float
    knee_iterations: int
    fastapi_n: tuple  # concurrent requests, as seed 004
    litserve_max_batch_size: int
    litserve_batch_timeout_s: float
    soak_seconds: float = 120.0  # make bench's soak; the smoke pass (make test) soaks soak_smoke_seconds
    soak_smoke_seconds: float = 6.0
    soak_chunk_seconds: float = 3.0  # the server's RSS is read between chunks
    soak_fraction: float = 0.8  # of the knee (max_rate_at_slo)
    soak_max_rss_growth_mib: float = 64.0  # RSS growth from the first chunk to the last above this: a leak


LOAD_MODEL_TIERS = {
    "cpu": LoadModelTier("cpu", poisson_rates=(40.0, 80.0, 120.0), poisson_seconds=2.0, slo_p99_s=0.25,
                         knee_low=10.0, knee_high=200.0, knee_iterations=4, fastapi_n=(10, 50, 100, 200),
                         litserve_max_batch_size=16, litserve_batch_timeout_s=0.05),
    "gpu": LoadModelTier("gpu", poisson_rates=(200.0, 500.0, 1000.0), poisson_seconds=3.0, slo_p99_s=0.1,
                         knee_low=50.0, knee_high=3000.0, knee_iterations=6, fastapi_n=(10, 50, 100, 200),
                         litserve_max_batch_size=32, litserve_batch_timeout_s=0.05),
}


def fastapi_comparison_specs(tier_name: str) -> dict:
    """The same model served by plain FastAPI (one request at a time) and by LitServe with batching
    (seed 004: max_batch_size 32, batch_timeout 0.05 on GPUs), one worker each."""
    tier = CLASSIFIER_TIERS[tier_name]
    load = LOAD_MODEL_TIERS[tier_name]
    model = (("model", tier.model), ("input-size", tier.input_size), ("device", tier.device), ("threads", tier.threads))
    needs_gpu = tier.device == "cuda"
    return {
        "fastapi": ServerSpec(name=f"{tier_name}-fastapi", module="servers.fastapi_classifier", options=model,
                              needs_gpu=needs_gpu),
        "litserve": ServerSpec(name=f"{tier_name}-litserve", module="servers.classifier", needs_gpu=needs_gpu,
                               options=model + (("max-batch-size", load.litserve_max_batch_size),
                                                ("batch-timeout", load.litserve_batch_timeout_s),
                                                ("workers-per-device", 1))),
    }


def gpu_smoke_ids() -> set:
    """Benchmark ids of `make gpu-smoke`: the shortest run that touches every GPU path once. One ladder
    step per precision (and the compile and pinned paths) at c=8, each LLM recipe, and nothing else."""
    tier = CLASSIFIER_TIERS["gpu"]
    steps = classifier_variants("gpu")
    first_per_precision = {}
    for step, spec in steps.items():
        first_per_precision.setdefault(spec.option("precision"), step)
    chosen = set(first_per_precision.values()) | ({"compile", "pinned"} & steps.keys())
    concurrency = 8 if 8 in tier.concurrency else min(tier.concurrency)
    return {f"gpu-{step}-c{concurrency}" for step in chosen} | {spec.name for spec in llm_variants("gpu").values()}

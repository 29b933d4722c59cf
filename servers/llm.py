"""An OpenAI-compatible chat server on LitServe: POST /v1/chat/completions, streaming (SSE) or not.

    python -m servers.llm --port 8000 [--model smollm2-135m] [--recipe eager_bf16] [--threads 1]

Batch 1 (no batching), one model per server. Each streamed chunk is one generated token; the last
content-free chunk carries usage. `metadata: {"ignore_eos": "true"}` makes a request generate exactly
its max_tokens (min_new_tokens = max_new_tokens), which the benchmarks use so tokens/s is comparable.

At start-up each worker warms up (compiling where the recipe compiles) before it serves. What the model
serves without HTTP, and what a decode step reads, are measured by the harness in its own process on the
same class (fixtures/measure/ceilings.py): nothing here benchmarks itself.
"""

import argparse
import functools
import json
import multiprocessing
import queue
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Optional

import litserve as ls
from fastapi import HTTPException
from litserve.specs.openai import OpenAISpec

from servers.llm_models import MODELS, RECIPES, apply_inductor_settings, inductor_settings, load, model_facts
from servers.runtime import (BatchSizeCounts, PrepareWorker, RecordThreadPools, Slowdown, ThreadPoolReport, add_stats_routes,
                             device_type, prepare_main_process, resolve_device, serve)
from servers.validation import BodyValidator, RequestRejected

ROLES = {"system", "user", "assistant", "tool"}
# What each worker generates before it serves (its compile, allocator and kernel choice done before a request waits).
WARMUP_MESSAGES = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


def validate_chat_body(body: bytes, max_tokens_limit: int, greedy_only: bool = False):
    """The error message for a bad /v1/chat/completions body, or None. Runs (through BodyValidator)
    before LitServe sees the request, so a streaming request gets a real 400, not an error event after a 200."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "request body is not valid JSON"
    if not isinstance(data, dict):
        return "request body must be a JSON object"
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{i}] must be an object"
        if message.get("role") not in ROLES:
            return f"messages[{i}].role must be one of {sorted(ROLES)}, got {message.get('role')!r}"
        if not isinstance(message.get("content"), (str, list)):
            return f"messages[{i}].content must be a string or a list of content parts"
    for key in ("max_tokens", "max_completion_tokens"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_tokens_limit):
            return f"'{key}' must be an integer from 1 to {max_tokens_limit}, got {value!r}"
    if "stream" in data and not isinstance(data["stream"], bool):
        return "'stream' must be true or false"
    temperature = data.get("temperature")
    if greedy_only and temperature is not None and temperature != 0:
        return f"this server generates its batches greedily: 'temperature' must be 0 or absent, got {temperature!r}"
    return None


def check_chat_body(body: bytes, max_tokens_limit: int, greedy_only: bool = False) -> None:
    message = validate_chat_body(body, max_tokens_limit, greedy_only)
    if message:
        raise RequestRejected(400, message)


class GenerationFailed(RuntimeError):
    pass


def compile_plan(device: str, static_compile: bool) -> dict:
    """One compile, chosen here: transformers' own. generate() runs the prefill eagerly and compiles only
    the decode step (GenerationMixin.get_compiled_call) when it is given a compileable cache: a prompt of
    any length never recompiles, and the static cache is allocated outside the compiled code. Compiling
    model.forward ourselves instead put the prefill in the graph: each new prompt length recompiled, and
    the cache, allocated lazily inside the traced prefill, skipped mark_static_address, so on CUDA its
    buffers became outputs of the CUDA-graph pool. CUDA graphs on CUDA (decode at batch 1 is launch-bound),
    inductor's default mode on the CPU; the mode is recorded as compile_mode."""
    if not static_compile:
        return {"compile_mode": None, "static_cache": False}
    return {"compile_mode": "reduce-overhead" if device_type(device) == "cuda" else "default", "static_cache": True}


def compile_config(mode: str):
    """transformers' CompileConfig for the decode step: static shapes (every step has the same), graph breaks
    allowed as before (torchao's tensor subclasses may break a graph: counted in graphs_compiled, never an
    error); _compile_all_devices lets generate() compile on a CPU too (it compiles on accelerators only)."""
    from transformers.generation.configuration_utils import CompileConfig

    config = CompileConfig(fullgraph=False, dynamic=False, mode=mode)
    config._compile_all_devices = True
    return config


def compile_counters() -> dict:
    """Process-wide compile facts from torch._dynamo's counters: graphs compiled, recompilations, CUDA graphs
    inductor skipped (a skipped graph runs without CUDA graphs, slower than its figure claims), and the non-static
    inputs of the CUDA graphs recorded (inductor adds each recording's count: it grows whenever a graph is recorded
    again for new input addresses, up to cudagraph_unexpected_rerecord_limit = 128 re-records that are never
    counted as skips, each a recording's cost inside the timed region)."""
    from torch._dynamo.utils import counters

    return {"graphs_compiled": int(counters["stats"].get("unique_graphs", 0)),
            "recompiles": int(sum(counters["recompiles"].values())),
            "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0)),
            "cudagraph_recorded_non_static_inputs": int(counters["inductor"].get("cudagraph_recorded_non_static_inputs", 0))}


class Generation:
    """How one worker generates: its model and, for a compiled recipe, one static KV cache allocated once at
    start-up (outside any compiled code), reset before each generation and passed to generate(), so every
    request reuses the same buffers and the same compiled decode graph (transformers builds a new cache on
    every generate() it is not given one)."""

    def __init__(self, model, tokenizer, device: str, static_compile: bool, context: int, slowdown: float = 0.0):
        import torch

        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.slowdown = slowdown  # test-only: each decode step does this fraction of its own time again
        # Every generation (warm-up, the direct timing, every request) runs on this one thread: CUDA graph
        # trees are kept per thread, so the API path replays the graphs the direct ceiling measured; and
        # torch 2.14's inductor settings are per thread (ContextVars), so they are set on this thread, the
        # one that compiles (set on another, as torchao's quantize_ did, they never reach the compile).
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="generate")
        plan = compile_plan(device, static_compile)
        if plan["compile_mode"]:
            self.run(apply_inductor_settings)
        self.compile_mode, self.cache, self.generate_kwargs = plan["compile_mode"], None, {}
        if plan["static_cache"]:
            from transformers import StaticCache

            config = model.config
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            self.cache = StaticCache(config=config, max_cache_len=context)
            activation_dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
            self.cache.early_initialization(batch_size=1, num_heads=config.num_key_value_heads, head_dim=head_dim,
                                            dtype=activation_dtype, device=torch.device(device))
            self.generate_kwargs = {"past_key_values": self.cache, "compile_config": compile_config(plan["compile_mode"])}

    def generate_ids(self, prompt, max_new_tokens: int, exact: bool, streamer=None, temperature: float = 0.0, top_p: float = 1.0):
        import torch

        if self.cache is not None:
            self.cache.reset()
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            return self.model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens if exact else None, streamer=streamer,
                pad_token_id=self.tokenizer.eos_token_id, logits_processor=self.slowed([]), **sampling,
                **self.generate_kwargs,
            )

    def slowed(self, processors: list) -> list:
        """The logits processors, and a Slowdown per decode step where asked (servers.runtime.Slowdown)."""
        return processors + ([Slowdown(self.slowdown)] if self.slowdown else [])

    def generate_batch(self, prompts: list, max_new_tokens: int, ignore_eos: list, streamer=None):
        """Greedy generation of several prompts together (1-D id tensors), left-padded with an attention mask,
        up to max_new_tokens; a row in ignore_eos never ends at EOS (rows that may are cut by their reader)."""
        import torch

        ids, mask = left_padded(prompts, self.pad_id)
        eos = self.model.generation_config.eos_token_id
        processors = self.slowed([SuppressTokens([row for row, ignore in enumerate(ignore_eos) if ignore], eos)])
        with torch.inference_mode():
            return self.model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, streamer=streamer,
                                       pad_token_id=self.pad_id, do_sample=False, logits_processor=processors)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    def run(self, fn, *args, **kwargs):
        """fn on the generation thread, waited for."""
        return self.thread.submit(fn, *args, **kwargs).result()

    def cache_pointers(self) -> list:
        """Where the static cache's buffers live (the same list after every request when the cache is reused)."""
        return [] if self.cache is None else [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in self.cache.layers]


def left_padded(prompts: list, pad_id: int) -> tuple:
    """(ids, attention_mask) of 1-D prompts padded on the left to the longest: a decoder-only model continues
    every row from its right end, and the mask keeps the padding out of attention and positions."""
    import torch

    width = max(p.shape[0] for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=prompts[0].dtype, device=prompts[0].device)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - prompt.shape[0]:] = prompt
        mask[row, width - prompt.shape[0]:] = 1
    return ids, mask


class SuppressTokens:
    """A logits processor: EOS never chosen in the given rows of a batch (ignore_eos per request; transformers'
    min_new_tokens holds for the whole batch). The (rows x vocabulary) mask is built on the scores' device at the
    first step, so each decode step is one masked fill on the device: indexing with Python lists copied the
    indices to the device once per row per step (64 copies a step at 64 users)."""

    def __init__(self, rows: list, token_ids):
        self.rows = rows
        self.token_ids = [token_ids] if isinstance(token_ids, int) else list(token_ids or [])
        self.mask = None

    def __call__(self, input_ids, scores):
        if not self.rows or not self.token_ids:
            return scores
        if self.mask is None:
            import torch

            self.mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
            rows = torch.tensor(self.rows, device=scores.device)
            self.mask[rows[:, None], torch.tensor(self.token_ids, device=scores.device)[None, :]] = True
        return scores.masked_fill_(self.mask, float("-inf"))


class TokenQueue:
    """A transformers streamer that hands every generated token id to a queue (TextIteratorStreamer
    buffers to word boundaries, which would hide the inter-token latency); with per_step, one list of ids per
    decode step instead (a batch's row per request). The generation's end is None; its failure is the
    exception, so the reader never waits on a generation that died."""

    def __init__(self, per_step: bool = False):
        self.queue = queue.Queue()
        self.prompt_seen = False
        self.per_step = per_step

    def fail(self, error: BaseException):
        self.queue.put(error)

    def put(self, value):
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        tokens = value.reshape(-1).tolist()
        if self.per_step:
            self.queue.put(tokens)
            return
        for token in tokens:
            self.queue.put(token)

    def end(self):
        self.queue.put(None)


def stream_tokens(executor: ThreadPoolExecutor, generate, timeout_s: float, per_step: bool = False):
    """Run generate(streamer) on the worker's one generation thread and yield its token ids as they come (with
    per_step, one list per decode step). An exception in generate ends the stream with GenerationFailed; so
    does no token for timeout_s."""
    streamer = TokenQueue(per_step)
    future = executor.submit(generate, streamer)
    future.add_done_callback(lambda f: f.exception() and streamer.fail(f.exception()))
    while True:
        try:
            item = streamer.queue.get(timeout=timeout_s)
        except queue.Empty:
            raise GenerationFailed(f"no token for {timeout_s:g} s") from None
        if item is None:
            break
        if isinstance(item, BaseException):
            raise GenerationFailed(f"generation failed: {type(item).__name__}: {item}") from item
        yield item
    future.result(timeout=timeout_s)  # re-raises anything raised after the last token


def message_text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(getattr(part, "text", "") or "" for part in content or [])


def request_messages(request) -> list:
    return [{"role": m.role, "content": message_text(m.content)} for m in request.messages]


class PaddingCounts:
    """Decode-step slots of batched generation (rows x steps) and how many were padding: a row whose request
    had finished (its max_tokens, or EOS) while its batch went on. Shared memory created before LitServe spawns
    the worker, read by the HTTP process for GET PADDING_PATH (as servers.runtime.BatchSizeCounts)."""

    def __init__(self):
        self.counts = multiprocessing.get_context("spawn").RawArray("q", 2)

    def record(self, slots: int, padded: int) -> None:
        self.counts[0] += slots
        self.counts[1] += padded

    def snapshot(self) -> dict:
        return {"slots": self.counts[0], "padded": self.counts[1]}


PADDING_PATH = "/stats/padding"


class LLMAPI(ls.LitAPI):
    """Batch 1: each request generates alone, its tokens streamed as they come. Built with keyword arguments
    (servers/llm.py's main, or a harness timing the same class in its own process)."""

    def __init__(self, model: str = "smollm2-135m", recipe: str = "eager_bf16", context: int = 256,
                 default_max_tokens: int = 64, warmup_tokens: int = 32, token_timeout: float = 60.0,
                 batch_counts: Optional[BatchSizeCounts] = None, padding: Optional["PaddingCounts"] = None,
                 slowdown: float = 0.0, **kwargs):
        super().__init__(spec=OpenAISpec(), **kwargs)
        self.args = SimpleNamespace(model=model, recipe=recipe, context=context, default_max_tokens=default_max_tokens,
                                    warmup_tokens=warmup_tokens, token_timeout=token_timeout, slowdown=slowdown)
        self.batch_counts = batch_counts or BatchSizeCounts(1, self.max_batch_size)
        self.padding = padding or PaddingCounts()

    def setup(self, device):
        args = self.args
        self.device = device
        self.recipe = RECIPES[args.recipe]
        self.tokenizer, self.model = load(args.model, self.recipe, device)
        # A fixed-size static cache (--context): one compiled decode graph for every request.
        self.generation_plan = Generation(self.model, self.tokenizer, device, self.recipe.static_compile, args.context,
                                          args.slowdown)
        self.generation = self.generation_plan.thread
        prompt = self.prompt_ids(WARMUP_MESSAGES)
        for _ in range(2):  # warm-up before serving: compile, allocator, kernel choice
            self.on_generation_thread(self.generate_ids, prompt, args.warmup_tokens, exact=True)
        self.after_warmup = compile_counters()
        print(f"worker ready: model={args.model} recipe={args.recipe} device={device} "
              f"compile={self.generation_plan.compile_mode}", flush=True)

    def on_generation_thread(self, fn, *args, **kwargs):
        return self.generation_plan.run(fn, *args, **kwargs)

    def prompt_ids(self, messages):
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        ids = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        return ids["input_ids"].to(self.device)

    def generate_ids(self, *args, **kwargs):
        return self.generation_plan.generate_ids(*args, **kwargs)

    def compile_report(self) -> Optional[dict]:
        """For a compiled recipe: its mode, the inductor settings it ran with, and what compiled since the
        warm-up ended (nothing should). None when eager."""
        if self.generation_plan.compile_mode is None:
            return None
        now = compile_counters()
        return {"mode": self.generation_plan.compile_mode, "inductor_settings": inductor_settings(), **now,
                "after_warmup": {key: now[key] - self.after_warmup[key] for key in now}}

    def predict(self, request, context=None):
        self.batch_counts.record(1)
        prompt = self.prompt_ids(request_messages(request))
        max_new = request.max_completion_tokens or request.max_tokens or self.args.default_max_tokens
        if prompt.shape[1] + max_new > self.args.context:
            raise HTTPException(400, f"prompt ({prompt.shape[1]} tokens) + max_tokens ({max_new}) exceeds the context of {self.args.context}")
        exact = (request.metadata or {}).get("ignore_eos") == "true"
        generate = functools.partial(self.generate_ids, prompt, max_new, exact,
                                     temperature=request.temperature or 0.0, top_p=request.top_p or 1.0)
        vocab = len(self.tokenizer)
        ids, sent = [], ""
        for token in stream_tokens(self.generation, lambda streamer: generate(streamer=streamer), self.args.token_timeout):
            # Random-weight presets may emit ids beyond the SmolLM2 tokenizer (Llama-3.2's 128k vocab):
            # their text is meaningless anyway, so they decode modulo the vocabulary.
            ids.append(token % vocab)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            delta = "" if text.endswith("\ufffd") else text[len(sent):]  # hold back half a UTF-8 character
            sent += delta
            yield delta  # exactly one chunk per generated token
        yield {"role": "assistant", "content": None, "prompt_tokens": prompt.shape[1],
               "completion_tokens": len(ids), "total_tokens": prompt.shape[1] + len(ids)}


class BatchedLLMAPI(LLMAPI):
    """Batches of chat requests generated together on LitServe's batched streaming loop (max_batch_size > 1
    with a streaming spec selects it in litserve 0.2.19): left padding and an attention mask, greedy, one list
    of deltas per decode step (an entry per request). A request that has finished (its max_tokens, or its
    EOS unless it asked ignore_eos) while the batch goes on gets a content-free chunk per step (LitServe
    streams every request of a batch until the generator ends): counted as padding (GET PADDING_PATH)."""

    def batch(self, inputs):
        return list(inputs)

    def unbatch(self, output):
        return output  # already one list per step

    def predict(self, requests, context=None):
        self.batch_counts.record(len(requests))
        prompts = [self.prompt_ids(request_messages(r))[0] for r in requests]
        wanted = [r.max_completion_tokens or r.max_tokens or self.args.default_max_tokens for r in requests]
        ignore_eos = [(r.metadata or {}).get("ignore_eos") == "true" for r in requests]
        eos = self.model.generation_config.eos_token_id
        eos = {eos} if isinstance(eos, int) else set(eos or ())
        generate = functools.partial(self.generation_plan.generate_batch, prompts, max(wanted), ignore_eos)
        vocab = len(self.tokenizer)
        ids, sent, done = [[] for _ in requests], ["" for _ in requests], [False for _ in requests]
        slots = padded = 0
        for step in stream_tokens(self.generation, lambda streamer: generate(streamer=streamer), self.args.token_timeout,
                                  per_step=True):
            deltas = []
            for row, token in enumerate(step):
                slots += 1
                if done[row]:
                    padded += 1
                    deltas.append(None)  # a content-free chunk: not a token of this request
                    continue
                ids[row].append(token % vocab)
                text = self.tokenizer.decode(ids[row], skip_special_tokens=True)
                delta = "" if text.endswith("\ufffd") else text[len(sent[row]):]
                sent[row] += delta
                deltas.append(delta)
                done[row] = len(ids[row]) >= wanted[row] or (token in eos and not ignore_eos[row])
            yield deltas
        self.padding.record(slots, padded)
        yield [{"role": "assistant", "content": None, "prompt_tokens": p.shape[0], "completion_tokens": len(i),
                "total_tokens": p.shape[0] + len(i)} for p, i in zip(prompts, ids)]

    def encode_response(self, output_stream, context=None):
        for step in output_stream:  # the spec's own encoding, applied per request of the step
            yield [self._spec._encode_response(output) for output in step]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"])
    p.add_argument("--model", default="smollm2-135m", choices=MODELS)
    p.add_argument("--recipe", default="eager_bf16", choices=sorted(RECIPES))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch threads of the inference worker")
    p.add_argument("--context", type=int, default=256, help="prompt + new tokens limit (and static cache size)")
    p.add_argument("--max-tokens-limit", type=int, default=192, help="largest max_tokens a request may ask")
    p.add_argument("--default-max-tokens", type=int, default=64)
    p.add_argument("--warmup-tokens", type=int, default=32, help="tokens each of the worker's two start-up warm-ups generates")
    p.add_argument("--slowdown", type=float, default=0.0,
                   help="test-only: each decode step does this fraction of its own time again, busy (0.03: 3%% slower anywhere)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--max-batch-size", type=int, default=1, help="above 1: batched generation (BatchedLLMAPI)")
    p.add_argument("--batch-timeout", type=float, default=0.0, help="seconds LitServe waits to fill a batch")
    p.add_argument("--token-timeout", type=float, default=60.0,
                   help="a request whose generation yields no token for this long ends with an error")
    return p.parse_args(argv)


def main(argv=None):
    prepare_main_process()
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.max_batch_size > 1 and RECIPES[args.recipe].static_compile:
        raise SystemExit(f"--max-batch-size {args.max_batch_size}: batched generation is eager (the static cache holds one sequence)")
    batch_counts, padding, pools = BatchSizeCounts(1, args.max_batch_size), PaddingCounts(), ThreadPoolReport(1)
    api_class = BatchedLLMAPI if args.max_batch_size > 1 else LLMAPI
    api = api_class(model=args.model, recipe=args.recipe, context=args.context, default_max_tokens=args.default_max_tokens,
                    warmup_tokens=args.warmup_tokens, token_timeout=args.token_timeout, batch_counts=batch_counts,
                    padding=padding, slowdown=args.slowdown, max_batch_size=args.max_batch_size,
                    batch_timeout=args.batch_timeout)
    server = ls.LitServer(
        api, accelerator=device, devices=1, workers_per_device=1, timeout=args.timeout,
        middlewares=[(BodyValidator, {"path": "/v1/chat/completions", "max_body_bytes": 4 * 2**20,
                                      "validate": functools.partial(check_chat_body, max_tokens_limit=args.max_tokens_limit,
                                                                greedy_only=args.max_batch_size > 1)})],
        model_metadata={"model": args.model, "recipe": args.recipe, "device": device, "threads": str(args.threads),
                        "max_batch_size": str(args.max_batch_size)},
        callbacks=[PrepareWorker(args.threads), RecordThreadPools(pools)],
    )
    add_stats_routes(server, batch_counts, device, args.threads, False, pools, max_batch_size=args.max_batch_size,
                     batch_timeout_s=args.batch_timeout)
    server.app.add_api_route(PADDING_PATH, padding.snapshot, methods=["GET"])
    serve(server, args.host, args.port)


if __name__ == "__main__":
    main()

"""A LitServe image classifier on a timm model.

    python -m servers.classifier --port 8000 [--model resnet50 --input-size 224 --max-batch-size 32 ...]

Request:  POST /predict {"image": "<base64 of a PNG/JPEG>"}
Response: {"predictions": [{"index": 281, "label": "...", "probability": 0.93}, ...]}  (top-k, softmax)

Weights are random unless --weights names a local state dict, or --pretrained names one of the real
models of servers/pretrained.py (efficientnet_lite0, catdog, mnist_cnn): no model hub is reached.
"""

import argparse
import base64
import functools
import binascii
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Optional

import litserve as ls
from fastapi import HTTPException

from servers.pretrained import PRETRAINED, build_pretrained
from servers.pretrained import labels as pretrained_labels
from servers.runtime import (BatchSizeCounts, RecordThreadPools, Slowdown, ThreadPoolReport, add_stats_routes,
                             prepare_main_process, prepare_worker, resolve_device, serve)
from servers.validation import BodyValidator, RequestRejected, parse_json_object

log = logging.getLogger("servers.classifier")

# precision -> (dtype of weights and inputs, dtype the convolutions and matmuls compute in).
# fp16/bf16 cast the whole model (the seeds' `.half()`); amp_* keep fp32 weights and run the forward
# under torch.autocast, which computes convolutions and matmuls in half precision but keeps
# normalisation and reductions in fp32.
PRECISIONS = {
    "fp32": ("float32", "float32"),
    "fp16": ("float16", "float16"),
    "bf16": ("bfloat16", "bfloat16"),
    "amp_fp16": ("float32", "float16"),
    "amp_bf16": ("float32", "bfloat16"),
}
COMPUTE_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
DEFAULT_MAX_PIXELS = 25_000_000


@dataclass(frozen=True)
class ClassifierConfig:
    model: str = "resnet18"
    input_size: int = 224
    num_classes: int = 1000
    weights: Optional[str] = None
    labels: Optional[str] = None
    precision: str = "fp32"
    threads: int = 1
    top_k: int = 5
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images get 413 (decompression-bomb guard)
    channels_last: bool = False  # NHWC memory format (faster convolutions on many CPUs and GPUs)
    compile: bool = False  # torch.compile the model at start-up
    decode_threads: int = 0  # > 0: decode a batch's images in a thread pool inside batch()
    pin_memory: bool = False  # CUDA: stack batches into a pinned host buffer, copy to the GPU asynchronously
    pretrained: Optional[str] = None  # a name in servers.pretrained.PRETRAINED: real weights and labels
    predict_delay_s: float = 0.0  # test-only: each predict sleeps this long first (a server slower on purpose)
    slowdown: float = 0.0  # test-only: each predict then does this fraction of its own time again (servers.runtime.Slowdown)


def torch_dtype(precision: str):
    """The dtype of the model's weights and inputs."""
    import torch

    return getattr(torch, PRECISIONS[precision][0])


def compute_precision(precision: str) -> str:
    """fp32, fp16 or bf16: which of the device's peaks the model's arithmetic runs at."""
    return COMPUTE_PRECISION[PRECISIONS[precision][1]]


def _autocast_module():
    import torch
    from torch import nn

    class Autocast(nn.Module):
        def __init__(self, model, dtype):
            super().__init__()
            self.model, self.dtype = model, dtype
            self.pretrained_cfg = getattr(model, "pretrained_cfg", {})  # timm's preprocessing config

        def forward(self, x):
            with torch.autocast(x.device.type, dtype=self.dtype):
                return self.model(x)

    return Autocast


def build_model(config: ClassifierConfig, device):
    """The served model, in eval mode on `device` in the configured precision. The direct-throughput
    ceiling (fixtures/measure/ceilings.py) builds it with this same function."""
    import timm
    import torch

    if config.pretrained:
        model = build_pretrained(config.pretrained)
    else:
        model = timm.create_model(config.model, pretrained=False, num_classes=config.num_classes)
        if config.weights:
            model.load_state_dict(torch.load(config.weights, map_location="cpu", weights_only=True))
    model = model.eval().to(device, torch_dtype(config.precision))
    storage, compute = PRECISIONS[config.precision]
    if compute != storage:
        model = _autocast_module()(model, getattr(torch, compute))
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.compile:
        # dynamic=True: one graph for every batch size LitServe forms, not one compile per size.
        model = torch.compile(model, dynamic=True)
    return model


def image_bytes(payload) -> bytes:
    """The encoded image of a request body (a parsed JSON object), or RequestRejected(400)."""
    if not isinstance(payload, dict):
        raise RequestRejected(400, "request body must be a JSON object with an 'image' field")
    encoded = payload.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise RequestRejected(400, "'image' must be a non-empty base64 string")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestRejected(400, f"'image' is not valid base64: {exc}") from None


def open_image(raw: bytes, max_pixels: int) -> "PIL.Image.Image":
    """Parse the image header (no pixel decoding yet): 400 if it is not an image, 413 above max_pixels."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            image = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise RequestRejected(400, f"'image' is not a decodable image: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise RequestRejected(413, f"image is {width}x{height} pixels, the limit is {max_pixels} pixels")
    return image


def decode_image(payload, max_pixels: int = DEFAULT_MAX_PIXELS) -> "PIL.Image.Image":
    """The request's image as RGB (greyscale and alpha are converted), or RequestRejected."""
    image = open_image(image_bytes(payload), max_pixels)
    try:
        image.load()
    except OSError as exc:  # truncated or corrupt pixel data behind a valid header
        raise RequestRejected(400, f"'image' is not a decodable image: {exc}") from None
    return image.convert("RGB")


def check_predict_body(body: bytes, max_pixels: int) -> None:
    """Runs in the HTTP process before a request joins a batch: every malformed request is answered
    on its own, so it cannot fail the batch it would have joined (LitServe fails a whole batch when
    one decode_request raises). Pixel decoding stays in the worker."""
    open_image(image_bytes(parse_json_object(body)), max_pixels)




class ClassifierAPI(ls.LitAPI):
    def __init__(self, config: ClassifierConfig, max_batch_size: int = 1, batch_timeout: float = 0.0,
                 batch_counts: Optional[BatchSizeCounts] = None):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.config = config
        self.batch_counts = batch_counts

    def setup(self, device):
        import torch

        cfg = self.config
        self.threads = prepare_worker(cfg.threads)
        self.device = torch.device(device)
        self.dtype = torch_dtype(cfg.precision)
        self.model = build_model(cfg, self.device)
        self.transform = preprocessor(cfg, self.model)
        self.labels = served_labels(cfg)
        self.decode_pool = None
        if cfg.decode_threads:
            from concurrent.futures import ThreadPoolExecutor

            self.decode_pool = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="decode")
        self.pinned = None
        if cfg.pin_memory and self.device.type == "cuda":
            # One page-locked buffer for the largest batch: the host-to-device copy of a batch can then
            # run asynchronously (non_blocking in to_model_input). It is reused safely: predict() ends
            # with .cpu(), which waits for the copy and the forward pass before the next batch is stacked.
            self.pinned = torch.empty(self.max_batch_size, 3, cfg.input_size, cfg.input_size).pin_memory()
        # Forward passes at the largest batch the server can form and at 1, so allocator, kernel
        # selection and compilation happen before the first request, not inside a measured one.
        with torch.inference_mode():
            for batch in sorted({self.max_batch_size, 1}):
                self.model(self.to_model_input(torch.zeros(batch, 3, cfg.input_size, cfg.input_size)))
        log.warning(
            "worker ready: model=%s input=%d device=%s precision=%s threads=%d max_batch_size=%d",
            cfg.model, cfg.input_size, self.device, cfg.precision, self.threads, self.max_batch_size,
        )

    def to_model_input(self, x):
        import torch

        x = x.to(self.device, self.dtype, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def decode_one(self, request):
        try:
            image = decode_image(request, self.config.max_pixels)
        except RequestRejected as rejected:
            raise HTTPException(status_code=rejected.status, detail=rejected.message) from None
        return self.transform(image)

    def decode_request(self, request):
        # With a decode pool the batch's images are decoded together in batch(); the body was
        # already validated by BodyValidator in the HTTP process.
        return request if self.decode_pool else self.decode_one(request)

    def batch(self, inputs):
        import torch

        if self.decode_pool:
            inputs = list(self.decode_pool.map(self.decode_one, inputs))
        if self.pinned is not None:
            return torch.stack(inputs, out=self.pinned[: len(inputs)])
        return torch.stack(inputs)

    def predict(self, x):
        import torch

        if isinstance(x, dict):  # max_batch_size=1 with a decode pool: batch() is not called
            x = self.decode_one(x)
        single = x.dim() == 3  # max_batch_size=1: LitServe passes one decoded request
        if single:
            x = x.unsqueeze(0)
        if self.batch_counts is not None:
            self.batch_counts.record(x.shape[0])
        if self.config.predict_delay_s:
            time.sleep(self.config.predict_delay_s)
        started = time.perf_counter()
        with torch.inference_mode():
            logits = self.model(self.to_model_input(x))
            top = torch.softmax(logits.float(), dim=-1).topk(min(self.config.top_k, logits.shape[-1]), dim=-1)
        probs, indices = top.values.cpu(), top.indices.cpu()  # .cpu() also synchronises CUDA
        if self.config.slowdown:
            Slowdown(self.config.slowdown).after(started)
        results = [list(zip(i.tolist(), p.tolist())) for i, p in zip(indices, probs)]
        return results[0] if single else results

    def encode_response(self, output):
        return {
            "predictions": [
                {"index": index, "label": self.labels[index], "probability": prob} for index, prob in output
            ]
        }


def preprocessor(config: ClassifierConfig, model):
    """PIL image -> normalised tensor at the model's input size (timm's eval transform for this model)."""
    import timm

    eager = getattr(model, "_orig_mod", model)  # timm reads its config off the uncompiled module
    data_config = timm.data.resolve_data_config({"input_size": (3, config.input_size, config.input_size)}, model=eager)
    return timm.data.create_transform(**data_config)


def served_labels(config: ClassifierConfig) -> list:
    """The label of each class index, as the server answers them."""
    if config.pretrained:
        return pretrained_labels(config.pretrained)
    if config.labels is None:
        return [f"class_{i}" for i in range(config.num_classes)]
    with open(config.labels) as f:
        labels = json.load(f)
    if len(labels) != config.num_classes:
        raise ValueError(f"{config.labels} has {len(labels)} labels for {config.num_classes} classes")
    return labels


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "0.0.0.0", "::"])
    p.add_argument("--model", default="resnet18", help="a timm model name")
    p.add_argument("--input-size", type=int, help="default: the pretrained model's, else 224")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--weights", help="local state dict (.pth); random weights without it")
    p.add_argument("--labels", help="JSON list of class names")
    p.add_argument("--pretrained", choices=sorted(PRETRAINED),
                   help="a real model with its weights and labels (replaces --model, --weights, --labels, --num-classes)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    p.add_argument("--threads", type=int, default=1, help="torch threads per inference worker")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--max-batch-size", type=int, default=1)
    p.add_argument("--batch-timeout", type=float, default=0.0, help="seconds to wait to fill a batch")
    p.add_argument("--workers-per-device", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0, help="LitServe's queue-wait bound (504)")
    p.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="larger request bodies get 413")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="larger images get 413")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and input")
    p.add_argument("--compile", action="store_true", help="torch.compile the model at start-up")
    p.add_argument("--decode-threads", type=int, default=0, help="decode a batch's images in N threads")
    p.add_argument("--fast-queue", action="store_true", help="LitServer(fast_queue=True): the ZMQ transport option")
    p.add_argument("--pin-memory", action="store_true", help="CUDA: batches in pinned host memory, copied asynchronously")
    p.add_argument("--predict-delay-ms", type=float, default=0.0,
                   help="test-only: sleep this long in each predict (a server slower on purpose, for the harness's tests)")
    p.add_argument("--slowdown", type=float, default=0.0,
                   help="test-only: each predict does this fraction of its own time again, busy (0.03: 3%% slower anywhere)")
    return p.parse_args(argv)


def config_from_args(args) -> ClassifierConfig:
    model, num_classes, input_size = args.model, args.num_classes, args.input_size or 224
    if args.pretrained:
        if args.weights or args.labels:
            raise ValueError("--pretrained brings its own weights and labels: drop --weights / --labels")
        card = PRETRAINED[args.pretrained]
        model, num_classes, input_size = card.architecture, len(pretrained_labels(card.name)), args.input_size or card.input_size
    return ClassifierConfig(
        model=model, input_size=input_size, num_classes=num_classes, weights=args.weights,
        labels=args.labels, pretrained=args.pretrained, precision=args.precision, threads=args.threads, top_k=args.top_k,
        max_pixels=args.max_pixels, channels_last=args.channels_last, compile=args.compile,
        decode_threads=args.decode_threads, pin_memory=args.pin_memory, predict_delay_s=args.predict_delay_ms / 1000,
        slowdown=args.slowdown,
    )


def main(argv=None):
    prepare_main_process()
    args = parse_args(argv)
    config = config_from_args(args)
    device = resolve_device(args.device)
    batch_counts, pools = BatchSizeCounts(args.workers_per_device, args.max_batch_size), ThreadPoolReport(args.workers_per_device)
    api = ClassifierAPI(config, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout,
                        batch_counts=batch_counts)
    metadata = {**asdict(config), "device": device, "max_batch_size": args.max_batch_size,
                "batch_timeout": args.batch_timeout, "workers_per_device": args.workers_per_device}
    server = ls.LitServer(
        api, accelerator=device, devices=1, workers_per_device=args.workers_per_device,
        timeout=args.timeout, fast_queue=args.fast_queue, model_metadata={k: str(v) for k, v in metadata.items()},
        # BodyValidator enforces the body limit with a 413; LitServe's max_payload_size answers 500.
        middlewares=[(BodyValidator, {"path": "/predict", "max_body_bytes": args.max_body_bytes,
                                      "validate": functools.partial(check_predict_body, max_pixels=args.max_pixels)})],
        callbacks=[RecordThreadPools(pools)],
    )
    add_stats_routes(server, batch_counts, device, args.threads, args.fast_queue, pools)
    serve(server, args.host, args.port)


if __name__ == "__main__":
    main()

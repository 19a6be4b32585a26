"""Does a converted model write code on this machine? Greedy completions of two prompts, plain transformers
(bf16/fp32, sdpa/eager) and through the generator service (greedy and beam), plus the tokenizer's view.

    PYTHONPATH=/tmp/site:. BTP_DATA_DIR=/tmp/btp python3 deploy/device/gemma_check.py [MODEL_NAME]

It found that transformers 5.17 turns Gemma 3's GGUF tokenizer into one token per character (see
services/models/prepare.py check_tokenizer).
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.schemas.generator import GenerateRequest
from services.models import prepare_model
from services.pipeline.connect import embedded_generator
from services.pipeline.settings import Settings

PROMPTS = [
    "def fibonacci(n):\n",
    'from typing import List\n\ndef largest(xs: List[int]) -> int:\n    """\n\tReturn the largest element.\n\t"""\n',
]


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "gemma-3-270m"
    settings = Settings()
    folder = prepare_model(name, settings.data_dir / "models")
    tok = AutoTokenizer.from_pretrained(folder)
    print(folder, "tokens of prompt 0:", tok(PROMPTS[0])["input_ids"])
    for dtype in (torch.bfloat16, torch.float32):
        for attn in ("sdpa", "eager"):
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attn).cuda()
            for prompt in PROMPTS:
                ids = tok(prompt, return_tensors="pt").to("cuda")
                out = model.generate(**ids, max_new_tokens=30, do_sample=False)
                print(dtype, attn, repr(tok.decode(out[0][ids["input_ids"].shape[1] :])), flush=True)
    for dtype_name in ("bfloat16", "float32"):
        os.environ["BTP_GENERATOR_DTYPE"] = dtype_name
        with ExitStack() as stack:
            gen = embedded_generator(stack, settings, name)
            for mode, k in (("greedy", 1), ("beam", 3)):
                req = GenerateRequest(prompts=PROMPTS, mode=mode, num_beams=k, num_return_sequences=k,  # type: ignore[arg-type]
                                      max_new_tokens=30, prompt_format="raw")
                res = gen.generate(req)
                print("generator", dtype_name, mode, [r.candidates[0].text[:80] for r in res.results], flush=True)


if __name__ == "__main__":
    main()

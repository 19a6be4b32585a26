import os, torch
from pathlib import Path
from transformers import AutoTokenizer, AutoModelForCausalLM
f = sorted(Path("/tmp/btp/models").glob("gemma*"))[0]
print(f)
tok = AutoTokenizer.from_pretrained(f)
prompts = ["def fibonacci(n):\n", 'from typing import List\n\ndef max_aggregate(xs: List[int]) -> int:\n    """\n\tWrite a function to return the largest element.\n\t"""\n']
for dt in (torch.bfloat16, torch.float32):
    for attn in ("sdpa", "eager"):
        m = AutoModelForCausalLM.from_pretrained(f, dtype=dt, attn_implementation=attn).cuda()
        for p in prompts:
            ids = tok(p, return_tensors="pt").to("cuda")
            out = m.generate(**ids, max_new_tokens=30, do_sample=False)
            print(dt, attn, repr(tok.decode(out[0][ids["input_ids"].shape[1]:])), flush=True)
from contextlib import ExitStack
from services.pipeline.connect import embedded_generator
from services.pipeline.settings import Settings
from services.common.schemas.generator import GenerateRequest
for dt in ("bfloat16", "float32"):
    os.environ["BTP_GENERATOR_DTYPE"] = dt
    with ExitStack() as st:
        g = embedded_generator(st, Settings(), "gemma-3-270m")
        for mode, k in (("greedy", 1), ("beam", 3)):
            r = g.generate(GenerateRequest(prompts=prompts, mode=mode, num_beams=k, num_return_sequences=k, max_new_tokens=30, prompt_format="raw"))
            print("engine", dt, mode, [repr(c.text[:80]) for res in r.results for c in res.candidates[:1]], flush=True)

"""Single-stream decode and prefill of llama.cpp (llama-cpp-python) on the same GGUF and
prompt as bench/src/llm.rs, greedy. Prints one markdown table row."""
import sys
import time

from llama_cpp import Llama

model, tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
prompt = ("<|im_start|>user\nWrite a two-sentence email inviting a customer who bought running "
          "shoes to try our new trail collection.<|im_end|>\n<|im_start|>assistant\n")
llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_batch=512, verbose=False, seed=1)


def run(n):
    llm.reset()
    start = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=n, temperature=0.0, top_k=1)
    return time.perf_counter() - start, out["usage"]


llm.create_completion(prompt, max_tokens=4, temperature=0.0)  # warm up
best_first, best_all, usage = None, None, None
for _ in range(3):
    t1, u1 = run(1)
    tn, un = run(tokens)
    best_first = t1 if best_first is None else min(best_first, t1)
    best_all = tn if best_all is None else min(best_all, tn)
    usage = un
generated = usage["completion_tokens"]
decode = (generated - 1) / max(best_all - best_first, 1e-9)
prefill = usage["prompt_tokens"] / best_first
print(f"| llama.cpp (llama-cpp-python 0.3.36, {threads} threads) | {prefill:.0f} | {decode:.1f} | {generated} tokens |")

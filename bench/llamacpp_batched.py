"""Aggregate greedy decode of llama.cpp (llama-cpp-python's low-level API) with N sequences
decoded together, each sequence its own copy of the prompt used by bench/src/llm.rs: the same
measurement as our bare batched loop, on the same GGUF and machine. Prints a markdown table;
given our run's markdown (bench/out/llm.md), it adds our figures and the ratios.

    python llamacpp_batched.py MODEL TOKENS THREADS 1,4,8,16,32 [bench/out/llm.md]"""
import sys
import time

import llama_cpp as L
import numpy as np

model_path, tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batches = [int(b) for b in sys.argv[4].split(",")]
prompt = ("<|im_start|>user\nWrite a two-sentence email inviting a customer who bought running "
          "shoes to try our new trail collection.<|im_end|>\n<|im_start|>assistant\n").encode()

L.llama_backend_init()
model = L.llama_model_load_from_file(model_path.encode(), L.llama_model_default_params())
vocab = L.llama_model_get_vocab(model)
n_vocab = L.llama_vocab_n_tokens(vocab)
buf = (L.llama_token * 512)()
n_prompt = L.llama_tokenize(vocab, prompt, len(prompt), buf, 512, False, True)
ids = list(buf[:n_prompt])


def run(seqs):
    params = L.llama_context_default_params()
    params.n_ctx = seqs * (n_prompt + tokens + 16)
    params.n_batch = max(512, seqs * n_prompt)
    params.n_ubatch = 512
    params.n_seq_max = seqs
    params.n_threads = threads
    params.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, params)
    batch = L.llama_batch_init(max(seqs * n_prompt, seqs), 0, 1)

    def put(k, token, pos, seq, logits):
        batch.token[k] = token
        batch.pos[k] = pos
        batch.n_seq_id[k] = 1
        batch.seq_id[k][0] = seq
        batch.logits[k] = logits

    def greedy(k):
        return int(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, k), shape=(n_vocab,)).argmax())

    start = time.perf_counter()
    k = 0
    last = []
    for s in range(seqs):
        for i, t in enumerate(ids):
            put(k, t, i, s, i == n_prompt - 1)
            k += 1
        last.append(k - 1)
    batch.n_tokens = k
    assert L.llama_decode(ctx, batch) == 0
    nxt = [greedy(i) for i in last]
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(tokens):
        for s in range(seqs):
            put(s, nxt[s], n_prompt + step, s, True)
        batch.n_tokens = seqs
        assert L.llama_decode(ctx, batch) == 0
        nxt = [greedy(s) for s in range(seqs)]
    decode = time.perf_counter() - start
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return seqs * tokens / decode, seqs * (tokens + 1) / (prefill + decode)


def ours(path):
    """(bare decode, bare with prefill, through the API) per sequence count, from our table."""
    bare, api, section, header = {}, {}, None, []
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("## "):
            section = line
        elif line.startswith("| ") and not line[2].isdigit():
            header = cells
        elif line.startswith("| ") and line[2].isdigit():
            if section.startswith("## Bare batched loop"):
                # The default weights' decode and with-prefill columns, found by their titles.
                decode, with_prefill = header.index("default decode"), header.index("default with prefill")
                bare[int(cells[0])] = (float(cells[decode]), float(cells[with_prefill]))
            elif section.startswith("## Through the HTTP API"):
                api[int(cells[0])] = float(cells[1])
    return bare, api


run(1)  # warm up
rows = [(seqs, *run(seqs)) for seqs in batches]
if len(sys.argv) > 5:
    bare, api = ours(sys.argv[5])
    print("| sequences | llama.cpp decode | llama.cpp with prefill | ours bare decode | vs llama.cpp | "
          "ours bare with prefill | vs llama.cpp | ours through the API | vs llama.cpp with prefill | "
          "vs llama.cpp decode |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for seqs, decode, with_prefill in rows:
        bd, bp = bare.get(seqs, (float("nan"), float("nan")))
        a = api.get(seqs, float("nan"))
        print(f"| {seqs} | {decode:.1f} | {with_prefill:.1f} | {bd:.1f} | {bd / decode:.2f}x | {bp:.1f} | "
              f"{bp / with_prefill:.2f}x | {a:.1f} | {a / with_prefill:.2f}x | {a / decode:.2f}x |")
else:
    print("| sequences | llama.cpp decode | llama.cpp with prefill |")
    print("|---:|---:|---:|")
    for seqs, decode, with_prefill in rows:
        print(f"| {seqs} | {decode:.1f} | {with_prefill:.1f} |")

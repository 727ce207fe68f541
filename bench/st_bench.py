"""Sentence embeddings per second of all-MiniLM-L6-v2 in Python sentence-transformers (the
peer a user would run), on the same files and sentences as bench/src/llm.rs, 2 threads.
Prints markdown table rows."""
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = 256


def sentences(n):
    words = ["trail", "running", "shoes", "waterproof", "jacket", "for", "autumn", "hiking", "with",
             "breathable", "mesh", "and", "a", "grippy", "sole", "lightweight", "tent", "camping"]
    out = []
    for i in range(n):
        k = 6 + (i * 7) % 30
        out.append(" ".join(words[(i + j * 5) % len(words)] for j in range(k)) + ".")
    return out


texts = sentences(256)
model.encode(texts[:8], batch_size=8)  # warm up
for batch in (1, 32):
    n = 64 if batch == 1 else 256
    start = time.perf_counter()
    model.encode(texts[:n], batch_size=batch, normalize_embeddings=True)
    rate = n / (time.perf_counter() - start)
    print(f"| sentence-transformers (torch {torch.__version__}, {threads} threads) | {batch} | {rate:.1f} |")

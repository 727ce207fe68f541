#!/usr/bin/env bash
# Language-model benchmark on the default model, in one run: our forward pass (every weight
# format) against candle's stock quantized_llama, the bare batched decode loop at 1-32
# sequences, the same concurrency through the HTTP API (aggregate tokens/s, time to first
# token), and llama.cpp single-stream and batched on the same GGUF (llama-cpp-python 0.3.36 built from
# source into a throwaway venv under bench/out, about 8 minutes the first time; LLAMA_CPP=0
# skips it).
#
#   bench/llm.sh
#   TOKENS=64 BATCHES=1,4,8,16,32 bench/llm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
scripts/fetch-models
source scripts/postgres.sh
mercato_postgres mercato_bench_llm
psql "${DATABASE_URL%/*}/postgres" -qc 'DROP DATABASE IF EXISTS mercato_bench_llm WITH (FORCE)' -c 'CREATE DATABASE mercato_bench_llm'
# The release profile, which scripts/run serves (the dev profile, with debug assertions and
# overflow checks and the content crate at opt-level 2, measured ~20% slower on batches).
SQLX_OFFLINE=true cargo build --release --quiet -p mercato-gateway --bin mercato -p mercato-bench --bin llm-bench

export MERCATO_ADMIN_KEY="bench-operator-key-0123456789"
export MERCATO__LOG__LEVEL=warn MERCATO__RATE_LIMIT__ENABLED=false
port=18192
MERCATO__SERVER__PORT=$port target/release/mercato serve >"$out/llm-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
json() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
tenant=$(curl -fs -X POST "http://127.0.0.1:$port/v1/admin/tenants" -H "Authorization: Bearer $MERCATO_ADMIN_KEY" \
  -H 'Content-Type: application/json' -d '{"name": "bench"}' | json id)
key=$(curl -fs -X POST "http://127.0.0.1:$port/v1/admin/tenants/$tenant/keys" -H "Authorization: Bearer $MERCATO_ADMIN_KEY" \
  -H 'Content-Type: application/json' -d '{"name": "bench", "role": "writer"}' | json key)

target/release/llm-bench --tokens "${TOKENS:-64}" --batches "${BATCHES:-1,4,8,16,32}" \
  --url "http://127.0.0.1:$port" --api-key "$key" | tee "$out/llm.md"

# sentence-transformers on the same embedding files and sentences (throwaway venv; skipped
# with SENTENCE_TRANSFORMERS=0 or when it does not install).
if [[ "${SENTENCE_TRANSFORMERS:-1}" == 1 ]]; then
  st="$out/venv-st"
  if [[ ! -x "$st/bin/python" ]] || ! "$st/bin/python" -c 'import sentence_transformers' 2>/dev/null; then
    python3 -m venv "$st" && "$st/bin/pip" install --quiet sentence-transformers || true
  fi
  if "$st/bin/python" -c 'import sentence_transformers' 2>/dev/null; then
    { echo; echo "## sentence-transformers, same model files and sentences"; echo
      echo "| path | batch | sentences/s |"; echo "|---|---:|---:|"
      "$st/bin/python" bench/st_bench.py models/all-minilm-l6-v2 2 2>/dev/null
    } | tee -a "$out/llm.md"
  fi
fi

if [[ "${LLAMA_CPP:-1}" == 1 ]]; then
  venv="$out/venv-llama"
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    python3 -m venv "$venv"
    # On CPUs with AMX a native build takes ggml's AMX path, which crashes in its first
    # product (ggml-org/llama.cpp#20824, open); there it is built for the same CPU without AMX.
    if grep -qw amx_int8 /proc/cpuinfo; then
      export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
    fi
    "$venv/bin/pip" install --quiet --no-cache-dir llama-cpp-python==0.3.36
  fi
  kill $server 2>/dev/null; wait 2>/dev/null || true
  { echo; echo "## llama.cpp, single stream, same GGUF and prompt"; echo
    echo "| path | prefill tok/s | decode tok/s | generated |"; echo "|---|---:|---:|---:|"
    "$venv/bin/python" bench/llamacpp_bench.py models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf "${TOKENS:-64}" 2
  } | tee -a "$out/llm.md"
  { echo; echo "## llama.cpp, sequences decoded together (same GGUF, prompt, tokens), beside ours"; echo
    "$venv/bin/python" bench/llamacpp_batched.py models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
      "${TOKENS:-64}" 2 "${BATCHES:-1,4,8,16,32}" "$out/llm.md" 2>/dev/null
  } | tee -a "$out/llm.md"
fi

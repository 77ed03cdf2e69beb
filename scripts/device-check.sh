#!/usr/bin/env bash
# The CUDA device check: ONE prepared run on a GPU machine (CUDA 13 driver, python3 with PyTorch
# and transformers, no Rust), within ~8 minutes. It uses test/bench binaries built on an x86-64
# CPU machine by scripts/device/build.sh and carried in target/device-check (docs/cuda.md):
#
#   1. the GPU and the CUDA libraries (cuBLAS 13, NVRTC 13 from the pip wheels or the toolkit);
#   2. every GPU test binary (per-op parity of GPU vs CPU, f32/bf16/f16; embedded PTX loads
#      without the NVRTC fallback; the NVRTC fallback compiles; graph replay == direct launches),
#      with KOSMOS2_REQUIRE_GPU=1 so that nothing silently skips;
#   3. compute-sanitizer memcheck over the attention and decode tests, if time allows;
#   4. the Kosmos-2-sized benchmark (image encode, prefill, graph decode at batch 1, 8, 32);
#   5. HF transformers eager bf16 on the same GPU, same stages and batches;
#   6. one table: test results, then kosmos2-rs vs HF with speed-ups and the issue's targets.
#
# Results go to $OUT (the device tool's output folder) or target/device-check/out: table.md,
# tests.tsv, bench_rs.jsonl, bench_hf.jsonl, device-check.log. Exit status 0 only if every
# test binary passed and both benchmarks ran.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin="target/device-check/bin"
out="${OUT:-$root/target/device-check/out}"
mkdir -p "$out"
log="$out/device-check.log"
exec > >(tee "$log") 2>&1
t0=$(date +%s)
say() { echo "[$(($(date +%s) - t0))s] $*"; }
left() { echo $((460 - ($(date +%s) - t0))); }
status=0

if [ ! -d "$bin" ]; then
    say "no $bin: run scripts/device/build.sh on the CPU machine and carry target/device-check"
    exit 2
fi
say "binaries from commit $(cat target/device-check/commit 2>/dev/null || echo '?')"
if [ -s target/device-check/dirty ]; then
    say "built from a working tree with uncommitted changes:"
    cat target/device-check/dirty
fi

# ---- 1. environment --------------------------------------------------------------------------
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
libdirs="$(python3 - <<'PY'
import glob, os, site
roots = site.getsitepackages() + ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
                                  "/usr/lib/x86_64-linux-gnu", "/opt"]
dirs = []
for name in ["libcublas.so.13", "libcublasLt.so.13", "libnvrtc.so.13"]:
    for r in roots:
        hits = glob.glob(os.path.join(r, name)) + glob.glob(os.path.join(r, "nvidia", "**", name), recursive=True)
        if r == "/opt":
            hits += glob.glob("/opt/**/site-packages/nvidia/**/" + name, recursive=True)
        for h in hits:
            d = os.path.dirname(os.path.realpath(h))
            if d not in dirs:
                dirs.append(d)
        if hits:
            break
print(":".join(dirs))
PY
)"
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "CUDA libraries from: ${libdirs:-<none found; relying on the loader path>}"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)" || true

# ---- 2. GPU tests ----------------------------------------------------------------------------
tsv="$out/tests.tsv"
: >"$tsv"
run_tests() { # name, binary, extra args...
    local name="$1" exe="$2"
    shift 2
    say "== $name"
    local tlog
    tlog="$(mktemp)"
    KOSMOS2_REQUIRE_GPU=1 timeout 150 "$exe" --test-threads=4 "$@" >"$tlog" 2>&1
    local rc=$?
    cat "$tlog"
    local summary passed failed ignored st
    summary="$(grep -E '^test result:' "$tlog" | tail -1)"
    passed="$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")"
    failed="$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")"
    ignored="$(sed -nE 's/.* ([0-9]+) ignored.*/\1/p' <<<"$summary")"
    if [ $rc -eq 0 ]; then st="ok"; elif [ $rc -eq 124 ]; then st="TIMEOUT"; else st="FAIL (rc $rc)"; status=1; fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "${passed:-0}" "${failed:-?}" "${ignored:-0}" "$st" >>"$tsv"
    rm -f "$tlog"
}
for exe in "$bin"/*; do
    name="$(basename "$exe")"
    [ "$name" = "cuda_bench" ] && continue
    run_tests "$name" "$exe"
done

# ---- 3. memory checker (optional) -------------------------------------------------------------
if command -v compute-sanitizer >/dev/null && [ "$(left)" -gt 330 ] && [ -x "$bin/cuda_decode" ]; then
    say "== compute-sanitizer memcheck (cuda_decode, cuda_attention decode/kv)"
    KOSMOS2_REQUIRE_GPU=1 timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$bin/cuda_decode" --test-threads=1 >"$out/.san1" 2>&1
    rc1=$?
    KOSMOS2_REQUIRE_GPU=1 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$bin/cuda_attention" --test-threads=1 decode kv_append >"$out/.san2" 2>&1
    rc2=$?
    tail -5 "$out/.san1" "$out/.san2"
    for pair in "cuda_decode:$rc1" "cuda_attention:$rc2"; do
        n="${pair%%:*}"
        r="${pair##*:}"
        if [ "$r" -eq 0 ]; then s="ok"; elif [ "$r" -eq 124 ]; then s="TIMEOUT"; else s="FAIL (rc $r)"; status=1; fi
        printf 'memcheck %s\t-\t-\t-\t%s\n' "$n" "$s" >>"$tsv"
    done
    rm -f "$out/.san1" "$out/.san2"
else
    say "skipping compute-sanitizer (absent or not enough time left)"
fi

# ---- 4. kosmos2-rs benchmark -------------------------------------------------------------------
if [ -x "$bin/cuda_bench" ]; then
    say "== kosmos2-rs benchmark"
    KOSMOS2_REQUIRE_GPU=1 KOSMOS2_BENCH_OUT="$out/bench_rs.jsonl" \
        timeout "$(( $(left) > 240 ? 180 : $(left) / 2 ))" "$bin/cuda_bench" --ignored --nocapture --test-threads=1
    rc=$?
    [ $rc -eq 0 ] || { say "cuda_bench failed (rc $rc)"; status=1; }
else
    say "no cuda_bench binary"
    status=1
fi

# ---- 5. HF transformers eager bf16 ------------------------------------------------------------
if [ "$(left)" -gt 60 ]; then
    say "== HF transformers eager bf16"
    PYTHONUNBUFFERED=1 timeout "$(($(left) - 20))" python3 scripts/device/hf_bench.py --out "$out/bench_hf.jsonl"
    rc=$?
    [ $rc -eq 0 ] || { say "hf_bench failed or ran out of time (rc $rc)"; status=1; }
else
    say "no time left for the HF benchmark"
    status=1
fi

# ---- 6. table -------------------------------------------------------------------------------------
say "== results"
python3 scripts/device/table.py --tests "$tsv" --rs "$out/bench_rs.jsonl" --hf "$out/bench_hf.jsonl" \
    --out "$out/table.md"
say "done, status $status"
exit $status

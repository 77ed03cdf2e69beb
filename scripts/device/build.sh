#!/usr/bin/env bash
# Run HERE (an x86-64 CPU machine with Rust): builds the GPU test and bench binaries with the
# `cuda` feature and copies them, stripped, into target/device-check/bin, which the device check
# carries to the GPU machine (which has no Rust). See docs/cuda.md.
#
#   scripts/device/build.sh            # then: run(command="bash scripts/device-check.sh",
#                                      #           carry=["target/device-check"], timeout_s=540)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
dest="target/device-check"
rm -rf "$dest"
mkdir -p "$dest/bin"
# Release: the host-side reference code of the tests runs optimised; no debug info to carry.
export CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
cargo test --release --no-run --features cuda -p kosmos-tensor --message-format=json \
    --test cuda_ops --test cuda_attention --test cuda_gemm --test cuda_decode --test cuda_bench \
    >"$dest/cargo.json"
python3 - "$dest" <<'PY'
import json, os, shutil, sys
dest = sys.argv[1]
for line in open(os.path.join(dest, "cargo.json")):
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["kind"] == ["test"]:
        name = msg["target"]["name"]
        shutil.copy2(msg["executable"], os.path.join(dest, "bin", name))
        print(f"  {name:<16} {os.path.getsize(msg['executable']) / 2**20:6.1f} MiB")
PY
rm "$dest/cargo.json"
git rev-parse HEAD >"$dest/commit" 2>/dev/null || true
git status --short kernels crates/kosmos-tensor >"$dest/dirty" 2>/dev/null || true
du -sh "$dest"

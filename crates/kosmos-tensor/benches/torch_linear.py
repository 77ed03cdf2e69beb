"""PyTorch side of the `gemv` bench (`KOSMOS2_BENCH_HF=<python>`): times `torch.nn.functional.linear`
on the shapes the Rust bench sends, in the same run, alternating with the Rust side.

Protocol (one command per stdin line, one reply line each):
  prep M K N DTYPE COUNT   build COUNT distinct [N, K] weights and one [M, K] x in DTYPE -> "ok"
  time ITERS               ITERS calls of linear(x, w[i % COUNT]) -> total seconds
  quit
argv[1] is the thread count (torch.set_num_threads; OMP_NUM_THREADS is set by the caller too).
"""

import sys
import time

import torch

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]))
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}", flush=True)
    ws, x, i = [], None, 0
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "prep":
            m, k, n, dt, count = int(cmd[1]), int(cmd[2]), int(cmd[3]), DTYPES[cmd[4]], int(cmd[5])
            ws, x = [], None
            ws = [(torch.rand(n, k) - 0.5).to(dt) for _ in range(count)]
            x = (torch.rand(m, k) - 0.5).to(dt)
            for w in ws[:2]:  # warm-up (oneDNN primitive creation, page faults)
                torch.nn.functional.linear(x, w)
            i = 0
            print("ok", flush=True)
        elif cmd[0] == "time":
            iters = int(cmd[1])
            t = time.perf_counter()
            for _ in range(iters):
                torch.nn.functional.linear(x, ws[i % len(ws)])
                i += 1
            print(f"{time.perf_counter() - t:.9f}", flush=True)
        else:
            print(f"error unknown command {cmd[0]}", flush=True)


if __name__ == "__main__":
    main()

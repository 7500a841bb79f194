#!/usr/bin/env python3
"""PyTorch reference of the DSA indexer (SPEC 3, 4.1) and the card's ceilings.

The plain-PyTorch baseline of SPEC 8: bf16 matmul of queries and keys, ReLU,
weighted head sum (as a batched GEMV), causal mask, torch.topk, sorted output.
Shapes as bench/gpu/gpu_select_bench.cc: H = 64, D = 128, k = 2048; prefill
(1024 rows at the end of the prefix), full causal prefill (every row, in
chunks of rows, each chunk scoring only the keys it can see) and decode (64
and 256 requests x 1 row, each request its own keys). Times: CUDA events,
median after warm-up, each run on a cold L2. Ceilings: bf16 and fp8
(torch._scaled_mm) 8192^3 GEMMs and a device-to-device copy.

  python3 torch_reference.py --lengths 8192,65536 --json torch.json
"""
import argparse
import json
import math
import sys
import time

import torch

H, D, K = 64, 128, 2048


_flush = None


def cuda_time(fn, warmup=2, reps=5):
    """Median time of fn, each run after a write of twice the L2's size: a
    cold L2, and the GPU busy while the host enqueues fn's kernels (as
    gpu_select_bench.cc times ours)."""
    global _flush
    if _flush is None:
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size",
                     64 << 20)
        _flush = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        _flush.zero_()
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def ceilings(out):
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = cuda_time(lambda: torch.matmul(a, b), 3, 10)
    out.append({"kind": "ceiling", "name": "bf16_gemm_TFLOPs",
                "value": 2 * n ** 3 / (ms * 1e-3) / 1e12})
    try:
        a8 = a.to(torch.float8_e4m3fn)
        b8 = b.to(torch.float8_e4m3fn).t().contiguous().t()  # column-major
        one = torch.tensor(1.0, device="cuda")
        ms = cuda_time(lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one,
                                                out_dtype=torch.bfloat16), 3, 10)
        out.append({"kind": "ceiling", "name": "fp8_gemm_TFLOPs",
                    "value": 2 * n ** 3 / (ms * 1e-3) / 1e12})
    except Exception as exc:  # noqa: BLE001 - report and go on
        print("fp8 GEMM ceiling failed:", exc, file=sys.stderr)
    del a, b
    x = torch.empty(1 << 31, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_time(lambda: y.copy_(x), 2, 8)
    out.append({"kind": "ceiling", "name": "torch_copy_GBps",
                "value": 2 * x.numel() / (ms * 1e-3) / 1e9})
    del x, y
    torch.cuda.empty_cache()


def select(q, w, keys, t):
    """q [R,H,D] bf16, w [R,H] bf16, keys [L,D] bf16, t [R] positions."""
    r = q.shape[0]
    logits = torch.matmul(q.reshape(r * H, D), keys.t()).relu_()  # [R*H, L]
    scores = torch.bmm(w.unsqueeze(1), logits.view(r, H, -1)).squeeze(1)
    cols = torch.arange(keys.shape[0], device="cuda")
    scores = scores.float().masked_fill_(cols[None, :] > t[:, None], float("-inf"))
    k = min(K, keys.shape[0])
    idx = torch.topk(scores, k, dim=-1).indices
    return torch.sort(idx, dim=-1).values


def select_decode(q, w, keys, t):
    """q [R,H,D], w [R,H], keys [R,L,D]: one row per request."""
    logits = torch.bmm(q, keys.transpose(1, 2)).relu_()  # [R, H, L]
    scores = torch.bmm(w.unsqueeze(1), logits).squeeze(1).float()
    cols = torch.arange(keys.shape[1], device="cuda")
    scores = scores.masked_fill_(cols[None, :] > t[:, None], float("-inf"))
    idx = torch.topk(scores, min(K, keys.shape[1]), dim=-1).indices
    return torch.sort(idx, dim=-1).values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="8192,16384,32768,65536,131072")
    ap.add_argument("--json", default="torch.json")
    ap.add_argument("--causal-max", type=int, default=131072,
                    help="longest L for the full causal prefill")
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    torch.manual_seed(0)
    out = []
    props = torch.cuda.get_device_properties(0)
    print(f"torch {torch.__version__} on {props.name}")
    ceilings(out)
    for c in out:
        print(f"ceiling {c['name']}: {c['value']:.1f}")
    max_len = max(lengths)
    keys = torch.randn(max_len, D, device="cuda", dtype=torch.bfloat16)
    for L in lengths:
        kl = keys[:L]
        # Prefill shape: 1024 rows at the end.
        r = min(1024, L)
        q = torch.randn(r, H, D, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(r, H, device="cuda", dtype=torch.bfloat16)
        t = torch.arange(L - r, L, device="cuda")
        chunk = max(1, min(r, (8 << 30) // (H * L * 2)))

        def prefill():
            for s in range(0, r, chunk):
                select(q[s:s + chunk], w[s:s + chunk], kl, t[s:s + chunk])

        ms = cuda_time(prefill)
        out.append({"kind": "torch", "shape": "prefill1024", "L": L, "ms": ms})
        print(f"torch prefill1024 L={L}: {ms:.3f} ms")
        # Full causal prefill in chunks of 1024 rows.
        if L <= args.causal_max:
            qc = torch.randn(1024, H, D, device="cuda", dtype=torch.bfloat16)
            wc = torch.randn(1024, H, device="cuda", dtype=torch.bfloat16)

            def causal():
                for s in range(0, L, 1024):
                    e = min(L, s + 1024)
                    tt = torch.arange(s, e, device="cuda")
                    select(qc[:e - s], wc[:e - s], kl[:e], tt)

            t0 = time.time()
            ms = cuda_time(causal, warmup=1, reps=1 if L >= 65536 else 3)
            out.append({"kind": "torch", "shape": "causal", "L": L, "ms": ms})
            print(f"torch causal L={L}: {ms:.1f} ms (wall {time.time() - t0:.1f} s)")
        # Decode: 64 and 256 requests x 1 row, each with its own keys.
        for req in (64, 256):
            kd = torch.randn(req, L, D, device="cuda", dtype=torch.bfloat16)
            qd = torch.randn(req, H, D, device="cuda", dtype=torch.bfloat16)
            wd = torch.randn(req, H, device="cuda", dtype=torch.bfloat16)
            td = torch.full((req,), L - 1, device="cuda")
            ms = cuda_time(lambda: select_decode(qd, wd, kd, td))
            out.append({"kind": "torch", "shape": f"decode{req}", "L": L, "ms": ms})
            print(f"torch decode{req} L={L}: {ms:.3f} ms")
            del kd, qd, wd
            torch.cuda.empty_cache()
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

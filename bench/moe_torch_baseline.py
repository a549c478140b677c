#!/usr/bin/env python3
"""PyTorch baseline for the fused MXFP4 MoE benchmark (bench/gpu/fused_moe_bench.cpp).

The way a user checks an MoE layer by hand: dequantize the MXFP4 experts to bf16 once, then
per call compute router logits, top-k + softmax, and loop over the experts that got tokens with
two bf16 matmuls each (GPT-OSS gate/up rule and clamped SwiGLU), scattering weighted results back.
Same shape as the C++ benchmark: E = 128, H = I = 2880, top-4, T in 1, 64, 512, 4096.

Also measures the two device ceilings the C++ benchmark's figures are judged against: the
device-to-device copy rate (bytes read + written) and the bf16 matrix rate (8192^3 matmul).

Timing: CUDA events around each call, median over repetitions after warm-up, rotating over
several input sets so that calls route to different experts.
Usage: moe_torch_baseline.py [--json PATH] [--ceilings-only]  (the latter: copy and matmul rates only)
"""
import argparse
import json
import statistics

import torch

E, H, I, TOPK = 128, 2880, 2880, 4
ALPHA, LIMIT = 1.702, 7.0
INPUT_SETS = 4


def time_ms(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def copy_rate_tbps():
    n = 1 << 30
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), 20)
    return 2 * n / (ms / 1e3) / 1e12


def matmul_rate_tflops():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = time_ms(lambda: a @ b, 10)
    return 2 * n**3 / (ms / 1e3) / 1e12


FP4_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def dequantize_mxfp4(blocks, scales):
    """[..., G, 16] uint8 codes (low nibble first) + [..., G] E8M0 -> [..., G*32] bf16."""
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32, device=blocks.device)
    lo = lut[(blocks & 0x0F).long()]
    hi = lut[(blocks >> 4).long()]
    vals = torch.stack((lo, hi), dim=-1).reshape(*blocks.shape[:-1], 32)
    vals = torch.ldexp(vals, (scales.to(torch.int32) - 127).unsqueeze(-1))
    return vals.reshape(*blocks.shape[:-2], -1).to(torch.bfloat16)


def make_layer():
    g = torch.Generator(device="cuda").manual_seed(0)
    gu_blocks = torch.randint(0, 256, (E, 2 * I, H // 32, 16), dtype=torch.uint8, device="cuda", generator=g)
    gu_scales = torch.randint(118, 123, (E, 2 * I, H // 32), dtype=torch.uint8, device="cuda", generator=g)
    dn_blocks = torch.randint(0, 256, (E, H, I // 32, 16), dtype=torch.uint8, device="cuda", generator=g)
    dn_scales = torch.randint(118, 123, (E, H, I // 32), dtype=torch.uint8, device="cuda", generator=g)

    def dequant():
        # Expert by expert, as a user would to bound the temporaries.
        w13 = torch.empty(E, 2 * I, H, dtype=torch.bfloat16, device="cuda")
        w2 = torch.empty(E, H, I, dtype=torch.bfloat16, device="cuda")
        for e in range(E):
            w13[e] = dequantize_mxfp4(gu_blocks[e], gu_scales[e])
            w2[e] = dequantize_mxfp4(dn_blocks[e], dn_scales[e])
        return w13, w2

    torch.cuda.synchronize()
    a = torch.cuda.Event(enable_timing=True)
    b = torch.cuda.Event(enable_timing=True)
    a.record()
    w13, w2 = dequant()
    b.record()
    b.synchronize()
    dequant_ms = a.elapsed_time(b)
    del gu_blocks, dn_blocks
    layer = {
        "w13": w13,
        "b13": (0.1 * torch.randn(E, 2 * I, device="cuda", generator=g)).to(torch.bfloat16),
        "w2": w2,
        "b2": (0.1 * torch.randn(E, H, device="cuda", generator=g)).to(torch.bfloat16),
        "router_w": (0.02 * torch.randn(E, H, device="cuda", generator=g)).to(torch.bfloat16),
        "router_b": (0.1 * torch.randn(E, device="cuda", generator=g)).to(torch.bfloat16),
    }
    return layer, dequant_ms


def moe_forward(layer, x):
    logits = (x @ layer["router_w"].T + layer["router_b"]).float()
    top_vals, top_ids = torch.topk(logits, TOPK, dim=-1)
    weights = torch.softmax(top_vals, dim=-1)
    flat_ids = top_ids.reshape(-1)
    order = torch.argsort(flat_ids, stable=True)
    counts = torch.bincount(flat_ids, minlength=E).tolist()  # one host sync per call
    tokens = order // TOPK
    out = torch.zeros(x.shape[0], H, dtype=torch.float32, device=x.device)
    start = 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        sel = order[start:start + c]
        tok = tokens[start:start + c]
        start += c
        h = x[tok] @ layer["w13"][e].T + layer["b13"][e]
        gate, up = h[:, 0::2].float(), h[:, 1::2].float()
        gate = gate.clamp(max=LIMIT)
        up = up.clamp(-LIMIT, LIMIT)
        act = (gate * torch.sigmoid(ALPHA * gate) * (up + 1)).to(torch.bfloat16)
        y = (act @ layer["w2"][e].T + layer["b2"][e]).float()
        out.index_add_(0, tok, y * weights.reshape(-1)[sel].unsqueeze(1))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--ceilings-only", action="store_true", help="measure the copy and matmul rates only")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    result = {"device": torch.cuda.get_device_name(0)}
    result["copy_tbps"] = copy_rate_tbps()
    result["matmul_bf16_tflops"] = matmul_rate_tflops()
    if args.ceilings_only:
        print(f"device {result['device']}: copy {result['copy_tbps']:.2f} TB/s, bf16 matmul "
              f"{result['matmul_bf16_tflops']:.0f} TFLOP/s")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        return
    layer, dequant_ms = make_layer()
    result["dequantize_layer_ms"] = dequant_ms
    result["moe_ms"] = {}
    for T in (1, 64, 512, 4096):
        xs = [torch.randn(T, H, device="cuda").to(torch.bfloat16) for _ in range(INPUT_SETS)]
        i = [0]

        def call():
            moe_forward(layer, xs[i[0] % INPUT_SETS])
            i[0] += 1

        reps = 40 if T <= 512 else 15
        result["moe_ms"][str(T)] = time_ms(call, reps)
        print(f"torch baseline T={T}: {result['moe_ms'][str(T)]:.3f} ms", flush=True)
    print(f"device {result['device']}: copy {result['copy_tbps']:.2f} TB/s, bf16 matmul "
          f"{result['matmul_bf16_tflops']:.0f} TFLOP/s, dequantize one layer {dequant_ms:.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

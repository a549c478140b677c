#!/usr/bin/env python3
"""The routers as PyTorch op chains (topk + softmax + gather + multiply, and the sglang-style
grouped chain), timed on the GPU the way bench/gpu/router_bench.cpp times the fused kernel:
CUDA events around back-to-back calls (median of 21), and the same calls replayed from a CUDA
graph; inputs rotate through ~200 MB at large T so that times are DRAM times, not L2 times.
triton.testing.do_bench (median, L2 flushed per call) is printed too as a cross-check.

With --fused-csv (router_bench's --csv output) it prints the speed-up table
torch / fused per mode, and writes it as Markdown to --markdown.

With --read-probe (--read-probe-only: nothing else) it also times torch.amax over E at T >= 4096, timed the same way: one launch
that reads every logit once and writes one value a token, i.e. what reading the rows costs
without any selection (bench/NOTES-router.md, "Where the rest is"). Printed last, after the
tables, so that a failure there leaves them intact.
"""
import argparse
import csv
import statistics

import torch

E = 128
TOKENS = [1, 64, 4096, 16384]
KS = [4, 6, 8]
SETS = 25


def chain(variant, k, bias, scale):
    if variant == "softmax_after_topk":
        def f(x):
            v, i = torch.topk(x, k, dim=-1)
            return torch.softmax(v, dim=-1), i
    elif variant == "gemma4":
        def f(x):
            v, i = torch.topk(x, k, dim=-1)
            return torch.softmax(v, dim=-1) * scale[i], i  # gather + multiply
    elif variant == "sigmoid_grouped_biased":
        n_group, topk_group = 8, 4

        def f(x):  # sglang biased_grouped_topk_impl
            t = x.shape[0]
            s = x.sigmoid()
            c = s + bias
            g = c.view(t, n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
            gi = g.topk(topk_group, dim=-1, sorted=False)[1]
            gm = torch.zeros_like(g).scatter_(1, gi, 1)
            m = gm.unsqueeze(-1).expand(t, n_group, E // n_group).reshape(t, -1)
            _, i = c.masked_fill(~m.bool(), float("-inf")).topk(k, dim=-1)
            w = s.gather(1, i)
            return w / (w.sum(dim=-1, keepdim=True) + 1e-20) * 2.5, i
    else:
        raise ValueError(variant)
    return f


def time_stream_us(fn, inputs, calls, reps=21):
    for i in range(calls):
        fn(inputs[i % len(inputs)])
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(reps):
        a.record()
        for i in range(calls):
            fn(inputs[i % len(inputs)])
        b.record()
        b.synchronize()
        out.append(1000.0 * a.elapsed_time(b) / calls)
    return statistics.median(out)


def time_graph_us(fn, inputs, calls, reps=21):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            fn(inputs[i % len(inputs)])
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(inputs[i % len(inputs)])
    return time_stream_us(lambda _: g.replay(), [None], 1, reps) / calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv")
    ap.add_argument("--fused-csv")
    ap.add_argument("--markdown")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--read-probe", action="store_true")
    ap.add_argument("--read-probe-only", action="store_true", help="the read probe alone, no chains")
    args = ap.parse_args()
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    gen = torch.Generator(device=dev).manual_seed(1)
    big = torch.randn(SETS, 16384, E, device=dev, generator=gen) * 2.0
    bias = (torch.arange(E, device=dev) % 7).float() * 0.01 - 0.03
    scale = 0.5 + torch.arange(E, device=dev).float() / E
    try:
        import triton.testing as tt
    except ImportError:
        tt = None
    if args.read_probe_only:
        print(f"device: {name}, torch {torch.__version__}")
        read_probe(big)
        return
    rows = []
    for variant in ["softmax_after_topk", "gemma4", "sigmoid_grouped_biased"]:
        for t in TOKENS:
            for k in KS:
                if args.quick and k != 8:
                    continue
                inputs = [big[s, :t] for s in range(SETS if t >= 4096 else 1)]
                fn = chain(variant, k, bias, scale)
                calls = 50 if t >= 4096 else 200
                stream = time_stream_us(fn, inputs, calls)
                graph = time_graph_us(fn, inputs, calls)
                db = tt.do_bench(lambda: fn(inputs[0]), return_mode="median") * 1000.0 if tt else float("nan")
                rows.append(dict(device=name, variant=variant, T=t, E=E, k=k, stream_us=stream, graph_us=graph,
                                 do_bench_us=db))
    print(f"device: {name}, torch {torch.__version__}")
    print(f"{'variant':22s} {'T':>6s} {'k':>2s} {'stream_us':>10s} {'graph_us':>10s} {'do_bench':>10s}")
    for r in rows:
        print(f"{r['variant']:22s} {r['T']:6d} {r['k']:2d} {r['stream_us']:10.2f} {r['graph_us']:10.2f} "
              f"{r['do_bench_us']:10.2f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    if args.fused_csv:
        fused = {}
        with open(args.fused_csv) as f:
            for r in csv.DictReader(f):
                fused[(r["variant"], int(r["T"]), int(r["k"]))] = r
        lines = ["| variant | T | k | fused stream us | torch stream us | ratio | fused graph us | torch graph us "
                 "| ratio | floor us | fused / floor |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            f_ = fused.get((r["variant"], r["T"], r["k"]))
            if not f_:
                continue
            fs, fg, fl = float(f_["stream_us"]), float(f_["graph_us"]), float(f_["floor_us"])
            # The floor ratio means something only once the bytes dominate (T >= 4096).
            over_floor = f"{min(fs, fg) / fl:.2f}" if r["T"] >= 4096 and fl > 0 else "-"
            lines.append(f"| {r['variant']} | {r['T']} | {r['k']} | {fs:.2f} | {r['stream_us']:.2f} | "
                         f"{r['stream_us'] / fs:.1f}x | {fg:.2f} | {r['graph_us']:.2f} | {r['graph_us'] / fg:.1f}x | "
                         f"{fl:.2f} | {over_floor} |")
        print("\n".join(lines))
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write("\n".join(lines) + "\n")
    if args.read_probe:
        read_probe(big)


def read_probe(big):
    """torch.amax over E: every logit read once, one float a token written, one launch."""
    print("read probe: torch.amax(x, dim=-1), fp32, E = 128 (a reader without selection)")
    print(f"{'T':>6s} {'stream_us':>10s} {'graph_us':>10s}")
    try:
        for t in [4096, 16384]:
            inputs = [big[s, :t] for s in range(SETS)]
            fn = lambda x: torch.amax(x, dim=-1)  # noqa: E731
            print(f"{t:6d} {time_stream_us(fn, inputs, 50):10.2f} {time_graph_us(fn, inputs, 50):10.2f}")
    except Exception as e:  # a probe only: report and go on
        print(f"read probe failed: {e}")


if __name__ == "__main__":
    main()

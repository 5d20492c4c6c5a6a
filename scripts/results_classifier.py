#!/usr/bin/env python3
"""Produces docs/RESULTS_CLASSIFIER.md: the MLP and CNN trained on Fashion-MNIST by lowbit, then
static PTQ with every observer, dynamic quantization, weight-only and QAT at W8A8, W4A8 and W4A4:
test accuracy, parameter bytes, median latency of one image and of a batch of 64, and whether
inference is integer-only.

    scripts/results_classifier.py [--build DIR] [--work DIR] [--models mlp,cnn] [--threads N]

Everything runs through the `lowbit` CLI (train, calibrate, convert, eval --json --latency), so
each row can be reproduced by hand with the commands printed as it runs. Latencies are measured
with one thread (--latency-threads) so they compare with a single-threaded run of another tool.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBSERVERS = ["minmax", "moving-average", "percentile", "kl", "mse"]
BITS = [(8, 8), (4, 8), (4, 4)]


def run(cmd, log):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    log.write("$ " + " ".join(cmd) + "\n")
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    log.write(out)
    return out


def run_json(cmd, log):
    return json.loads(run(cmd + ["--json"], log).strip().splitlines()[-1])


class Runner:
    def __init__(self, args, log):
        self.lowbit = os.path.join(args.build, "lowbit")
        self.work = args.work
        self.threads = str(args.threads)
        self.latency_threads = str(args.latency_threads)
        self.log = log
        self.extra = ["--data", args.data] if args.data else []
        self.reuse = args.reuse_float

    def path(self, name):
        return os.path.join(self.work, name)

    def train(self, arch, out, qat_from=None, wbits=8, abits=8):
        cmd = [self.lowbit, "train", "-o", out, "--threads", self.threads] + self.extra
        if qat_from:
            cmd += ["--qat", "--from", qat_from, "--wbits", str(wbits), "--abits", str(abits)]
        else:
            cmd += ["--arch", arch]
        return run_json(cmd, self.log)

    def calibrate(self, model, out, observer, abits):
        return run_json([self.lowbit, "calibrate", model, "-o", out, "--observer", observer,
                         "--abits", str(abits), "--threads", self.threads] + self.extra, self.log)

    def convert(self, model, out, mode, wbits, abits):
        return run_json([self.lowbit, "convert", model, "-o", out, "--mode", mode,
                         "--wbits", str(wbits), "--abits", str(abits)], self.log)

    def eval(self, model):
        return run_json([self.lowbit, "eval", model, "--latency", "--threads",
                         self.latency_threads] + self.extra, self.log)


def row(name, scheme, bits, r, base):
    return {"model": name, "scheme": scheme, "bits": bits, "accuracy": r["accuracy"],
            "delta": None if base is None else 100.0 * (r["accuracy"] - base),
            "bytes": r["parameter_bytes"], "single_ms": r["latency_single_ms"],
            "batch_ms": r["latency_batch64_ms"], "integer_only": r["integer_only"]}


def evaluate_model(runner, arch, rows, train_seconds):
    float_path = runner.path(f"{arch}-float.gguf")
    if runner.reuse and os.path.exists(float_path):
        train_seconds[arch] = (0, None)
    else:
        t0 = time.time()
        trained = runner.train(arch, float_path)
        train_seconds[arch] = (time.time() - t0, trained.get("train_seconds"))
    base_result = runner.eval(float_path)
    base = base_result["accuracy"]
    rows.append(row(arch, "float", "F32", base_result, None))
    for wbits in sorted({w for w, _ in BITS}, reverse=True):
        q = runner.path(f"{arch}-w{wbits}-weight-only.gguf")
        runner.convert(float_path, q, "weight-only", wbits, 8)
        rows.append(row(arch, "weight-only", f"W{wbits}", runner.eval(q), base))
    for wbits, abits in BITS:
        tag = f"W{wbits}A{abits}"
        for obs in OBSERVERS:
            cal = runner.path(f"{arch}-{obs}-a{abits}.gguf")
            if not os.path.exists(cal):
                runner.calibrate(float_path, cal, obs, abits)
            q = runner.path(f"{arch}-{obs}-{tag}.gguf")
            runner.convert(cal, q, "static", wbits, abits)
            rows.append(row(arch, f"static PTQ, {obs}", tag, runner.eval(q), base))
        q = runner.path(f"{arch}-dynamic-{tag}.gguf")
        runner.convert(float_path, q, "dynamic", wbits, abits)
        rows.append(row(arch, "dynamic", tag, runner.eval(q), base))
        qat = runner.path(f"{arch}-qat-{tag}-float.gguf")
        runner.train(arch, qat, qat_from=float_path, wbits=wbits, abits=abits)
        q = runner.path(f"{arch}-qat-{tag}.gguf")
        runner.convert(qat, q, "static", wbits, abits)
        rows.append(row(arch, "QAT", tag, runner.eval(q), base))
    return base


def goals(rows, arch, base):
    """The issue's goals, checked on the measured rows."""
    def best(scheme_prefix, bits):
        cands = [r for r in rows if r["model"] == arch and r["bits"] == bits
                 and r["scheme"].startswith(scheme_prefix)]
        return max(cands, key=lambda r: r["accuracy"]) if cands else None
    lines = []
    ptq8 = best("static PTQ", "W8A8")
    qat8 = best("QAT", "W8A8")
    ptq44 = best("static PTQ", "W4A4")
    qat44 = best("QAT", "W4A4")
    if ptq8:
        d = 100 * (base - ptq8["accuracy"])
        lines.append(f"W8A8 static PTQ ({ptq8['scheme'].split(', ')[1]}) is {-d:+.2f} points from float "
                     f"(goal: loses at most 0.5): {'met' if d <= 0.5 else 'NOT met'}")
    if qat8:
        d = 100 * (base - qat8["accuracy"])
        lines.append(f"W8A8 QAT is {-d:+.2f} points from float (goal: loses at most 0.2): {'met' if d <= 0.2 else 'NOT met'}")
    if ptq44 and qat44:
        lost = base - ptq44["accuracy"]
        recovered = qat44["accuracy"] - ptq44["accuracy"]
        share = recovered / lost if lost > 0 else 1.0
        lines.append(f"W4A4: best static PTQ loses {100 * lost:.2f} points, QAT recovers "
                     f"{100 * recovered:.2f} of them ({100 * share:.0f}%; goal >= 50%): "
                     f"{'met' if share >= 0.5 else 'NOT met'}")
    return lines


def write_markdown(path, rows, bases, train_seconds, args):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    out = []
    out.append("# Image classifiers: float, PTQ, dynamic, weight-only and QAT on Fashion-MNIST\n")
    out.append("Produced by `scripts/results_classifier.py` (" + time.strftime("%Y-%m-%d") +
               f", {cpu}, {os.cpu_count()} CPUs). Every model was trained by `lowbit train` "
               "with its default hyperparameters and the seed 1; accuracy is on the 10,000 test "
               "images. Static PTQ calibrates on the first 500 training images. Latency: median "
               f"of repeated runs with {args.latency_threads} thread(s), one image and a batch of "
               "64 (`lowbit eval MODEL --latency`). Bytes: weights and biases as stored (4-bit "
               "weights packed two per byte; scales and multipliers included for quantized "
               "models).\n")
    for arch in bases:
        wall, inner = train_seconds.get(arch, (0, None))
        out.append(f"\n## {arch.upper()}\n")
        if inner or wall:
            out.append(f"Float training: {inner or wall:.0f} s on {args.threads} thread(s).\n")
        out.append("| scheme | bits | accuracy | vs float | bytes | 1 image (ms) | batch 64 (ms) "
                   "| integer-only |")
        out.append("|---|---|---:|---:|---:|---:|---:|---|")
        for r in rows:
            if r["model"] != arch:
                continue
            delta = "" if r["delta"] is None else f"{r['delta']:+.2f}"
            out.append(f"| {r['scheme']} | {r['bits']} | {100 * r['accuracy']:.2f}% | {delta} | "
                       f"{r['bytes']:,} | {r['single_ms']:.4f} | {r['batch_ms']:.3f} | "
                       f"{'yes' if r['integer_only'] else 'no'} |")
        out.append("\nGoals:\n")
        for line in goals(rows, arch, bases[arch]):
            out.append(f"- {line}")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build", "results-classifier"))
    p.add_argument("--work", default=os.path.join(ROOT, "build", "results-classifier-models"))
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--latency-threads", type=int, default=1)
    p.add_argument("--data", default=None, help="Fashion-MNIST folder (default: lowbit's)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "RESULTS_CLASSIFIER.md"))
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--reuse-float", action="store_true",
                   help="keep float models already trained in --work (training is deterministic)")
    args = p.parse_args()
    if not args.no_build:
        subprocess.run(["cmake", "-S", ROOT, "-B", args.build, "-DCMAKE_BUILD_TYPE=Release"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", args.build, "-j", str(os.cpu_count()), "--target",
                        "lowbit"], check=True, stdout=subprocess.DEVNULL)
    os.makedirs(args.work, exist_ok=True)
    rows, bases, train_seconds = [], {}, {}
    with open(os.path.join(args.work, "commands.log"), "w") as log:
        runner = Runner(args, log)
        for arch in args.models.split(","):
            bases[arch] = evaluate_model(runner, arch, rows, train_seconds)
            write_markdown(args.out, rows, bases, train_seconds, args)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

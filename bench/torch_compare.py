#!/usr/bin/python3
"""Side-by-side comparison of lowbit's classifier quantization with PyTorch's.

Not part of the build or of CI. Needs Debian's python3-torch (run with /usr/bin/python3) and
libopenblas0-pthread (without it torch's float matrix products are very slow), plus a lowbit
binary with the classifier commands.

For every float model given (a lowbit GGUF file, docs/CLASSIFIER_FILES.md):
  1. reads the file with the small GGUF reader below and builds the same network in PyTorch
     (NCHW: conv weights permuted to [out, ci, ky, kx], the columns of a linear layer that
     follows a flatten permuted from HWC to CHW order, batch norm in eval mode);
  2. checks that the torch float accuracy on the test images equals lowbit's float accuracy;
  3. runs torch.ao.quantization's dynamic, static (eager mode) and QAT flows on the qnnpack
     engine, with the calibration images, epochs, batch size, optimizer and learning rate that
     lowbit uses;
  4. runs the matching lowbit commands (calibrate / convert / train --qat / eval) on the same
     file;
  5. prints accuracy and single-thread latency (one image, a batch of 64) side by side.

Example:
  /usr/bin/python3 bench/torch_compare.py --model /tmp/mlp.gguf --model /tmp/cnn.gguf \
      --lowbit build/release/lowbit
"""

import argparse
import copy
import gzip
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.ao.quantization as tq
import torch.ao.nn.quantized.dynamic as nnqd

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
DEFAULT_LOWBIT = "/work/main/build/release/lowbit"

# lowbit's QAT defaults (`lowbit train --qat`, fill_train_defaults in lib/nn/classifier_api.c):
# Adam, 2 epochs, a tenth of the float learning rate, and batch size and learning rate that
# depend on whether the net has convolutions. The learning rate follows a cosine decay to 0 over
# the run, as lowbit's trainer does (lib/nn/train.c); weight decay is decoupled (AdamW) and on
# weights only. The script passes epochs, batch and learning rate to `lowbit train` explicitly,
# so both sides use the same values even if lowbit's defaults move.
QAT_EPOCHS = 2
QAT_BATCH = {"mlp": 64, "cnn": 128}
QAT_LR = {"mlp": 1e-4, "cnn": 3e-4}
QAT_WEIGHT_DECAY = 1e-4
CALIBRATION_IMAGES = 500  # `lowbit calibrate` default: the first 500 training images
CALIBRATION_BATCH = 32    # lowbit's observed batch size (matters only for moving averages)


# ---- GGUF v3 ---------------------------------------------------------------------------------

class GGUFError(Exception):
    pass


# GGUF metadata value types: struct format of each scalar type; 8 = string, 9 = array.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# ggml tensor types this script can map to numpy (float models only need F32).
_GGML_TYPES = {0: np.float32, 1: np.float16, 24: np.int8, 25: np.int16, 26: np.int32,
               27: np.int64, 28: np.float64}


class _Cursor:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise GGUFError("truncated file at byte %d" % self.pos)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def scalar(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.scalar("<Q")
        return self.take(n).decode("utf-8")

    def value(self, vtype):
        if vtype in _GGUF_SCALARS:
            return self.scalar(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype == _GGUF_ARRAY:
            item_type = self.scalar("<I")
            count = self.scalar("<Q")
            return [self.value(item_type) for _ in range(count)]
        raise GGUFError("unknown metadata value type %d" % vtype)


def read_gguf(path):
    """Returns (metadata dict, OrderedDict name -> numpy array). Arrays are shaped with the
    GGUF dimensions reversed (ne0, the contiguous one, last), as numpy's C order wants."""
    with open(path, "rb") as f:
        data = f.read()
    c = _Cursor(data)
    if c.take(4) != b"GGUF":
        raise GGUFError("%s: not a GGUF file" % path)
    version = c.scalar("<I")
    if version != 3:
        raise GGUFError("%s: GGUF version %d, expected 3" % (path, version))
    n_tensors = c.scalar("<Q")
    n_kv = c.scalar("<Q")
    meta = OrderedDict()
    for _ in range(n_kv):
        key = c.string()
        meta[key] = c.value(c.scalar("<I"))
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.scalar("<I")
        dims = [c.scalar("<Q") for _ in range(n_dims)]
        ttype = c.scalar("<I")
        offset = c.scalar("<Q")
        infos.append((name, dims, ttype, offset))
    alignment = int(meta.get("general.alignment", 32))
    data_start = (c.pos + alignment - 1) // alignment * alignment
    tensors = OrderedDict()
    for name, dims, ttype, offset in infos:
        if ttype not in _GGML_TYPES:
            raise GGUFError("%s: tensor %s has type %d, not supported here" % (path, name, ttype))
        dtype = np.dtype(_GGML_TYPES[ttype])
        count = int(np.prod(dims)) if dims else 1
        begin = data_start + offset
        end = begin + count * dtype.itemsize
        if end > len(data):
            raise GGUFError("%s: tensor %s runs past the end of the file" % (path, name))
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=begin)
        tensors[name] = arr.reshape(list(reversed(dims))).copy()
    return meta, tensors


# ---- the torch model -------------------------------------------------------------------------

class QuantizableNet(nn.Module):
    """The lowbit layer list as an eager-mode quantizable torch model (NCHW)."""

    def __init__(self, body, fuse_groups, bn_names):
        super().__init__()
        self.quant = tq.QuantStub()
        self.body = nn.Sequential(body)
        self.dequant = tq.DeQuantStub()
        self.fuse_groups = fuse_groups  # lists of names inside self.body
        self.bn_names = bn_names

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def _t(array):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def build_torch_model(meta, tensors):
    """Builds the torch equivalent of a lowbit float classifier. Returns (model, (h, w, c))."""
    arch = meta.get("general.architecture")
    if arch != "lowbit-classifier":
        raise GGUFError("general.architecture is %r, expected a float lowbit classifier" % arch)
    p = "lowbit-classifier."
    h, w, c = (int(v) for v in meta[p + "input_shape"])
    input_shape = (h, w, c)
    n_layers = int(meta[p + "layer_count"])
    body = OrderedDict()
    kinds = []
    flat_from = None  # (h, w, c) of the activation a flatten consumed, for the next linear
    for i in range(n_layers):
        lp = "%slayer.%d." % (p, i)
        kind = meta[lp + "kind"]
        name = "l%d" % i
        tp = "layer.%d." % i
        if kind == "linear":
            weight = tensors[tp + "weight"]  # [out, K] (K contiguous)
            units = int(meta[lp + "units"])
            if weight.shape[0] != units or weight.shape[1] != h * w * c:
                raise GGUFError("layer %d: weight shape %s" % (i, weight.shape))
            if flat_from is not None and (flat_from[0] * flat_from[1]) > 1:
                # lowbit flattens HWC (index (y*W + x)*C + ch), torch flattens CHW
                # (index ch*H*W + y*W + x): reorder the columns to torch's order.
                fh, fw, fc = flat_from
                weight = weight.reshape(units, fh, fw, fc).transpose(0, 3, 1, 2).reshape(units, -1)
            mod = nn.Linear(h * w * c, units)
            mod.weight.data.copy_(_t(weight))
            mod.bias.data.copy_(_t(tensors[tp + "bias"]))
            h, w, c = 1, 1, units
            flat_from = None
        elif kind == "conv2d":
            units = int(meta[lp + "units"])
            k, s, pad = (int(meta[lp + key]) for key in ("kernel", "stride", "pad"))
            weight = tensors[tp + "weight"]  # [out, ky*kx*ci], rows ordered (ky, kx, ci)
            weight = weight.reshape(units, k, k, c).transpose(0, 3, 1, 2)  # [out, ci, ky, kx]
            mod = nn.Conv2d(c, units, k, stride=s, padding=pad)
            mod.weight.data.copy_(_t(weight))
            mod.bias.data.copy_(_t(tensors[tp + "bias"]))
            h = (h + 2 * pad - k) // s + 1
            w = (w + 2 * pad - k) // s + 1
            c = units
        elif kind == "batchnorm":
            eps = float(meta[lp + "eps"])
            momentum = float(meta.get(lp + "momentum", 0.1))
            flat = h == 1 and w == 1
            mod = (nn.BatchNorm1d if flat else nn.BatchNorm2d)(c, eps=eps, momentum=momentum)
            mod.weight.data.copy_(_t(tensors[tp + "gamma"]))
            mod.bias.data.copy_(_t(tensors[tp + "bias"]))
            mod.running_mean.copy_(_t(tensors[tp + "running_mean"]))
            mod.running_var.copy_(_t(tensors[tp + "running_var"]))
        elif kind == "relu":
            mod = nn.ReLU()
        elif kind == "relu6":
            mod = nn.ReLU6()
        elif kind in ("maxpool", "avgpool"):
            k, s = int(meta[lp + "kernel"]), int(meta[lp + "stride"])
            mod = nn.MaxPool2d(k, s) if kind == "maxpool" else nn.AvgPool2d(k, s)
            h = (h - k) // s + 1
            w = (w - k) // s + 1
        elif kind == "flatten":
            mod = nn.Flatten()
            flat_from = (h, w, c)
            h, w, c = 1, 1, h * w * c
        else:
            raise GGUFError("layer %d: unknown kind %r" % (i, kind))
        body[name] = mod
        kinds.append(kind)
    classes = int(meta[p + "classes"])
    if c != classes or h != 1 or w != 1:
        raise GGUFError("the last layer gives %dx%dx%d, expected %d classes" % (h, w, c, classes))

    # Fusion groups for eager mode: conv+bn(+relu), conv+relu, linear(+bn)(+relu).
    groups, bn_names = [], []
    i = 0
    while i < n_layers:
        if kinds[i] in ("conv2d", "linear"):
            group = ["l%d" % i]
            j = i + 1
            if j < n_layers and kinds[j] == "batchnorm":
                group.append("l%d" % j)
                j += 1
            if j < n_layers and kinds[j] == "relu":
                group.append("l%d" % j)
                j += 1
            if kinds[i] == "linear" and len(group) == 3:
                group.pop()  # torch has no linear+bn+relu fusion: keep relu separate
                j -= 1
            if len(group) > 1:
                groups.append(group)
            i = j
        else:
            if kinds[i] == "batchnorm":
                bn_names.append("l%d" % i)
            i += 1
    model = QuantizableNet(body, groups, bn_names)
    model.eval()
    return model, input_shape


# ---- data --------------------------------------------------------------------------------------

def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, n_dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    dims = struct.unpack(">" + "I" * n_dims, data[4:4 + 4 * n_dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(dims)


def load_split(data_dir, train):
    prefix = "train" if train else "t10k"
    images = read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    return images, labels


def to_input(images, input_shape):
    """uint8 images (n, h, w) -> float NCHW tensor of pixel / 255 (no normalization)."""
    h, w, c = input_shape
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return x.reshape(-1, h, w, c).permute(0, 3, 1, 2).contiguous()


# ---- torch flows ---------------------------------------------------------------------------

def accuracy(model, x, y, batch=500):
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            pred = model(x[i:i + batch]).argmax(dim=1)
            correct += int((pred == y[i:i + batch]).sum())
    return correct, correct / len(x)


def median_latency_ms(model, sample, min_repeats, min_seconds):
    """Median wall time of model(sample) in ms, after warm-up, over at least min_repeats runs
    and min_seconds of measuring."""
    with torch.inference_mode():
        for _ in range(max(5, min_repeats // 10)):
            model(sample)
        times = []
        start = time.perf_counter()
        while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            model(sample)
            times.append(time.perf_counter() - t0)
    times.sort()
    mid = len(times) // 2
    median = times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])
    return median * 1e3


def torch_dynamic(float_model):
    # quantize_dynamic swaps nn.Linear (int8 weights, activations quantized per call); it has
    # no dynamic convolution, so the convs of a CNN stay float.
    m = tq.quantize_dynamic(copy.deepcopy(float_model).eval(), {nn.Linear}, dtype=torch.qint8)
    for mod in m.modules():
        if isinstance(mod, nnqd.Linear):
            # torch 1.13's module passes reduce_range=True, which qnnpack ignores, logging a
            # warning on every call (inside the timed region). Module version 3 calls the op
            # with its default, reduce_range=False: what qnnpack computes either way.
            mod.version = 3
    return m


def qconfig_for(kind, per_channel, engine):
    if not per_channel:
        if kind == "qat":
            return tq.get_default_qat_qconfig(engine)
        return tq.get_default_qconfig(engine)
    # lowbit's weight quantization: symmetric per output channel, min/max.
    if kind == "qat":
        act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver,
                                        quant_min=0, quant_max=255, dtype=torch.quint8,
                                        reduce_range=False)
        wt = tq.FakeQuantize.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver,
                                       quant_min=-128, quant_max=127, dtype=torch.qint8,
                                       qscheme=torch.per_channel_symmetric, ch_axis=0)
        return tq.QConfig(activation=act, weight=wt)
    act = tq.MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=False)
    wt = tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                               qscheme=torch.per_channel_symmetric)
    return tq.QConfig(activation=act, weight=wt)


def torch_static(float_model, calib_x, per_channel, engine):
    m = copy.deepcopy(float_model).eval()
    if m.fuse_groups:
        tq.fuse_modules(m.body, m.fuse_groups, inplace=True)
    m.qconfig = qconfig_for("static", per_channel, engine)
    tq.prepare(m, inplace=True)
    with torch.inference_mode():
        for i in range(0, len(calib_x), CALIBRATION_BATCH):
            m(calib_x[i:i + CALIBRATION_BATCH])
    tq.convert(m, inplace=True)
    return m


def torch_qat(float_model, train_x, train_y, epochs, batch, lr, weight_decay, per_channel,
              engine, seed, log):
    m = copy.deepcopy(float_model).train()
    if m.fuse_groups:
        tq.fuse_modules_qat(m.body, m.fuse_groups, inplace=True)
    m.qconfig = qconfig_for("qat", per_channel, engine)
    tq.prepare_qat(m, inplace=True)
    decay, no_decay = [], []
    for name, param in m.named_parameters():
        (decay if name.endswith("weight") and param.dim() > 1 else no_decay).append(param)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    n = len(train_x)
    steps_per_epoch = (n + batch - 1) // batch
    total = epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        seen, correct, loss_sum = 0, 0, 0.0
        t0 = time.perf_counter()
        for b in range(steps_per_epoch):
            # cosine decay from lr (first step) towards 0, one value per step, like lowbit
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / total))
            idx = order[b * batch:(b + 1) * batch]
            xb, yb = train_x[idx], train_y[idx]
            out = m(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx)
            correct += int((out.argmax(dim=1) == yb).sum())
            loss_sum += float(loss) * len(idx)
        log("  torch QAT epoch %d/%d: loss %.4f, train accuracy %.4f (%.0f s)"
            % (epoch + 1, epochs, loss_sum / seen, correct / seen, time.perf_counter() - t0))
    m.eval()
    return tq.convert(m, inplace=False)


# ---- lowbit --------------------------------------------------------------------------------

class LowbitError(Exception):
    pass


def run_lowbit(lowbit, args, log):
    cmd = [lowbit] + args
    log("  $ " + " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise LowbitError("%s failed (%d): %s" % (" ".join(cmd), proc.returncode,
                                                  proc.stderr.strip()[-2000:]))
    return proc.stdout


def lowbit_eval(lowbit, model, data_args, extra, log):
    out = run_lowbit(lowbit, ["eval", model, "--json", "--latency", "--threads", "1"]
                     + data_args + extra, log)
    # the JSON object is the last {...} block of the output
    start = out.find("{")
    if start < 0:
        raise LowbitError("lowbit eval printed no JSON: %r" % out[-500:])
    return json.loads(out[start:out.rfind("}") + 1])


# ---- the comparison ----------------------------------------------------------------------------

def fmt_acc(v):
    return "-" if v is None else "%.4f" % v


def fmt_lat(pair):
    if pair is None or pair[0] is None:
        return "-"
    return "%.3f / %.2f" % pair


def fmt_ratio(torch_lat, lowbit_lat):
    if not torch_lat or not lowbit_lat or None in torch_lat or None in lowbit_lat:
        return "-"
    return "%.2fx / %.2fx" % (torch_lat[0] / lowbit_lat[0], torch_lat[1] / lowbit_lat[1])


def compare_model(path, args, data, log):
    meta, tensors = read_gguf(path)
    model, input_shape = build_torch_model(meta, tensors)
    train_images, train_labels, test_images, test_labels = data
    n_test = len(test_images) if args.max_test_images <= 0 else min(args.max_test_images,
                                                                     len(test_images))
    test_x = to_input(test_images[:n_test], input_shape)
    test_y = torch.from_numpy(test_labels[:n_test].astype(np.int64))
    calib_x = to_input(train_images[:CALIBRATION_IMAGES], input_shape)
    one = test_x[:1].clone()
    batch64 = test_x[:64].clone()
    if len(batch64) < 64:
        batch64 = test_x[torch.arange(64) % len(test_x)].clone()

    def latency(m):
        return (median_latency_ms(m, one, args.repeats, args.min_seconds),
                median_latency_ms(m, batch64, args.repeats // 4 + 1, args.min_seconds))

    rows = OrderedDict()  # mode -> dict

    def row(mode):
        return rows.setdefault(mode, {"torch_acc": None, "lowbit_acc": None,
                                      "torch_lat": None, "lowbit_lat": None, "note": ""})

    log("%s: %s layers, input %dx%dx%d, %d test images"
        % (path, meta["lowbit-classifier.layer_count"], *input_shape, n_test))

    # torch float, the check of the reader and the permutations
    correct, acc = accuracy(model, test_x, test_y)
    row("float")["torch_acc"] = acc
    row("float")["torch_lat"] = latency(model)
    log("  torch float: %d / %d correct" % (correct, n_test))

    modes = ["dynamic", "static"] + ([] if args.skip_qat else ["qat"])
    kind = "cnn" if any(isinstance(mod, nn.Conv2d) for mod in model.modules()) else "mlp"
    qat_batch = args.qat_batch or QAT_BATCH[kind]
    qat_lr = args.qat_lr or QAT_LR[kind]
    torch.backends.quantized.engine = args.engine
    for mode in modes:
        t0 = time.perf_counter()
        if mode == "dynamic":
            qm = torch_dynamic(model)
            if any(isinstance(mod, nn.Conv2d) for mod in model.modules()):
                row(mode)["note"] = "torch: convs stay float (no dynamic conv)"
        elif mode == "static":
            qm = torch_static(model, calib_x, args.per_channel, args.engine)
        else:
            train_x = to_input(train_images, input_shape)
            train_y = torch.from_numpy(train_labels.astype(np.int64))
            torch.set_num_threads(args.train_threads)
            log("  QAT: %d epochs, batch %d, Adam lr %g (cosine), weight decay %g"
                % (args.qat_epochs, qat_batch, qat_lr, QAT_WEIGHT_DECAY))
            qm = torch_qat(model, train_x, train_y, args.qat_epochs, qat_batch, qat_lr,
                           QAT_WEIGHT_DECAY, args.per_channel, args.engine, args.seed, log)
            torch.set_num_threads(1)
        correct, acc = accuracy(qm, test_x, test_y)
        row(mode)["torch_acc"] = acc
        row(mode)["torch_lat"] = latency(qm)
        log("  torch %s: %d / %d correct (%.1f s)" % (mode, correct, n_test,
                                                      time.perf_counter() - t0))

    # lowbit through its CLI
    lowbit = args.lowbit
    if not (os.path.isfile(lowbit) and os.access(lowbit, os.X_OK)):
        log("  lowbit binary %s not found: its columns stay empty" % lowbit)
    else:
        tmp = tempfile.mkdtemp(prefix="lowbit-torch-")
        data_args = ["--data", args.data] if args.data != DEFAULT_DATA else []
        eval_extra = ["--max-images", str(n_test)] if n_test < len(test_images) else []
        train_extra = (["--max-images", str(args.max_train_images)]
                       if args.max_train_images > 0 else [])
        try:
            files = {}
            calibrated = os.path.join(tmp, "calibrated.gguf")
            files["float"] = path
            if "static" in modes:
                run_lowbit(lowbit, ["calibrate", path, "-o", calibrated, "--observer", "minmax"]
                           + data_args, log)
                files["static"] = os.path.join(tmp, "static.gguf")
                run_lowbit(lowbit, ["convert", calibrated, "-o", files["static"],
                                    "--mode", "static"], log)
            files["dynamic"] = os.path.join(tmp, "dynamic.gguf")
            run_lowbit(lowbit, ["convert", path, "-o", files["dynamic"], "--mode", "dynamic"],
                       log)
            if "qat" in modes:
                qat_float = os.path.join(tmp, "qat-float.gguf")
                t0 = time.perf_counter()
                run_lowbit(lowbit, ["train", "--qat", "--from", path, "-o", qat_float,
                                    "--epochs", str(args.qat_epochs), "--batch", str(qat_batch),
                                    "--lr", repr(qat_lr), "--weight-decay", repr(QAT_WEIGHT_DECAY),
                                    "--no-test"] + data_args
                           + train_extra, log)
                log("  lowbit QAT: %.0f s" % (time.perf_counter() - t0))
                files["qat"] = os.path.join(tmp, "qat.gguf")
                run_lowbit(lowbit, ["convert", qat_float, "-o", files["qat"],
                                    "--mode", "static"], log)
            for mode in ["float"] + modes:
                result = lowbit_eval(lowbit, files[mode], data_args,
                                     eval_extra + ["--repeats", str(args.repeats)], log)
                row(mode)["lowbit_acc"] = float(result["accuracy"])
                row(mode)["lowbit_lat"] = (float(result["latency_single_ms"]),
                                           float(result["latency_batch64_ms"]))
                log("  lowbit %s: accuracy %.4f" % (mode, row(mode)["lowbit_acc"]))
        except LowbitError as e:
            log("  " + str(e))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    f = rows["float"]
    if f["lowbit_acc"] is not None:
        diff = round(abs(f["torch_acc"] - f["lowbit_acc"]) * n_test)
        verdict = "OK" if diff <= 2 else "MISMATCH: the torch model is not equivalent"
        log("  float check: torch %.4f, lowbit %.4f (%d images apart): %s"
            % (f["torch_acc"], f["lowbit_acc"], diff, verdict))
    return rows, n_test


def print_table(results, args):
    header = ("model", "mode", "torch acc", "lowbit acc", "torch ms (1 / 64)",
              "lowbit ms (1 / 64)", "torch/lowbit time", "note")
    lines = []
    for path, (rows, n_test) in results:
        for mode, r in rows.items():
            lines.append((os.path.basename(path), mode, fmt_acc(r["torch_acc"]),
                          fmt_acc(r["lowbit_acc"]), fmt_lat(r["torch_lat"]),
                          fmt_lat(r["lowbit_lat"]), fmt_ratio(r["torch_lat"], r["lowbit_lat"]),
                          r["note"]))
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    def fmt(cells):
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + " |"
    print(fmt(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for l in lines:
        print(fmt(l))
    print()
    print("Latency: median wall time of one forward pass, 1 thread, after warm-up; torch "
          "%s (engine %s, %s), one image and a batch of 64. "
          "torch/lowbit time > 1 means lowbit is faster."
          % (torch.__version__, args.engine,
             "per-channel min/max qconfig" if args.per_channel else "default qconfig"))
    print("PyTorch dynamic quantization covers nn.Linear only: a CNN's convolutions run in "
          "float there, while lowbit's dynamic mode quantizes them too.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True,
                    help="float lowbit classifier (GGUF); may be given several times")
    ap.add_argument("--lowbit", default=os.environ.get("LOWBIT", DEFAULT_LOWBIT),
                    help="lowbit binary (default: $LOWBIT or %s)" % DEFAULT_LOWBIT)
    ap.add_argument("--data", default=DEFAULT_DATA, help="Fashion-MNIST directory (IDX .gz)")
    ap.add_argument("--skip-qat", action="store_true", help="leave out the QAT flows")
    ap.add_argument("--qat-epochs", type=int, default=QAT_EPOCHS,
                    help="QAT epochs for both (default %d, lowbit's)" % QAT_EPOCHS)
    ap.add_argument("--qat-batch", type=int, default=0,
                    help="QAT batch size for both (default: lowbit's, %d without conv, %d with)"
                    % (QAT_BATCH["mlp"], QAT_BATCH["cnn"]))
    ap.add_argument("--qat-lr", type=float, default=0.0,
                    help="QAT peak learning rate for both (default: lowbit's, %g / %g)"
                    % (QAT_LR["mlp"], QAT_LR["cnn"]))
    ap.add_argument("--max-test-images", type=int, default=0,
                    help="evaluate on the first N test images only (0: all 10,000)")
    ap.add_argument("--max-train-images", type=int, default=0,
                    help="QAT on the first N training images only, both sides (development)")
    ap.add_argument("--per-channel", action="store_true",
                    help="torch: per-channel symmetric min/max weights and min/max activation "
                         "observers (lowbit's scheme) instead of the stock qnnpack qconfig")
    ap.add_argument("--engine", default="qnnpack",
                    help="torch quantized engine (default qnnpack; onednn for a second view)")
    ap.add_argument("--repeats", type=int, default=400,
                    help="timed runs of one image, for both (a batch of 64: a quarter); torch "
                         "also measures for at least --min-seconds")
    ap.add_argument("--min-seconds", type=float, default=1.0,
                    help="minimum measuring time per latency")
    ap.add_argument("--train-threads", type=int, default=1, help="torch threads for QAT")
    ap.add_argument("--seed", type=int, default=1, help="torch QAT shuffling seed")
    args = ap.parse_args()

    if args.engine not in torch.backends.quantized.supported_engines:
        sys.exit("this torch has no %s engine" % args.engine)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    train_images, train_labels = load_split(args.data, True)
    test_images, test_labels = load_split(args.data, False)
    if args.max_train_images > 0:
        train_images = train_images[:args.max_train_images]
        train_labels = train_labels[:args.max_train_images]
    data = (train_images, train_labels, test_images, test_labels)
    results = []
    for path in args.model:
        results.append((path, compare_model(path, args, data, log)))
    print_table(results, args)


if __name__ == "__main__":
    main()

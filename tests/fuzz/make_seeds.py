#!/usr/bin/env python3
"""Writes the small seed inputs of the fuzz targets into tests/fuzz/seeds/<target>/.

Each seed is a valid file of its format, so the fuzzer starts from inputs that reach deep into
the reader. Run from the repository root: python3 tests/fuzz/make_seeds.py
(The classifier files' seeds are written by the library itself: tests/fuzz/make_classifier_seeds.c;
the IDX/gzip seeds are small hand-made streams kept as they are.)
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def floats(n, start=0.0):
    return struct.pack("<%df" % n, *[start + 0.01 * i for i in range(n)])


def llama2c_seed(separate_classifier):
    dim, hidden, layers, heads, kv_heads, vocab, seq = 8, 8, 1, 2, 1, 4, 2
    head = dim // heads
    kv_dim = head * kv_heads
    header = struct.pack("<7i", dim, hidden, layers, heads, kv_heads,
                         -vocab if separate_classifier else vocab, seq)
    n = vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim)
    n += dim + seq * head + (vocab * dim if separate_classifier else 0)
    model = header + floats(n)
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", b"<0x41>"]
    tok = struct.pack("<i", 8) + b"".join(struct.pack("<fi", -float(i), len(p)) + p
                                          for i, p in enumerate(pieces))
    flags = 1  # pass the tokenizer
    return bytes([flags]) + struct.pack("<H", len(tok)) + tok + model


def safetensors_seed(dtype):
    # the fuzz target's fixed config: hidden 4, 1 layer, 2 heads, 1 KV head, FFN 4, vocab 4, tied
    shapes = {
        "model.embed_tokens.weight": [4, 4],
        "model.layers.0.input_layernorm.weight": [4],
        "model.layers.0.self_attn.q_proj.weight": [4, 4],
        "model.layers.0.self_attn.k_proj.weight": [2, 4],
        "model.layers.0.self_attn.v_proj.weight": [2, 4],
        "model.layers.0.self_attn.o_proj.weight": [4, 4],
        "model.layers.0.post_attention_layernorm.weight": [4],
        "model.layers.0.mlp.gate_proj.weight": [4, 4],
        "model.layers.0.mlp.up_proj.weight": [4, 4],
        "model.layers.0.mlp.down_proj.weight": [4, 4],
        "model.norm.weight": [4],
    }
    size = {"F32": 4, "F16": 2}[dtype]
    header, data = {}, b""
    for name, shape in shapes.items():
        count = 1
        for d in shape:
            count *= d
        raw = floats(count) if dtype == "F32" else struct.pack("<%de" % count, *[0.5] * count)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + count * size]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def gguf_seed():
    # GGUF v3: one string key, one f32 tensor [4, 2], data aligned to 32
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    key, value = b"general.name", b"seed"
    out += struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value
    out += struct.pack("<Q", 1) + b"w" + struct.pack("<IQQIQ", 2, 4, 2, 0, 0)
    out += b"\0" * (-len(out) % 32)
    return out + struct.pack("<8f", *range(8))


def write(target, name, content):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(content)


write("fuzz_gguf", "tiny", gguf_seed())
write("fuzz_llama2c", "tied", llama2c_seed(False))
write("fuzz_llama2c", "separate", llama2c_seed(True))
write("fuzz_safetensors", "f32", safetensors_seed("F32"))
write("fuzz_safetensors", "f16", safetensors_seed("F16"))

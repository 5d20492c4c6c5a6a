#!/usr/bin/env python3
"""Writes the malformed-input corpus under tests/data/malformed/ (run from anywhere).

Every file is small and hand-made, and its name says what is wrong with it. They start from one
valid GGUF file (two tensors, a few metadata keys) and break one thing each; a few llama2.c and
safetensors files do the same for those formats. tests/test_cli_errors.c runs `lowbit inspect` and
`lowbit quantize` on each and holds, per file, the word its error message must contain: a file
added here must be added to that table too (the test checks that every file is listed).

The output is deterministic: running the script again rewrites the same bytes.
"""
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "malformed")

# GGUF value types and ggml tensor types used here
U32, I32, F32V, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
F32, F16, Q8_0 = 0, 1, 8

ROW = 64          # row length of the 2-D tensor: a multiple of 32, so Q8_0 applies
ROWS = 4
ALIGNMENT = 32


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def gguf_string(s):
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b)) + b


def kv(key, vtype, payload):
    """One metadata pair: payload is the value's bytes after the type field."""
    return gguf_string(key) + u32(vtype) + payload


def kv_string(key, value):
    return kv(key, STRING, gguf_string(value))


def kv_u32(key, value):
    return kv(key, U32, u32(value))


def kv_string_array(key, values):
    return kv(key, ARRAY, u32(STRING) + u64(len(values)) + b"".join(gguf_string(v) for v in values))


def tensor_info(name, dims, ttype, offset):
    return gguf_string(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(ttype) + u64(offset)


def pad_to(data, alignment):
    return data + b"\0" * (-len(data) % alignment)


def weights(n, seed):
    """n small finite floats, deterministic."""
    return [((i * 37 + seed * 11) % 101 - 50) / 64.0 for i in range(n)]


def f32_bytes(values):
    return struct.pack("<%df" % len(values), *values)


def base_kvs():
    return [
        kv_string("general.architecture", "llama"),
        kv_string("general.name", "malformed-corpus"),
        kv_u32("llama.block_count", 1),
        kv_string_array("tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>"]),
    ]


def base_tensors():
    """(name, dims, type, data bytes) of the valid file's tensors."""
    matrix = f32_bytes(weights(ROW * ROWS, 1))
    norm = f32_bytes([1.0] * ROW)
    return [("blk.0.attn_q.weight", [ROW, ROWS], F32, matrix),
            ("blk.0.attn_norm.weight", [ROW], F32, norm)]


def gguf(kvs=None, tensors=None, version=3, n_kv=None, n_tensors=None, offsets=None, infos=None,
         alignment=ALIGNMENT):
    """A GGUF file. By default valid; each argument overrides one part of it.

    offsets: the tensor offsets to write (default: packed, aligned); infos: raw tensor-info bytes
    replacing the ones made from `tensors`; n_kv / n_tensors: counts to write in the header.
    """
    kvs = base_kvs() if kvs is None else kvs
    tensors = base_tensors() if tensors is None else tensors
    if offsets is None:
        offsets, at = [], 0
        for _, _, _, data in tensors:
            offsets.append(at)
            at += len(data) + (-len(data) % alignment)
    if infos is None:
        infos = b"".join(tensor_info(name, dims, ttype, off)
                         for (name, dims, ttype, _), off in zip(tensors, offsets))
    head = (b"GGUF" + u32(version) + u64(len(tensors) if n_tensors is None else n_tensors) +
            u64(len(kvs) if n_kv is None else n_kv))
    body = pad_to(head + b"".join(kvs) + infos, alignment)
    data = b""
    for (_, _, _, payload), off in zip(tensors, offsets):
        if off > 1 << 16:
            continue  # an offset far past the end: the bytes are not written at all
        if len(data) < off:
            data += b"\0" * (off - len(data))
        data = data[:off] + payload + data[off + len(payload):]
    return body + pad_to(data, alignment)


def section_offsets():
    """Byte offsets inside the valid file where each section starts, for the truncated files."""
    kvs = base_kvs()
    header = 24
    key0 = header + 8 + 5                      # inside the first key's bytes
    value1 = header + len(kvs[0]) + 8 + len("general.name") + 4 + 8 + 3  # inside a string value
    array = header + sum(len(k) for k in kvs[:3]) + 8 + len("tokenizer.ggml.tokens") + 4 + 12 + 8 + 2
    infos = header + sum(len(k) for k in kvs)
    dims = infos + 8 + len("blk.0.attn_q.weight") + 4 + 4   # inside the first dimension
    end_of_infos = infos + sum(len(tensor_info(n, d, t, 0)) for n, d, t, _ in base_tensors())
    return {"magic": 2, "version": 6, "counts": 12, "kv_key": key0, "kv_value": value1,
            "array": array, "tensor_info": dims, "padding": end_of_infos + 1}


def gguf_files():
    valid = gguf()
    files = {"gguf_valid_reference.gguf": valid}
    data_start = len(valid) - sum(len(d) + (-len(d) % ALIGNMENT) for _, _, _, d in base_tensors())
    for section, at in section_offsets().items():
        files["gguf_truncated_%s.gguf" % section] = valid[:at]
    files["gguf_truncated_data.gguf"] = valid[:data_start + 100]

    files["gguf_bad_magic.gguf"] = b"GGUX" + valid[4:]
    files["gguf_version1.gguf"] = gguf(version=1)
    files["gguf_version4.gguf"] = gguf(version=4)
    files["gguf_huge_kv_count.gguf"] = gguf(n_kv=1 << 62)
    files["gguf_huge_tensor_count.gguf"] = gguf(n_tensors=(1 << 64) - 1)
    files["gguf_huge_string_length.gguf"] = gguf(
        kvs=[u64((1 << 64) - 8) + b"general.architecture" + u32(STRING) + gguf_string("llama")])
    files["gguf_huge_array_count.gguf"] = gguf(
        kvs=base_kvs()[:3] + [kv("tokenizer.ggml.scores", ARRAY,
                                 u32(F32V) + u64(1 << 61) + f32_bytes([0.0]))])
    files["gguf_string_past_end.gguf"] = gguf(kvs=base_kvs()[:1] + [
        kv("general.name", STRING, u64(5000) + b"malformed")], tensors=[])
    files["gguf_unknown_value_type.gguf"] = gguf(kvs=base_kvs() + [kv("general.odd", 77, u32(1))])
    files["gguf_unknown_array_type.gguf"] = gguf(
        kvs=base_kvs() + [kv("general.odd", ARRAY, u32(66) + u64(1) + u32(0))])
    nested = u32(U32) + u64(1) + u32(7)
    for _ in range(12):
        nested = u32(ARRAY) + u64(1) + nested
    files["gguf_deep_nested_array.gguf"] = gguf(kvs=base_kvs() + [kv("general.nested", ARRAY, nested)])
    files["gguf_duplicate_key.gguf"] = gguf(kvs=base_kvs() + [kv_string("general.name", "again")])
    files["gguf_alignment_not_power_of_two.gguf"] = gguf(kvs=base_kvs() + [kv_u32("general.alignment", 48)])
    files["gguf_alignment_wrong_type.gguf"] = gguf(kvs=base_kvs() + [kv_string("general.alignment", "32")])

    matrix = base_tensors()[0]
    norm = base_tensors()[1]
    files["gguf_duplicate_tensor_name.gguf"] = gguf(tensors=[matrix, (matrix[0],) + matrix[1:]])
    files["gguf_unknown_tensor_type.gguf"] = gguf(tensors=[(matrix[0], matrix[1], 99, matrix[3]), norm])
    files["gguf_overflowing_dims.gguf"] = gguf(
        tensors=[norm], infos=tensor_info("blk.0.attn_q.weight", [1 << 32, 1 << 32, 1 << 32], F32, 0))
    files["gguf_zero_dim.gguf"] = gguf(
        tensors=[norm], infos=tensor_info("blk.0.attn_norm.weight", [ROW, 0], F32, 0))
    files["gguf_five_dims.gguf"] = gguf(
        tensors=[norm], infos=tensor_info("blk.0.attn_norm.weight", [ROW, 1, 1, 1, 1], F32, 0))
    files["gguf_empty_tensor_name.gguf"] = gguf(tensors=[("", [ROW], F32, norm[3])])
    files["gguf_row_not_block_multiple.gguf"] = gguf(
        tensors=[norm], infos=tensor_info("blk.0.attn_q.weight", [48, 2], Q8_0, 0))
    files["gguf_misaligned_offset.gguf"] = gguf(offsets=[0, ROW * ROWS * 4 + 4])
    files["gguf_overlapping_tensors.gguf"] = gguf(offsets=[0, ROW * ROWS * 4 - ALIGNMENT])
    files["gguf_offset_past_end.gguf"] = gguf(offsets=[0, 1 << 40])
    files["gguf_offset_wraps.gguf"] = gguf(offsets=[0, (1 << 64) - ALIGNMENT])

    # valid files except for one weight: inspect reads them; quantizing them must fail
    nan_matrix = weights(ROW * ROWS, 1)
    nan_matrix[2 * ROW + 5] = math.nan           # row 2, column 5
    files["gguf_nan_weight.gguf"] = gguf(tensors=[(matrix[0], matrix[1], F32, f32_bytes(nan_matrix)), norm])
    inf_matrix = weights(ROW * ROWS, 1)
    inf_matrix[3 * ROW] = math.inf               # row 3, column 0
    files["gguf_inf_weight.gguf"] = gguf(tensors=[(matrix[0], matrix[1], F32, f32_bytes(inf_matrix)), norm])
    return files


def llama2c_checkpoint(header, n_floats):
    return struct.pack("<7i", *header) + f32_bytes(weights(n_floats, 3))


def llama2c_files():
    # dim 8, hidden 16, 1 layer, 2 heads, 2 kv heads, vocab 4, seq_len 2: head 4, kv_dim 8
    header = [8, 16, 1, 2, 2, 4, 2]
    dim, hidden, vocab, seq, head = 8, 16, 4, 2, 4
    n = vocab * dim + dim + 4 * dim * dim + dim + 3 * hidden * dim + dim + seq * head
    full = llama2c_checkpoint(header, n)
    return {
        "llama2c_truncated_header.bin": full[:20],
        "llama2c_truncated_weights.bin": full[:len(full) - 40],
        "llama2c_trailing_bytes.bin": full + b"\0" * 12,
        "llama2c_negative_dim.bin": llama2c_checkpoint([-8] + header[1:], n),
        "llama2c_zero_layers.bin": llama2c_checkpoint(header[:2] + [0] + header[3:], n),
        "llama2c_heads_not_dividing_dim.bin": llama2c_checkpoint([8, 16, 1, 3, 3, 4, 2], n),
        "llama2c_huge_dims.bin": llama2c_checkpoint([0x7FFFFFFE, 0x7FFFFFFE, 0x7FFFFFFF, 1, 1, 4, 2], 16),
    }


def safetensors(header_json, data, declared_length=None):
    """A safetensors file; the header is padded with spaces so the data starts 8-aligned."""
    h = header_json.encode()
    h += b" " * (-(8 + len(h)) % 8)
    return u64(len(h) if declared_length is None else declared_length) + h + data


def safetensors_files():
    data = f32_bytes(weights(64, 5))
    good = '{"model.embed_tokens.weight":{"dtype":"F32","shape":[8,8],"data_offsets":[0,256]}}'
    return {
        # the reader wants config.json beside a safetensors file; this one is valid
        "config.json": ('{"architectures":["LlamaForCausalLM"],"model_type":"llama",'
                        '"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,'
                        '"num_attention_heads":2,"num_key_value_heads":2,"vocab_size":8,'
                        '"max_position_embeddings":16,"rms_norm_eps":1e-05}\n').encode(),
        "safetensors_header_past_end.safetensors": safetensors(good, data, declared_length=4000),
        "safetensors_bad_json.safetensors": safetensors('{"model.embed_tokens.weight":{"dtype":', data),
        "safetensors_truncated_data.safetensors": safetensors(good, data[:100]),
        "safetensors_overlapping.safetensors": safetensors(
            '{"model.embed_tokens.weight":{"dtype":"F32","shape":[8,8],"data_offsets":[0,256]},'
            '"lm_head.weight":{"dtype":"F32","shape":[8,8],"data_offsets":[128,384]}}',
            data + data[:128]),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {}
    files.update(gguf_files())
    files.update(llama2c_files())
    files.update(safetensors_files())
    files["zero_bytes.bin"] = b""
    for name in sorted(files):
        assert len(files[name]) < 10000, name
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(files[name])
    print("wrote %d files to %s" % (len(files), OUT))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the binary seed inputs of fuzz/corpus/ (tiny traces, GGUF and llama2.c models).

Run with a Python that has numpy and h5py (Debian: /usr/bin/python3 with python3-h5py):
    python3 fuzz/make_seeds.py fuzz/corpus
The text seeds (requests, csv, TOML, ...) are checked in as written. Traces follow
traces/FORMAT.md 1.1 as kvsim's writer lays them out (HDF5 1.10 file format, chunks [1, 4, d]
with Fletcher32, fixed-length string attributes, strings as bytes + offsets), kept small.
"""
import os
import struct
import sys

import h5py
import numpy as np


def string_column(group, name, values):
    data = [v.encode() for v in values]
    offsets = np.cumsum([0] + [len(b) for b in data]).astype(np.int64)
    blob = np.frombuffer(b"".join(data), np.uint8)
    group.create_dataset(name + "_utf8", data=blob, maxshape=(None,),
                         chunks=(max(1, len(blob)),), fletcher32=True)
    group.create_dataset(name + "_offsets", data=offsets, maxshape=(None,),
                         chunks=(len(offsets),), fletcher32=True)


def trace(path, dtype, libver=("v110", "v110"), L=1, hq=2, hkv=1, d=2, P=3, T=5, segments=False, gate=False,
          pre_rope=False):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w", libver=libver) as f:
        f.attrs["format"] = np.bytes_(b"kvsim-trace")
        f.attrs["format_version"] = np.int64(1)
        f.attrs["format_minor_version"] = np.int64(1)
        f.attrs["model_name"] = np.bytes_(b"tiny")
        for k, v in (("layers", L), ("q_heads", hq), ("kv_heads", hkv), ("head_dim", d),
                     ("prompt_len", P), ("total_len", T)):
            f.attrs[k] = np.int64(v)
        f.attrs["rope_theta"] = 10000.0
        f.attrs["source"] = np.bytes_(b"fuzz seed")
        tokens = f.create_group("tokens")
        tokens.create_dataset("ids", data=np.arange(T, dtype=np.int32), maxshape=(None,),
                              chunks=(T,), fletcher32=True)
        string_column(tokens, "text", ["a", "", "\u00e9", "<0xE6>", "tok"][:T])
        names = [("q", hq), ("k", hkv), ("v", hkv)]
        if pre_rope:
            names += [("q_pre_rope", hq), ("k_pre_rope", hkv)]
        for l in range(L):
            for name, heads in names:
                x = rng.standard_normal((heads, T, d)).astype(dtype)
                f.create_dataset(f"layers/{l}/{name}", data=x, maxshape=(heads, None, d),
                                 chunks=(1, 4, d), fletcher32=True)
        if segments:
            s = f.create_group("segments")
            for name, values, t in (("begin", [0, 3], np.int64), ("end", [3, T], np.int64),
                                    ("turn", [0, 1], np.int32)):
                s.create_dataset(name, data=np.array(values, t), maxshape=(None,), chunks=(2,),
                                 fletcher32=True)
            string_column(s, "role", ["user", "assistant"])
        if gate:
            f.create_dataset("gate_flags", data=np.ones((L, hkv, T), np.uint8))


class Gguf:
    """GGUF v3, little-endian, 32-byte alignment (ggml docs/gguf.md)."""

    def __init__(self):
        self.kv, self.infos, self.data, self.n_kv, self.n_t = b"", b"", b"", 0, 0

    @staticmethod
    def s(text):
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    def u32(self, key, v):
        self.kv += self.s(key) + struct.pack("<II", 4, v)
        self.n_kv += 1

    def f32(self, key, v):
        self.kv += self.s(key) + struct.pack("<If", 6, v)
        self.n_kv += 1

    def string(self, key, v):
        self.kv += self.s(key) + struct.pack("<I", 8) + self.s(v)
        self.n_kv += 1

    def array(self, key, elem_type, values):
        self.kv += self.s(key) + struct.pack("<IIQ", 9, elem_type, len(values))
        for v in values:
            self.kv += self.s(v) if elem_type == 8 else struct.pack(
                "<f" if elem_type == 6 else "<i", v)
        self.n_kv += 1

    def tensor(self, name, array, f16=False):
        a = np.ascontiguousarray(array, np.float16 if f16 else np.float32)
        dims = list(reversed(a.shape))
        self.infos += self.s(name) + struct.pack("<I", len(dims))
        self.infos += b"".join(struct.pack("<Q", x) for x in dims)
        self.infos += struct.pack("<IQ", 1 if f16 else 0, len(self.data))
        self.data += a.tobytes()
        self.data += b"\0" * (-len(self.data) % 32)
        self.n_t += 1

    def build(self):
        out = b"GGUF" + struct.pack("<IQQ", 3, self.n_t, self.n_kv) + self.kv + self.infos
        return out + b"\0" * (-len(out) % 32) + self.data


def gguf(path, f16):
    dim, hidden, layers, heads, kv, vocab, ctx = 8, 16, 1, 2, 1, 8, 16
    rng = np.random.default_rng(2)
    g = Gguf()
    g.string("general.architecture", "llama")
    for k, v in (("embedding_length", dim), ("feed_forward_length", hidden),
                 ("block_count", layers), ("attention.head_count", heads),
                 ("attention.head_count_kv", kv), ("context_length", ctx)):
        g.u32("llama." + k, v)
    g.f32("llama.rope.freq_base", 10000.0)
    g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    g.string("tokenizer.ggml.model", "llama")
    pieces = ["<unk>", "<s>", "</s>", "<0x41>", "\u2581a", "\u2581b", "ab", "\u2581"]
    g.array("tokenizer.ggml.tokens", 8, pieces)
    g.array("tokenizer.ggml.scores", 6, [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0])
    g.array("tokenizer.ggml.token_type", 5, [2, 3, 3, 6, 1, 1, 1, 1])
    m = lambda r, c: rng.standard_normal((r, c)) * 0.1
    hd = dim // heads
    g.tensor("token_embd.weight", m(vocab, dim), f16)
    for l in range(layers):
        p = f"blk.{l}."
        g.tensor(p + "attn_norm.weight", np.ones(dim))
        g.tensor(p + "attn_q.weight", m(dim, dim), f16)
        g.tensor(p + "attn_k.weight", m(kv * hd, dim), f16)
        g.tensor(p + "attn_v.weight", m(kv * hd, dim), f16)
        g.tensor(p + "attn_output.weight", m(dim, dim), f16)
        g.tensor(p + "ffn_norm.weight", np.ones(dim))
        g.tensor(p + "ffn_gate.weight", m(hidden, dim), f16)
        g.tensor(p + "ffn_down.weight", m(dim, hidden), f16)
        g.tensor(p + "ffn_up.weight", m(hidden, dim), f16)
    g.tensor("output_norm.weight", np.ones(dim))
    g.tensor("output.weight", m(vocab, dim), f16)
    open(path, "wb").write(g.build())


def llama2c(path, shared):
    dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 1, 8, 4
    hd = dim // heads
    rng = np.random.default_rng(3)
    sizes = [vocab * dim, layers * dim, layers * dim * dim, layers * dim * kv * hd,
             layers * dim * kv * hd, layers * dim * dim, layers * dim, layers * hidden * dim,
             layers * dim * hidden, layers * hidden * dim, dim, seq * hd // 2, seq * hd // 2]
    if not shared:
        sizes.append(vocab * dim)
    header = struct.pack("<7i", dim, hidden, layers, heads, kv, vocab if shared else -vocab, seq)
    body = (rng.standard_normal(sum(sizes)) * 0.1).astype(np.float32).tobytes()
    open(path, "wb").write(header + body)


def main(out):
    for sub in ("trace_reader", "gguf", "llama2c"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    trace(os.path.join(out, "trace_reader", "tiny_f16_segments.h5"), np.float16, segments=True)
    trace(os.path.join(out, "trace_reader", "tiny_f32.h5"), np.float32)
    trace(os.path.join(out, "trace_reader", "tiny_f32_gate_prerope.h5"), np.float32, L=2,
          gate=True, pre_rope=True)
    gguf(os.path.join(out, "gguf", "tiny_f32.gguf"), f16=False)
    gguf(os.path.join(out, "gguf", "tiny_f16.gguf"), f16=True)
    llama2c(os.path.join(out, "llama2c", "tiny_shared.bin"), shared=True)
    llama2c(os.path.join(out, "llama2c", "tiny_wcls.bin"), shared=False)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus"))

#!/usr/bin/env python3
"""Capture a kvsim trace (traces/FORMAT.md) from a Hugging Face transformers causal LM.

For users with a GPU and a model kvsim's CPU reference transformer cannot run: the script runs
the prompt and N decode steps with the model's own KV cache and records, for every layer, the
post-RoPE queries and keys and the values of every position (optionally the pre-RoPE queries and
keys), plus token ids and text, streamed to an HDF5 file with h5py.

How it gets post-RoPE q/k: the modeling module of each attention layer (modeling_llama,
modeling_mistral, modeling_qwen2, ...) calls a module-level `apply_rotary_pos_emb(q, k, cos,
sin, ...)`; the script wraps that function for the duration of the capture and records its
inputs (pre-RoPE) and outputs (post-RoPE), attributing them to the layer whose attention module
is running (a forward pre-hook sets it). Values come from a forward hook on the layer's `v_proj`.
Models whose attention does not call `apply_rotary_pos_emb` (no RoPE, fused kernels) are
rejected with an error naming the layer.

Note on layouts: Hugging Face Llama-family models rotate the pairs (x[i], x[i + d/2])
("rotate_half") on weights permuted accordingly, while kvsim's reference transformer and
llama.cpp rotate adjacent pairs (x[2i], x[2i+1]). Post-RoPE dot products, and so everything the
simulator computes from them, are the same; only pre-RoPE-based tools need to know the pairing.

Example:
  python3 traces/hf_capture.py --model meta-llama/Llama-3.2-1B --prompt-file story.txt \
      --decode 256 --device cuda --dtype bfloat16 -o llama32.h5

Only numpy and h5py are needed to import this file (the TraceFileWriter is usable alone);
torch and transformers are imported when a model is captured.
"""

import argparse
import os
import sys

import h5py
import numpy as np

FORMAT = "kvsim-trace"
FORMAT_VERSION = 1
FORMAT_MINOR_VERSION = 1  # FORMAT.md 1.1: no variable-length strings, checksummed datasets
CHUNK_POSITIONS = 256  # FORMAT.md: chunks of [1 head, 256 positions, d]


class TraceFileWriter:
    """Streams a kvsim trace to `path`: append() blocks of positions, then commit().

    Written under a temporary sibling name and renamed by commit(); abort() (or leaving a `with`
    block without commit()) removes it, so no half-written trace is left at `path`.
    """

    def __init__(self, path, model_name, layers, q_heads, kv_heads, head_dim, rope_theta,
                 source="", storage="f16", pre_rope=False):
        if storage not in ("f16", "f32"):
            raise ValueError(f"storage is {storage!r}, expected 'f16' or 'f32'")
        if q_heads % kv_heads != 0:
            raise ValueError(f"q_heads={q_heads} is not a multiple of kv_heads={kv_heads}")
        self.path = path
        self.temp_path = f"{path}.tmp.{os.getpid()}"
        self.layers, self.q_heads, self.kv_heads, self.head_dim = layers, q_heads, kv_heads, head_dim
        self.dtype = np.float16 if storage == "f16" else np.float32
        self.pre_rope = pre_rope
        self.ids = []
        self.text = []
        self.positions = 0
        self.committed = False
        # The HDF5 1.10 file format checksums every metadata block (FORMAT.md, "Strings").
        self.file = h5py.File(self.temp_path, "w", libver=("v110", "v110"))
        # np.bytes_: fixed-length strings; h5py's str would be variable-length (FORMAT.md).
        self.file.attrs.update(format=np.bytes_(FORMAT.encode()), format_version=FORMAT_VERSION,
                               format_minor_version=FORMAT_MINOR_VERSION,
                               model_name=np.bytes_(model_name.encode()), layers=layers,
                               q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim,
                               rope_theta=float(rope_theta), source=np.bytes_(source.encode()))
        names = [("q", q_heads), ("k", kv_heads), ("v", kv_heads)]
        if pre_rope:
            names += [("q_pre_rope", q_heads), ("k_pre_rope", kv_heads)]
        self.names = names
        for layer in range(layers):
            for name, heads in names:
                self.file.create_dataset(
                    f"layers/{layer}/{name}", shape=(heads, 0, head_dim),
                    maxshape=(heads, None, head_dim), dtype=self.dtype,
                    chunks=(1, CHUNK_POSITIONS, head_dim), shuffle=True, compression="gzip",
                    compression_opts=1, fletcher32=True)

    def append(self, ids, text, tensors):
        """Appends n positions.

        ids: n token ids; text: n strings or None; tensors: one dict per layer mapping "q", "k",
        "v" (and "q_pre_rope", "k_pre_rope" when pre_rope) to float arrays [heads, n, d].
        """
        n = len(ids)
        if len(tensors) != self.layers:
            raise ValueError(f"append got {len(tensors)} layers, expected {self.layers}")
        if text is not None and len(text) != n:
            raise ValueError(f"append got {len(text)} token texts for {n} positions")
        for layer, by_name in enumerate(tensors):
            for name, heads in self.names:
                x = np.asarray(by_name[name], dtype=np.float32)
                if x.shape != (heads, n, self.head_dim):
                    raise ValueError(f"layer {layer} '{name}' has shape {x.shape}, expected "
                                     f"{(heads, n, self.head_dim)}")
                stored = x.astype(self.dtype)
                if not np.all(np.isfinite(stored)):
                    raise ValueError(f"layer {layer} '{name}' has non-finite values after "
                                     f"conversion to {np.dtype(self.dtype).name} (float16 "
                                     f"overflows above 65504: use storage f32)")
                ds = self.file[f"layers/{layer}/{name}"]
                ds.resize(self.positions + n, axis=1)
                ds[:, self.positions:self.positions + n, :] = stored
        self.ids.extend(int(i) for i in ids)
        if text is not None:
            self.text.extend(text)
        self.positions += n

    def commit(self, prompt_len):
        """Writes tokens and lengths, closes and renames into place."""
        if not 1 <= prompt_len <= self.positions:
            raise ValueError(f"prompt_len {prompt_len} outside [1, {self.positions}]")
        self.file.attrs.update(prompt_len=prompt_len, total_len=self.positions)
        self.file.create_dataset("tokens/ids", data=np.asarray(self.ids, dtype=np.int32),
                                 maxshape=(None,), chunks=(max(1, min(self.positions, 65536)),),
                                 fletcher32=True)
        if self.text and len(self.text) == self.positions:
            # A string column: UTF-8 bytes + offsets (FORMAT.md, "Strings").
            data = [t.encode("utf-8", "surrogateescape") for t in self.text]
            blob = np.frombuffer(b"".join(data), dtype=np.uint8)
            offsets = np.cumsum([0] + [len(b) for b in data]).astype(np.int64)
            for name, values in (("tokens/text_utf8", blob), ("tokens/text_offsets", offsets)):
                self.file.create_dataset(name, data=values, maxshape=(None,),
                                         chunks=(max(1, min(len(values), 65536)),),
                                         fletcher32=True)
        self.file.close()
        os.replace(self.temp_path, self.path)
        self.committed = True

    def abort(self):
        """Closes and removes the temporary file (no-op after commit())."""
        if self.committed:
            return
        if self.file:
            self.file.close()
        if os.path.exists(self.temp_path):
            os.remove(self.temp_path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.abort()
        return False


def model_shape(config):
    """(layers, q_heads, kv_heads, head_dim, rope_theta) of a transformers config."""
    layers = config.num_hidden_layers
    q_heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or q_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // q_heads
    rope_theta = getattr(config, "rope_theta", None)
    if rope_theta is None:  # transformers 5: config.rope_parameters["rope_theta"]
        rope_theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return layers, q_heads, kv_heads, head_dim, float(rope_theta)


def decoder_layers(model):
    """The list of decoder blocks of a causal LM (model.model.layers for Llama-like models)."""
    for path in ("model.layers", "model.model.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for attr in path.split("."):
                obj = getattr(obj, attr)
            return list(obj)
        except AttributeError:
            continue
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


class Recorder:
    """Records per-layer q/k/v of one forward call through hooks and a patched RoPE function."""

    def __init__(self, model, kv_heads, head_dim, pre_rope):
        self.kv_heads, self.head_dim, self.pre_rope = kv_heads, head_dim, pre_rope
        self.layer = None
        self.records = {}
        self.handles = []
        self.patched = []  # (module, original function)
        layers = decoder_layers(model)
        self.num_layers = len(layers)
        for index, block in enumerate(layers):
            attn = getattr(block, "self_attn", None) or getattr(block, "attention", None)
            if attn is None or not hasattr(attn, "v_proj"):
                raise ValueError(f"layer {index}: no self_attn.v_proj (unsupported attention)")
            self.handles.append(attn.register_forward_pre_hook(self._enter(index)))
            self.handles.append(attn.v_proj.register_forward_hook(self._values(index)))
            module = sys.modules[type(attn).__module__]
            if not hasattr(module, "apply_rotary_pos_emb"):
                raise ValueError(f"layer {index}: {module.__name__} has no apply_rotary_pos_emb "
                                 f"(a model without RoPE or with fused attention)")
            if all(m is not module for m, _ in self.patched):
                original = module.apply_rotary_pos_emb
                self.patched.append((module, original))
                module.apply_rotary_pos_emb = self._rope(original)

    def _enter(self, index):
        def hook(module, args):
            self.layer = index
        return hook

    def _values(self, index):
        def hook(module, args, output):
            b, n, _ = output.shape
            v = output.detach().float().reshape(b, n, self.kv_heads, self.head_dim)
            self.records.setdefault(index, {})["v"] = v[0].transpose(0, 1).cpu().numpy()
        return hook

    def _rope(self, original):
        def wrapped(q, k, *args, **kwargs):
            q_out, k_out = original(q, k, *args, **kwargs)
            rec = self.records.setdefault(self.layer, {})
            # [batch, heads, n, d] -> [heads, n, d] of the single sequence.
            rec["q"] = q_out[0].detach().float().cpu().numpy()
            rec["k"] = k_out[0].detach().float().cpu().numpy()
            if self.pre_rope:
                rec["q_pre_rope"] = q[0].detach().float().cpu().numpy()
                rec["k_pre_rope"] = k[0].detach().float().cpu().numpy()
            return q_out, k_out
        return wrapped

    def take(self):
        """The per-layer records of the last forward call, then clears them."""
        missing = [l for l in range(self.num_layers)
                   if not {"q", "k", "v"} <= set(self.records.get(l, {}))]
        if missing:
            raise RuntimeError(f"layers {missing} did not call apply_rotary_pos_emb/v_proj: "
                               f"unsupported attention implementation")
        out = [self.records[l] for l in range(self.num_layers)]
        self.records = {}
        return out

    def close(self):
        for handle in self.handles:
            handle.remove()
        for module, original in self.patched:
            module.apply_rotary_pos_emb = original
        self.handles, self.patched = [], []


def sample(logits, temperature, top_p, generator):
    """Greedy at temperature 0, else softmax(logits / T) within the top-p nucleus."""
    import torch
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    keep = int(torch.searchsorted(cumulative, torch.tensor(top_p, device=cumulative.device),
                                  right=True)) + 1
    nucleus = sorted_probs[:keep] / sorted_probs[:keep].sum()
    choice = torch.multinomial(nucleus.cpu(), 1, generator=generator)
    return int(order[int(choice)])


def capture(model, prompt_ids, decode, writer, token_text=None, temperature=0.0, top_p=1.0,
            seed=0, prefill_block=0, pre_rope=False, progress=None):
    """Runs `prompt_ids` then `decode` steps with the model's KV cache, appending every position
    to `writer` (TraceFileWriter). Every generated token is itself forwarded, so the trace holds
    len(prompt_ids) + decode positions. token_text: function id -> str, or None. Returns the ids.
    """
    import torch
    layers, q_heads, kv_heads, head_dim, _ = model_shape(model.config)
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and len(prompt_ids) + decode > context:
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) + {decode} decode tokens exceed the "
                         f"model's context length {context}")
    if not prompt_ids:
        raise ValueError("the prompt is empty: expected at least one token")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    recorder = Recorder(model, kv_heads, head_dim, pre_rope)
    ids = list(prompt_ids)
    try:
        past = None
        block = prefill_block or len(ids)

        def run(tokens, past):
            with torch.no_grad():
                out = model(input_ids=torch.tensor([tokens], device=device), past_key_values=past,
                            use_cache=True)
            records = recorder.take()
            text = [token_text(t) for t in tokens] if token_text else None
            writer.append(tokens, text, records)
            if progress:
                progress(len(tokens))
            return out.logits[0, -1], out.past_key_values

        for begin in range(0, len(ids), block):
            logits, past = run(ids[begin:begin + block], past)
        for _ in range(decode):
            ids.append(sample(logits, temperature, top_p, generator))
            logits, past = run(ids[-1:], past)
    finally:
        recorder.close()
    return ids


def read_prompt_ids(path):
    with open(path) as f:
        text = f.read().replace(",", " ").replace("[", " ").replace("]", " ")
    return [int(word) for word in text.split()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face model id or local directory")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (tokenized with the model's tokenizer)")
    prompt.add_argument("--prompt-file", help="read the prompt text from a file")
    prompt.add_argument("--prompt-ids", help="read the prompt as token ids")
    parser.add_argument("--decode", type=int, default=64, help="decode steps (default 64)")
    parser.add_argument("-o", "--out", required=True, help="output trace (HDF5)")
    parser.add_argument("--name", help="model name stored in the trace (default: --model)")
    parser.add_argument("--storage", choices=("f16", "f32"), default="f16")
    parser.add_argument("--pre-rope", action="store_true", help="also store pre-RoPE q/k")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, ...")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefill-block", type=int, default=0,
                        help="prompt tokens per prefill forward (0 = whole prompt)")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # Eager attention: the capture hooks need the Python attention path.
    model = AutoModelForCausalLM.from_pretrained(
        args.model, torch_dtype=getattr(torch, args.dtype), attn_implementation="eager")
    model.to(args.device).eval()
    if args.prompt_ids:
        prompt_ids = read_prompt_ids(args.prompt_ids)
    else:
        text = args.prompt if args.prompt is not None else open(args.prompt_file).read()
        prompt_ids = tokenizer(text)["input_ids"]
    layers, q_heads, kv_heads, head_dim, rope_theta = model_shape(model.config)
    sampling = ("greedy" if args.temperature == 0 else
                f"temperature={args.temperature} top_p={args.top_p} seed={args.seed}")
    total = len(prompt_ids) + args.decode
    done = [0]

    def progress(n):
        done[0] += n
        if sys.stderr.isatty():
            print(f"\rcapture {done[0]}/{total}", end="", file=sys.stderr, flush=True)

    with TraceFileWriter(args.out, args.name or args.model, layers, q_heads, kv_heads, head_dim,
                         rope_theta, source=f"capture:hf:{args.model} {sampling}",
                         storage=args.storage, pre_rope=args.pre_rope) as writer:
        ids = capture(model, prompt_ids, args.decode, writer,
                      token_text=lambda t: tokenizer.decode([t]), temperature=args.temperature,
                      top_p=args.top_p, seed=args.seed, prefill_block=args.prefill_block,
                      pre_rope=args.pre_rope, progress=progress)
        writer.commit(len(prompt_ids))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"captured {len(ids)} positions (prompt {len(prompt_ids)}, decode {args.decode})")
    print(f"trace: {args.out}")
    print(f"text: {tokenizer.decode(ids)}")


if __name__ == "__main__":
    main()

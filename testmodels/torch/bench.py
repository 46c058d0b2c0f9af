#!/usr/bin/env python3
"""PyTorch eager baseline for `lqcbench gpu`: a llama model from a Hugging
Face folder (config.json + one model.safetensors) run in bf16 with
scaled_dot_product_attention and a KV cache, measured as llama-bench
measures: pp = the prompt as one batch into an empty cache, tg = tokens
decoded one at a time from BOS. Needs only torch (no transformers).
Prints one line, "PP TG" in tokens/s (medians); progress on stderr.
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_safetensors(path, device, dtype):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            f.seek(base + start)
            raw = bytearray(f.read(end - start))
            t = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
            out[name] = t.to(device=device, dtype=dtype)
    return out


def attention(q, k, v, mask):
    """SDPA where torch has it (2.0+), else spelled out (Debian's 1.13)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s.float(), -1).to(q.dtype) @ v


class Llama:
    def __init__(self, folder, device, dtype):
        cfg = json.load(open(os.path.join(folder, "config.json")))
        self.w = load_safetensors(os.path.join(folder, "model.safetensors"), device, dtype)
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg.get("num_key_value_heads", self.heads)
        self.dim = cfg["hidden_size"]
        self.hd = self.dim // self.heads
        self.eps = cfg["rms_norm_eps"]
        self.theta = cfg.get("rope_theta", 10000.0)
        self.device, self.dtype = device, dtype
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def norm(self, x, w):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(self.dtype) * w

    def rope(self, x, pos):
        # Hugging Face's llama layout: rotate halves (i, i + hd/2).
        inv = 1.0 / (self.theta ** (torch.arange(0, self.hd, 2, device=self.device, dtype=torch.float32) / self.hd))
        ang = pos[:, None].float() * inv[None, :]
        cos, sin = torch.cat([ang.cos()] * 2, -1).to(self.dtype), torch.cat([ang.sin()] * 2, -1).to(self.dtype)
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2 :]
        return x * cos[None] + torch.cat([-x2, x1], -1) * sin[None]

    def new_cache(self, ctx):
        shape = (self.layers, self.kv_heads, ctx, self.hd)
        return [torch.empty(shape, device=self.device, dtype=self.dtype) for _ in range(2)]

    @torch.inference_mode()
    def forward(self, ids, start, cache):
        T = ids.shape[0]
        pos = torch.arange(start, start + T, device=self.device)
        x = self.w["model.embed_tokens.weight"][ids]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            h = self.norm(x, self.w[p + "input_layernorm.weight"])
            q = (h @ self.w[p + "self_attn.q_proj.weight"].T).view(T, self.heads, self.hd).transpose(0, 1)
            k = (h @ self.w[p + "self_attn.k_proj.weight"].T).view(T, self.kv_heads, self.hd).transpose(0, 1)
            v = (h @ self.w[p + "self_attn.v_proj.weight"].T).view(T, self.kv_heads, self.hd).transpose(0, 1)
            q, k = self.rope(q, pos), self.rope(k, pos)
            cache[0][i, :, start : start + T] = k
            cache[1][i, :, start : start + T] = v
            K, V = cache[0][i, :, : start + T], cache[1][i, :, : start + T]
            rep = self.heads // self.kv_heads
            K, V = K.repeat_interleave(rep, 0), V.repeat_interleave(rep, 0)
            mask = None
            if T > 1:
                mask = torch.ones(T, start + T, device=self.device, dtype=torch.bool).tril(start)
            a = attention(q, K, V, mask)
            x = x + a.transpose(0, 1).reshape(T, self.dim) @ self.w[p + "self_attn.o_proj.weight"].T
            h = self.norm(x, self.w[p + "post_attention_layernorm.weight"])
            g = F.silu(h @ self.w[p + "mlp.gate_proj.weight"].T) * (h @ self.w[p + "mlp.up_proj.weight"].T)
            x = x + g @ self.w[p + "mlp.down_proj.weight"].T
        x = self.norm(x, self.w["model.norm.weight"])
        return (x[-1:] @ self.lm_head.T).float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--greedy", type=int, default=0, help="print the greedy ids from BOS in float32 instead (checks the model)")
    args = ap.parse_args()
    if args.greedy:
        m = Llama(args.folder, args.device, torch.float32)
        cache = m.new_cache(args.greedy + 1)
        tok, ids = torch.tensor([1], device=args.device), []
        for i in range(args.greedy):
            tok = m.forward(tok, i, cache).argmax(-1)
            ids.append(int(tok))
        print(" ".join(map(str, ids)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench.py: no CUDA device for PyTorch")
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    print("bench.py: loading %s" % args.folder, file=sys.stderr)
    m = Llama(args.folder, args.device, torch.bfloat16)
    cache = m.new_cache(max(args.pp, args.tg) + 1)
    prompt = torch.tensor([1 + (i * 7919) % 1000 for i in range(args.pp)], device=args.device)
    pps, tgs = [], []
    for r in range(args.runs + 1):  # the first round warms up
        sync()
        t0 = time.perf_counter()
        m.forward(prompt, 0, cache)
        sync()
        pp_t = time.perf_counter() - t0
        t0 = time.perf_counter()
        tok = torch.tensor([1], device=args.device)
        for i in range(args.tg):
            logits = m.forward(tok, i, cache)
            tok = logits.argmax(-1)
        sync()
        tg_t = time.perf_counter() - t0
        if r > 0:
            pps.append(args.pp / pp_t)
            tgs.append(args.tg / tg_t)
    print("%.2f %.2f" % (statistics.median(pps), statistics.median(tgs)))


if __name__ == "__main__":
    main()

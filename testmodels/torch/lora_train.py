#!/usr/bin/env python3
"""PyTorch side of `lqcbench finetune`: training tokens/s of a LoRA on
q,k,v,o,gate,up,down of a llama model from a Hugging Face folder, the
frozen base in float32 (the cost of lqc's dequantized weights), one window
of --ctx tokens per step: forward, cross-entropy, backward, AdamW on the
adapter. Prints "TOKENS_PER_S FORWARD_S BACKWARD_S" (medians); progress
on stderr. Needs only torch.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Llama, attention  # noqa: E402

TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


class LoRALlama(Llama):
    def __init__(self, folder, rank, device="cpu"):
        super().__init__(folder, device, torch.float32)
        for w in self.w.values():
            w.requires_grad_(False)
        self.scale = 1.0  # alpha = rank, as lqcbench's lqc side
        self.lora = {}
        g = torch.Generator().manual_seed(1)
        for i in range(self.layers):
            for t in TARGETS:
                w = self.w[f"model.layers.{i}.{t}.weight"]
                a = (torch.randn(rank, w.shape[1], generator=g) / rank ** 0.5).requires_grad_(True)
                b = torch.zeros(w.shape[0], rank).requires_grad_(True)
                self.lora[f"{i}.{t}"] = (a, b)

    def params(self):
        return [p for ab in self.lora.values() for p in ab]

    def proj(self, h, i, t):
        a, b = self.lora[f"{i}.{t}"]
        return h @ self.w[f"model.layers.{i}.{t}.weight"].T + self.scale * ((h @ a.T) @ b.T)

    def logits(self, ids):
        T = ids.shape[0]
        pos = torch.arange(T)
        x = self.w["model.embed_tokens.weight"][ids]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        for i in range(self.layers):
            p = f"model.layers.{i}."
            h = self.norm(x, self.w[p + "input_layernorm.weight"])
            q = self.proj(h, i, "self_attn.q_proj").view(T, self.heads, self.hd).transpose(0, 1)
            k = self.proj(h, i, "self_attn.k_proj").view(T, self.kv_heads, self.hd).transpose(0, 1)
            v = self.proj(h, i, "self_attn.v_proj").view(T, self.kv_heads, self.hd).transpose(0, 1)
            q, k = self.rope(q, pos), self.rope(k, pos)
            rep = self.heads // self.kv_heads
            a = attention(q, k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0), mask)
            x = x + self.proj(a.transpose(0, 1).reshape(T, self.dim), i, "self_attn.o_proj")
            h = self.norm(x, self.w[p + "post_attention_layernorm.weight"])
            g = F.silu(self.proj(h, i, "mlp.gate_proj")) * self.proj(h, i, "mlp.up_proj")
            x = x + self.proj(g, i, "mlp.down_proj")
        return self.norm(x, self.w["model.norm.weight"]) @ self.lm_head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    print("lora_train.py: loading %s (float32), torch %s" % (args.folder, torch.__version__), file=sys.stderr)
    m = LoRALlama(args.folder, args.rank)
    opt = torch.optim.AdamW(m.params(), lr=1e-4, weight_decay=0.0)
    vocab = m.lm_head.shape[0]
    rates, fwd, bwd = [], [], []
    for r in range(args.runs + 1):  # the first step warms up
        ids = torch.randint(0, vocab, (args.ctx,))
        t0 = time.perf_counter()
        loss = F.cross_entropy(m.logits(ids[:-1]), ids[1:])
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        print("lora_train.py: step %d: loss %.4f, %.1fs" % (r, loss.item(), t2 - t0), file=sys.stderr)
        if r > 0:
            rates.append(args.ctx / (t2 - t0))
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    print("%.2f %.3f %.3f" % (statistics.median(rates), statistics.median(fwd), statistics.median(bwd)))


if __name__ == "__main__":
    main()

"""The PyTorch reference for the GPT: the same model, data, optimizer and schedule as
``pure-backprop train --model gpt``, written the way nanoGPT writes it (``nn.Linear``,
``nn.LayerNorm``, ``F.scaled_dot_product_attention(is_causal=True)``, ``nn.GELU("tanh")``,
tied embeddings, ``torch.optim.AdamW`` with decay on the tensors of two or more axes,
``clip_grad_norm_``), on this machine's CPU threads. Prints the validation bits per character
at each evaluation and the median time of a training step.

    python benchmarks/gpt_torch.py [--steps 1500] [--eval-every 250] [--seed 0]

Needs ``torch`` (not a dependency of pure_backprop: ``pip install torch``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pure_backprop.text import bits_per_char, load_text  # noqa: E402
from pure_backprop.train_gpt import validation_windows  # noqa: E402


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        q, k, v = (a.view(n, t, self.heads, d // self.heads).transpose(1, 2) for a in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(n, t, d)
        x = x + self.out(o)
        return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, context, layers, heads, width):
        super().__init__()
        self.te, self.pe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        for name, p in self.named_parameters():  # GPT-2's initialization, as pure_backprop.gpt
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("out.weight", "proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif "ln" not in name:
                nn.init.zeros_(p)

    def forward(self, ids):
        h = self.te(ids) + self.pe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h) @ self.te.weight.T


def learning_rate(step, lr, steps, warmup, final):
    """optax.warmup_cosine_decay_schedule(0, lr, warmup, steps, final) at ``step``."""
    if step < warmup:
        return lr * step / warmup
    progress = min(step - warmup, steps - warmup) / (steps - warmup)
    return final + 0.5 * (lr - final) * (1 + math.cos(math.pi * progress))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the history here")
    args = parser.parse_args(argv)
    layers, heads, width, context, batch = 4, 4, 128, 128, 32
    lr, warmup, final, decay, clip = 1e-3, 100, 1e-4, 0.1, 1.0
    torch.manual_seed(args.seed)
    corpus = load_text()
    train = torch.from_numpy(corpus.train.astype(np.int64))
    vx, vt = (torch.from_numpy(a.astype(np.int64)) for a in validation_windows(corpus.val, context))
    model = GPT(len(corpus.vocab), context, layers, heads, width)
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": decay}, {"params": others, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.99), eps=1e-8)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)

    def evaluate():
        model.eval()
        with torch.no_grad():
            total = sum(F.cross_entropy(model(vx[i:i + batch]).flatten(0, 1), vt[i:i + batch].flatten(), reduction="sum")
                        for i in range(0, len(vx), batch))
        model.train()
        return bits_per_char(float(total) / vx.numel())

    times, history = [], []
    for step in range(args.steps):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, lr, args.steps, warmup, final)
        offsets = torch.randint(0, len(train) - context, (batch,), generator=generator)
        rows = offsets[:, None] + torch.arange(context)[None, :]
        x, t = train[rows], train[rows + 1]
        loss = F.cross_entropy(model(x).flatten(0, 1), t.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        times.append(time.perf_counter() - started)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            record = {"step": step + 1, "train_loss": float(loss), "val_bits_per_char": evaluate(),
                      "ms_per_step": 1e3 * statistics.median(times[1:] or times)}
            history.append(record)
            print(json.dumps(record), flush=True)
    if args.json:
        args.json.write_text(json.dumps(history, indent=1))


if __name__ == "__main__":
    main()

"""The CPU demo (README's first command). For now the model's smoke demo: tiny GPT-2 and LLaMA, forward,
a short overfit of one batch, save -> load round trip, generate. (The full Inheritune demo lands with train.py.)"""
import math
import tempfile
import time

import torch

from model import GPT, ModelConfig, load_model, save_checkpoint

for config in (ModelConfig(arch="gpt2", n_layer=4, n_head=4, n_embd=128, vocab_size=1000, block_size=64),
               ModelConfig(arch="llama", n_layer=4, n_head=4, n_kv_head=2, n_embd=128, vocab_size=1000, block_size=64)):
    torch.manual_seed(0)
    model = GPT(config)
    batch = torch.randint(0, config.vocab_size, (8, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    t0 = time.time()
    for step in range(101):
        _, loss = model(batch[:, :-1], batch[:, 1:])
        if step % 25 == 0:
            print(f"{config.arch} step {step:3d}: loss {loss.item():.3f} (uniform guess {math.log(config.vocab_size):.3f})")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(f"{tmp}/ckpt.pt", model)
        reloaded = load_model(tmp)
    prompt = batch[:1, :8]
    sample = reloaded.generate(prompt, 24, temperature=0)[0, 8:]
    print(f"{config.arch}: {model.num_params():,} params, {time.time() - t0:.1f}s; greedy continuation reproduces "
          f"the memorised batch: {torch.equal(sample, batch[0, 8:32])}")

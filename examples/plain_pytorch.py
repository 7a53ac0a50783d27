"""Mixing in a training loop you own: sampler + weighted loss step + algorithm update, no Trainer.

    python examples/plain_pytorch.py --data-dir build/demo/data --steps 50 --out build/plain
    torchrun --nproc_per_node 2 examples/plain_pytorch.py --data-dir build/demo/data   # gloo on CPU
    torchrun --nproc_per_node 2 examples/plain_pytorch.py --data-dir build/demo/data --fsdp   # FSDP2 sharded

Each rank draws its own slice of the same global batch; mixflow all-reduces the per-domain
statistics after each step, so every rank holds identical weights.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.utils.data import DataLoader
from transformers import LlamaConfig, LlamaForCausalLM

from mixflow import MicroBatch, MixtureSampler, StepEngine, UpdateSchedule, build_algorithm
from mixflow.data.dataset import DomainCollator, MixtureDataset
from mixflow.data.packing import tokenize_in_memory
from mixflow.data.sources import sources_from_dataset_info
from mixflow.data.tokenizer import ByteTokenizer


def main(argv: list[str] | None = None) -> StepEngine:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True, help="directory with dataset_info.json (mixflow data demo)")
    parser.add_argument("--domains", default="code,prose,arithmetic,random")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (all ranks)")
    parser.add_argument("--cutoff-len", type=int, default=64)
    parser.add_argument("--max-documents", type=int, default=200)
    parser.add_argument("--out", default="build/plain")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    parser.add_argument("--fsdp", action="store_true", help="shard the model with FSDP2 fully_shard instead of DDP")
    args = parser.parse_args(argv)

    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    torch.manual_seed(0)

    tokenizer = ByteTokenizer()
    sources = sources_from_dataset_info(args.data_dir, args.domains.split(","))
    domains = [
        tokenize_in_memory(s, tokenizer, args.cutoff_len, max_documents=args.max_documents, progress=False)
        for s in sources
    ]
    train = MixtureDataset(domains)

    # 1. The algorithm decides the weights; the sampler draws this rank's slice of each global batch.
    algorithm = build_algorithm("static", train.domain_names, {}, init_weights=[0.4, 0.3, 0.2, 0.1])
    sampler = MixtureSampler(
        train.domain_sizes, algorithm.sampling_weights, args.batch_size, seed=0, rank=rank, world_size=world
    )
    engine = StepEngine(sampler, algorithm, schedule=UpdateSchedule(update_step=10), log_dir=args.out)
    loader = DataLoader(
        train, batch_size=sampler.local_batch_size, sampler=sampler, collate_fn=DomainCollator(tokenizer.pad_token_id)
    )

    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.cutoff_len,
    )
    model = LlamaForCausalLM(config)
    if args.fsdp:
        if world == 1:
            parser.error("--fsdp: launch with torchrun (sharding needs a process group)")
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    elif world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    engine.attach_model(model)  # providers that hook the forward (grad_stats) see the first batch too
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    step = 0
    checkpoint = Path(args.out) / "checkpoint"
    # Full (unsharded) state dicts, so one file resumes any of plain, DDP and FSDP runs.
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if args.resume:
        state = torch.load(checkpoint / "train.pt")
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=full
        )
        engine.load(checkpoint)  # sampler position, algorithm state, statistics since the last update
        step = engine.last_step

    batches = iter(loader)
    while step < args.steps:
        # mixflow's keys (domain_ids, sample_ids for per-example weighters, labels) leave the batch:
        # what is left, micro.inputs, is the model's input. batch_index (0-based) lets importance
        # weights read the p this batch was planned with from the sampler.
        micro = MicroBatch.take(next(batches), batch_index=step, model=model)
        engine.before_forward(micro)  # providers that run another model (DoReMi) do it here
        logits = model(**micro.inputs).logits  # the one forward; no labels, mixflow computes the loss
        # 2. The weighted loss step: per-sample losses from these logits, times c_j.
        loss = engine.training_loss(logits, micro)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        # 3. Statistics all-reduced over ranks; the algorithm updates on schedule; weights log.
        engine.end_step(step, model=model)
        if rank == 0 and step % 10 == 0:
            metrics = engine.metrics()
            print(
                f"step {step} loss {loss.item():.3f} "
                + " ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in metrics.items() if "loss" in k)
            )

    model_state, optimizer_state = get_state_dict(model, optimizer, options=full)  # every rank takes part
    if rank == 0:
        checkpoint.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model_state, "optimizer": optimizer_state}, checkpoint / "train.pt")
        engine.save(checkpoint)
    if dist.is_initialized():
        dist.barrier()
    return engine


if __name__ == "__main__":
    main()

"""Two packs side by side on one machine: thread pools sized to the host's cores vs to each process's share.

Each of two processes runs the same batch-1 BERT forwards (the shape of a pack's evaluation and verification
work) at the same time, once with torch's pool at every CPU of the machine (what each process picked before
``packager.threads``) and once with the CPUs split between them (``taskset`` / ``EDGEPACK_THREADS``). It prints
both wall times and their ratio, measured side by side in one run.

    .venv/bin/python benchmarks/pools_side_by_side.py [--forwards 200] [--hidden 256]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def _work(threads: int, forwards: int, hidden: int, start, done) -> None:
    import torch
    from transformers import BertConfig, BertModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=4, num_attention_heads=4,
                                 intermediate_size=4 * hidden, vocab_size=1000)).eval()
    ids = torch.randint(0, 1000, (1, 128))
    with torch.inference_mode():
        model(input_ids=ids)
        start.wait()
        t0 = time.perf_counter()
        for _ in range(forwards):
            model(input_ids=ids)
        done.put(time.perf_counter() - t0)


def side_by_side(threads: int, forwards: int, hidden: int) -> float:
    """Wall seconds until both processes finish their forwards, each with ``threads`` torch threads."""
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_work, args=(threads, forwards, hidden, start, done)) for _ in range(2)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    times = [done.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return max(wall, *times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forwards", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    share = max(1, cpus // 2)
    split = side_by_side(share, args.forwards, args.hidden)  # the shared machine's load drifts: share first,
    host = side_by_side(cpus, args.forwards, args.hidden)    # host-sized second, then share again
    split = (split + side_by_side(share, args.forwards, args.hidden)) / 2
    print(f"{cpus} CPUs, two processes side by side, {args.forwards} forwards each (batch 1, 128 tokens):")
    print(f"  pools of {cpus} threads each (the host's cores): {host:.2f} s")
    print(f"  pools of {share} threads each (their share):     {split:.2f} s (mean of a run before and after)")
    print(f"  ratio host-sized / share-sized: {host / split:.2f}x")


if __name__ == "__main__":
    main()

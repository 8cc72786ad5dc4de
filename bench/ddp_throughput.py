"""Training throughput with 1 and 2 processes under torchrun (DDP; gloo on CPU, NCCL on GPUs).

Same shards (FSDD at the seeds' 128 x 216 setting, or a synthetic corpus without FSDD), model,
per-process batch size and epochs; each run is `torchrun --standalone --nproc_per_node P -m
trainer train ...`. Reports samples/s of the last epoch (summed over ranks, from metrics.csv),
its data-wait fraction and the wall time of the whole command.

    python bench/ddp_throughput.py [--procs 1,2] [--epochs 2] [--width 0.5] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine, python_env, shards_for_training, training_options  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--epochs", type=int, default=2)
    training_options(parser, workers=1, help_workers="loader processes per rank")
    args = parser.parse_args()
    work = Path(args.work)
    shards = shards_for_training(work)
    print(f"# ddp throughput: {machine()}")
    print(f"# command: python bench/ddp_throughput.py --procs {args.procs} --epochs {args.epochs} "
          f"--width {args.width} --batch-size {args.batch_size} --num-workers {args.num_workers} "
          f"--device {args.device}")
    for procs in [int(p) for p in args.procs.split(",")]:
        run = work / f"ddp-run-{procs}"
        shutil.rmtree(run, ignore_errors=True)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                   "-m", "trainer", "train", str(shards), "--out", str(run), "--model", "cnn", "--width",
                   str(args.width), "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
                   "--epochs", str(args.epochs), "--device", args.device, "--mixup-p", "0"]
        env = python_env()
        if procs > 1:
            env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default: one thread per rank
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        with (run / "metrics.csv").open() as handle:
            last = list(csv.DictReader(handle))[-1]
        print(f"{procs} process(es): {float(last['samples_per_s']):8.1f} samples/s in the last epoch "
              f"({last['train_samples']} samples, data wait {float(last['data_wait_fraction']):.1%}), "
              f"{wall:.0f} s wall for {args.epochs} epochs", flush=True)


if __name__ == "__main__":
    main()

"""Training overhead of streaming: one epoch from shards vs the same batches from memory.

Same model, batch size and steps. (a) runs the trainer's own epoch loop over the streaming
loader (`--num-workers` processes) and reports its data-wait fraction; (b) replays the very same
batches from tensors already in memory through the same `train_step`. The overhead is
t(a) / t(b) - 1. Shards are FSDD's recordings at the seeds' setting (128 x 216 mels), or a
synthetic corpus when FSDD is absent.

    python bench/train_throughput.py [--model cnn] [--width 0.5] [--batch-size 32] [--num-workers 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, shards_for_training, training_options  # noqa: E402
from shared.config import TrainConfig  # noqa: E402
from trainer.data import iter_batches  # noqa: E402
from trainer.loop import State, StopRequest, train_epoch, train_step  # noqa: E402
from trainer.progress import EpochProgress  # noqa: E402
from trainer.setup import default_workers, open_session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", choices=["cnn", "resnet9"])
    parser.add_argument("--amp", default="auto")
    training_options(parser, workers=default_workers())
    args = parser.parse_args()
    work = Path(args.work)
    shards = shards_for_training(work)
    cfg = TrainConfig(model=args.model, width=args.width, batch_size=args.batch_size, epochs=1,
                      num_workers=args.num_workers, amp=args.amp, device=args.device)
    print(f"# train throughput: {machine()}")
    print(f"# command: python bench/train_throughput.py --model {args.model} --width {args.width} "
          f"--batch-size {args.batch_size} --num-workers {args.num_workers} --amp {args.amp} --device {args.device}")
    with tempfile.TemporaryDirectory() as run:
        s = open_session(shards, Path(run), cfg, resume=False, explicit=set())
        print(f"# device {s.device}, amp {s.learner.amp_dtype}, {s.train_stream.samples} samples")
        # warm-up: start the loader workers, let the allocator and kernels settle
        state = State()
        for i, batch in enumerate(iter_batches(s.train_loader)):
            train_step(s, batch, state)
            if i == 5:
                break
        memory = [{"mel": b["mel"].clone(), "label": b["label"].clone()} for b in iter_batches(s.train_loader)]
        if s.device.type == "cuda":
            memory = [{k: v.pin_memory() for k, v in b.items()} for b in memory]

        state = State(epoch=1)
        with StopRequest() as stop:
            streamed = train_epoch(s, state, stop, EpochProgress(1))
        sync = torch.cuda.synchronize if s.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        replay = State(epoch=1)
        for batch in memory:
            train_step(s, batch, replay)
            replay.step += 1
        sync()
        in_memory = time.perf_counter() - start
        samples = sum(len(b["label"]) for b in memory)
        print(f"streamed from shards : {streamed['samples_per_s']:8.1f} samples/s, "
              f"data wait {streamed['data_wait_fraction']:.1%}, {streamed['seconds']:.1f} s")
        print(f"from memory          : {samples / in_memory:8.1f} samples/s, {in_memory:.1f} s")
        print(f"streaming overhead   : {streamed['seconds'] / in_memory - 1:+.1%}")
        s.close()


if __name__ == "__main__":
    main()

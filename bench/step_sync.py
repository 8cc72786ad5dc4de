"""Does a training step wait for the device? The step as the trainer runs it against the step
that reads its loss and accuracy on the host after every batch (what it did before), and, on a
CUDA GPU, every synchronising call left inside the step.

(a) as is: one epoch of the trainer's own loop over the streaming loader; the figures are summed
    on the device and read when the progress bar refreshes (a few times a second);
(b) host reads: the same epoch loop with `float(loss)` and `float(correct)` after every step,
    so the host waits for the device to finish each step before it can queue the next batch;
(a) again, so that drift in the machine's speed shows;
(c) CUDA only: `--sync-steps` steps replayed from batches in pinned memory under
    `torch.cuda.set_sync_debug_mode("warn")`, which warns at every call that makes the host wait
    for the GPU; they are counted by message. On a CPU, which runs every operation as it is
    called, (a) and (b) should match and (c) is skipped.

Each line gives samples/s and the data wait (the share of the epoch spent waiting for the loader).
`--train-config` takes a training TOML (e.g. bench/configs/fsdd_fresh_train.toml: every log-mel
augmentation and the weight average on), so that every part of the step is looked at.

    python bench/step_sync.py [--model resnet9] [--width 1.0] [--batch-size 64] [--amp auto]
                              [--train-config T] [--sync-steps 50]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, shards_for_training, training_options  # noqa: E402
from shared.config import TrainConfig, from_dict, load_toml  # noqa: E402
from trainer import loop  # noqa: E402
from trainer.data import iter_batches  # noqa: E402
from trainer.loop import RunningSums, State, StopRequest, train_epoch, train_step  # noqa: E402
from trainer.progress import EpochProgress  # noqa: E402
from trainer.setup import default_workers, open_session  # noqa: E402

EPOCHS = 3  # (a), (b), (a) again
SCHEDULE_EPOCHS = EPOCHS + 2  # room in the LR schedule for the warm-up and the replayed steps


def reading_every_step(step):
    """`train_step` followed by the two host reads the step made before its figures stayed on the device."""
    def wrapped(s, batch, state):
        loss, correct, n = step(s, batch, state)
        float(loss), float(correct)
        return loss, correct, n
    return wrapped


def epoch(s, number: int, label: str) -> None:
    state = State(epoch=number)
    with StopRequest() as stop:
        figures = train_epoch(s, state, stop, EpochProgress(number))
    print(f"{label:<22}: {figures['samples_per_s']:8.1f} samples/s, data wait "
          f"{figures['data_wait_fraction']:6.1%}, {figures['seconds']:.1f} s")


def count_syncs(s, batches: list[dict[str, torch.Tensor]]) -> collections.Counter:
    """The synchronising calls made by one train step per batch, with the weight average's update and
    the running sums: the work the trainer does between two batches."""
    found: collections.Counter = collections.Counter()
    state = State(epoch=EPOCHS + 1)
    sums = RunningSums(state.sums, s.device)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for batch in batches:
                loss, correct, n = train_step(s, batch, state)
                if s.learner.ema is not None:
                    s.learner.ema.update(s.learner.raw_model, state.step)
                state.step += 1
                sums.add(loss, correct, n)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for warning in caught:
        found[str(warning.message).splitlines()[0][:120]] += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", choices=["cnn", "resnet9"])
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--train-config", help="a training TOML whose options the step runs with")
    parser.add_argument("--sync-steps", type=int, default=50)
    training_options(parser, workers=default_workers())
    args = parser.parse_args()
    base = from_dict(TrainConfig, load_toml(args.train_config), args.train_config) if args.train_config \
        else TrainConfig()
    cfg = dataclasses.replace(base, model=args.model, width=args.width, batch_size=args.batch_size,
                              epochs=SCHEDULE_EPOCHS, num_workers=args.num_workers, amp=args.amp, device=args.device)
    shards = shards_for_training(Path(args.work))
    print(f"# step sync: {machine()}")
    print(f"# command: python bench/step_sync.py --model {args.model} --width {args.width} --batch-size "
          f"{args.batch_size} --num-workers {args.num_workers} --amp {args.amp} --device {args.device}"
          + (f" --train-config {args.train_config}" if args.train_config else ""))
    with tempfile.TemporaryDirectory() as run:
        s = open_session(shards, Path(run), cfg, resume=False, explicit=set())
        try:
            print(f"# device {s.device}, amp {s.learner.amp_dtype}, ema {cfg.ema_decay or 'off'}, "
                  f"{s.train_stream.samples} samples an epoch")
            warm = State()
            for i, batch in enumerate(iter_batches(s.train_loader)):  # loader workers, allocator, kernels
                train_step(s, batch, warm)
                if i == 5:
                    break
            epoch(s, 1, "(a) as is")
            plain = loop.train_step
            loop.train_step = reading_every_step(plain)
            try:
                epoch(s, 2, "(b) host reads")
            finally:
                loop.train_step = plain
            epoch(s, 3, "(a) as is, again")
            if s.device.type != "cuda":
                print(f"{'(c) sync check':<22}: skipped (it needs a CUDA GPU; a CPU runs every step synchronously)")
                return
            batches = []
            s.train_stream.start_epoch(EPOCHS + 1)
            for batch in iter_batches(s.train_loader):
                batches.append({k: batch[k].clone().pin_memory() for k in ("mel", "label")})
                if len(batches) == args.sync_steps:
                    break
            found = count_syncs(s, batches)
            print(f"(c) synchronising calls in {len(batches)} steps: {sum(found.values())}")
            for message, times in found.most_common():
                print(f"    {times:5d} x {message}")
        finally:
            s.close()


if __name__ == "__main__":
    main()

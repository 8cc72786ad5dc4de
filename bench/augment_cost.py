"""Per-step cost of the log-mel augmentations against a cnn training step, on the CPU.

A batch of 32 mels at the seeds' setting (128 x 216, float16 as stored, 22,050 Hz / n_fft 2048)
goes through each augmentation of trainer/augment.py alone and through all of them together
(`augment_mels` with every one on, then SpecAugment and MixUp as the loop applies them); a cnn
training step (forward, backward, AdamW step) on the same batch is the yardstick. Each figure is
the median of `--repeats` timed calls after a warm-up. The target: each, and all together, under
10% of a cnn step.

    python bench/augment_cost.py [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine
from shared.config import AudioConfig, TrainConfig
from trainer.augment import (
    add_noise,
    augment_mels,
    freq_mixstyle,
    freq_warp,
    mixup,
    random_eq,
    spec_augment,
    time_shift_crop,
    time_stretch,
)
from trainer.models import build_model, model_args

AUDIO = AudioConfig()  # 128 mels x 216 frames
ALL = TrainConfig(train_frames=200, shift_frames=20, stretch=(0.9, 1.1), warp=(0.9, 1.1), noise_p=0.5, eq_db=10,
                  freq_masks=2, time_masks=2, mixup_p=1.0, mixstyle_p=1.0)


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: cached tables, allocator
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mel = (-80 + 60 * torch.rand(32, AUDIO.n_mels, AUDIO.n_frames)).half()
    labels = torch.randint(0, 10, (32,))

    def gen(i: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(i)

    augmentations = {
        "time shift + crop (train_frames 200, shift 20)": lambda i=0: time_shift_crop(mel, ALL, gen(i)),
        "time stretch (0.9-1.1)": lambda i=0: time_stretch(mel, ALL, gen(i)),
        "frequency warp (0.9-1.1)": lambda i=0: freq_warp(mel, ALL, gen(i), AUDIO),
        "noise (p 0.5, white/pink)": lambda i=0: add_noise(mel, ALL, gen(i), AUDIO),
        "random EQ (10 dB)": lambda i=0: random_eq(mel, ALL, gen(i)),
        "frequency MixStyle (every batch)": lambda i=0: freq_mixstyle(mel.float()[:, None], ALL, gen(i),
                                                                      np.random.default_rng(i)),
        "SpecAugment (2 + 2 masks)": lambda i=0: spec_augment(mel.float()[:, None], ALL, gen(i)),
        "MixUp": lambda i=0: mixup(mel.float()[:, None], labels, ALL, gen(i), np.random.default_rng(i)),
    }

    def everything(i: int = 0) -> None:
        g, rng = gen(i), np.random.default_rng(i)
        x = augment_mels(mel, ALL, g, AUDIO)[:, None]
        mixup(spec_augment(freq_mixstyle(x, ALL, g, rng), ALL, g), labels, ALL, g, rng)

    augmentations["all of them, in the loop's order"] = everything
    rows = [(name, _median_ms(fn, args.repeats)) for name, fn in augmentations.items()]

    steps = {}
    for width in (1.0, 0.5):
        model = build_model("cnn", model_args(10, width, 0.3))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = mel.float()[:, None]

        def step(i: int = 0, model=model, optimizer=optimizer, x=x) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), labels).backward()
            optimizer.step()

        steps[width] = _median_ms(step, max(3, args.repeats // 4))

    print(f"# {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; batch 32 x 128 x 216")
    print(f"{'':52s} {'ms':>8s} {'/ cnn 1.0':>10s} {'/ cnn 0.5':>10s}")
    for width, ms in steps.items():
        print(f"{f'cnn training step, width {width}':52s} {ms:8.1f}")
    for name, ms in rows:
        print(f"{name:52s} {ms:8.2f} {100 * ms / steps[1.0]:9.1f}% {100 * ms / steps[0.5]:9.1f}%")


if __name__ == "__main__":
    main()

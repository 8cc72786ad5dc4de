# %% [markdown]
# # melshard from Python
# A generated corpus -> shards -> a hand-written training loop over `Shards(...).loader(...)`,
# with the loader's position saved mid-epoch and restored exactly -> a trainer run -> predictions.
# Run it as a script (`python examples/notebook.py [WORK_DIR]`, about 40 s on 2 CPU cores) or open
# it as a notebook (VS Code, Jupytext): every `# %%` is a cell.

# %%
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import melshard
from preprocess.synth import make_demo_corpus

work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="melshard-example-"))
corpus = make_demo_corpus(work / "corpus", per_class=10, test_per_class=2, sr=8000)  # 8 classes, 3 broken files

# %% Preprocess: tiny features (8 kHz, 1 s, 32 mels) so that everything runs in seconds.
result = melshard.preprocess(corpus["train"], work / "shards", test=corpus["test"], jobs=1, sr=8000,
                             duration_s=1.0, n_mels=32, n_fft=256, hop_length=64, augment_copies=1)
print(result.manifest.inputs, f"{result.seconds:.1f} s")
print(result.errors[["path", "reason"]])  # the broken files, one row each

# %% The shards and a loader: normalised float32 mels [B, 1, 32, 126] and int64 labels.
shards = melshard.Shards(work / "shards")
print(shards, shards.audio)
loader = shards.loader("train", batch_size=16, seed=1)

# %% A hand-written training loop over the loader.
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(32, len(shards.labels)))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
for epoch in range(6):
    loader.set_epoch(epoch)
    total = correct = 0
    for mel, label in loader:
        logits = model(mel)
        loss = nn.functional.cross_entropy(logits, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += len(label)
        correct += int((logits.argmax(1) == label).sum())
    print(f"epoch {epoch}: train accuracy {correct / total:.2f} over {total} samples")

# %% Exact resume: save the position after 2 batches, restore it into a fresh loader, and the
# remaining batches equal those of an uninterrupted epoch.
loader.set_epoch(6)
uninterrupted = [label for _, label in loader]
loader.set_epoch(6)
for step, (mel, label) in enumerate(loader):
    if step == 1:
        state = loader.state_dict()  # torch.save it with the model's state to survive a crash
        break
fresh = shards.loader("train", batch_size=16, seed=1)
fresh.load_state_dict(state)
resumed = [label for _, label in fresh]
assert len(resumed) == len(uninterrupted) - 2
assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted[2:]))
print(f"resumed after 2 of {len(uninterrupted)} batches: the other {len(resumed)} are identical")

# %% The validation split through the same hand-trained model, and one file through `features`.
model.eval()
with torch.no_grad():
    hits = sum(int((model(mel).argmax(1) == label).sum()) for mel, label in shards.loader("val", 32, shuffle=False))
print(f"val accuracy {hits / shards.counts['val']:.2f}")
mel = melshard.features(next(corpus["test"].glob("*.wav")), shards.audio)  # float16 [32, 126], as in the shards
print("features of one test file:", tuple(mel.shape), mel.dtype)

# %% The project's trainer on the same shards (a few epochs of a narrow CNN), then predictions.
run = melshard.train(shards, work / "run", model="cnn", width=0.25, epochs=4, batch_size=16,
                     num_workers=1, device="cpu", mixup_p=0.0)
print(run.metrics[["epoch", "train_loss", "val_acc"]])
predictions = melshard.predict(run, corpus["test"], jobs=1)  # one row per test file
print(predictions.head())
print(f"{len(predictions)} predictions of {len(list(corpus['test'].glob('*.wav')))} test files")

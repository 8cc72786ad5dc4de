"""The training step never waits for the device, and the epoch's figures are the same as if it did.

A step is queued on the device and the loop moves on to the next batch; the running figures are
summed on the device and read on the host only at a progress refresh, a checkpoint or the epoch's
end. On a CPU there is no device to wait for, so the proof is by bookkeeping: a torch function
mode follows which tensors live on the training device (the weights, their gradients, the
optimizer's and the loop's state, and whatever is computed from them or copied there) and records
every operation that needs such a tensor's value on the host (`item`, `float`, `bool`, `tolist`,
`cpu`, a mask's size, ...) and every blocking copy to the device, which waits for all the work
queued before it. On a CUDA machine the same runs on the GPU, with PyTorch's own sync debugging on.
"""

from __future__ import annotations

import threading
import traceback
import warnings
import weakref
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import trainer.loop as loop
from shared.config import TrainConfig
from trainer import checkpoint
from trainer.data import iter_batches
from trainer.distributed import leave
from trainer.progress import EpochProgress
from trainer.setup import open_session

T = torch.Tensor
# Operations that hand a tensor's value (or a size that depends on its values) to the host.
READS = {T.item, T.tolist, T.__float__, T.__int__, T.__index__, T.__bool__, T.cpu, T.numpy, T.is_nonzero,
         T.nonzero, T.masked_select, T.equal, T.unique, T.unique_consecutive, torch.equal, torch.allclose,
         torch.nonzero, torch.masked_select, torch.unique, torch.unique_consecutive, torch.is_nonzero}
MOVES = {T.to, T.cuda}
WHERE = str(Path(loop.__file__))


def _intended() -> str | None:
    """The loop's intended host reads: the running sums (`RunningSums.read`) and a checkpoint
    (its weights must reach the host to be written)."""
    names = {f.name for f in traceback.extract_stack() if f.filename == WHERE}
    return "sums" if "read" in names else "save" if "save" in names else None


def _project_frame() -> str:
    root = str(Path(loop.__file__).parents[1])
    frames = [f for f in traceback.extract_stack() if f.filename.startswith(root) and "/tests/" not in f.filename]
    return f"{frames[-1].filename}:{frames[-1].lineno} {frames[-1].line}" if frames else "?"


def _host_name(device) -> bool:
    """`device="cpu"` written out names the host (as torch's optimizer does for its step counts);
    the loop and the augmentations name the training device by a `torch.device` (`x.device`)."""
    return isinstance(device, str) and device == "cpu"


class DeviceTracker(TorchFunctionMode):
    """Follows which tensors are on the training device; records host reads of them and blocking
    copies to it. Tensors it did not see made are on the host (the loader's batches, cached
    tables) unless `place`d on the device."""

    def __init__(self) -> None:
        super().__init__()
        self.device: dict[int, weakref.ref] = {}  # tensors on the training device, by id
        self.reads: list[str] = []  # host reads of device tensors, and blocking copies, in the step
        self.intended = {"sums": 0, "save": 0}  # the same where the loop means to wait

    def on_device(self, t: torch.Tensor) -> bool:
        ref = self.device.get(id(t))
        return ref is not None and ref() is t

    def mark(self, t: torch.Tensor, there: bool) -> None:
        if there:
            self.device[id(t)] = weakref.ref(t)
        elif self.on_device(t):
            del self.device[id(t)]

    def place(self, s) -> None:
        """The session's state on the device: weights and buffers (of the average too), class
        weights, the normalisation, optimizer state, and every gradient as autograd makes it."""
        models = [s.learner.raw_model] + ([s.learner.ema.model] if s.learner.ema is not None else [])
        tensors = [t for m in models for t in [*m.parameters(), *m.buffers()]]
        tensors += [s.learner.class_weights] if s.learner.class_weights is not None else []
        tensors += [v for v in vars(s.norm).values() if isinstance(v, torch.Tensor)]
        tensors += [v for state in s.learner.optimizer.state.values() for k, v in state.items() if k != "step"]
        for t in tensors:
            self.mark(t, True)
        for p in s.learner.raw_model.parameters():
            p.register_post_accumulate_grad_hook(lambda p: self.mark(p.grad, True))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        from_device = any(self.on_device(x) for x in inputs)
        target = None  # where a move or a factory puts its result
        if func in MOVES:
            named = [a for a in args[1:] if isinstance(a, (torch.device, str))] + (
                [kwargs["device"]] if "device" in kwargs else [])
            to_other = [a for a in args[1:] if isinstance(a, torch.Tensor)]
            if func is T.cuda or to_other or named:
                target = "device" if func is T.cuda or to_other and self.on_device(to_other[0]) or (
                    named and not _host_name(named[0])) else "host"
        elif not inputs and kwargs.get("device") is not None:
            target = "host" if _host_name(kwargs["device"]) else "device"
        self._check(func, args, kwargs, inputs, from_device, target)
        there = target == "device" or (target is None and from_device)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.mark(t, there)
        return out

    def _check(self, func, args, kwargs, inputs, from_device, target) -> None:
        problem = None
        blocking = not kwargs.get("non_blocking")
        if func in READS and from_device:
            problem = f"{func.__name__} of a device tensor"
        elif func in MOVES and target == "host" and from_device:
            problem = "a copy to the host"
        elif func in (T.__getitem__, T.__setitem__) and any(
                t.dtype == torch.bool and self.on_device(t) for t in inputs[1:]):
            problem = "indexing by a device mask"  # the result's size needs the mask on the host
        elif func in MOVES and target == "device" and not from_device and blocking:
            problem = "a blocking copy to the device"
        elif func in (torch.tensor, torch.as_tensor) and target == "device":
            problem = "a blocking copy to the device"
        elif func is T.copy_ and self.on_device(args[0]) and not self.on_device(args[1]) and blocking and not (
                len(args) > 2 and args[2]):
            problem = "a blocking copy to the device"
        if problem is None:
            return
        intended = _intended()
        if intended:
            self.intended[intended] += 1
        else:
            self.reads.append(f"{problem}: {_project_frame()}")


class ScriptedProgress(EpochProgress):
    """A progress bar whose figures are due at the given steps of the epoch (1-based)."""

    def __init__(self, due: set[int]) -> None:
        super().__init__(1, enabled=False)
        self.due, self.steps, self.shown_at = due, 0, []

    def advance(self) -> bool:
        self.steps += 1
        return self.steps in self.due

    def show(self, loss, acc, lr, rate) -> None:
        self.shown_at.append((self.steps, loss, acc))


FRESH = dict(train_frames=110, shift_frames=8, stretch=(0.9, 1.1), warp=(0.9, 1.1), noise_p=0.5,
             noise_snr_db=(5.0, 30.0), eq_db=6.0, freq_masks=1, time_masks=1, ema_decay=0.9)


def _config(device: str, **extra) -> TrainConfig:
    amp = "bf16" if device == "cuda" else "off"  # bf16: no GradScaler (fp16's scaler reads its flag)
    options = dict(model="cnn", width=0.25, batch_size=4, num_workers=1, lr=3e-3, epochs=2, class_weights="balanced",
                   device=device, amp=amp, **FRESH)
    return TrainConfig(**{**options, **extra})


def _open(shards: Path, run: Path, cfg: TrainConfig):
    return open_session(shards, run, cfg, resume=False, explicit=set())


def _close(s) -> None:
    s.close()
    leave(s.world)


START = {"loss": 1.2345678901234567, "correct": 3.0, "n": 4.0}  # as if resumed mid-epoch


def _host_read_figures(shards: Path, run: Path, cfg: TrainConfig, world=None) -> list[dict[str, float]]:
    """The epoch's running sums after each step, summed the way the loop summed them when it read
    every step on the host: Python floats, `float(mean loss) * samples`."""
    s = _open(shards, run, cfg)
    if world is not None:
        s.world = world  # a rank draws its own numbers
    try:
        state = loop.State(sums=dict(START))
        if s.train_stream.epoch != state.epoch:
            s.train_stream.start_epoch(state.epoch)
        after = []
        for batch in iter_batches(s.train_loader):
            loss, correct, n = loop.train_step(s, batch, state)
            if s.learner.ema is not None:
                s.learner.ema.update(s.learner.raw_model, state.step)
            state.step += 1
            state.sums["loss"] += float(loss) * n
            state.sums["correct"] += float(correct)
            state.sums["n"] += n
            after.append(dict(state.sums))
        return after
    finally:
        _close(s)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_the_epoch_reads_the_device_only_to_refresh_checkpoint_and_end(tiny_shards, tmp_path, device, monkeypatch):
    """10 steps, the bar's figures due after steps 1, 2 and 7, checkpoints after 4 and 8: the
    device is read at those 5 moments and at the end, nowhere else; and what was shown, saved and
    reported equals, to the bit, what reading every step on the host gave (on CPU, where two runs
    are identical; CUDA's atomics make two GPU runs differ in the last bits)."""
    cfg = _config(device, checkpoint_every=4)
    saved = []
    real_save = loop.save
    monkeypatch.setattr(loop, "save", lambda s, state, name, payload=None: (
        saved.append((state.step, dict(state.sums))), real_save(s, state, name, payload)))
    progress = ScriptedProgress(due={1, 2, 7})
    s = _open(tiny_shards, tmp_path / "run", cfg)
    tracker = DeviceTracker()
    tracker.place(s)
    syncs = []  # PyTorch's own report of each host wait (CUDA), with where the loop was

    def note(message, *args, **kwargs):
        if "synchroniz" in str(message) and threading.current_thread() is threading.main_thread():
            syncs.append(_intended() or _project_frame())

    debug = torch.cuda.get_sync_debug_mode() if device == "cuda" else None
    try:
        state = loop.State(sums=dict(START))
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = note
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            with tracker, loop.StopRequest() as stop:
                figures = loop.train_epoch(s, state, stop, progress)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode(debug)
        _close(s)

    assert sorted(set(tracker.reads)) == [], "\n".join(sorted(set(tracker.reads)))
    # one read (of the two sums at once) per refresh, per checkpoint and at the end
    assert tracker.intended["sums"] == 3 + 2 + 1
    assert [where for where in syncs if where not in ("sums", "save")] == []
    assert ("sums" in syncs) == (device == "cuda")
    assert [step for step, _ in saved] == [4, 8] and figures["train_samples"] == 38 + 4
    if device != "cpu":
        return
    reference = _host_read_figures(tiny_shards, tmp_path / "reference", cfg)
    assert len(reference) == 10  # 38 samples in batches of 4
    end = reference[-1]
    assert progress.shown_at == [(k, reference[k - 1]["loss"] / reference[k - 1]["n"],
                                  reference[k - 1]["correct"] / reference[k - 1]["n"]) for k in (1, 2, 7)]
    assert saved == [(4, reference[3]), (8, reference[7])]
    assert state.sums == end
    assert figures["train_loss"] == end["loss"] / end["n"]
    assert figures["train_acc"] == end["correct"] / end["n"]
    last = checkpoint.load(tmp_path / "run" / checkpoint.LAST)
    assert last["epoch_sums"] == reference[7] and last["step"] == 8


def test_metrics_csv_is_written_as_before():
    """pandas writes the same bytes the string joining wrote: 6 significant digits, integers as
    they are, empty cells for no validation split."""
    def joined(history):
        def cell(value):
            if isinstance(value, float):
                return "" if value != value else f"{value:.6g}"
            return str(value)
        lines = [",".join(loop.METRIC_COLUMNS)] + [",".join(cell(r[c]) for c in loop.METRIC_COLUMNS) for r in history]
        return ("\n".join(lines) + "\n").encode()

    nan = float("nan")
    rows = [
        {"epoch": 1, "step": 10, "lr": 0.0023417804, "train_loss": 1.3994312345, "train_acc": 0.34210526315789475,
         "val_loss": 1.2416912, "val_acc": 0.7, "val_f1": 0.6845238095, "val_balanced_acc": 1.0,
         "samples_per_s": 196.22812, "data_wait_fraction": 0.0, "seconds": 1234567.891, "train_samples": 38,
         "lost_train_samples": 0, "lost_val_samples": 3},
        {"epoch": 2, "step": 20, "lr": 1.5e-07, "train_loss": 12345678.9, "train_acc": 1.0, "val_loss": nan,
         "val_acc": nan, "val_f1": nan, "val_balanced_acc": nan, "samples_per_s": 3.0e-5,
         "data_wait_fraction": 0.999999999, "seconds": 0.1, "train_samples": 1234567, "lost_train_samples": 12,
         "lost_val_samples": 0},
    ]
    import tempfile

    for history in ([], rows[:1], rows, rows[1:]):
        with tempfile.TemporaryDirectory() as run:
            loop.write_metrics(Path(run), history)
            assert (Path(run) / "metrics.csv").read_bytes() == joined(history)


def test_ranks_look_at_the_stop_flag_on_the_same_steps():
    """Under DDP the flag is all-reduced every STOP_CHECK_EVERY steps and at checkpoints, never at
    other steps; a single process looks every step (it costs nothing there)."""
    from types import SimpleNamespace

    def due_steps(distributed: bool, every: int) -> list[int]:
        s = SimpleNamespace(world=SimpleNamespace(distributed=distributed))
        return [step for step in range(1, 50) if loop._stop_check_due(s, step, bool(every) and step % every == 0)]

    assert loop.STOP_CHECK_EVERY == 16
    assert due_steps(True, 0) == [16, 32, 48]
    assert due_steps(True, 10) == [10, 16, 20, 30, 32, 40, 48]
    assert due_steps(False, 0) == list(range(1, 50))


@pytest.mark.parametrize("stop_after", [3, 17])
def test_a_stop_under_ddp_lands_at_the_next_check_with_the_epochs_sums(tiny_shards, tmp_path, monkeypatch,
                                                                        stop_after):
    """One epoch of 19 steps as rank 0 of two (the collectives stubbed): a stop requested after
    step 3 stops after step 16, one after step 17 at the epoch's end; the agreement is sought at
    16 and at the end only, and the state left for last.pt holds the sums of the steps run."""
    from trainer.distributed import World

    cfg = _config("cpu", batch_size=2)
    reference = _host_read_figures(tiny_shards, tmp_path / "reference", cfg, World(rank=0, size=2))
    assert len(reference) == 19
    asked = []
    monkeypatch.setattr(loop, "any_across", lambda world, flag: asked.append(state.step) or flag)
    ends = []
    monkeypatch.setattr(loop, "sum_across", lambda world, values: ends.append(state.step) or list(values))
    real_step = loop.train_step

    def step_then_signal(s, batch, st):
        out = real_step(s, batch, st)
        if st.step + 1 == stop_after:
            stop.signal = 15
        return out

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    s = _open(tiny_shards, tmp_path / "run", cfg)
    try:
        s.world = World(rank=0, size=2)
        state = loop.State(sums=dict(START))
        with loop.StopRequest() as stop:
            assert loop.train_epoch(s, state, stop, EpochProgress(1, enabled=False)) is None
    finally:
        _close(s)
    assert asked == [16]
    assert ends == ([] if stop_after == 3 else [19])  # the end's one all-reduce carries the flag
    assert state.step == (16 if stop_after == 3 else 19)
    assert state.sums == reference[state.step - 1]

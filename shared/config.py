"""Frozen configuration dataclasses, validated on construction and round-tripped through dicts.

Every value that changes what lands in a shard lives here, so that the manifest (and later each
checkpoint) records exactly how the features were made, and `predict` rebuilds the same features
from the recorded `AudioConfig` instead of from its own defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import sys
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TRANSFORMS = ("noise", "pitch", "speed", "shift", "reverb", "gain", "cut")  # every transform there is
DEFAULT_TRANSFORMS = TRANSFORMS[:6]  # the seeds' five plus gain
DB_REFERENCES = ("full_scale", "clip_max")
# How a sample's log-mel is stored (shared.melcodec): float16, or 8-bit codes with a per-clip
# offset and scale (half the bytes, within (max - min) / 510 dB of the float16 values).
MEL_ENCODINGS = ("float16", "uint8")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


SEED_MAX = 2**32 - 1  # numpy's legacy generators (the stratified split) take seeds up to this


def _check_seed(value: Any) -> None:
    _require(isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= SEED_MAX,
             f"seed must be a whole number from 0 to {SEED_MAX} (2**32 - 1), got {value!r}")


# ---------------------------------------------------------------------------------------------
# types: one check driven by the annotations, run first in every __post_init__, so that a value of
# the wrong type (a TOML `batch_size = 2.5`, `epochs = "3"`) is refused naming its key before any
# range check compares it. A hand-written check rather than pydantic or msgspec: neither is a
# dependency, and these few annotations need no more than isinstance.

_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _kind(hint: Any) -> str:
    """What a value of `hint` is, in words ('a whole number', 'two numbers', ...)."""
    if hint in _KINDS:
        return _KINDS[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_KINDS[args[0]].removeprefix('a ')}s"
        return f"{'two' if len(args) == 2 else len(args)} numbers [lo, hi]" if set(args) == {float} \
            else f"a list of {len(args)} values"
    if type(None) in args:
        return " or ".join([_kind(a) for a in args if a is not type(None)] + ["absent"])
    return f"a [{hint.__name__}] table" if isinstance(hint, type) else str(hint)


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` has the type `hint` names. A float takes an int but not inf or NaN; an int
    takes no float (no 2.5 batches, and no 3.0 epochs either); a bool is not a number."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if args:  # a union such as float | None
        return any(_fits(value, a) for a in args)
    return isinstance(value, hint)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_types(config: Any, prefix: str = "") -> None:
    """Refuse a field whose value is not of its annotated type, naming the key (`prefix` + the
    field, as in the TOML), what it takes and what it got; lists become tuples where a tuple is
    annotated (TOML and JSON have no tuples)."""
    for name, hint in _hints(type(config)).items():
        value = getattr(config, name)
        check_type(prefix + name, value, hint)
        if isinstance(value, list):
            object.__setattr__(config, name, tuple(value))


def check_type(key: str, value: Any, hint: Any) -> None:
    """Refuse `value` unless it has the type `hint` names (int, float, bool, str, a tuple or an
    optional of them), in one line naming `key`, the type and the value."""
    if not _fits(value, hint):
        infinite = isinstance(value, float) and not math.isfinite(value)
        raise ConfigError(f"{key} must be {'a finite number' if infinite else _kind(hint)}, got {_show(value)}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    _require(
        len(value) == 2 and low <= value[0] <= value[1] <= high,
        f"{name} must be two numbers [lo, hi] with {low} <= lo <= hi <= {high}, got {list(value)}",
    )


def option(default: Any, help: str, *, choices: Iterable[str] | None = None, flag: str | None = None,
           const: Any = None) -> Any:
    """A field that is also a command-line flag (`shared.options` makes it): `help` for --help,
    which adds the default unless the text says it; `choices` for a closed set; `flag` when it is
    not the field's name; `const` when the flag may be given alone (`--tta` means `--tta shift`).
    Every other field is set in a TOML `--config` only."""
    return field(default=default, metadata={"help": help, "choices": None if choices is None else tuple(choices),
                                            "flag": flag, "const": const})


@dataclass(frozen=True)
class AudioConfig:
    """Parameters of the one audio -> log-mel function (`shared.audio`)."""

    sr: int = option(22050, "sample rate of the features")  # every clip is resampled to it with soxr
    duration_s: float = option(5.0, "clip length in seconds", flag="--duration")  # padded with zeros or cropped
    n_fft: int = 2048  # FFT size and (Hann) window length
    hop_length: int = 512  # samples between frames
    n_mels: int = option(128, "mel bands")
    fmin: float = 0.0  # lowest mel band edge in Hz
    fmax: float | None = None  # highest mel band edge in Hz; None means sr / 2
    top_db: float = 20.0  # trim leading/trailing audio this far below the clip's peak; 0: no trim
    db_range: float = 80.0  # clamp the log-mel to this many dB below its maximum; 0: no clamp
    db_reference: str = "full_scale"  # dB relative to 1.0 ("full_scale") or the clip's max ("clip_max")
    silence_dbfs: float = -80.0  # a clip whose peak is below this level is rejected as silent
    # Long recordings: with `segment`, a recording longer than `duration_s` becomes consecutive
    # windows of `duration_s`, `segment_hop_s` apart (0: `duration_s`, no overlap); a last window
    # shorter than `min_segment_s` (at most `duration_s`) is dropped. Without it, a clip is
    # cropped to its first `duration_s` (after trimming).
    segment: bool = option(False, "recordings longer than --duration become consecutive windows (all of the "
                                  "audio is used); without it they are cropped to their start")
    segment_hop_s: float = 0.0
    min_segment_s: float = 1.0

    def __post_init__(self) -> None:
        _check_types(self, "audio.")
        _require(self.sr >= 1000, f"audio.sr must be at least 1000 Hz, got {self.sr}")
        _require(self.duration_s > 0, f"audio.duration_s must be positive, got {self.duration_s}")
        _require(self.n_fft >= 16, f"audio.n_fft must be at least 16, got {self.n_fft}")
        _require(0 < self.hop_length <= self.n_fft, "audio.hop_length must be in (0, n_fft]")
        _require(self.n_mels >= 1, f"audio.n_mels must be positive, got {self.n_mels}")
        top = self.sr / 2 if self.fmax is None else self.fmax
        _require(0 <= self.fmin < top <= self.sr / 2,
                 f"audio.fmin/fmax must satisfy 0 <= fmin < fmax <= sr/2 = {self.sr / 2}")
        _require(self.top_db >= 0, "audio.top_db must be >= 0 (0 disables trimming)")
        _require(self.db_range >= 0, "audio.db_range must be >= 0 (0 disables the clamp)")
        _require(self.db_reference in DB_REFERENCES,
                 f"audio.db_reference must be one of {', '.join(DB_REFERENCES)}")
        _require(0 <= self.segment_hop_s <= 3600, "audio.segment_hop_s must be in [0, 3600] (0: duration_s)")
        _require(self.min_segment_s >= 0, "audio.min_segment_s must be >= 0")
        # dBFS is relative to full scale (1.0): no clip's peak is above 0, so a floor above it
        # would reject every clip as silent.
        _require(self.silence_dbfs <= 0, f"audio.silence_dbfs must be <= 0 (dB relative to full scale; "
                                         f"default -80), got {self.silence_dbfs}")

    @property
    def n_samples(self) -> int:
        """Length of every clip after padding or cropping."""
        return int(round(self.sr * self.duration_s))

    @property
    def hop_samples(self) -> int:
        """Samples between the starts of consecutive windows of a segmented recording."""
        return int(round(self.sr * self.segment_hop_s)) if self.segment_hop_s > 0 else self.n_samples

    @property
    def min_segment_samples(self) -> int:
        """The shortest last window of a segmented recording that is kept (padded)."""
        return max(1, int(round(self.sr * min(self.min_segment_s, self.duration_s))))

    @property
    def n_frames(self) -> int:
        """Frames of every mel spectrogram (centred frames, as librosa)."""
        return 1 + self.n_samples // self.hop_length


@dataclass(frozen=True)
class AugmentConfig:
    """Random transforms for the augmented copies of training clips."""

    copies: int = option(1, "augmented copies per training clip")  # the seeds' default doubles the set
    transforms: tuple[str, ...] = DEFAULT_TRANSFORMS  # each copy draws one of these uniformly
    snr_db: tuple[float, float] = (10.0, 30.0)  # noise: signal-to-noise ratio range
    pitch_semitones: float = 2.0  # pitch: shift drawn from [-x, x] semitones
    speed: tuple[float, float] = (0.9, 1.1)  # speed: resampling factor range (tempo and pitch)
    shift_s: float = 0.5  # shift: start moved by up to this many seconds either way
    reverb_rt60_s: tuple[float, float] = (0.1, 0.6)  # reverb: decay time of the impulse response
    reverb_wet: tuple[float, float] = (0.2, 0.5)  # reverb: share of reverberant signal
    gain_db: tuple[float, float] = (-6.0, 6.0)  # gain: level change range
    cut_end: float = 0.3  # cut: up to this share of the clip's end removed (a recording stopped early)
    # Minority classes of the train split get more copies, so that every class reaches the
    # majority's sample count, at most `balance_cap` copies per clip.
    balance_classes: bool = option(False, "more augmented copies for smaller train classes, up to the largest "
                                          "class's count")
    balance_cap: int = option(10, "with --balance-classes: most copies per clip")

    def __post_init__(self) -> None:
        _check_types(self, "augment.")
        _require(self.copies >= 0, f"augment.copies must be >= 0, got {self.copies}")
        _require(self.balance_cap >= 0, f"augment.balance_cap must be >= 0, got {self.balance_cap}")
        _require(self.copies <= self.balance_cap or not self.balance_classes,
                 f"augment.balance_cap ({self.balance_cap}) must be at least augment.copies ({self.copies})")
        unknown = [t for t in self.transforms if t not in TRANSFORMS]
        _require(not unknown, f"unknown augment transform(s) {unknown}; choose from {list(TRANSFORMS)}")
        _require(bool(self.transforms) or (self.copies == 0 and not self.balance_classes),
                 "augment.transforms is empty; list at least one or set copies = 0 and balance_classes = false")
        _check_range("augment.snr_db", self.snr_db, -20.0, 100.0)
        _require(0 <= self.pitch_semitones <= 12, "augment.pitch_semitones must be in [0, 12]")
        _check_range("augment.speed", self.speed, 0.5, 2.0)
        _require(self.shift_s >= 0, "augment.shift_s must be >= 0")
        _check_range("augment.reverb_rt60_s", self.reverb_rt60_s, 0.01, 5.0)
        _check_range("augment.reverb_wet", self.reverb_wet, 0.0, 1.0)
        _check_range("augment.gain_db", self.gain_db, -60.0, 60.0)
        _require(0 <= self.cut_end < 1, "augment.cut_end must be in [0, 1)")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides the content of a shard folder (recorded in its manifest)."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = option(42, "seed for split, shard order and augmentation")  # every random choice derives from it
    val_fraction: float = option(0.2, "validation share")  # of the labeled clips, stratified
    shard_size: int = option(500, "samples per shard")  # augmented copies included
    max_rejected: float = option(0.5, "fail when more than this share of inputs is rejected")
    # Recorded in the manifest's `preprocess` table only when not float16, so that a default
    # run's manifest (and an older one, which has no such key) stays what it was.
    mel_encoding: str = option("float16", "how each log-mel is stored: float16, or uint8 (lossy: half the bytes, "
                                          "within (max - min) / 510 dB of the clip's float16 values; readers "
                                          "decode it to float32)", choices=MEL_ENCODINGS)

    def __post_init__(self) -> None:
        _check_seed(self.seed)  # its own message gives the range, whatever the type
        _check_types(self)
        _require(self.mel_encoding in MEL_ENCODINGS,
                 f"mel_encoding must be one of {', '.join(MEL_ENCODINGS)}, got {self.mel_encoding!r}")
        _require(0 <= self.val_fraction < 1, "val_fraction must be in [0, 1)")
        _require(self.shard_size >= 1, "shard_size must be at least 1")
        _require(0 <= self.max_rejected <= 1, "max_rejected must be in [0, 1]")


# ---------------------------------------------------------------------------------------------
# dict and TOML round trips


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build a config dataclass from a dict, refusing unknown keys with a message naming them."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{where or cls.__name__}] must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        section = f" in [{where}]" if where else ""
        raise ConfigError(f"unknown key(s) {unknown}{section}; valid keys: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, where=name)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a string where a number belongs
        raise ConfigError(f"bad value in [{where or cls.__name__}]: {exc}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file, turning a missing or malformed file into a one-line error."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the --config path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


# The models a run can train: trainer/models.py builds each (its registry names exactly these).
MODELS = ("cnn", "resnet9")
SCHEDULES = ("cosine", "onecycle")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
EARLY_STOP_METRICS = {"val_loss": "min", "val_acc": "max", "val_f1": "max", "val_balanced_acc": "max"}
CLASS_WEIGHTS = ("none", "balanced")
AGGREGATES = ("mean", "max", "confidence")  # how a segmented recording's windows combine at prediction
# ... by default: a mean weighted by each window's confidence, so that background windows do not
# outvote the few that hear the event (trainer.inference.aggregate; bench/long_recordings.py)
DEFAULT_AGGREGATE = "confidence"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result (recorded in config.json and checkpoints)."""

    # "cnn" (the seeds' classifier) or "resnet9" (Myrtle/DAWNBench layout)
    model: str = option("cnn", "classifier", choices=MODELS)
    width: float = option(1.0, "channel multiplier")  # below 1 makes a model small enough for a CPU
    dropout: float = 0.3  # before the classifier
    # The model takes each clip's mean over time from every mel band before its first layer
    # (cepstral mean normalisation; trainer.models.centre_bands), in training and prediction alike.
    centre_bands: bool = option(False, "take each clip's mean over time from every mel band "
                                       "(cancels a recording's microphone and room colouring)")
    epochs: int = option(80, "maximum epochs")  # early stopping usually ends sooner
    batch_size: int = option(32, "samples per batch")
    # AdamW. 3e-3, not the seeds' 1e-3: on the development suite (bench/suite.py, 12 epochs) it
    # won on every fold of all three corpora, suite macro-F1 0.734 against 0.688 (BENCHMARKS.md).
    lr: float = option(3e-3, "peak learning rate")
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    # "balanced": cross-entropy weights from the train split's per-class counts (inverse
    # frequency, mean 1), so a 50:1 majority cannot win by being answered always.
    class_weights: str = option("none", "cross-entropy class weights; balanced: inverse train frequency",
                                choices=CLASS_WEIGHTS)
    # "cosine" (linear warm-up, cosine decay) or "onecycle"
    schedule: str = option("cosine", "LR schedule", choices=SCHEDULES)
    warmup_fraction: float = 0.05  # share of all steps spent warming up
    grad_clip: float = 1.0  # max gradient norm, after unscaling; 0 disables
    # auto: bf16 (else fp16 + GradScaler) on CUDA, off on CPU
    amp: str = option("auto", "mixed precision (default auto: on for CUDA)", choices=AMP_MODES)
    mixup_p: float = option(0.5, "probability of mixing a batch")
    mixup_alpha: float = 0.4  # Beta(alpha, alpha) for the mixing weight
    mixstyle_p: float = 0.0  # frequency-wise MixStyle: share of batches whose band statistics are mixed; 0: off
    mixstyle_alpha: float = 0.3  # ... Beta(alpha, alpha) for each clip's mixing weight
    eq_db: float = 0.0  # random equalisation: tilt of up to this many dB at the band edges; 0: off
    freq_masks: int = 0  # SpecAugment: frequency masks per training sample
    freq_mask_width: int = 8  # ... each at most this many mel bands wide
    time_masks: int = 0  # SpecAugment: time masks per training sample
    time_mask_width: int = 16  # ... each at most this many frames wide
    # Log-mel augmentations drawn fresh every step (trainer/augment.py); every one off by default.
    train_frames: int = 0  # train on random crops this many frames long (centre crop to predict); 0: stored length
    shift_frames: int = 0  # time shift of up to this many frames either way, the clip's floor filling in
    stretch: tuple[float, float] = (1.0, 1.0)  # time stretch factor range (> 1 slower); (1, 1): off
    warp: tuple[float, float] = (1.0, 1.0)  # frequency warp f -> alpha f, alpha range; (1, 1): off
    noise_p: float = 0.0  # share of clips given white or pink noise ...
    noise_snr_db: tuple[float, float] = (10.0, 40.0)  # ... at an SNR drawn from this range
    ema_decay: float = option(0.0, "keep an exponential moving average of the weights with this decay (e.g. 0.999) "
                                   "for validation, best.pt and predict (default 0: off)")
    early_stop_metric: str = option("val_loss", "the validation figure early stopping follows",
                                    choices=EARLY_STOP_METRICS)
    patience: int = option(10, "early-stopping patience in epochs")  # epochs without improvement before stopping
    min_delta: float = 0.0  # smallest change that counts as an improvement
    seed: int = option(42, "seed of the weights, the data order and every augmentation")
    num_workers: int = option(0, "loader processes (default cores - 1)")  # 0 means cores - 1 (at least 1)
    prefetch_factor: int = 4  # batches each loader worker prepares ahead
    shuffle_buffer: int = 1000  # samples in each worker's shuffle buffer
    checkpoint_every: int = option(0, "also save last.pt every N steps (default 0: at epoch ends only)")
    device: str = option("auto", "where to train", choices=DEVICES)
    channels_last: bool = option(False, "channels-last memory format")
    compile: bool = option(False, "torch.compile the model")

    def __post_init__(self) -> None:
        _check_seed(self.seed)  # its own message gives the range, whatever the type
        _check_types(self)
        _require(self.model in MODELS, f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        _require(0 < self.width <= 8, "width must be in (0, 8]")
        _require(0 <= self.dropout < 1, "dropout must be in [0, 1)")
        _require(self.epochs >= 1, "epochs must be at least 1")
        _require(self.batch_size >= 1, "batch_size must be at least 1")
        _require(self.lr > 0 and self.weight_decay >= 0, "lr must be > 0 and weight_decay >= 0")
        _require(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        _require(self.class_weights in CLASS_WEIGHTS, f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}")
        _require(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}")
        _require(0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1)")
        _require(self.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)")
        _require(self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}")
        _require(0 <= self.mixup_p <= 1 and self.mixup_alpha > 0, "mixup_p in [0, 1], mixup_alpha > 0")
        _require(0 <= self.mixstyle_p <= 1 and self.mixstyle_alpha > 0, "mixstyle_p in [0, 1], mixstyle_alpha > 0")
        _require(0 <= self.eq_db <= 40, "eq_db must be in [0, 40] dB")
        _require(min(self.freq_masks, self.time_masks, self.freq_mask_width, self.time_mask_width) >= 0,
                 "SpecAugment mask counts and widths must be >= 0")
        _require(self.train_frames >= 0 and self.shift_frames >= 0, "train_frames and shift_frames must be >= 0")
        _check_range("stretch", self.stretch, 0.5, 2.0)
        _check_range("warp", self.warp, 0.5, 2.0)
        _require(0 <= self.noise_p <= 1, "noise_p must be in [0, 1]")
        _check_range("noise_snr_db", self.noise_snr_db, -20.0, 100.0)
        _require(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1) (0 disables weight averaging)")
        _require(self.early_stop_metric in EARLY_STOP_METRICS,
                 f"early_stop_metric must be one of {', '.join(EARLY_STOP_METRICS)}")
        _require(self.patience >= 1 and self.min_delta >= 0, "patience >= 1 and min_delta >= 0")
        _require(self.num_workers >= 0 and self.prefetch_factor >= 1, "num_workers >= 0, prefetch_factor >= 1")
        _require(self.shuffle_buffer >= 1, "shuffle_buffer must be at least 1")
        _require(self.checkpoint_every >= 0, "checkpoint_every must be >= 0")
        _require(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}")

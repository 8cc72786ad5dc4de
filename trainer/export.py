"""`python -m trainer export RUN --out model.onnx`: a run's best checkpoint as one ONNX graph.

The graph takes mono float32 waveforms at the run's sample rate, `[batch, samples]` of any length
(at least one sample; clips of different lengths are batched by zero-padding their ends, which
changes nothing: trailing zeros are trimmed, or are the padding the clip gets anyway), and
returns `probabilities` `[batch, classes]` and `silent` `[batch]` (True where `predict` would
reject the clip as silent: its peak at or below `audio.silence_dbfs`). Inside it is the front-end
of `shared.audio.clip_to_mel` after decoding and resampling, step for step: silence trimming
(`top_db`, in float64 as `shared.audio.trim` computes it), pad or crop to `duration_s`, centred
Hann-windowed frames, power spectrum, the Slaney mel filterbank, dB (full scale or clip max),
the `db_range` clamp, rounding to float16 as the shards store mels, then what `Predictor`
does: the centre crop to the training length, the per-band normalisation and the network (with
its `centre_bands`), softmax. Decoding and resampling stay outside (soundfile + soxr, README).

With `network_only` the graph is the network alone: its input is the normalised log-mel
`[batch, 1, n_mels, frames]` that `Predictor.inputs` makes.

The STFT is a strided conv1d over a windowed DFT basis rather than opset 17's STFT/DFT ops:
conv1d is in every ONNX runtime and opset (DFT is missing from several runtimes and from
onnxruntime's older releases), and its float32 sums match pocketfft's to a few ulps, well inside
the float16 rounding that follows. Opset 17 is read by onnxruntime >= 1.11 and the other common
runtimes. The legacy TorchScript exporter (`dynamo=False`) is used: it needs no onnxscript, and
it records the length-dependent shapes of trimming as graph arithmetic from the input's shape.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.atomic import write_bytes
from shared.audio import decode_limit_s
from shared.config import AudioConfig, to_dict
from shared.errors import UsageError
from shared.melscale import mel_filterbank
from trainer import checkpoint
from trainer.inference import Predictor, predictor_at

OPSET = 17
FORMAT = "melshard-onnx/1"
_AMIN = 1e-10  # power floor before log10, as shared.audio
# shared.audio.trim's frames (librosa.effects.trim's defaults), whatever the audio config's FFT.
_TRIM_FRAME, _TRIM_HOP = 2048, 512


def refusal(audio: AudioConfig) -> str | None:
    """Why a run with this audio config cannot be one waveform -> probabilities graph, or None."""
    if audio.segment:
        return ("this run's audio.segment = true cuts a recording into windows and combines their predictions, "
                "which one ONNX graph over a clip does not do; export --network-only and cut the windows outside, "
                "or predict with melshard predict")
    return None


class Frontend(nn.Module):
    """Waveforms `[B, N]` at `audio.sr` -> log-mels `[B, n_mels, n_frames]`, as `clip_to_mel(trim(y))`
    makes them (float16 values, returned as float32)."""

    def __init__(self, audio: AudioConfig):
        super().__init__()
        self.audio = audio
        n_fft, bins = audio.n_fft, audio.n_fft // 2 + 1
        n = np.arange(n_fft)
        window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)  # as shared.audio._tables
        # k * n reduced mod n_fft before scaling keeps every angle exact in float64.
        angle = 2.0 * np.pi * (np.outer(np.arange(bins), n) % n_fft) / n_fft
        basis = np.concatenate([np.cos(angle), -np.sin(angle)]) * window.astype(np.float64)
        self.register_buffer("dft", torch.from_numpy(basis.astype(np.float32))[:, None, :])
        mel = mel_filterbank(audio.sr, n_fft, audio.n_mels, audio.fmin, audio.fmax)
        self.register_buffer("mel", torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)))

    def trimmed(self, y: torch.Tensor) -> torch.Tensor:
        """Each clip's `trim(y, top_db)` padded or cropped to `n_samples`: `[B, n_samples]`."""
        n_samples = self.audio.n_samples
        size = y.shape[1]
        offsets = torch.arange(n_samples).unsqueeze(0)
        if self.audio.top_db <= 0:
            start = torch.zeros_like(y[:, :1], dtype=torch.long)
            end = torch.full_like(start, size)
        else:
            start, end = self._loud_span(y)
        index = start + offsets
        kept = torch.gather(y, 1, index.clamp(max=size - 1))
        return torch.where(index < end, kept, torch.zeros_like(kept))

    def _loud_span(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[start, end) of each clip's audio louder than `top_db` below its loudest frame, by
        `shared.audio.trim`'s rule and arithmetic: float64 squares summed in hop blocks, frames
        of four blocks, centred."""
        size = y.shape[1]
        lead = _TRIM_FRAME // 2
        squares = F.pad(y.double().square(), (lead, lead + _TRIM_HOP - 1))
        n_frames = size // _TRIM_HOP + 1
        per_frame = _TRIM_FRAME // _TRIM_HOP
        blocks = squares[:, : (n_frames + per_frame - 1) * _TRIM_HOP].reshape(y.shape[0], -1, _TRIM_HOP).sum(-1)
        total = blocks[:, :n_frames]
        for k in range(1, per_frame):
            total = total + blocks[:, k : k + n_frames]
        mean_square = total / _TRIM_FRAME
        ref = mean_square.amax(dim=1, keepdim=True)
        db = 10.0 * torch.log10(mean_square.clamp_min(_AMIN)) - 10.0 * torch.log10(ref.clamp_min(_AMIN))
        loud = (db > -self.audio.top_db).to(torch.float32)
        first = torch.argmax(loud, dim=1, keepdim=True)
        last = n_frames - 1 - torch.argmax(torch.flip(loud, dims=[1]), dim=1, keepdim=True)
        end = torch.clamp((last + 1) * _TRIM_HOP, max=size)
        return first * _TRIM_HOP, end

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        half = self.audio.n_fft // 2
        clip = F.pad(self.trimmed(y), (half, half)).unsqueeze(1)  # librosa's centring
        spectrum = F.conv1d(clip, self.dft, stride=self.audio.hop_length)  # [B, 2 * bins, frames]
        bins = self.mel.shape[1]
        power = spectrum[:, :bins].square() + spectrum[:, bins:].square()
        mel = torch.matmul(self.mel, power)
        db = 10.0 * torch.log10(mel.clamp_min(_AMIN))
        if self.audio.db_reference == "clip_max":
            db = db - 10.0 * torch.log10(mel.amax(dim=(1, 2), keepdim=True).clamp_min(_AMIN))
        if self.audio.db_range > 0:
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.audio.db_range)
        return db.to(torch.float16).to(torch.float32)  # the shards' float16 values


class Deployed(nn.Module):
    """Waveforms -> (class probabilities, silent): the front-end, then what `Predictor` does."""

    def __init__(self, predictor: Predictor):
        super().__init__()
        self.frontend = Frontend(predictor.audio)
        self.network = Network(predictor)
        self.frames = predictor.frames
        self.floor = 10.0 ** (predictor.audio.silence_dbfs / 20.0)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self.frontend(y)
        total = mel.shape[-1]
        if 0 < self.frames < total:  # trainer.augment.centre_crop, with the length known here
            start = (total - self.frames) // 2
            mel = mel[..., start : start + self.frames]
        # In float64, as shared.audio compares the clip's peak with the floor.
        silent = y.abs().amax(dim=1).double() <= self.floor
        return self.network(self.network.normalise(mel)), silent


class Network(nn.Module):
    """The trained network with a softmax: normalised log-mels `[B, 1, M, T]` -> probabilities."""

    def __init__(self, predictor: Predictor):
        super().__init__()
        self.model = predictor.model
        self.register_buffer("mean", predictor.norm.mean.detach().cpu().clone())
        self.register_buffer("std", predictor.norm.std.detach().cpu().clone())

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        """As `trainer.data.BandNorm`: `[B, M, T]` -> `[B, 1, M, T]`."""
        return ((mel - self.mean) / self.std).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def metadata(predictor: Predictor, network_only: bool) -> dict[str, str]:
    """The model's metadata_props: each value JSON."""
    audio = predictor.audio
    frames = predictor.frames if 0 < predictor.frames < audio.n_frames else audio.n_frames
    if network_only:
        contract = {"input": "log_mel", "shape": ["batch", 1, audio.n_mels, frames],
                    "made_by": "melshard.features(audio, audio_config), centre-cropped to `shape`, then "
                               "(mel - mel_mean) / mel_std per band"}
    else:
        contract = {"input": "waveform", "shape": ["batch", "samples"], "sample_rate": audio.sr,
                    "decode_limit_s": decode_limit_s(audio),
                    "made_by": "decode, mix to mono by the mean of the channels, keep the first decode_limit_s "
                               "seconds, resample to sample_rate with soxr (quality HQ); zero-pad to batch"}
    stats = {"mel_mean": predictor.norm.mean.flatten().tolist(), "mel_std": predictor.norm.std.flatten().tolist()}
    return {"melshard": json.dumps({"format": FORMAT, **contract, "outputs": ["probabilities"] if network_only
                                    else ["probabilities", "silent"]}),
            "labels": json.dumps(predictor.labels), "audio": json.dumps(to_dict(audio)),
            "model": json.dumps({"name": type(predictor.model).__name__, "train_frames": predictor.frames}),
            **({"stats": json.dumps(stats)} if network_only else {})}


def run_checkpoint(run: Path) -> Path:
    """The checkpoint a RUN argument names: a run folder's best.pt, or a checkpoint file itself."""
    if run.is_file():
        return run
    if not run.is_dir():
        raise UsageError(f"{run} does not exist; pass a run folder (train's --out) or its best.pt")
    if not (run / checkpoint.BEST).is_file():
        raise UsageError(f"{run} has no {checkpoint.BEST}; pass a run folder that trained at least one epoch")
    return run / checkpoint.BEST


def export(checkpoint_path: Path, out: Path, network_only: bool = False) -> dict[str, Any]:
    """Write the checkpoint's model as ONNX to `out` (atomically); returns what was written:
    `path`, `inputs` (name -> shape), `labels`."""
    try:
        import onnx
    except ImportError:
        raise UsageError("export needs the onnx package: pip install 'melshard[export]'") from None
    if not Path(out).parent.is_dir():
        raise UsageError(f"--out {out}: the folder {Path(out).parent} does not exist; make it first")
    predictor = predictor_at(checkpoint_path, "cpu")
    problem = None if network_only else refusal(predictor.audio)
    if problem:
        raise UsageError(f"cannot export {checkpoint_path} as waveform -> probabilities: {problem}")
    audio = predictor.audio
    frames = predictor.frames if 0 < predictor.frames < audio.n_frames else audio.n_frames
    if network_only:
        module: nn.Module = Network(predictor)
        example = torch.zeros(1, 1, audio.n_mels, frames)
        names, outputs = ["log_mel"], ["probabilities"]
        axes = {"log_mel": {0: "batch"}, "probabilities": {0: "batch"}}
    else:
        module = Deployed(predictor)
        example = torch.zeros(1, audio.n_samples) + 0.01
        names, outputs = ["waveform"], ["probabilities", "silent"]
        axes = {"waveform": {0: "batch", 1: "samples"}, "probabilities": {0: "batch"}, "silent": {0: "batch"}}
    module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata(predictor, network_only).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = (f"melshard {'network' if network_only else 'waveform'} -> probabilities over "
                        f"{len(predictor.labels)} classes; metadata_props hold labels and the audio config")
    onnx.checker.check_model(model)
    write_bytes(Path(out), model.SerializeToString())
    shape = ["batch", 1, audio.n_mels, frames] if network_only else ["batch", "samples"]
    return {"path": Path(out), "inputs": {names[0]: shape}, "labels": predictor.labels, "sample_rate": audio.sr}

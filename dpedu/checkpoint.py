"""Crash-safe checkpoints of a DP-SGD training run, so an interrupted run resumes to the same result.

:func:`dpedu.train.train` with ``checkpoint_dir=DIR`` (``dpedu train --checkpoint-dir DIR``)
saves, every ``checkpoint_every`` steps and at the end of each epoch, everything the rest of the
run depends on: parameters, optimiser state, EMA state, the step, the Poisson sampler's NumPy
generator state (``rng.bit_generator.state``, and its initial state for the shuffled sampler,
which is replayed), the JAX noise key (as raw key data), the DP-PCA generator's initial state,
the calibrated noise multiplier σ with ``q`` and ``T`` (so a resumed run does not calibrate again
and ends with the same ε), the history so far and the non-private diagnostics' running sums,
together with the config, a fingerprint of the training data and :data:`FORMAT_VERSION`.
``resume=True`` (``--resume``) continues from the newest valid checkpoint to the same final
parameters (bit-identical on the same machine and software) and the same ε as an uninterrupted
run with the same seed; it refuses (``ValueError``) a checkpoint of another config, data or
noise seed.

Serializer: flax.serialization (msgpack), ``to_state_dict`` / ``from_state_dict`` of the
parameter, optimiser and EMA pytrees plus a JSON string of the metadata, all in one msgpack map.
Flax is already a dependency, its msgpack format is stable and documented, and one file per step
is all this needs; orbax would add a large dependency (and asynchronous, multi-host machinery a
teaching run on one device does not use).

Crash safety: a checkpoint is written to a temporary file in the same folder, flushed and
``fsync``-ed, then renamed with ``os.replace`` (atomic) to ``ckpt-<step>.msgpack``, and the
folder is ``fsync``-ed; the two newest are kept. Each file starts with a header: :data:`MAGIC`,
the payload's length and its SHA-256, so a truncated or corrupt file (a crash mid-write on a
file system without atomic rename, a partial copy from a mounted drive) is detected; loading
warns about it, skips it and uses the previous one.

SECURITY: a checkpoint necessarily holds the state of the mechanism's randomness (the sampler's
generator, the noise key, the DP-PCA generator). Anyone who holds it can regenerate the noise of
the steps after it (and of the DP-PCA) and subtract it, exactly as with a published noise seed:
keep checkpoints as private as the training data, and delete them when the run is done.

For notebooks/04_cifar10_ladder.ipynb's Colab runs (not yet used there: the notebook is unchanged).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
import warnings
from pathlib import Path

FORMAT_VERSION = 1
MAGIC = b"DPEDUCK1"
_HEADER = struct.Struct("<8sQ32s")  # magic, payload length, SHA-256 of the payload
_NAME = re.compile(r"ckpt-(\d+)\.msgpack")
KEEP = 2

SECURITY_NOTE = ("checkpoints hold the sampling and noise randomness: anyone who has one can regenerate "
                 "the noise, as with a published seed; keep them as private as the data")


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt, or of an unknown format."""


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: ``step``, ``meta`` (JSON-ready dict), ``arrays`` (state dicts), ``path``."""

    step: int
    meta: dict
    arrays: dict
    path: Path


def checkpoint_paths(directory) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of the ``ckpt-<step>.msgpack`` files in ``directory``, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: no directory handles; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(directory, step: int, arrays: dict, meta: dict, keep: int = KEEP) -> Path:
    """Writes ``ckpt-<step>.msgpack`` atomically (temp file, fsync, ``os.replace``); keeps the ``keep`` newest.

    Args:
        directory: the checkpoint folder (created if missing).
        step: the number of steps done.
        arrays: pytrees (dicts, optax states, arrays), stored with ``flax.serialization.to_state_dict``.
        meta: JSON-ready metadata (config, RNG states, history, ...).
        keep: how many checkpoints to keep (>= 1).
    """
    from flax import serialization

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = serialization.msgpack_serialize({
        "format_version": FORMAT_VERSION, "step": int(step),
        "meta": json.dumps({**meta, "step": int(step), "format_version": FORMAT_VERSION}),
        "arrays": {name: serialization.to_state_dict(tree) for name, tree in arrays.items()},
    })
    header = _HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest())
    final = directory / f"ckpt-{int(step)}.msgpack"
    temp = directory / f".{final.name}.tmp-{os.getpid()}"
    try:
        with open(temp, "wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
    finally:
        if temp.exists():
            temp.unlink()
    _fsync_dir(directory)
    for old_step, path in checkpoint_paths(directory)[max(1, keep):]:
        if old_step != step:
            path.unlink(missing_ok=True)
    return final


def read(path) -> Checkpoint:
    """Reads and verifies one checkpoint file.

    Raises:
        CheckpointError: truncated, corrupt (SHA-256 mismatch) or of another format version.
    """
    from flax import serialization

    path = Path(path)
    blob = path.read_bytes()
    if len(blob) < _HEADER.size:
        raise CheckpointError(f"{path}: truncated ({len(blob)} bytes, shorter than its header)")
    magic, length, digest = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"{path}: not a dpedu checkpoint (bad magic bytes)")
    payload = blob[_HEADER.size:]
    if len(payload) != length:
        raise CheckpointError(f"{path}: truncated ({len(payload)} of {length} payload bytes)")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{path}: corrupt (SHA-256 of the payload does not match its header)")
    state = serialization.msgpack_restore(payload)
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {state.get('format_version')}, "
                              f"this dpedu reads {FORMAT_VERSION}")
    return Checkpoint(step=int(state["step"]), meta=json.loads(state["meta"]), arrays=state["arrays"], path=path)


def load_latest(directory) -> Checkpoint | None:
    """The newest valid checkpoint in ``directory``, or None; warns about (and skips) bad files."""
    for _, path in checkpoint_paths(directory):
        try:
            return read(path)
        except (CheckpointError, OSError, ValueError, KeyError) as err:
            warnings.warn(f"skipping checkpoint {path}: {err}", UserWarning, stacklevel=2)
    return None


def restore(target, state_dict):
    """``flax.serialization.from_state_dict(target, state_dict)``: a stored pytree in ``target``'s structure."""
    from flax import serialization

    return serialization.from_state_dict(target, state_dict)


def config_state(config) -> dict:
    """The JSON form of a :class:`~dpedu.configs.TrainConfig` as a checkpoint stores it."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def check_matches(checkpoint: Checkpoint, **expected) -> None:
    """``ValueError`` naming what differs between the checkpoint's ``meta`` and ``expected``.

    ``expected["config"]`` (a TrainConfig's :func:`config_state`) is compared field by field.
    """
    meta = checkpoint.meta
    problems = []
    for key, value in expected.items():
        stored = meta.get(key)
        if key == "config" and isinstance(stored, dict) and isinstance(value, dict):
            fields = sorted(k for k in set(stored) | set(value) if stored.get(k) != value.get(k))
            problems.extend(f"config.{k}: checkpoint {stored.get(k)!r}, requested {value.get(k)!r}"
                            for k in fields)
        elif stored != value:
            problems.append(f"{key}: checkpoint {stored!r}, requested {value!r}")
    if problems:
        raise ValueError(f"checkpoint {checkpoint.path} is of another run ({'; '.join(problems)}); "
                         "resume with the same config, data and noise seed, or use another checkpoint folder")

"""The model bundle: a directory with `config.json` and `model.safetensors`.

Loading checks everything a scoring engine relies on before any number is computed, so a
truncated copy, a hand-edited config, half of one bundle with half of another, or a bundle from
a newer release is refused with one line that names the file and field, never a crash deep
inside an engine.

What the readers accept is written down in docs/bundle-format.md, and the C++ runtime
(cpp/src/json.cpp, cpp/src/model.cpp) accepts exactly the same bundles:

- JSON: RFC 8259 in UTF-8, no repeated key in an object, no NaN/Infinity, number literals of at
  most 64 characters that neither overflow nor underflow a double, nesting depth at most 64,
  at most 262,144 values; integer fields written as integer literals.
- Integrity: `model_id` is the first 16 hex digits of SHA-256 over config.json (with the id's
  own value blanked) and model.safetensors, checked on every load.
- Limits on sizes (files, window, sensors, channels, slots, per-call scratch) and sane numbers
  (scales, threshold, temperature), so a 1 KB crafted bundle cannot exhaust a gateway.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memae_ts.detection.score_reduction import BUNDLE_REDUCTIONS, HALF_LIFE_RANGE, ScoreReduction
from memae_ts.errors import BundleError
from memae_ts.training.scaling import SCALERS, Scaler

FORMAT_NAME = "memae-ts-bundle"
FORMAT_VERSION = 2
# The newest format read: 3 is a format-2 bundle whose "scoring" section asks for a reduction
# other than `mean` (memae_ts.detection.score_reduction), written so that a runtime from before
# reductions refuses the bundle instead of scoring it as `mean`. A `mean` bundle stays format 2.
MAX_FORMAT_VERSION = 3
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_LAYER_OPS = ("conv1d", "conv_transpose1d", "linear", "relu", "leaky_relu", "tanh")
_ACTIVATIONS = ("relu", "leaky_relu", "tanh")


class Limits:
    """Load-time limits, the same numbers as `memae::limits` in cpp/include/memae/model.h."""

    CONFIG_BYTES = 8 << 20
    WEIGHTS_BYTES = 1 << 30
    HEADER_BYTES = 1 << 20
    JSON_DEPTH = 64
    JSON_VALUES = 1 << 18
    NUMBER_CHARS = 64
    SENSORS = 4096
    WINDOW = 16384
    INPUT = 1 << 20  # window x sensors
    FEATURES = 1 << 20  # channels (conv) or features (linear)
    KERNEL = 1024
    STRIDE = 1024  # also padding and output_padding
    LENGTH = 1 << 20
    ACTIVATION = 1 << 22  # floats of one layer output, one window
    LAYERS = 64
    SLOTS = 65536
    MEMORY_FLOATS = 1 << 24
    MODEL_BYTES = 512 << 20  # weights as the runtime lays them out
    SCRATCH_BYTES = 64 << 20  # per scoring call and thread
    SCALE = (1e-12, 1e12)
    ABS_CENTER = 1e15
    THRESHOLD = (1e-12, 1e12)
    TEMPERATURE = (1e-4, 1e4)
    ABS_SLOPE = 1e3


@dataclass
class Bundle:
    """A loaded, validated bundle. `weights` are float32 C-contiguous numpy arrays.

    `config_bytes` and `weights_bytes` are the two files exactly as written or read: the
    integrity id covers them, `save_bundle` writes them, and the C++ runtime loads them.
    """

    path: str
    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    config_bytes: bytes = b""
    weights_bytes: bytes = b""

    @property
    def sensors(self) -> list[str]:
        return list(self.config["sensors"])

    @property
    def window(self) -> int:
        return int(self.config["window"])

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"]["value"])

    @property
    def scaler(self) -> Scaler:
        return Scaler.from_config(self.config["scaler"])

    @property
    def network(self) -> dict[str, Any]:
        return dict(self.config["network"])

    @property
    def scoring(self) -> ScoreReduction:
        """How every engine turns squared errors into the score (absent: `mean`)."""
        return ScoreReduction.from_config(self.config.get("scoring"))

    @property
    def model_version(self) -> str:
        """The integrity id: changes whenever the weights or config change (metrics, logs)."""
        return str(self.config.get("model_id", "unknown"))


def data_fingerprint(values: np.ndarray, sensors: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(sensors).encode())
    digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- strict JSON


def _fail(where: str, message: str) -> BundleError:
    return BundleError(f"{where}: {message}")


class _JsonRefused(ValueError):
    """A value the strict reader does not accept (raised from the json module's hooks)."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            shown = key[:40] + ("..." if len(key) > 40 else "")
            raise _JsonRefused(f"duplicate key {shown!r} in one object")
        out[key] = value
    return out


def _float(text: str) -> float:
    if len(text) > Limits.NUMBER_CHARS:
        raise _JsonRefused("number literal too long")
    value = float(text)
    mantissa = text.lower().split("e")[0]
    if math.isinf(value) or (value == 0.0 and any(c in "123456789" for c in mantissa)):
        raise _JsonRefused(f"number {text} out of range")
    return value


def _int(text: str) -> int:
    if len(text) > Limits.NUMBER_CHARS:
        raise _JsonRefused("number literal too long")
    return int(text)


def _constant(text: str) -> Any:
    raise _JsonRefused(f"{text} is not a valid number")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_float=_float, parse_int=_int, parse_constant=_constant
)
_WHITESPACE = " \t\n\r"


def _check_tree(value: Any) -> None:
    """Depth, value count and well-formed strings (no lone surrogates), without recursion."""
    count = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > Limits.JSON_VALUES:
            raise _JsonRefused("more than 262144 values")
        if isinstance(item, dict):
            if depth + 1 > Limits.JSON_DEPTH:
                raise _JsonRefused("nesting deeper than 64 levels")
            for key, member in item.items():
                _check_text(key)
                stack.append((member, depth + 1))
        elif isinstance(item, list):
            if depth + 1 > Limits.JSON_DEPTH:
                raise _JsonRefused("nesting deeper than 64 levels")
            stack.extend((member, depth + 1) for member in item)
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _JsonRefused("lone surrogate in a string") from exc


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def read_json(
    data: bytes, where: str, *, id_span: bool = False
) -> tuple[Any, dict[str, tuple[int, int]] | None]:
    """Parse `data` as the strict JSON subset; with `id_span`, also the byte ranges that the
    integrity id blanks: the value of the top-level "model_id" (None when it is not a string)
    and of "created_at" when it is a string. Errors are BundleError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(where, f"not valid JSON (not UTF-8 at byte {exc.start})") from exc
    spans: dict[str, tuple[int, int]] = {}
    try:
        i = _skip(text, 0)
        if not id_span or i >= len(text) or text[i] != "{":
            value, end = _DECODER.raw_decode(text, i)
        else:
            # The top-level object member by member, so the id's position is known; the json
            # module parses every member value (same hooks, same C scanner).
            pairs: list[tuple[str, Any]] = []
            i = _skip(text, i + 1)
            if i < len(text) and text[i] == "}":
                end = i + 1
            else:
                while True:
                    if i >= len(text) or text[i] != '"':
                        raise json.JSONDecodeError(
                            "Expecting property name enclosed in double quotes", text, i
                        )
                    key, i = json.decoder.scanstring(text, i + 1, True)
                    i = _skip(text, i)
                    if i >= len(text) or text[i] != ":":
                        raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
                    i = _skip(text, i + 1)
                    member, after = _DECODER.raw_decode(text, i)
                    if key in ("model_id", "created_at") and isinstance(member, str):
                        spans[key] = (len(text[:i].encode()), len(text[:after].encode()))
                    pairs.append((key, member))
                    i = _skip(text, after)
                    if i < len(text) and text[i] == ",":
                        i = _skip(text, i + 1)
                        continue
                    if i < len(text) and text[i] == "}":
                        end = i + 1
                        break
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            value = _pairs(pairs)
        if _skip(text, end) != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        _check_tree(value)
    except json.JSONDecodeError as exc:
        raise _fail(where, f"not valid JSON ({exc})") from exc
    except _JsonRefused as exc:
        raise _fail(where, f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise _fail(where, "not valid JSON (nesting deeper than 64 levels)") from exc
    except (ValueError, TypeError) as exc:  # any other refusal of the json module
        raise _fail(where, f"not valid JSON ({exc})") from exc
    return value, spans if "model_id" in spans else None


# ------------------------------------------------------------------------------ integrity id


def bundle_id(config_bytes: bytes, weights_bytes: bytes, spans: list[tuple[int, int]]) -> str:
    """First 16 hex digits of SHA-256 over len(C) as u64 little-endian, C, then the weights,
    where C is config.json with the values at `spans` (model_id, created_at) replaced by ``""``."""
    parts, at = [], 0
    for begin, end in sorted(spans):
        parts += [config_bytes[at:begin], b'""']
        at = end
    blanked = b"".join([*parts, config_bytes[at:]])
    digest = hashlib.sha256(len(blanked).to_bytes(8, "little"))
    digest.update(blanked)
    digest.update(weights_bytes)
    return digest.hexdigest()[:16]


def stamp(config_bytes: bytes, weights_bytes: bytes) -> bytes:
    """config.json bytes with the integrity id for these weights written into its model_id.

    For tools and tests that write bundles by hand: anything else in the config is kept byte
    for byte, so an edited config loads only after it was stamped again on purpose.
    """
    _, spans = read_json(config_bytes, CONFIG_FILE, id_span=True)
    if spans is None:
        raise BundleError(f"{CONFIG_FILE}: has no string 'model_id' to stamp")
    value = bundle_id(config_bytes, weights_bytes, list(spans.values())).encode()
    begin, end = spans["model_id"]
    return config_bytes[:begin] + b'"' + value + b'"' + config_bytes[end:]


def encode_bundle(config: dict[str, Any], weights: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    """The two files of a bundle: config.json (format fields and integrity id stamped) and
    model.safetensors."""
    from safetensors.numpy import save

    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    weights_bytes = save(tensors, metadata={"format": FORMAT_NAME})
    body = {k: v for k, v in config.items() if k not in ("model_id", "format", "format_version")}
    if body.get("scoring") is None:
        body.pop("scoring", None)
    version = FORMAT_VERSION if "scoring" not in body else MAX_FORMAT_VERSION
    ordered = {"model_id": "", "format": FORMAT_NAME, "format_version": version, **body}
    try:
        text = json.dumps(ordered, indent=2, allow_nan=False) + "\n"
    except ValueError as exc:
        raise BundleError(f"{CONFIG_FILE}: cannot be written: a value is NaN or infinite ({exc})") from exc
    return stamp(text.encode("utf-8"), weights_bytes), weights_bytes


def make_bundle(config: dict[str, Any], weights: dict[str, np.ndarray], path: str = "<in memory>") -> Bundle:
    """Stamp format fields and the model id, and validate, without touching the disk."""
    config_bytes, weights_bytes = encode_bundle(config, weights)
    return decode_bundle(config_bytes, weights_bytes, path)


def decode_bundle(config_bytes: bytes, weights_bytes: bytes, path: str = "<in memory>") -> Bundle:
    """Check and read the bytes of config.json and model.safetensors: the same checks, in the
    same order, as the C++ loader (file sizes, JSON, format, weights file structure, integrity
    id, then the graph)."""
    config_where = f"{path}/{CONFIG_FILE}"
    weights_where = f"{path}/{WEIGHTS_FILE}"
    if len(config_bytes) > Limits.CONFIG_BYTES:
        raise _fail(config_where, f"larger than the limit of {Limits.CONFIG_BYTES >> 20} MiB")
    if len(weights_bytes) > Limits.WEIGHTS_BYTES:
        raise _fail(weights_where, f"larger than the limit of {Limits.WEIGHTS_BYTES >> 20} MiB")
    config, spans = read_json(config_bytes, config_where, id_span=True)
    _check_format(config, config_where)
    weights = read_safetensors(weights_bytes, weights_where)
    stored = config.get("model_id")
    if not isinstance(stored, str) or spans is None:
        raise _fail(config_where, "field 'model_id' is missing or not a string")
    computed = bundle_id(config_bytes, weights_bytes, list(spans.values()))
    if stored != computed:
        shown = stored if len(stored) <= 40 and stored.isprintable() else repr(stored[:40])
        raise BundleError(
            f"{path}: {CONFIG_FILE} and {WEIGHTS_FILE} do not belong together: {CONFIG_FILE} names model "
            f"{shown}, the two files hash to {computed} (half-copied, mixed or edited bundle; "
            "copy the whole bundle again)"
        )
    validate_config(config, config_where)
    _check_tensors(config, weights, weights_where)
    return Bundle(
        path=path, config=config, weights=weights, config_bytes=config_bytes, weights_bytes=weights_bytes
    )


# --------------------------------------------------------------------------------- the files


def _read_capped(name: str, dir_fd: int, shown: Path, limit: int) -> bytes:
    """The whole file `name` in the directory `dir_fd`, refusing one larger than `limit`
    without reading past it."""
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with open(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{shown}: larger than the limit of {limit >> 20} MiB")
    return data


def _read_files(root: Path) -> tuple[bytes, bytes]:
    """Both files through one open handle on the directory, so a bundle replaced while it is
    read (save_bundle, or a gateway's rename) gives both files of the old bundle or both of the
    new one. The old directory may be deleted under us: then read the new one."""
    for _attempt in range(3):
        try:
            dir_fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise BundleError(f"{root}: cannot be read ({exc.strerror or exc})") from exc
        try:
            config = _read_capped(CONFIG_FILE, dir_fd, root / CONFIG_FILE, Limits.CONFIG_BYTES)
            weights = _read_capped(WEIGHTS_FILE, dir_fd, root / WEIGHTS_FILE, Limits.WEIGHTS_BYTES)
            return config, weights
        except FileNotFoundError as exc:
            missing = exc.filename or "a file"
            continue  # the directory we opened was replaced and removed meanwhile: read again
        except OSError as exc:
            raise BundleError(f"{root}: cannot be read ({exc.strerror or exc})") from exc
        finally:
            os.close(dir_fd)
    raise BundleError(f"{root}: {missing} is missing; not a memae-ts model bundle")


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    root = Path(path)
    if not root.exists():
        raise BundleError(f"{root}: model bundle not found")
    if not root.is_dir():
        raise BundleError(f"{root}: a model bundle is a directory holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    for required in (root / CONFIG_FILE, root / WEIGHTS_FILE):
        if not required.is_file():
            raise BundleError(f"{root}: {required.name} is missing; not a memae-ts model bundle")
    config_bytes, weights_bytes = _read_files(root)
    return decode_bundle(config_bytes, weights_bytes, str(root))


def _bundle_like(directory: Path) -> bool:
    """Empty, or nothing but a bundle's files: the only directories save_bundle replaces."""
    return all(entry.name in (CONFIG_FILE, WEIGHTS_FILE) for entry in directory.iterdir())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def save_bundle(path: str | os.PathLike[str], bundle: Bundle) -> Bundle:
    """Write both files into a new directory beside `path`, then rename it into place.

    A reader (the edge daemon reloading, another `score`) sees the old bundle or the new one,
    never one file of each; a crash leaves at most a hidden `.NAME.tmp-*` directory. An existing
    `path` is replaced only when it holds nothing but a bundle's files.
    """
    target = Path(path)
    if target.is_symlink():  # a gateway's `model -> model-3`: replace what the link points to
        target = target.resolve()
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target}: exists and is not a directory")
    if target.is_dir() and not _bundle_like(target):
        raise BundleError(f"{target}: exists and holds other files than a model bundle; choose another path")
    config_bytes, weights_bytes = bundle.config_bytes, bundle.weights_bytes
    if not config_bytes or not weights_bytes:
        config_bytes, weights_bytes = encode_bundle(bundle.config, bundle.weights)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.tmp-"))
    except OSError as exc:
        raise BundleError(f"{target}: cannot create the bundle directory ({exc.strerror or exc})") from exc
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, (target.stat().st_mode & 0o7777) if target.is_dir() else 0o777 & ~umask)
        # Weights first: a staging directory with a config always has its weights.
        for name, data in ((WEIGHTS_FILE, weights_bytes), (CONFIG_FILE, config_bytes)):
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fsync_dir(staging)
        if not target.exists():
            try:
                os.rename(staging, target)
            except OSError:
                if not (target.is_dir() and _bundle_like(target)):
                    raise
        if staging.exists():  # the target exists: swap atomically, or move it aside first
            if not _exchange(staging, target):
                aside = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.old-"))
                os.rename(target, aside / "bundle")
                os.rename(staging, target)
                staging = aside
            shutil.rmtree(staging, ignore_errors=True)
        _fsync_dir(parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError(f"{target}: cannot write the bundle ({exc.strerror or exc})") from exc
    return Bundle(
        path=str(target),
        config=bundle.config,
        weights=bundle.weights,
        config_bytes=config_bytes,
        weights_bytes=weights_bytes,
    )


def read_safetensors(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file, with the checks of the C++ loader: header within the file
    and at most 1 MiB, strict JSON, every tensor F32 and finite, tensors back to back in offset
    order covering the data exactly (no overlap, no gap, nothing after)."""
    if len(data) < 8:
        raise _fail(where, f"truncated ({len(data)} bytes)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise _fail(
            where, f"truncated or corrupt: header claims {header_len} bytes, file has {len(data) - 8}"
        )
    if header_len > Limits.HEADER_BYTES:
        raise _fail(where, f"header is {header_len} bytes, over the limit of 1 MiB")
    header, _ = read_json(data[8 : 8 + header_len], f"{where} header")
    if not isinstance(header, dict):
        raise _fail(where, "corrupt: the header is not a JSON object")
    buffer = memoryview(data)[8 + header_len :]
    spans: list[tuple[int, int, str]] = []
    out: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise _fail(where, "corrupt: __metadata__ must map names to strings")
            continue
        label = f"tensor {name[:40]!r}"
        if not isinstance(entry, dict):
            raise _fail(where, f"{label}: corrupt entry")
        dtype = entry.get("dtype")
        if not isinstance(dtype, str):
            raise _fail(where, f"{label}: dtype missing or not a string")
        if dtype != "F32":
            raise _fail(where, f"{label} has dtype {dtype[:40]!r}, expected F32 (float32)")
        shape = entry.get("shape")
        if not isinstance(shape, list) or len(shape) > 8:
            raise _fail(where, f"{label}: shape must be a list of at most 8 dimensions")
        numel = 1
        for dim in shape:
            if not _is_int(dim) or not 0 <= dim <= 1 << 40:
                raise _fail(where, f"{label}: shape entries must be integers in [0, 2^40]")
            numel *= dim
            if numel > 1 << 40:
                raise _fail(where, f"{label} is too large")
        offsets = entry.get("data_offsets")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise _fail(where, f"{label}: data_offsets must be [begin, end]")
        begin, end = offsets
        if not (0 <= begin <= end <= len(buffer)):
            raise _fail(
                where,
                f"{label} lies outside the file (offsets {begin}..{end}, data is {len(buffer)} bytes): "
                "truncated or corrupt",
            )
        if end - begin != numel * 4:
            raise _fail(where, f"{label} has {end - begin} bytes, shape {tuple(shape)} needs {numel * 4}")
        array = np.frombuffer(buffer[begin:end], dtype="<f4").reshape(shape).astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise _fail(where, f"{label} holds NaN or infinite values")
        spans.append((begin, end, name))
        out[name] = np.ascontiguousarray(array)
    expected = 0
    for begin, end, name in sorted(spans):
        if begin != expected:
            raise _fail(
                where,
                f"tensor {name[:40]!r} starts at byte {begin}, expected {expected}: tensors overlap or "
                "leave a gap (corrupt file)",
            )
        expected = end
    if expected != len(buffer):
        raise _fail(where, f"{len(buffer) - expected} bytes after the last tensor (corrupt file)")
    return out


# ------------------------------------------------------------------------------ the config


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(config: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in config:
        raise _fail(where, f"field {key!r} is missing")
    value = config[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise _fail(where, f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _int_in(obj: dict[str, Any], key: str, where: str, lo: int, hi: int, *, optional: bool = False) -> int:
    value = obj.get(key)
    if value is None and optional:
        return 0
    if not _is_int(value) or not lo <= value <= hi:
        raise _fail(where, f"field {key!r} must be an integer in [{lo}, {hi}]")
    return int(value)


def _number_in(obj: dict[str, Any], key: str, where: str, lo: float, hi: float) -> float:
    value = obj.get(key)
    if not _is_number(value) or not lo <= value <= hi:
        raise _fail(where, f"field {key!r} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _check_format(config: Any, where: str) -> None:
    if not isinstance(config, dict):
        raise _fail(where, "top level must be a JSON object")
    if config.get("format") != FORMAT_NAME:
        shown = config.get("format")
        raise _fail(
            where,
            f"not a memae-ts bundle (format is {shown if not isinstance(shown, str) else shown[:40]!r})",
        )
    version = config.get("format_version")
    if not _is_int(version) or not 1 <= version <= 2**31 - 1:
        raise _fail(where, "field 'format_version' must be an integer in [1, 2147483647]")
    if version > MAX_FORMAT_VERSION:
        raise _fail(
            where,
            f"bundle format version {version} is newer than this memae-ts supports "
            f"({MAX_FORMAT_VERSION}); upgrade memae-ts",
        )
    if version < FORMAT_VERSION:
        raise _fail(
            where,
            f"bundle format version {version} has no integrity id; convert it with "
            "'memae-ts upgrade MODEL' (it checks the old id)",
        )


def validate_config(config: Any, where: str) -> None:
    """Everything in config.json the engines use, with the C++ loader's rules and limits."""
    _check_format(config, where)
    if not isinstance(config.get("model_id"), str):
        raise _fail(where, "field 'model_id' is missing or not a string")
    sensors = _require(config, "sensors", list, where)
    if not sensors or not all(isinstance(s, str) and s for s in sensors):
        raise _fail(where, "field 'sensors' must be a non-empty list of names")
    if len(sensors) > Limits.SENSORS:
        raise _fail(where, f"field 'sensors' lists more than {Limits.SENSORS} names")
    if len(set(sensors)) != len(sensors):
        raise _fail(where, "field 'sensors' has duplicate names")
    window = _int_in(config, "window", where, 1, Limits.WINDOW)
    if window * len(sensors) > Limits.INPUT:
        raise _fail(where, f"window x sensors is {window * len(sensors)}, over the limit of {Limits.INPUT}")
    scaler = _require(config, "scaler", dict, where)
    if scaler.get("kind") not in SCALERS:
        raise _fail(where, f"field 'scaler.kind' must be one of {', '.join(SCALERS)}")
    for key in ("center", "scale"):
        values = scaler.get(key)
        if not isinstance(values, list) or len(values) != len(sensors) or not all(map(_is_number, values)):
            raise _fail(where, f"field 'scaler.{key}' must be a list of {len(sensors)} finite numbers")
    if any(abs(c) > Limits.ABS_CENTER for c in scaler["center"]):
        raise _fail(where, "field 'scaler.center' has a value beyond +-1e15")
    lo, hi = Limits.SCALE
    bad = [s for s in scaler["scale"] if not lo <= s <= hi]
    if bad:
        raise _fail(where, f"field 'scaler.scale' must be in [1e-12, 1e12] (a scale of {bad[0]!r} is absurd)")
    threshold = _require(config, "threshold", dict, where)
    _number_in(threshold, "value", f"{where} (threshold)", *Limits.THRESHOLD)
    network = _require(config, "network", dict, where)
    if network.get("kind") not in ("conv", "mlp"):
        raise _fail(where, f"network.kind must be 'conv' or 'mlp', got {network.get('kind')!r}")
    net_window = network.get("window")
    net_sensors = network.get("n_sensors")
    if not _is_int(net_window) or not _is_int(net_sensors):
        raise _fail(where, "network window/n_sensors must be integers")
    if net_window != window or net_sensors != len(sensors):
        raise _fail(where, "network window/n_sensors disagree with 'window'/'sensors'")
    for part in ("encoder", "decoder"):
        layers = network.get(part)
        if not isinstance(layers, list) or not 1 <= len(layers) <= Limits.LAYERS:
            raise _fail(where, f"network.{part} must be a list of 1 to {Limits.LAYERS} layers")
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or layer.get("op") not in _LAYER_OPS:
                raise _fail(where, f"network.{part}[{i}] has an unknown op")
            if layer["op"] == "leaky_relu":
                _number_in(
                    layer,
                    "negative_slope",
                    f"{where} (network.{part}[{i}])",
                    -Limits.ABS_SLOPE,
                    Limits.ABS_SLOPE,
                )
    if "memory" not in network:
        raise _fail(where, "network.memory is missing (null for a plain autoencoder)")
    memory = network["memory"]
    if memory is not None:
        if not isinstance(memory, dict):
            raise _fail(where, "network.memory must be an object or null")
        if memory.get("addressing") not in ("cosine", "dot"):
            raise _fail(where, "network.memory.addressing must be 'cosine' or 'dot'")
        label = f"{where} (network.memory)"
        _int_in(memory, "slots", label, 1, Limits.SLOTS)
        _int_in(memory, "dim", label, 1, Limits.FEATURES)
        _number_in(memory, "temperature", label, *Limits.TEMPERATURE)
        if _number_in(memory, "shrink_threshold", label, 0.0, 1.0) >= 1.0:
            raise _fail(label, "field 'shrink_threshold' must be below 1")
        _number_in(memory, "epsilon", label, 0.0, 1.0)
        if not isinstance(memory.get("weight"), str):
            raise _fail(label, "field 'weight' must name a tensor")
    _check_scoring(config, where)
    _check_reading(config, where)


def _check_scoring(config: dict[str, Any], where: str) -> None:
    """The optional "scoring" section (the C++ loader's rules): a reduction the engines know,
    a half-life for `last_rows`, and format 3 for anything but `mean`."""
    scoring = config.get("scoring")
    if scoring is None:
        return
    if not isinstance(scoring, dict):
        raise _fail(where, "field 'scoring' must be an object or absent")
    kind = scoring.get("reduction")
    if kind not in BUNDLE_REDUCTIONS:
        shown = kind[:40] if isinstance(kind, str) else kind
        choices = ", ".join(BUNDLE_REDUCTIONS)
        raise _fail(where, f"field 'scoring.reduction' must be one of {choices}, got {shown!r}")
    if kind != "mean" and config["format_version"] < MAX_FORMAT_VERSION:
        raise _fail(
            where,
            f"field 'scoring.reduction' {kind!r} needs format_version {MAX_FORMAT_VERSION}, "
            f"the bundle says {config['format_version']}",
        )
    if kind == "last_rows":
        _number_in(scoring, "half_life_rows", f"{where} (scoring)", *HALF_LIFE_RANGE)


def _check_reading(config: dict[str, Any], where: str) -> None:
    """The optional settings that say how data is read and regridded before windows: a wrong
    one would make every score silently different, so it must be well-formed or refused."""
    resample = config.get("resample")
    if resample is not None:
        from memae_ts.io.resample import ResampleSpec

        if not isinstance(resample, dict):
            raise _fail(where, "field 'resample' must be an object or absent")
        try:
            ResampleSpec.from_config(resample)
        except ValueError as exc:
            raise _fail(where, f"field {exc}") from exc
    reading = config.get("reading")
    if reading is None:
        return
    if not isinstance(reading, dict):
        raise _fail(where, "field 'reading' must be an object or absent")
    for key in ("time_format", "tz"):
        if reading.get(key) is not None and not isinstance(reading[key], str):
            raise _fail(where, f"field 'reading.{key}' must be a string or null")
    if reading.get("dayfirst") is not None and not isinstance(reading["dayfirst"], bool):
        raise _fail(where, "field 'reading.dayfirst' must be true, false or null")


def _tensor(weights: dict[str, np.ndarray], name: Any, where: str) -> np.ndarray:
    if not isinstance(name, str) or name not in weights:
        shown = name[:40] if isinstance(name, str) else name
        raise _fail(where, f"tensor {shown!r} named by the config is missing")
    return weights[name]


def _packed(k: int, n: int) -> int:
    """Floats of a (k, n) GEMM operand as the runtime packs it: panels of 32 columns."""
    return -(-n // 32) * k * 32


def _check_tensors(config: dict[str, Any], weights: dict[str, np.ndarray], where: str) -> None:
    """Walk the graph with shapes so every engine can trust every index it computes, and add up
    what the runtime will hold and need per call (the same sums as Model::scratch_bytes)."""
    network = config["network"]
    n_sensors, window = network["n_sensors"], network["window"]
    conv = network["kind"] == "conv"
    shape: tuple[int, ...] = (n_sensors, window) if conv else (window * n_sensors,)
    usage = {"model": 0, "max_act": window * n_sensors, "pad": 0}
    shape = _walk(network["encoder"], shape, weights, where, "encoder", usage)
    latent = shape[0] * (shape[1] if conv else 1)
    latent_len = shape[1] if conv else 1
    memory = network.get("memory")
    slots = 0
    if memory is not None:
        m = _tensor(weights, memory.get("weight"), where)
        latent_dim = shape[0]
        if m.ndim != 2 or m.shape[1] != latent_dim or m.shape[0] < 1:
            raise _fail(where, f"memory {m.shape} does not match the latent size {latent_dim}")
        if memory["slots"] != m.shape[0] or memory["dim"] != m.shape[1]:
            raise _fail(where, "network.memory slots/dim disagree with the memory tensor")
        slots = m.shape[0]
        if slots * latent_dim > Limits.MEMORY_FLOATS:
            raise _fail(where, "network.memory slots x dim is too large")
        usage["model"] += _packed(latent_dim, slots) + slots * latent_dim + slots
        _check_model_bytes(usage, where)
    shape = _walk(network["decoder"], shape, weights, where, "decoder", usage)
    expected = (n_sensors, window) if conv else (window * n_sensors,)
    if shape != expected:
        raise _fail(where, f"decoder output shape {shape} does not match the input {expected}")
    per = window * n_sensors
    sims = min(24, latent_len) * slots if slots else 0
    val = slots + 16 if slots else 0
    floats = per + 2 * usage["max_act"] + usage["pad"] + latent + sims + val + 7 * 16
    scratch = 4 * (floats + val + 16) + 4 * n_sensors
    if scratch > Limits.SCRATCH_BYTES:
        raise _fail(
            where,
            f"scoring one window would need {-(-scratch // (1 << 20))} MiB of scratch memory per thread, "
            "over the limit of 64 MiB",
        )


def _check_model_bytes(usage: dict[str, int], where: str) -> None:
    if 4 * usage["model"] > Limits.MODEL_BYTES:
        raise _fail(where, "the weights as laid out for scoring exceed the limit of 512 MiB")


def _dims(w: np.ndarray, label: str, limits: tuple[int, ...]) -> tuple[int, ...]:
    for size, limit in zip(w.shape, limits, strict=True):
        if not 1 <= size <= limit:
            raise _fail(label, f"weight {w.shape} has a dimension out of range [1, {limit}]")
    return tuple(int(d) for d in w.shape)


def _walk(
    layers: list[dict[str, Any]],
    shape: tuple[int, ...],
    weights: dict[str, np.ndarray],
    where: str,
    part: str,
    usage: dict[str, int],
) -> tuple[int, ...]:
    for i, layer in enumerate(layers):
        op = layer["op"]
        label = f"{where} ({part}[{i}] {op})"
        if op in _ACTIVATIONS:
            continue
        w = _tensor(weights, layer.get("weight"), where)
        b = _tensor(weights, layer.get("bias"), where)
        if op == "linear":
            if len(shape) != 1:
                raise _fail(label, "'linear' is not allowed in a conv network")
            if w.ndim != 2:
                raise _fail(label, f"weight {w.shape} does not fit input {shape}")
            out, inp = _dims(w, label, (Limits.FEATURES, Limits.FEATURES))
            if inp != shape[0] or b.shape != (out,):
                raise _fail(label, f"weight {w.shape} does not fit input {shape}")
            usage["model"] += _packed(inp, out)
            _check_model_bytes(usage, label)
            shape = (out,)
            usage["max_act"] = max(usage["max_act"], out)
            continue
        if len(shape) != 2:
            raise _fail(label, f"'{op}' is not allowed in an mlp network")
        if w.ndim != 3:
            raise _fail(label, f"weight {w.shape} does not fit input {shape}")
        stride = _int_in(layer, "stride", label, 1, Limits.STRIDE)
        padding = _int_in(layer, "padding", label, 0, Limits.STRIDE)
        if op == "conv1d":
            out_ch, in_ch, k = _dims(w, label, (Limits.FEATURES, Limits.FEATURES, Limits.KERNEL))
            span = shape[1] + 2 * padding - k
            if in_ch != shape[0] or b.shape != (out_ch,) or span < 0:
                raise _fail(label, f"weight {w.shape} does not fit input {shape}")
            length = span // stride + 1
            usage["pad"] = max(usage["pad"], (shape[1] + 2 * padding) * in_ch)
            usage["model"] += _packed(k * in_ch, out_ch)
        else:
            in_ch, out_ch, k = _dims(w, label, (Limits.FEATURES, Limits.FEATURES, Limits.KERNEL))
            output_padding = _int_in(layer, "output_padding", label, 0, Limits.STRIDE, optional=True)
            if padding > k - 1 or output_padding >= stride:
                raise _fail(label, "padding/output_padding out of range")
            length = (shape[1] - 1) * stride - 2 * padding + k + output_padding
            if in_ch != shape[0] or b.shape != (out_ch,) or length < 1:
                raise _fail(label, f"weight {w.shape} does not fit input {shape}")
            usage["model"] += k * _packed(in_ch, out_ch)
        if length > Limits.LENGTH or out_ch * length > Limits.ACTIVATION:
            raise _fail(label, f"output ({out_ch} x {length}) is too large")
        if max(in_ch, out_ch) * max(stride, k) > 1 << 30:
            raise _fail(label, "layer is too large")
        _check_model_bytes(usage, label)
        shape = (out_ch, length)
        usage["max_act"] = max(usage["max_act"], out_ch * length)
    return shape

"""Loading a user's model and images for the command line, safely.

Models: a Keras ``.keras`` file (``keras.saving.load_model(safe_mode=True)``: no
arbitrary code), a TorchScript file (``torch.jit.load``: no pickle), or
``module:callable`` returning a model, optionally with weights from a PyTorch
state dict (``torch.load(weights_only=True)``) or a Keras ``.weights.h5`` file.
Images: PNG / JPEG files or one ``.npy`` batch (``allow_pickle=False``).
Every failure raises :class:`CLIError` with one line that says what to do.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import sys
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .api import native_stderr_silenced as _native_stderr_silenced
from .errors import BoundaryXGError, first_line, first_sentence
from .frameworks import (
    framework_for_file,
    framework_info,
    framework_of,
    framework_providing,
    frameworks,
    image_layout,
    import_frameworks,
    load_model_file,
)
from .frameworks import load_weights as _load_weights

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


#: set by the command line (off with ``--debug``): hide the C++ start-up log lines
#: a framework writes straight to file descriptor 2 while it is imported (TensorFlow's
#: absl logging ignores ``TF_CPP_MIN_LOG_LEVEL``), so an error stays one line
QUIET_IMPORTS = False


class CLIError(Exception):
    """A user-facing error of the command line: one line, with the fix."""


def import_quietly(names: Sequence[str]) -> None:
    """Import the installed frameworks among ``names`` in the safe order, silencing their
    native start-up logs when :data:`QUIET_IMPORTS` is set."""
    if not names:
        return
    with _native_stderr_silenced() if QUIET_IMPORTS else contextlib.nullcontext():
        import_frameworks(names)


# --- the pip extra that provides a missing module (frameworks: their own extras) ------------
_EXTRAS = {"matplotlib": "viz", "scipy": "viz", "PIL": "viz", "tqdm": "all"}


def install_hint(module: Optional[str]) -> str:
    """``pip install ...`` for the package that provides ``module`` (e.g. "torch" -> the [torch] extra)."""
    root = (module or "").split(".")[0]
    owner = framework_providing(root)
    if owner is not None:
        return f"pip install '{owner.extra}'"
    extra = _EXTRAS.get(root)
    if extra is not None:
        return f"pip install 'boundary_xg[{extra}]'"
    return f"pip install {root}" if root else "pip install 'boundary_xg[all]'"


def _need(framework: str) -> None:
    info = framework_info(framework)
    if not info.installed:
        raise CLIError(f"{info.module} is not installed; install it with: pip install '{info.extra}'")
    import_quietly([info.name])


def _file_kinds() -> str:
    return ", ".join(f.model_file_kind for f in frameworks() if f.model_files)


def load_model(spec: str, weights: Optional[str] = None) -> Tuple[Any, str]:
    """Load the model named by ``spec``; return ``(model, framework)``.

    Args:
        spec: a model file of an installed framework (a ``.keras`` file, a
            TorchScript file ``.pt``/``.pth``/``.ts``...), or
            ``package.module:callable`` (the callable is called without arguments
            and returns a model; the current directory is importable).
        weights: with ``module:callable``, the weights in the model's framework's
            format (a PyTorch state dict ``.pt``/``.pth`` loaded with
            ``weights_only=True``; Keras ``.weights.h5``).

    Raises:
        CLIError: missing file, unsupported format, framework not installed,
            a file that is not what its name says.
    """
    if os.path.isfile(spec):
        fw = framework_for_file(spec)
        if fw is None:
            raise CLIError(f"unsupported model file {spec!r}; use {_file_kinds()}, or module:callable.")
        if weights:
            raise CLIError(f"--weights is only used with --model module:callable; "
                           f"{framework_info(fw).model_file_kind} holds its weights.")
        _need(fw)
        try:
            return load_model_file(spec)
        except BoundaryXGError as err:
            raise CLIError(first_line(err)) from err
    if ":" in spec and not os.path.exists(spec):
        return _from_callable(spec, weights)
    if os.path.isdir(spec):
        raise CLIError(f"--model {spec!r} is a folder; pass a model file ({_file_kinds()}) or module:callable.")
    raise CLIError(f"model file {spec!r} not found; pass {_file_kinds()} or module:callable.")


def _from_callable(spec: str, weights: Optional[str]) -> Tuple[Any, str]:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise CLIError(f"--model {spec!r}: expected module:callable, e.g. mypkg.models:build.")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec(mod_name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:  # before importing any framework: a typo should fail fast
        raise CLIError(f"could not import module {mod_name!r} (not found); check the name and that it is on the path.")
    import_quietly(frameworks_first(_frameworks_imported_by(mod_name)))
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        missing = getattr(err, "name", None)
        if missing and missing != mod_name and not mod_name.startswith(missing + "."):
            # the module was found; something it imports is missing
            raise CLIError(f"module {mod_name!r} imports {missing!r}, which is not installed; "
                           f"install it with: {install_hint(missing)}") from err
        raise CLIError(f"could not import module {mod_name!r} ({first_sentence(err)}); check the name and that "
                       "it is on the path.") from err
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise CLIError(f"module {mod_name!r} has no attribute {attr!r}.")
        fn = getattr(fn, part)
    # a function or a class is called; a model (callable too) is taken as it is
    model = fn() if callable(fn) and (isinstance(fn, type) or framework_of(fn) is None) else fn
    fw = None if isinstance(model, type) else framework_of(model)
    if fw is None:
        raise CLIError(
            f"--model {spec!r} gave a {type(model).__name__}, not a model of a supported framework "
            f"({', '.join(f.name for f in frameworks())}: a torch.nn.Module or a Keras model); "
            "point it at a function that returns the model (or at the model itself)."
        )
    if weights:
        if not os.path.isfile(weights):
            raise CLIError(f"weights file {weights!r} not found.")
        try:
            model = _load_weights(model, weights)
        except BoundaryXGError as err:
            raise CLIError(first_line(err).replace("the model", f"the model of {spec!r}", 1)) from err
    return model, fw


def frameworks_first(named: Sequence[str]) -> List[str]:
    """The frameworks to import before a user's module that imports ``named`` ones: those,
    and every installed framework that must be imported before one of them (torch before
    TensorFlow); the first installed framework when the module names none (it may
    import one indirectly)."""
    order = [f.name for f in frameworks() if f.installed]
    if not order:
        return []
    if not named:
        return order[:1]
    last = max(order.index(n) for n in named if n in order) if any(n in order for n in named) else 0
    return order[: last + 1]


def _frameworks_imported_by(mod_name: str) -> List[str]:
    """The frameworks whose modules ``mod_name`` imports (read from its import statements).

    Read from the import statements, not the text: a comment or a string that
    names a framework must not cost an import of it (seconds). A module that
    imports a framework only indirectly still works; its import is just not silenced.
    """
    try:
        origin = importlib.util.find_spec(mod_name).origin
        with open(origin, encoding="utf-8", errors="ignore") as fh:
            tree = ast.parse(fh.read())
    except (ImportError, ValueError, AttributeError, TypeError, OSError, SyntaxError):
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        for n in names:
            owner = framework_providing(n)
            if owner is not None and owner.name not in found:
                found.append(owner.name)
    return found






def pixel_bounds(x: np.ndarray, framework: str, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The box of valid model inputs for pixels in [0, 1] after ``(p - mean) / std``.

    Per channel, ``((0 - mean) / std, (1 - mean) / std)``, shaped ``(C, 1, 1)`` for
    NCHW (torch) and ``(C,)`` for NHWC (Keras), so the boundary search stays among
    real images; ``framework`` decides the layout.
    """
    channels_first = image_layout(framework) == "NCHW"
    c = x.shape[1] if channels_first else x.shape[-1]
    m = _per_channel(mean, 0.0, c, "--mean").astype(np.float64)
    s = _per_channel(std, 1.0, c, "--std").astype(np.float64)
    shape = (c, 1, 1) if channels_first else (c,)
    return ((0.0 - m) / s).reshape(shape), ((1.0 - m) / s).reshape(shape)


def load_images(
    paths: Sequence[str],
    framework: str,
    size: Optional[Tuple[int, int]] = None,
    grayscale: bool = False,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Read images into a batch in the framework's layout.

    Args:
        paths: PNG / JPEG files (scaled to [0, 1]), or one ``.npy`` batch already
            in the model's layout (``(N, C, H, W)`` for torch, ``(N, H, W, C)`` for
            Keras; one example without the batch axis also works).
        framework: ``"torch"`` (NCHW) or ``"tensorflow"`` (NHWC).
        size: ``(H, W)`` to resize image files to.
        grayscale: read image files as one channel.
        mean, std: per-channel normalisation ``(x - mean) / std`` (one value or one per channel).

    Returns:
        ``(x, shown, names)``: the model input (float32), the images before
        normalisation (for display) and one name per example.

    Raises:
        CLIError: missing file, unsupported format, images of different sizes.
    """
    if not paths:
        raise CLIError("no images given; pass --images FILE.png ... or --images batch.npy.")
    channels_first = image_layout(framework) == "NCHW"
    for p in paths:
        if os.path.isdir(p):
            raise CLIError(f"{p!r} is a folder; pass its image files or one .npy batch.")
        if not os.path.isfile(p):
            raise CLIError(f"image file {p!r} not found.")
    if any(p.lower().endswith(".npy") for p in paths) and len(paths) > 1:
        if all(p.lower().endswith(".npy") for p in paths):
            raise CLIError("pass one .npy batch, not several .npy files; stack them with np.concatenate.")
        raise CLIError("pass either one .npy batch or image files, not both.")
    if len(paths) == 1 and paths[0].lower().endswith(".npy"):
        if size is not None or grayscale:
            raise CLIError("--size and --grayscale apply to image files; a .npy batch is used as it is "
                           "(in the model's layout).")
        try:
            x = np.load(paths[0], allow_pickle=False)
        except Exception as err:
            raise CLIError(f"could not read {paths[0]!r} as a NumPy array ({first_sentence(err)}); save it with "
                           "np.save (no object arrays).") from err
        if x.dtype.kind not in "biuf":
            raise CLIError(f"{paths[0]!r} holds dtype {x.dtype}; expected numbers.")
        x = x.astype(np.float32)
        if x.ndim == 3:
            x = x[None]
        names = [f"{os.path.basename(paths[0])}[{i}]" for i in range(len(x))]
    else:
        bad = [p for p in paths if not p.lower().endswith(IMAGE_EXT)]
        if bad:
            raise CLIError(f"unsupported image file {bad[0]!r}; use PNG/JPEG files or one .npy batch.")
        from PIL import Image

        arrs = []
        for p in paths:
            try:
                im = Image.open(p).convert("L" if grayscale else "RGB")
            except Exception as err:
                raise CLIError(f"could not read image {p!r} ({first_sentence(err)}); use PNG or JPEG files.") from err
            if size is not None:
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
            arrs.append(a[..., None] if a.ndim == 2 else a)
        shapes = {a.shape for a in arrs}
        if len(shapes) > 1:
            raise CLIError(f"the images have different sizes {sorted(shapes)}; pass --size H,W to resize them.")
        x = np.stack(arrs)  # NHWC
        if channels_first:
            x = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
        names = [os.path.basename(p) for p in paths]
    shown = x.copy()
    if mean is not None or std is not None:
        cax = 1 if channels_first else x.ndim - 1
        c = x.shape[cax] if x.ndim == 4 else 1
        shape = [1] * x.ndim
        if x.ndim == 4:
            shape[cax] = c
        m = _per_channel(mean, 0.0, c, "--mean").reshape(shape)
        s = _per_channel(std, 1.0, c, "--std").reshape(shape)
        if np.any(s == 0):
            raise CLIError("--std holds a zero; expected positive values.")
        x = (x - m) / s
    return x.astype(np.float32), shown, names


def _per_channel(values: Optional[Sequence[float]], default: float, c: int, flag: str) -> np.ndarray:
    if values is None:
        return np.full(c, default, np.float32)
    v = np.asarray(values, np.float32).reshape(-1)
    if v.size == 1:
        return np.full(c, float(v[0]), np.float32)
    if v.size != c:
        raise CLIError(f"{flag} has {v.size} values but the images have {c} channels; give 1 or {c}.")
    return v

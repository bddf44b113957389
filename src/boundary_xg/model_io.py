"""Loading a user's model and images for the command line, safely.

Models: a Keras ``.keras`` file (``keras.saving.load_model(safe_mode=True)``: no
arbitrary code), a TorchScript file (``torch.jit.load``: no pickle), or
``module:callable`` returning a model, optionally with weights from a PyTorch
state dict (``torch.load(weights_only=True)``) or a Keras ``.weights.h5`` file.
Images: PNG / JPEG files or one ``.npy`` batch (``allow_pickle=False``).
Every failure raises :class:`CLIError` with one line that says what to do.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pickle
import sys
import warnings
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .api import import_frameworks
from .api import native_stderr_silenced as _native_stderr_silenced

TORCHSCRIPT_EXT = (".pt", ".pth", ".ts", ".torchscript", ".jit", ".zip")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


#: set by the command line (off with ``--debug``): hide the C++ start-up log lines
#: TensorFlow writes straight to file descriptor 2 while it is imported (its absl
#: logging ignores ``TF_CPP_MIN_LOG_LEVEL``), so an error stays one line
QUIET_IMPORTS = False


class CLIError(Exception):
    """A user-facing error of the command line: one line, with the fix."""


def import_quietly(names: Sequence[str]) -> None:
    """Import the installed frameworks among ``names`` (torch first), silencing their
    native start-up logs when :data:`QUIET_IMPORTS` is set."""
    wanted = [n for n in names if n not in sys.modules and importlib.util.find_spec(n) is not None]
    if not wanted:
        return
    with _native_stderr_silenced() if QUIET_IMPORTS else contextlib.nullcontext():
        import_frameworks([n for n in wanted if n != "tensorflow"])
        if "tensorflow" in wanted:
            if "torchvision" not in sys.modules and "torch" in sys.modules \
                    and importlib.util.find_spec("torchvision") is not None:
                # torchvision imported after TensorFlow crashes some interpreters:
                # a process that will hold both gets it first
                importlib.import_module("torchvision")
            import_frameworks(["tensorflow"])


# --- the pip extra that provides a missing module -------------------------------------------
_EXTRAS = {"torch": "torch", "torchvision": "torch", "tensorflow": "tensorflow", "keras": "tensorflow",
           "matplotlib": "viz", "scipy": "viz", "PIL": "viz", "tqdm": "all"}


def install_hint(module: Optional[str]) -> str:
    """``pip install ...`` for the package that provides ``module`` (e.g. "torch" -> the [torch] extra)."""
    root = (module or "").split(".")[0]
    extra = _EXTRAS.get(root)
    if extra is not None:
        return f"pip install 'boundary_xg[{extra}]'"
    return f"pip install {root}" if root else "pip install 'boundary_xg[all]'"


def _need(framework: str) -> Any:
    if importlib.util.find_spec(framework) is None:
        extra = "torch" if framework == "torch" else "tensorflow"
        raise CLIError(f"{framework} is not installed; install it with: pip install 'boundary_xg[{extra}]'")
    import_quietly([framework])
    return sys.modules[framework]


def framework_of(model: Any) -> str:
    """``"torch"`` or ``"tensorflow"`` for a loaded model."""
    for klass in type(model).__mro__:
        if (klass.__module__ or "").split(".")[0] == "torch":
            return "torch"
    return "tensorflow"


def load_model(spec: str, weights: Optional[str] = None) -> Tuple[Any, str]:
    """Load the model named by ``spec``; return ``(model, framework)``.

    Args:
        spec: a ``.keras`` file, a TorchScript file (``.pt``/``.pth``/``.ts``...),
            or ``package.module:callable`` (the callable is called without
            arguments and returns a model; the current directory is importable).
        weights: with ``module:callable``, a PyTorch state dict (``.pt``/``.pth``,
            loaded with ``weights_only=True``) or Keras weights (``.weights.h5``).

    Raises:
        CLIError: missing file, unsupported format, framework not installed,
            a file that is not what its name says.
    """
    if os.path.isfile(spec):
        low = spec.lower()
        if low.endswith(".keras"):
            if weights:
                raise CLIError("--weights is only used with --model module:callable; a .keras file holds its weights.")
            _need("tensorflow")
            import keras

            try:
                return keras.saving.load_model(spec, safe_mode=True, compile=False), "tensorflow"
            except Exception as err:
                raise CLIError(
                    f"could not load Keras model {spec!r} ({_reason(err)}); save it with "
                    "model.save('model.keras'); custom layers must be registered with "
                    "keras.saving.register_keras_serializable (no Lambda layers: safe_mode)."
                ) from err
        if low.endswith(TORCHSCRIPT_EXT):
            if weights:
                raise CLIError("--weights is only used with --model module:callable; a TorchScript file "
                               "holds its weights.")
            torch = _need("torch")
            try:
                with warnings.catch_warnings():
                    # torch 2.10+ marks TorchScript deprecated; it is still the safe format
                    warnings.simplefilter("ignore", FutureWarning)
                    return torch.jit.load(spec, map_location="cpu").eval(), "torch"
            except Exception as err:
                raise CLIError(
                    f"{spec!r} is not a TorchScript file ({_reason(err)}); save the model with "
                    "torch.jit.save(torch.jit.script(model), 'model.pt'), or for a state dict pass "
                    "--model module:callable --weights FILE."
                ) from err
        raise CLIError(
            f"unsupported model file {spec!r}; use a .keras file, a TorchScript file (.pt), or "
            "module:callable."
        )
    if ":" in spec and not os.path.exists(spec):
        return _from_callable(spec, weights)
    if os.path.isdir(spec):
        raise CLIError(f"--model {spec!r} is a folder; pass a model file (model.keras, a TorchScript "
                       "model.pt) or module:callable.")
    raise CLIError(f"model file {spec!r} not found; pass a .keras file, a TorchScript file or module:callable.")


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
    # torch (and torchvision) before anything the module imports: importing them
    # after TensorFlow crashes some interpreters; TensorFlow itself is left to the
    # module, so a PyTorch model does not pay for it
    import_quietly(["torch"] + (["tensorflow"] if _mentions_keras(mod_name) else []))
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        missing = getattr(err, "name", None)
        if missing and missing != mod_name and not mod_name.startswith(missing + "."):
            # the module was found; something it imports is missing
            raise CLIError(f"module {mod_name!r} imports {missing!r}, which is not installed; "
                           f"install it with: {install_hint(missing)}") from err
        raise CLIError(f"could not import module {mod_name!r} ({_reason(err)}); check the name and that "
                       "it is on the path.") from err
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise CLIError(f"module {mod_name!r} has no attribute {attr!r}.")
        fn = getattr(fn, part)
    model = fn() if callable(fn) and not _is_model(fn) else fn
    if not _is_model(model):
        raise CLIError(
            f"--model {spec!r} gave a {type(model).__name__}, not a torch.nn.Module or a Keras model; "
            "point it at a function that returns the model (or at the model itself)."
        )
    fw = framework_of(model)
    if weights:
        if not os.path.isfile(weights):
            raise CLIError(f"weights file {weights!r} not found.")
        keras_file = weights.lower().endswith((".h5", ".hdf5"))
        if fw == "torch" and keras_file:
            raise CLIError(f"--weights {weights!r} is a Keras weights file but {spec!r} is a PyTorch "
                           "module; pass a state dict saved with torch.save(model.state_dict(), FILE).")
        if fw != "torch" and not keras_file:
            raise CLIError(f"--weights {weights!r} is not a Keras weights file but {spec!r} is a Keras "
                           "model; pass weights saved with model.save_weights('model.weights.h5').")
        if fw == "torch":
            torch = sys.modules["torch"]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol
                    # weights_only: tensors and plain containers only, never pickled code
                    state = torch.load(weights, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as err:
                raise CLIError(
                    f"{weights!r} is not a plain state dict: it holds pickled objects, which are "
                    "never loaded (weights_only=True); save it with torch.save(model.state_dict(), FILE)."
                ) from err
            except Exception as err:
                raise CLIError(f"could not read state dict {weights!r} ({_reason(err)}); save it with "
                               "torch.save(model.state_dict(), FILE).") from err
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]  # a checkpoint dict that holds the state dict
            try:
                model.load_state_dict(state)
            except Exception as err:
                raise CLIError(
                    f"the state dict {weights!r} does not fit the model of {spec!r} "
                    f"({_state_dict_mismatch(model, state) or _reason(err)}); check that the "
                    "callable builds the same architecture."
                ) from err
            model.eval()
        else:
            try:
                model.load_weights(weights)
            except Exception as err:
                raise CLIError(f"could not load Keras weights {weights!r} ({_reason(err)}); save them with "
                               "model.save_weights('model.weights.h5').") from err
    return model, fw


def _state_dict_mismatch(model: Any, state: Any) -> str:
    """The keys that differ between ``model``'s state dict and ``state``, in one short line."""
    if not isinstance(state, dict):
        return f"it is a {type(state).__name__}, not a dict of tensors"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]

    def some(keys: List[str]) -> str:
        more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
        return ", ".join(keys[:4]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {some(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} of another shape: {some(shapes)}")
    return "; ".join(parts)


def _mentions_keras(mod_name: str) -> bool:
    """Whether the module imports TensorFlow or Keras (then it is imported first, quietly).

    Read from the module's import statements, not its text: a comment or a string
    that says "keras" must not cost a PyTorch model TensorFlow's import (seconds).
    A module that imports them only indirectly still works; its import is just not
    silenced.
    """
    import ast

    try:
        origin = importlib.util.find_spec(mod_name).origin
        with open(origin, encoding="utf-8", errors="ignore") as fh:
            tree = ast.parse(fh.read())
    except (ImportError, ValueError, AttributeError, TypeError, OSError, SyntaxError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(n.split(".")[0] in ("tensorflow", "keras", "tf_keras") for n in names):
            return True
    return False


def _is_model(obj: Any) -> bool:
    """Whether ``obj`` is an instance of a torch / Keras / TF class (user subclasses included)."""
    return any((k.__module__ or "").split(".")[0] in ("torch", "keras", "tensorflow")
               for k in type(obj).__mro__)


def _reason(err: BaseException, limit: int = 140) -> str:
    """The first sentence of the first line of ``err``'s message, at most ``limit`` characters."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    first = text.splitlines()[0].strip()
    cut = first.find(". ")
    if 0 < cut:
        first = first[:cut]
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."


def pixel_bounds(x: np.ndarray, framework: str, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The box of valid model inputs for pixels in [0, 1] after ``(p - mean) / std``.

    Per channel, ``((0 - mean) / std, (1 - mean) / std)``, shaped ``(C, 1, 1)`` for
    NCHW (torch) and ``(C,)`` for NHWC, so the boundary search stays among real images.
    """
    channels_first = framework == "torch"
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
    for p in paths:
        if os.path.isdir(p):
            raise CLIError(f"{p!r} is a folder; pass its image files or one .npy batch.")
        if not os.path.isfile(p):
            raise CLIError(f"image file {p!r} not found.")
    channels_first = framework == "torch"
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
            raise CLIError(f"could not read {paths[0]!r} as a NumPy array ({_reason(err)}); save it with "
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
                raise CLIError(f"could not read image {p!r} ({_reason(err)}); use PNG or JPEG files.") from err
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

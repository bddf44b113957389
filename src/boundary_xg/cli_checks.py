"""The command line's checks: everything ``boundary-xg explain`` can verify before the expensive part.

The order is the cost: what needs only the arguments (option names and values,
the boundary search's attacks, ``.npy`` options, ``--weights``, ``--out``, the
image files and ``--labels``/``--mean``/``--std`` against them) is checked before a
framework is imported or the model is loaded; what needs the model (layout,
channels, image size, bounds that must contain the inputs) goes through the
API's own checks on one example before any prediction. Every failure is a
:class:`~boundary_xg.model_io.CLIError` of one line that says what to pass instead.

This module is a leaf like ``cli.py``: it uses the public API and the registry's
option checks, and imports no framework.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import sys
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import BoundaryXGError, InputError, first_line
from .frameworks import framework_for_file, framework_info, frameworks, image_layout
from .model_io import IMAGE_EXT, CLIError, install_hint

#: attack names accepted by ``--option attacks=...`` (case-insensitive)
ATTACKS = ("DeepFool", "FMN", "PGD", "CW")
#: options whose value may be a ``.npy`` file (read with ``allow_pickle=False``)
ARRAY_OPTIONS = ("background", "references", "baseline", "boundary_points")


# --- the model and the images, before anything is loaded ------------------------------------
def check_model_spec(spec: str, weights: Optional[str]) -> str:
    """Check ``--model`` and ``--weights`` without loading anything; return the framework if known.

    Returns:
        the framework that loads the model file (``"torch"`` for a TorchScript file,
        ``"tensorflow"`` for a ``.keras`` file), or ``""`` (``module:callable``: the
        module says).
    """
    kinds = ", ".join(f.model_file_kind for f in frameworks() if f.model_files)
    if os.path.isdir(spec):
        raise CLIError(
            f"--model {spec!r} is a folder; pass a model file ({kinds}) or module:callable "
            "(a SavedModel folder: load it in Keras and model.save('model.keras')).")
    fw = framework_for_file(spec) or ""
    if os.path.isfile(spec):
        if not fw:
            raise CLIError(f"--model {spec!r}: unsupported model file; pass {kinds} or module:callable.")
        info = framework_info(fw)
        if not installed(fw):
            raise CLIError(f"{spec!r} is {info.model_file_kind} but {info.module} is not installed; "
                           f"install it with: {install_hint(info.module)}")
        if weights:
            raise CLIError(f"--weights goes with --model module:callable; {info.model_file_kind} holds its own "
                           "weights: drop --weights.")
        fw = info.name
    elif ":" not in spec or fw:
        raise CLIError(f"--model {spec!r}: file not found; pass {kinds} or module:callable "
                       "(e.g. mypkg.models:build).")
    else:
        mod_name = spec.partition(":")[0]
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as load_model: the current folder is importable
        try:
            found = bool(mod_name) and importlib.util.find_spec(mod_name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise CLIError(f"--model {spec!r}: could not import module {mod_name!r} (not found); check "
                           "the name and that it is in the current folder or installed.")
    if weights:
        if os.path.isdir(weights):
            raise CLIError(f"--weights {weights!r} is a folder; pass the weights file ("
                           + " or ".join(f.weight_file_kind for f in frameworks() if f.weight_files) + ").")
        if not os.path.isfile(weights):
            raise CLIError(f"--weights {weights!r}: file not found.")
        known = [f for f in frameworks() if f.weight_files]
        if not any(weights.lower().endswith(f.weight_files) for f in known):
            raise CLIError(f"--weights {weights!r}: expected " + " or ".join(f.weight_file_kind for f in known) + ".")
        if not os.access(weights, os.R_OK):
            raise CLIError(f"--weights {weights!r}: no permission to read it.")
    return fw


def check_images(paths: Sequence[str], size: Any, grayscale: bool, labels: Optional[Sequence[int]],
                 mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> Tuple[bool, int]:
    """Check ``--images`` and the flags that depend on them, reading no pixels.

    Returns:
        ``(from_files, n)``: image files (True) or one ``.npy`` batch, and the
        number of examples.
    """
    if not paths:
        raise CLIError("--images: no files given; pass image files (a.png b.png) or one .npy batch.")
    for p in paths:
        if os.path.isdir(p):
            raise CLIError(
                f"--images {p!r} is a folder; pass its image files ({os.path.join(p, '*.png')}) "
                "or one .npy batch; for a whole folder use boundary-xg evaluate --data FOLDER.")
        if not os.path.isfile(p):
            raise CLIError(f"--images {p!r}: file not found.")
    npy = [p for p in paths if p.lower().endswith(".npy")]
    if npy and len(paths) > 1:
        if len(npy) == len(paths):
            raise CLIError(f"--images: {len(npy)} .npy files; pass one .npy batch (stack them with "
                           "np.concatenate) or image files.")
        raise CLIError(f"--images mixes a .npy batch ({npy[0]!r}) with image files; pass either one "
                       ".npy batch or image files, not both.")
    if npy:
        if size is not None or grayscale:
            raise CLIError("--size and --grayscale apply to image files; a .npy batch is used as "
                           "it is (in the model's layout): drop them.")
        try:
            shape = np.load(npy[0], mmap_mode="r", allow_pickle=False).shape
        except Exception as err:
            raise CLIError(f"--images {npy[0]!r} is not a NumPy array file ({first_line(err)}); save it "
                           "with np.save (numbers, no objects).") from err
        n = 1 if len(shape) == 3 else (shape[0] if shape else 1)  # one example without its batch axis: 1
        from_files = False
    else:
        bad = [p for p in paths if not p.lower().endswith(IMAGE_EXT)]
        if bad:
            raise CLIError(f"--images {bad[0]!r}: unsupported image file; pass PNG/JPEG files "
                           "or one .npy batch.")
        n, from_files = len(paths), True
    if labels is not None:
        if len(labels) not in (1, n):
            raise CLIError(f"--labels has {len(labels)} classes for {n} images; pass one per image "
                           "or one for all.")
        if min(labels) < 0:
            raise CLIError(f"--labels {list(labels)}: class indices are >= 0.")
    channels = (1 if grayscale else 3) if from_files else None
    for flag, vals in (("--mean", mean), ("--std", std)):
        if vals is None:
            continue
        if channels is not None and len(vals) not in (1, channels):
            what = "--grayscale images have 1 channel" if grayscale else "image files are read as RGB (3 channels)"
            raise CLIError(f"{flag} has {len(vals)} values but {what}; pass one value or {channels}.")
    if std is not None and any(v == 0 for v in std):
        raise CLIError("--std holds a 0; pass the (non-zero) standard deviation of each channel.")
    return from_files, n


# --- method options -----------------------------------------------------------------------
def parse_attacks(text: Any) -> Any:
    """``--option attacks=...``: a preset name, or attacks by name with their parameters.

    ``default`` / ``reference`` (the presets), ``PGD,CW`` (each with its
    defaults) or ``PGD(eps=[0.5,1],steps=20),CW(steps=50)`` (keyword parameters,
    values as Python literals). A JSON list of names works too.
    """
    from .search import PRESETS

    if isinstance(text, list) and all(isinstance(t, str) for t in text):
        text = ",".join(text)
    if not isinstance(text, str):
        raise CLIError(f"--option attacks={text!r}: expected a preset ({', '.join(sorted(PRESETS))}) "
                       f"or attack names, e.g. attacks=PGD,CW or 'attacks=PGD(eps=[0.5,1]),CW'.")
    if text.strip().lower() in PRESETS:
        return text.strip().lower()
    try:
        tree = ast.parse(f"[{text}]", mode="eval").body
    except SyntaxError as err:
        raise CLIError(f"--option attacks={text!r}: could not read it ({err.msg}); write e.g. "
                       "attacks=PGD,CW or 'attacks=PGD(eps=[0.5,1],steps=20),CW(steps=50)'.") from err
    return [_attack(node, text) for node in tree.elts]


def _attack(node: ast.AST, text: str) -> Any:
    from . import search

    classes = {name.lower(): getattr(search, name) for name in ATTACKS}
    call = node if isinstance(node, ast.Call) else None
    name_node = call.func if call is not None else node
    if not isinstance(name_node, ast.Name) or (call is not None and call.args):
        raise CLIError(f"--option attacks={text!r}: expected attack names with keyword parameters, "
                       f"e.g. PGD(eps=[0.5,1],steps=20); attacks: {', '.join(ATTACKS)}.")
    cls = classes.get(name_node.id.lower())
    if cls is None:
        raise CLIError(f"--option attacks: unknown attack {name_node.id!r}; attacks: "
                       f"{', '.join(ATTACKS)}, or a preset: default, reference.")
    params = {}
    fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
    for kw in (call.keywords if call is not None else []):
        if kw.arg is None or (fields and kw.arg not in fields):
            raise CLIError(f"--option attacks: {cls.__name__} takes no parameter {kw.arg!r}; its "
                           f"parameters are {fields}.")
        try:
            params[kw.arg] = _tuples(ast.literal_eval(kw.value))
        except ValueError as err:
            raise CLIError(f"--option attacks: {cls.__name__}({kw.arg}=...) must be a number, a "
                           "string or a list of them.") from err
    try:
        return cls(**params)
    except (BoundaryXGError, TypeError, ValueError) as err:
        raise CLIError(f"--option attacks: {cls.__name__}: {first_line(err)}") from err


def _tuples(v: Any) -> Any:
    """Lists from the command line as tuples (the attacks' frozen fields take tuples)."""
    return tuple(_tuples(e) for e in v) if isinstance(v, list) else v


def method_options(spec: Any, raw: Sequence[Tuple[str, Any]], layer: Optional[str] = None) -> Dict[str, Any]:
    """The options of ``spec`` from ``--option NAME=VALUE`` pairs, converted and checked.

    * ``attacks``: see :func:`parse_attacks`; ``eps`` (a number or a list) sets the
      radii of every attack in it that has radii (PGD);
    * ``background``, ``baseline``, ``boundary_points``: a ``.npy`` file is read;
    * ``bounds=[lo,hi]`` (numbers, or one list per channel);
    * anything else goes to the method as given, checked by the API's own checks.

    Raises:
        CLIError: an option the method does not take, a bad value, a missing file.
    """
    from .api import BA

    options = dict(raw)
    if layer is not None:
        options["layer"] = layer
    eps = options.pop("eps", None)
    takes = set(spec.defaults)
    if "attacks" in options and "attacks" in takes:
        options["attacks"] = parse_attacks(options["attacks"])
    if eps is not None:
        options["attacks"] = _with_eps(spec, options.get("attacks"), eps)
    for name in ARRAY_OPTIONS:
        if name in options and name in takes:
            options[name] = _array(name, options[name])
    if "bounds" in options and "bounds" in takes:
        options["bounds"] = _bounds(options["bounds"])
    try:
        BA(spec.short, **options)  # the API's option checks, before any work
    except BoundaryXGError as err:
        raise CLIError(f"--option: {first_line(err)}") from err
    return options


def _with_eps(spec: Any, attacks: Any, eps: Any) -> Any:
    from .search import PRESETS

    if "attacks" not in spec.defaults:
        raise CLIError(f"--option eps: {spec.short} runs no boundary search; eps is the radius of "
                       "the boundary search's PGD (boundary methods BSM, BIG, BSG, BDT).")
    if isinstance(eps, list):
        eps = tuple(eps)
    if not all(isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0
               for e in (eps if isinstance(eps, tuple) else (eps,))):
        raise CLIError(f"--option eps={eps!r}: expected a number > 0 or a list of them, e.g. eps=0.5 "
                       "or 'eps=[0.25,0.5,1]'.")
    if attacks is None or isinstance(attacks, str):
        preset = attacks or "default"
        attacks = PRESETS[preset][0]()
        if not any(hasattr(a, "eps") for a in attacks):
            raise CLIError(
                f"--option eps: the {preset!r} search (DeepFool, FMN) looks for the nearest boundary "
                "point without a radius; eps is PGD's: add --option attacks=PGD,CW (or "
                "attacks=reference), or write it in the attack: 'attacks=PGD(eps=[0.5,1]),CW'.")
    with_eps = [dataclasses.replace(a, eps=eps) if hasattr(a, "eps") and dataclasses.is_dataclass(a)
                else a for a in attacks]
    if not any(hasattr(a, "eps") for a in attacks):
        raise CLIError("--option eps: none of the attacks has a radius (only PGD does); add PGD to "
                       "--option attacks, e.g. attacks=PGD,CW.")
    return with_eps


def _array(name: str, value: Any) -> Any:
    if isinstance(value, str):
        if not value.lower().endswith(".npy"):
            raise CLIError(f"--option {name}={value!r}: pass a number or a .npy file "
                           f"({name}=file.npy, in the model's layout).")
        if not os.path.isfile(value):
            raise CLIError(f"--option {name}={value!r}: file not found.")
        try:
            arr = np.load(value, allow_pickle=False)
        except Exception as err:
            raise CLIError(f"--option {name}={value!r}: not a NumPy array file ({first_line(err)}); save "
                           "it with np.save.") from err
        if arr.dtype.kind not in "biuf":
            raise CLIError(f"--option {name}={value!r} holds dtype {arr.dtype}; expected numbers.")
        return arr.astype(np.float32)
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float32)
    return value


def _bounds(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = value
        if isinstance(lo, list) or isinstance(hi, list):
            return (np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))
        return (lo, hi)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return None
    raise CLIError(f"--option bounds={value!r}: expected [low,high], e.g. 'bounds=[0,1]', or one list "
                   "per channel: 'bounds=[[l1,l2,l3],[h1,h2,h3]]'.")


def bounds_for_layout(options: Dict[str, Any], fw: str) -> None:
    """Per-channel bounds ``(C,)`` from the command line as ``(C, 1, 1)`` for a model of an NCHW
    framework (PyTorch)."""
    b = options.get("bounds")
    if image_layout(fw) == "NCHW" and isinstance(b, tuple) and any(
            isinstance(v, np.ndarray) and v.ndim == 1 for v in b):
        options["bounds"] = tuple(v.reshape(-1, 1, 1) if isinstance(v, np.ndarray) and v.ndim == 1 else v
                                  for v in b)


# --- after loading: the API's checks on the inputs, with the command line's fixes --------------
def check_inputs(model: Any, x: np.ndarray, fw: str, args: Any, from_files: bool) -> None:
    """Run the API's input checks (layout, channels, shape) on one example before any prediction.

    An :class:`~boundary_xg.errors.InputError` becomes a :class:`CLIError` that
    names the flag to change (``--grayscale``, ``--size``, the ``.npy`` layout).
    """
    from .api import predict

    try:
        predict(model, x[:1])
    except InputError as err:
        raise CLIError(_input_fix(str(err).strip().splitlines()[0], model, x, fw, args, from_files)) from err


def _input_fix(message: str, model: Any, x: np.ndarray, fw: str, args: Any, from_files: bool) -> str:
    import re

    layout = image_layout(fw)
    have_c = x.shape[1] if (layout == "NCHW" and x.ndim == 4) else x.shape[-1]
    want_c = None
    m = re.search(r"but the model takes (\d+)", message)
    if m:
        want_c = int(m.group(1))
    expected = getattr(model, "input_shape", None) if layout == "NHWC" else None
    if isinstance(expected, tuple) and len(expected) == 4 and expected[-1] is not None:
        want_c = want_c or int(expected[-1])
    if from_files:
        if want_c is not None and want_c != have_c:
            if want_c == 1:
                return "the model takes 1-channel images but the files are read as RGB: add --grayscale."
            if want_c == 3 and args.grayscale:
                return "the model takes RGB images (3 channels) but --grayscale gives 1: drop --grayscale."
            return (f"the model takes {want_c}-channel images; image files give {have_c}: pass a .npy "
                    f"batch with {want_c} channels ({layout}).")
        if isinstance(expected, tuple) and len(expected) == 4 and None not in expected[1:3] \
                and tuple(expected[1:3]) != tuple(x.shape[1:3]):
            return (f"the model takes {expected[1]}x{expected[2]} images but the files are "
                    f"{x.shape[1]}x{x.shape[2]}: add --size {expected[1]},{expected[2]}.")
        return f"the images do not fit the model: {message} (resize them with --size H,W.)"
    if "channels-last" in message:
        return (f"the .npy batch {args.images[0]!r} looks channels-last (NHWC) but the model is a "
                "PyTorch model (NCHW): save np.transpose(x, (0, 3, 1, 2)) instead.")
    if "channels-first" in message:
        return (f"the .npy batch {args.images[0]!r} looks channels-first (NCHW) but the model is a "
                "Keras model (NHWC): save np.transpose(x, (0, 2, 3, 1)) instead.")
    return f"the .npy batch {args.images[0]!r} does not fit the model ({layout}): {message}"


def check_bounds(model: Any, x: np.ndarray, options: Dict[str, Any]) -> None:
    """The API's check that the boundary search's bounds contain ``x``, before any search."""
    if options.get("bounds") is None:
        return
    from .backends import backend_for
    from .search.pipeline import prepare_bounds

    B = backend_for(model)
    try:
        prepare_bounds(B, options["bounds"], B.asarray(x))
    except InputError as err:
        raise CLIError(f"--option bounds: {first_line(err)}") from err


# --- warnings: one line each, once per run ---------------------------------------------------
class WarningPrinter:
    """``warnings.showwarning`` for the command line: each warning once, as one line, with a
    hint in the command line's own terms where the library's message speaks Python."""

    def __init__(self, stream: Any = None):
        self.stream = stream
        self.seen: set = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = first_line(message)
        if text in self.seen:
            return
        self.seen.add(text)
        hint = _CLI_HINTS.get(getattr(category, "__name__", ""), "")
        print(f"boundary-xg: warning: {text}{hint}", file=self.stream or sys.stderr)


_CLI_HINTS = {
    "BoundaryNotFoundWarning": (
        " From the command line: --option attacks=reference (PGD then CW), "
        "--option 'attacks=PGD(eps=[0.5,1,2],steps=100),CW', or wider --option 'bounds=[lo,hi]'."),
}


# --- the demo's framework ----------------------------------------------------------------------
def installed(framework: str) -> bool:
    """Whether ``framework`` can be imported (without importing it)."""
    return framework_info(framework).installed


def demo_backend(requested: Optional[str]) -> str:
    """The demo's framework: the one asked for, else the first installed one (PyTorch, then TensorFlow).

    Raises:
        CLIError: no framework installed, or the one asked for is missing.
    """
    names = [f.name for f in frameworks()]
    if requested is not None:
        requested = framework_info(requested).name
        if not installed(requested):
            others = [n for n in names if n != requested and installed(n)]
            alt = f" or run on {others[0]} (installed): --backend {others[0]}" if others else ""
            raise CLIError(f"--backend {requested}: {requested} is not installed; "
                           f"{install_hint(framework_info(requested).module)}{alt}.")
        return requested
    for fw in names:
        if installed(fw):
            return fw
    raise CLIError("no framework is installed; install one: "
                   + " or ".join(f"pip install '{f.extra}'" for f in frameworks()) + ".")




# --- CPU threads ------------------------------------------------------------------------------
#: the variables the frameworks read at import for their intra-op thread pools
THREAD_VARS = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def cpu_threads(requested: Optional[int] = None) -> Optional[int]:
    """CPU threads per op for ``explain``: ``requested``, else the cores that are not busy.

    Threads that wait for busy cores cost far more than they gain: on a 2-core
    machine at load average 5, BIG on 8 digits took 0.56-0.69 s with one thread
    and 7.4-9.4 s with torch's default of two, IG(16) on resnet18 at 224 px
    4.9-5.7 s against 10.6-14.9 s. So the default is the number of cores minus
    the one-minute load average (at least 1): all cores on a quiet machine, one on
    a saturated one. None when the user already chose (``OMP_NUM_THREADS`` set).

    Raises:
        CLIError: ``requested`` < 1.
    """
    if requested is not None:
        if requested < 1:
            raise CLIError(f"--threads {requested}: expected at least 1.")
        return requested
    if any(v in os.environ for v in THREAD_VARS):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform: keep the frameworks' default
        return None
    return max(1, min(cores, int(cores - load + 0.5)))


def set_cpu_threads(threads: Optional[int]) -> None:
    """Set the frameworks' intra-op threads to ``threads`` (before they are imported; torch also after)."""
    if threads is None:
        return
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(threads)

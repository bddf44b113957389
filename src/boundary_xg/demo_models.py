"""The embedded digit classifiers and their held-out test digits.

Two small CNNs trained by ``scripts/train_digits.py`` on scikit-learn's bundled
8x8 handwritten digits (pixels scaled to [0, 1], 10 classes): a ``regular`` one
with biases and its bias-free ``x`` variant (an X-DNN, on which X-Gradient
equals Integrated Gradients from zero). The weights ship in ``boundary_xg/data``
as plain NumPy ``.npz`` files (no pickle) and load into either framework::

    from boundary_xg.demo_models import load_digit_model, load_digit_test_set
    x, y = load_digit_test_set()                      # (360, 1, 8, 8) float32 in [0, 1], (360,)
    model = load_digit_model("torch", "regular")      # torch.nn.Sequential, NCHW
    kmodel = load_digit_model("tensorflow", "x")      # keras.Sequential, NHWC: x.transpose(0, 2, 3, 1)

scikit-learn is not needed at run time.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

import numpy as np

from .errors import InputError, UnsupportedModelError

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
VARIANTS = ("regular", "x")


def digit_weights(variant: str = "regular") -> Dict[str, np.ndarray]:
    """The trained weights of one variant, in PyTorch's shapes (see ``testing.models.cnn_weights``).

    Raises:
        InputError: an unknown variant.
    """
    if variant not in VARIANTS:
        raise InputError(f"variant={variant!r}: expected one of {list(VARIANTS)}.")
    path = os.path.join(DATA_DIR, f"digits_cnn_{variant}.npz")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def load_digit_model(framework: str = "torch", variant: str = "regular"):
    """The embedded digit classifier in ``framework``, in inference mode.

    Args:
        framework: ``"torch"`` (a ``torch.nn.Sequential`` taking ``(N, 1, 8, 8)``)
            or ``"tensorflow"`` / ``"keras"`` (a ``keras.Sequential`` taking
            ``(N, 8, 8, 1)``). Both compute the same logits.
        variant: ``"regular"`` (with biases) or ``"x"`` (bias-free X-DNN).

    Returns:
        The model; its outputs are logits ``(N, 10)``.

    Raises:
        InputError: an unknown framework or variant.
        BackendNotAvailableError: the framework is not installed.
    """
    from .frameworks import frameworks, use_framework
    from .testing import models as tm

    known = [f.name for f in frameworks() if f.name in tm.CNN_BUILDERS]
    try:
        key = use_framework(str(framework))  # a clear error when the framework is missing; imports it
    except UnsupportedModelError as err:
        raise InputError(f"framework={framework!r}: expected one of {known}.") from err
    if key not in tm.CNN_BUILDERS:
        raise InputError(f"framework={framework!r}: the digit models are built for {known}.")
    return tm.cnn(digit_weights(variant), key)


def load_digit_test_set(layout: str = "NCHW") -> Tuple[np.ndarray, np.ndarray]:
    """The held-out test digits: ``(x, labels)``.

    Args:
        layout: ``"NCHW"`` (PyTorch, default) or ``"NHWC"`` (Keras).

    Returns:
        ``x`` float32 in [0, 1], ``(360, 1, 8, 8)`` or ``(360, 8, 8, 1)``;
        ``labels`` int64 ``(360,)``.
    """
    if layout not in ("NCHW", "NHWC"):
        raise InputError(f"layout={layout!r}: expected 'NCHW' or 'NHWC'.")
    with np.load(os.path.join(DATA_DIR, "digits_test.npz"), allow_pickle=False) as f:
        x = f["images"].astype(np.float32) / 16.0
        y = f["labels"].astype(np.int64)
    x = x if layout == "NCHW" else np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
    return x, y

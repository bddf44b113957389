"""The PyTorch backend: ``torch.nn.Module`` models, NCHW images.

This file imports no framework: it declares the backend's identity for detection.
The primitives live in ``backend.py``, DeepLIFT's Rescale kernel in ``rescale.py``,
layer capture in ``layers.py``, the X-DNN scans and builders in ``xdnn.py``.
"""

from __future__ import annotations

from .._identity import BackendIdentity, register_backend

IDENTITY = register_backend(BackendIdentity(
    name="torch",
    framework="torch",
    roots=("torch",),
    aliases=("pytorch", "pt"),
    extra="boundary_xg[torch]",
    image_layout="NCHW",
    module="boundary_xg.backends.torch.backend",
    capabilities=frozenset({"deeplift", "layers", "xdnn", "state_dict_checkpoints", "datasets", "distributed"}),
    import_order=0,
))

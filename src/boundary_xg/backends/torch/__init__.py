"""The PyTorch backend: ``torch.nn.Module`` models, NCHW images.

This file imports no framework: it declares the backend's identity for detection.
The primitives live in ``backend.py``, DeepLIFT's Rescale kernel in ``rescale.py``,
layer capture in ``layers.py``, the X-DNN scans and builders in ``xdnn.py``, model files
and devices for the command line in ``model_files.py``.
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
    capabilities=frozenset({"deeplift", "layers", "xdnn", "state_dict_checkpoints", "datasets", "distributed",
                            "model_files"}),
    import_order=0,
    model_files=(".pt", ".pth", ".ts", ".torchscript", ".jit", ".zip"),
    model_file_kind="a TorchScript file (.pt)",
    weight_files=(".pt", ".pth", ".bin", ".ckpt", ".tar", ".pth.tar"),
    weight_file_kind="a torch state dict (.pt, .pth, saved with torch.save(model.state_dict(), FILE))",
    companions=("torchvision",),
))

"""Speed of DeepLIFT against its floor: one forward+backward over a batch of 2N.

The floor is one plain forward+backward (gradient of the label logit w.r.t. the
input) over ``2N`` rows: the cost of running inputs and baselines as one doubled
batch. Ours runs a baseline pass, then a forward and a backward pass over the
``N`` inputs. This prints, with per-example baselines, the floor, the front end
(``bxg.attribute``: input checks and conversion included), the kernel alone
(``B.deeplift_grad``), their ratios to the floor (target <= 1.3x), and the front
end with a shared baseline (zeros: its pass runs one row), for

* the small CNN at 3x32x32 (torch and, with the same weights, Keras), N = 32 and 128;
* torchvision resnet18 at 3x224x224 (random weights), N = 8;
* Keras ResNet50 at 64x64x3 (``weights=None``), N = 8;

on the CPU. Run: ``.venv/bin/python bench/deeplift.py`` (well under 2 minutes).
"""

from __future__ import annotations


import numpy as np

import torch  # torch before tensorflow (see README)
import torchvision

import boundary_xg as bxg
from _timing import best_times  # noqa: E402  (bench/ is on sys.path)
from boundary_xg.testing import models as tm




def report(name, n, t_floor, t_api, t_kernel, t_zero, note=""):
    print(f"{name:28s} N={n:3d}  fwd+bwd(2N) {t_floor * 1e3:7.1f} ms   DeepLIFT {t_api * 1e3:7.1f} ms"
          f" ({t_api / t_floor:4.2f}x)   kernel {t_kernel * 1e3:7.1f} ms ({t_kernel / t_floor:4.2f}x)"
          f"   zeros baseline {t_zero * 1e3:7.1f} ms ({t_zero / t_floor:4.2f}x){note}")


def torch_case(name, model, shape, n):
    from boundary_xg.backends import get_backend

    B = get_backend("torch")
    x = torch.randn((n,) + shape)
    b = 0.1 * torch.randn((n,) + shape)
    y = torch.zeros(n, dtype=torch.long)
    z2, y2 = torch.cat([x, b]), torch.cat([y, y])

    def floor():
        z = z2.detach().requires_grad_(True)
        torch.autograd.grad(model(z).gather(1, y2[:, None]).sum(), z)

    def ours():
        bxg.attribute(model, x, y, method="DeepLIFT", baseline=b)

    def zeros():
        bxg.attribute(model, x, y, method="DeepLIFT")

    def kernel():
        B.deeplift_grad(model, x, b, y, times_delta=True)

    report(name, n, *best_times(floor, ours, kernel, zeros))


def keras_case(name, model, shape, n):
    import tensorflow as tf

    from boundary_xg.backends import get_backend

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((n,) + shape).astype(np.float32))
    b = tf.constant((0.1 * rng.standard_normal((n,) + shape)).astype(np.float32))
    y = tf.zeros(n, dtype=tf.int64)
    z2, y2 = tf.concat([x, b], 0), tf.concat([y, y], 0)

    def grad(z, yy):
        with tf.GradientTape() as tape:
            tape.watch(z)
            s = tf.reduce_sum(tf.gather(model(z, training=False), yy, axis=1, batch_dims=1))
        return tape.gradient(s, z)

    compiled = tf.function(grad)
    B = get_backend("tensorflow")

    def ours():
        bxg.attribute(model, x, y, method="DeepLIFT", baseline=b)

    def zeros():
        bxg.attribute(model, x, y, method="DeepLIFT")

    with B.session(model) as f:
        def kernel():
            B.deeplift_grad(f, x, b, y, times_delta=True)

        # the floor is plain TensorFlow at its fastest (tf.function), as our backend runs
        times = best_times(lambda: compiled(z2, y2), ours, kernel, zeros)
    report(name, n, *times, note="   (tf.function floor)")


def main():
    torch.manual_seed(0)
    w = tm.cnn_weights(0, size=32)
    for n in (32, 128):
        torch_case("small CNN 3x32x32 (torch)", tm.torch_cnn(w), (3, 32, 32), n)
    torch_case("resnet18 3x224x224 (torch)", torchvision.models.resnet18().eval(), (3, 224, 224), 8)
    for n in (32, 128):
        keras_case("small CNN 32x32x3 (keras)", tm.keras_cnn(w), (32, 32, 3), n)
    import keras

    resnet50 = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    keras_case("ResNet50 64x64x3 (keras)", resnet50, (64, 64, 3), 8)


if __name__ == "__main__":
    main()

import numpy as np
import pytest

import boundary_xg as bxg
from conftest import BACKENDS, build_cnn


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_method_runs_and_keeps_shape(backend, images):
    model, conv = build_cnn(backend)
    x = conv(images)
    for m in ["SM", "IxG", "IG", "SG", "XG"]:
        a = bxg.attribute(model, x, [0, 1, 2, 3], method=m)
        assert a.shape == x.shape and np.all(np.isfinite(a))

"""Framework-free pieces of the layer capability shared by both backends.

Layer names in error messages, and the checks and bookkeeping that follow a
capture (a layer that did not run, a layer the logits do not depend on, one
gradient per call of each layer).
"""

from __future__ import annotations

from typing import Any, Callable, List, Sequence

from ..errors import InputError

#: names listed in an error message at most
MAX_LISTED = 60


def listed_names(names: Sequence[str]) -> str:
    """``names`` for an error message: the first :data:`MAX_LISTED`, then how many more."""
    shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def check_ran(calls: Sequence[list], name_of: Callable[[int], str], strict: bool) -> None:
    """With ``strict``, raise for a layer that recorded no call during the forward pass."""
    for i, c in enumerate(calls):
        if strict and not c:
            raise InputError(
                f"layer={name_of(i)!r} did not run when the model was called; pick a layer on "
                "the path from the input to the output."
            )


def per_layer_grads(calls: Sequence[list], grads: Sequence[Any], name_of: Callable[[int], str],
                    strict: bool, fill: Callable[[int, Any], Any]) -> List[list]:
    """Split the flat gradients (one per call, in ``calls`` order) into one list per layer.

    A missing gradient (None: the output does not reach the logits) becomes
    ``fill(i, output)`` (zeros, or what a capture's ``reduce`` makes of zeros),
    except that with ``strict`` a layer with no gradient at all raises.
    """
    out: List[list] = []
    k = 0
    for i, c in enumerate(calls):
        g = grads[k:k + len(c)]
        k += len(c)
        if strict and c and all(t is None for t in g):
            raise InputError(
                f"layer={name_of(i)!r} does not lie on the path from the input to the output: "
                "the explained logit does not depend on its output."
            )
        out.append([fill(i, o) if t is None else t for o, t in zip(c, g)])
    return out


def last_spatial_block(root: Any, children: Callable[[Any], Sequence[Any]],
                       finished: Callable[[Any], Any], spatial: Callable[[Any], bool],
                       pooling: Callable[[Any], bool]) -> Any:
    """GradCAM's default layer, given what one forward pass recorded (None: no candidate).

    Among ``root``'s children that ran (``finished(c)``: the index at which ``c``
    returned, None if it did not run), the last to finish whose output is spatial
    and that is not a pooling layer; where none qualifies, the same search inside
    the last child that ran, then the one before, and so on.
    """
    kids = sorted((c for c in children(root) if finished(c) is not None), key=finished)
    found = [c for c in kids if spatial(c) and not pooling(c)]
    if found:
        return found[-1]
    for c in reversed(kids):
        inner = last_spatial_block(c, children, finished, spatial, pooling)
        if inner is not None:
            return inner
    return None

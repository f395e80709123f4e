"""pure_backprop: hand-derived backpropagation as pure JAX functions, checked against
``jax.grad`` and numerical differentiation.

A layer is ``Layer(init, forward, backward)``; a network is ``serial(*layers)``; a loss is
``Loss(forward, backward)``. See ``pure_backprop.core`` for the protocol,
``pure_backprop.layers`` and ``pure_backprop.nodes`` for the derivations.
"""

__version__ = "0.1.0"

__all__ = ["Layer", "Loss", "loss_and_grads", "predict", "serial", "with_targets"]


def _submodules() -> set[str]:
    """The public modules and subpackages of the package, found on disk (so a new one needs no list)."""
    import pkgutil

    return {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


def __getattr__(name):
    """The names of ``__all__`` come from ``pure_backprop.core``, and the submodules
    (``pb.gradcheck``, ``pb.layers``, ...) are imported, on first use (PEP 562), so that
    importing the package, and with it ``pure_backprop.cli``, does not import JAX: the
    command line catches Ctrl-C before JAX loads (an interrupted JAX import can crash)."""
    if name in __all__:
        from . import core

        return getattr(core, name)
    if not name.startswith("_") and name in _submodules():
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'pure_backprop' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | _submodules())

"""pure_backprop: hand-derived backpropagation as pure JAX functions, checked against
``jax.grad`` and numerical differentiation.

A layer is ``Layer(init, forward, backward)``; a network is ``serial(*layers)``; a loss is
``Loss(forward, backward)``. See ``pure_backprop.core`` for the protocol,
``pure_backprop.layers`` and ``pure_backprop.nodes`` for the derivations,
``as_jax_function`` to use a layer's hand backward inside any JAX program, and ``load_run``
to rebuild a trained network from its run folder.
"""

__version__ = "0.1.0"

# each top-level name and the module it comes from, imported on first use (below)
_HOMES = {"Layer": "core", "Loss": "core", "StatefulLayer": "core", "loss_and_grads": "core", "predict": "core",
          "serial": "core", "with_targets": "core", "as_jax_function": "bridge", "load_run": "runs"}
__all__ = sorted(_HOMES)


def _submodules() -> set[str]:
    """The public modules and subpackages of the package, found on disk (so a new one needs no list)."""
    import pkgutil

    return {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


def __getattr__(name):
    """The names of ``__all__`` (from ``core``, ``bridge`` and ``runs``) and the submodules
    (``pb.gradcheck``, ``pb.layers``, ...) are imported on first use (PEP 562), so that
    importing the package, and with it ``pure_backprop.cli``, does not import JAX: the
    command line catches Ctrl-C before JAX loads (an interrupted JAX import can crash)."""
    import importlib

    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    if not name.startswith("_") and name in _submodules():
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'pure_backprop' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | _submodules())

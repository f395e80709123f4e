"""Run folders: load what ``pure-backprop train`` wrote, predict and evaluate with it, and the
checkpoint that lets a run resume.

A run folder holds ``metrics.json`` (the options and the history), ``curves.png``,
``params.npz`` (the parameters and batch norm's running averages, keys like ``params/0/W`` and
``state/1/mean``) and ``checkpoint.npz``: everything needed to rebuild the run and to continue
it. ``load_run(folder)`` rebuilds the network from the recorded options and returns it with its
parameters and state; ``predict`` and ``evaluate`` use it; ``run_dataset`` loads the data split
the run trained on (the recorded ``seed`` also chose the split, so it is the same one).

The checkpoint
--------------
``checkpoint.npz`` is a zip of NumPy ``.npy`` arrays, as ``np.savez`` writes, plus one member
``manifest.json``::

    {"format": "pure_backprop.checkpoint", "version": 1, "epoch": 40,
     "options": {"model": "mlp", "hidden": [50], "seed": 0, ...},
     "trees": {"params": "PyTreeDef(...)", "state": ..., "opt_state": ...},
     "arrays": [{"key": "params/0/W", "dtype": "<f4", "shape": [64, 50]}, ...],
     "history": ["epoch", "batch_loss", "train_loss", ...],
     "sha256": "..."}

The arrays are the parameters (``params/...``), the state (``state/...``), the optimizer's state
(``opt_state/...``), the run's PRNG key (``key``) and the history (``history/<field>``, one
entry per epoch). The epoch is the number of epochs trained; each epoch's key is
``train.epoch_key(key, epoch)``, so the key and the epoch are all the randomness a run needs to
go on. ``sha256`` hashes the manifest (without itself) and every array's bytes in the
manifest's order: a truncated, damaged or edited file is refused, never loaded half right. The
trees are rebuilt from the network and the optimizer of the options, and every array must have
the key, dtype and shape they give (the ``PyTreeDef`` texts are for reading only: they name
optax's classes, which may change between versions while the arrays stay the same).
``unzip -p checkpoint.npz manifest.json`` shows the manifest.

Writing is atomic: a temporary file in the same folder, then ``os.replace``, so a crash or
Ctrl-C leaves the previous checkpoint or the new one, never half of one. Reading never runs
code from the file: ``np.load(..., allow_pickle=False)`` and ``json``, no pickle.

Why not orbax-checkpoint, flax's serialization or a pickle: orbax pulls in tensorstore and a
dozen other packages for what an ``npz`` and a page of JSON do here (a few small trees on one
machine); pickle runs code from the file it loads; this format needs NumPy alone, and the
manifest says what a file holds without loading it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

FORMAT = "pure_backprop.checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.npz"
MANIFEST = "manifest.json"
# The options that make a run what it is: resuming with another value of one is refused.
RUN_OPTIONS = ("dataset", "model", "hidden", "activation", "init", "batchnorm", "dropout", "weight_decay",
               "optimizer", "lr", "schedule", "batch_size", "augment", "validation", "seed")
IMAGE_SHAPES = {"digits": (8, 8), "mnist": (28, 28)}  # runs written before image_shape was recorded
PIXEL_RANGE = {"digits": 16, "mnist": 255}  # the integer pixel values each dataset scales to [0, 1]
EVAL_BATCH = 500  # predict and evaluate run batches of max(batch_size, EVAL_BATCH), as pure-backprop train evaluates


class RunError(ValueError):
    """A run folder, checkpoint or input file that cannot be used; the message names the file
    and what is wrong."""


class Run(NamedTuple):
    """A trained network as ``load_run`` rebuilds it; ``options`` are the run's options
    (``RUN_OPTIONS`` and ``epochs``, ``image_shape``, ``num_classes``, ``train_samples``,
    ``data_dir``) and ``epoch`` the epochs its parameters were trained for."""

    network: Any
    params: Any
    state: Any
    options: dict
    epoch: int


class Checkpoint(NamedTuple):
    """What a run needs to go on: ``epoch`` epochs trained, their ``history`` (one dict per
    epoch, as ``fit`` records it), the run's ``key`` and its ``options``."""

    params: Any
    state: Any
    opt_state: Any
    key: Any
    epoch: int
    history: list
    options: dict


# --- options and the network they build ---------------------------------------------------


def run_options(raw, where) -> dict:
    """The options of a run from ``metrics.json`` (or a manifest): ``RUN_OPTIONS`` and the
    shapes, with the values that runs of earlier versions did not record filled in."""
    required = [k for k in RUN_OPTIONS if k != "validation"] + ["train_samples"]
    missing = [k for k in required if k not in raw] if isinstance(raw, dict) else required
    if missing:
        raise RunError(f"{where}: not the options of a run: {', '.join(missing)} missing")
    options = {k: raw.get(k) for k in RUN_OPTIONS}
    if "validation" not in raw:  # split_validation holds out round(fraction * n): this fraction gives the same count
        options["validation"] = raw["validation_samples"] / (raw["train_samples"] + raw["validation_samples"])
    options["epochs"] = raw.get("epochs_requested", raw.get("epochs"))
    options["image_shape"] = tuple(raw.get("image_shape") or IMAGE_SHAPES[raw["dataset"]])
    options["num_classes"] = raw.get("num_classes", 10)
    options["train_samples"] = raw["train_samples"]
    options["data_dir"] = raw.get("data_dir")
    return options


def network_for(options: dict):
    """The network of a run's options and the shape of its input, batch axis first: ``(-1, H * W)``
    for the MLP, ``(-1, 1, H, W)`` for the convolutional networks (as ``pure-backprop train``
    builds them)."""
    from .network import deep_conv_net, mlp, simple_conv_net

    model, shape, classes = options["model"], tuple(options["image_shape"]), options["num_classes"]
    if model == "mlp":
        return mlp(tuple(options["hidden"]), classes, options["activation"], init=options["init"],
                   batchnorm=options["batchnorm"], drop_rate=options["dropout"]), (-1, math.prod(shape))
    if model == "convnet":  # pad 0 as the book on MNIST; small images (digits) keep their size: 5x5 "same"
        return simple_conv_net(classes, init=options["init"], padding=0 if min(shape) >= 28 else 2), (-1, 1, *shape)
    if model == "deepconvnet":
        paddings = (1, 1, 1, 2, 1, 1) if shape == (28, 28) else None  # the book's MNIST net
        if paddings is None and min(shape) < 8:
            raise ValueError(f"deepconvnet needs images of at least 8x8 pixels, got {shape}")
        return deep_conv_net(classes, paddings=paddings, drop_rate=options["dropout"]), (-1, 1, *shape)
    raise ValueError(f"model must be mlp, convnet or deepconvnet, got {model!r}")


def optimizer_for(options: dict):
    """The optax optimizer of a run's options, its schedule spanning the run's ``epochs``."""
    from .train import OPTIMIZERS, learning_rate, updates

    steps = updates(options["train_samples"], options["batch_size"], options["epochs"])
    return OPTIMIZERS[options["optimizer"]](learning_rate(options["lr"], options["schedule"], steps))


def _templates(options, where):
    """The network and the shapes and dtypes of its params, state and optimizer state."""
    import jax

    from .core import lift

    try:
        network, in_shape = network_for(options)
        key = jax.ShapeDtypeStruct((2,), np.uint32)  # a jax.random.PRNGKey's shape and dtype
        params, state, _ = jax.eval_shape(lambda k: lift(network).init(k, in_shape), key)
        opt_state = jax.eval_shape(optimizer_for(options).init, params)
    except (ValueError, TypeError, KeyError) as e:
        raise RunError(f"{where}: options that build no network ({e})") from None
    return network, params, state, opt_state


def different_options(options: dict, other: dict) -> list[str]:
    """The names of ``RUN_OPTIONS`` whose values differ between two runs' options (JSON values:
    lists, not tuples)."""
    return [k for k in RUN_OPTIONS if options[k] != other[k]]


# --- trees as named arrays ---------------------------------------------------------------


def _tree_from_arrays(arrays: dict, prefix: str, like, where):
    """The inverse of ``train.as_numpy_tree``: the tree of ``like`` (shapes and dtypes) with its
    leaves taken from ``arrays[f"{prefix}/..."]``, each checked."""
    import jax

    from .train import as_numpy_tree

    specs = jax.tree_util.tree_leaves(like)
    names = list(as_numpy_tree(like, prefix))  # the names only: each leaf a shape and dtype
    given = sorted(k for k in arrays if k.startswith(prefix + "/"))
    if sorted(names) != given:
        missing, extra = sorted(set(names) - set(given)), sorted(set(given) - set(names))
        raise RunError(f"{where}: not the {prefix} of this network: "
                       + "; ".join(f"{what} {', '.join(keys)}" for what, keys in
                                   (("missing", missing), ("unexpected", extra)) if keys))
    leaves = []
    for name, spec in zip(names, specs):
        array = arrays[name]
        if array.shape != spec.shape or array.dtype != spec.dtype:
            raise RunError(f"{where}: {name} is {array.dtype} {array.shape}, but the network of the run's options "
                           f"needs {spec.dtype} {spec.shape}")
        leaves.append(array)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)


# --- the checkpoint ----------------------------------------------------------------------


def _digest(manifest: dict, arrays: dict) -> str:
    content = {k: v for k, v in manifest.items() if k != "sha256"}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode())
    for entry in manifest["arrays"]:  # each array's own dtype and shape, then its bytes (in C order)
        array = arrays[entry["key"]]
        digest.update(repr((array.dtype.str, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_checkpoint(path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (a temporary file beside it, then
    ``os.replace``); see the module docstring for the format. Returns the path."""
    import jax

    from .train import as_numpy_tree

    path = Path(path)
    key = checkpoint.key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    fields = list(checkpoint.history[0]) if checkpoint.history else []
    arrays = {**as_numpy_tree(checkpoint.params, "params"), **as_numpy_tree(checkpoint.state, "state"),
              **as_numpy_tree(checkpoint.opt_state, "opt_state"), "key": np.asarray(key),
              **{f"history/{f}": np.array([r[f] for r in checkpoint.history],
                                          np.int64 if f == "epoch" else np.float64) for f in fields}}
    manifest = {"format": FORMAT, "version": VERSION, "epoch": int(checkpoint.epoch),
                "options": checkpoint.options,
                "trees": {name: str(jax.tree_util.tree_structure(tree)) for name, tree in
                          (("params", checkpoint.params), ("state", checkpoint.state),
                           ("opt_state", checkpoint.opt_state))},
                "arrays": [{"key": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()],
                "history": fields}
    manifest["sha256"] = _digest(manifest, arrays)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file, zipfile.ZipFile(file, "w") as archive:
            archive.writestr(MANIFEST, json.dumps(manifest))
            for k, a in arrays.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, a, allow_pickle=False)
                archive.writestr(k + ".npy", member.getvalue())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path) -> tuple[Checkpoint, Any]:
    """The checkpoint in ``path`` and the network of its options, every array checked against
    the manifest's hash and against the network; ``RunError`` naming the file otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            manifest = json.loads(archive[MANIFEST])
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise RunError(f"{path}: not a pure_backprop checkpoint (its manifest names no format {FORMAT!r})")
            if manifest.get("version") != VERSION:
                raise RunError(f"{path}: checkpoint format version {manifest.get('version')!r}; this version of "
                               f"pure_backprop reads version {VERSION}")
            arrays = {k: archive[k] for k in archive.files if k != MANIFEST}
    except RunError:
        raise
    except FileNotFoundError:
        raise RunError(f"{path}: no such checkpoint") from None
    except KeyError:
        raise RunError(f"{path}: not a pure_backprop checkpoint (no {MANIFEST} in it)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RunError(f"{path}: not a readable checkpoint, truncated or damaged ({e})") from None
    try:
        intact = (sorted(e["key"] for e in manifest["arrays"]) == sorted(arrays)
                  and _digest(manifest, arrays) == manifest["sha256"])
        epoch, fields = manifest["epoch"], manifest["history"]
        intact = intact and all(arrays[f"history/{f}"].shape == (epoch,) for f in fields)
    except (KeyError, TypeError):
        intact = False
    if not intact:
        raise RunError(f"{path}: the arrays do not match the manifest's sha256: the file was changed or damaged")
    options = run_options(manifest["options"], path)
    network, params, state, opt_state = _templates(options, path)
    history = [{f: (int if f == "epoch" else float)(arrays[f"history/{f}"][i]) for f in fields} for i in range(epoch)]
    checkpoint = Checkpoint(_tree_from_arrays(arrays, "params", params, path),
                            _tree_from_arrays(arrays, "state", state, path),
                            _tree_from_arrays(arrays, "opt_state", opt_state, path),
                            arrays["key"], epoch, history, options)
    return checkpoint, network


# --- a run folder ------------------------------------------------------------------------


def _read_metrics(path: Path) -> dict:
    try:
        return run_options(json.loads(path.read_text()), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: not readable as a run's metrics.json ({e})") from None


def load_run(path) -> Run:
    """The run in folder ``path``: its network rebuilt from the recorded options, with the
    parameters and state of ``checkpoint.npz`` (checked against the hash in its manifest and
    against ``metrics.json``'s options), or of ``params.npz`` for a run written before
    checkpoints. ``RunError`` naming the file when something does not fit."""
    folder = Path(path)
    if not folder.is_dir():
        raise RunError(f"{folder}: not a run folder ({'a file' if folder.exists() else 'no such folder'}); give "
                       f"the folder that pure-backprop train wrote")
    metrics_path, checkpoint_path = folder / "metrics.json", folder / CHECKPOINT
    options = _read_metrics(metrics_path) if metrics_path.exists() else None
    if checkpoint_path.exists():
        checkpoint, network = load_checkpoint(checkpoint_path)
        changed = different_options(checkpoint.options, options) if options is not None else []
        if changed:
            raise RunError(f"{checkpoint_path}: the checkpoint of another run: its {', '.join(changed)} differ from "
                           f"{metrics_path}'s")
        return Run(network, checkpoint.params, checkpoint.state, checkpoint.options, checkpoint.epoch)
    if options is None:
        raise RunError(f"{folder}: not a run folder: it holds neither {CHECKPOINT} nor metrics.json")
    params_path = folder / "params.npz"
    network, params, state, _ = _templates(options, metrics_path)
    try:
        with np.load(params_path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise RunError(f"{params_path}: missing; the run folder holds metrics.json but no parameters") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RunError(f"{params_path}: not a readable npz, truncated or damaged ({e})") from None
    epoch = json.loads(metrics_path.read_text())["epochs"]
    return Run(network, _tree_from_arrays(arrays, "params", params, params_path),
               _tree_from_arrays(arrays, "state", state, params_path), options, epoch)


def run_dataset(run: Run, data_dir=None):
    """The data the run trained on, split as it was (the same seed, the same validation
    fraction): a ``data.Dataset``, images flattened as ``data`` gives them. MNIST is read from
    ``data_dir``, by default the folder the run read (recorded in its options)."""
    from . import data

    options = run.options
    if options["dataset"] == "digits":
        dataset = data.load_digits(seed=options["seed"])
    else:
        dataset = data.load_mnist(data_dir or options["data_dir"] or "data/mnist")
    return data.split_validation(dataset, options["validation"], seed=options["seed"])


def _samples(run: Run, x):
    import jax.numpy as jnp

    in_shape = network_for(run.options)[1]
    x = jnp.asarray(x)
    size = math.prod(in_shape[1:])
    if x.ndim < 2 or len(x) == 0 or math.prod(x.shape[1:]) != size:  # a batch axis, at least one sample
        raise ValueError(f"the run's network takes samples of {size} values "
                         f"({' x '.join(map(str, run.options['image_shape']))} images), got an array of shape {x.shape}")
    return x.reshape(in_shape)


def predict(run: Run, x) -> np.ndarray:
    """Class probabilities ``(N, classes)`` (the softmax of the scores) for images ``x`` scaled
    as the run's training data (``(N, H * W)`` or ``(N, H, W)``), in inference mode, in batches
    of the run's evaluation size."""
    import jax

    from .core import predict as scores

    x = _samples(run, x)
    size = max(run.options["batch_size"], EVAL_BATCH)
    forward = jax.jit(lambda xb: jax.nn.softmax(scores(run.network, run.params, xb, run.state)))  # over the classes
    return np.concatenate([np.asarray(forward(x[i:i + size])) for i in range(0, len(x), size)])


def evaluate(run: Run, x, labels) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of the run on ``(x, labels)``, computed as training evaluated
    (``train.make_evaluate``, batches of ``max(batch_size, 500)``, inference mode)."""
    import jax.numpy as jnp

    from .core import StatefulLayer
    from .layers import softmax_cross_entropy
    from .train import make_evaluate

    evaluate_fn = make_evaluate(run.network, softmax_cross_entropy, max(run.options["batch_size"], EVAL_BATCH))
    x, labels = _samples(run, x), jnp.asarray(labels)
    args = (run.params, run.state) if isinstance(run.network, StatefulLayer) else (run.params,)
    loss, accuracy = evaluate_fn(*args, x, labels)
    return float(loss), float(accuracy)


# --- inputs for predict ------------------------------------------------------------------


def read_images(path, options: dict) -> np.ndarray:
    """The images of one file as the run's training data: float32 ``(N, H, W)`` in [0, 1] with
    ink high, ``(H, W)`` the run's ``image_shape``.

    * A PNG or JPEG (read by Pillow) is one image: made grayscale (a transparent background
      counts as white), scaled from 0..255 to [0, 1], and inverted when its border is light
      (mean above 0.5): the training digits are light ink on a dark ground, and a digit drawn
      dark on white is the same digit.
    * A ``.npy`` array or an IDX file holds one image ``(h, w)``, several ``(N, h, w)``, or
      flattened ones ``(N, H * W)``, already ink high: floats must lie in [0, 1] and are
      taken as they are; integers are scaled as the run's dataset was, from 0..16 (digits) or
      0..255 (MNIST) to [0, 1].

    Images of another size are resized to ``(H, W)`` by averaging over the area each pixel
    covers (Pillow's box filter: how the digits were made, 4x4 blocks of a 32x32 bitmap).
    """
    path = Path(path)
    shape = tuple(options["image_shape"])
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw.startswith((b"\x89PNG", b"\xff\xd8")):
        images = _read_picture(path, raw)[None]
    else:
        images = _scaled(_read_array(path, raw), path, options["dataset"])
        if images.ndim == 1 or (images.ndim == 2 and images.shape[1] == math.prod(shape)):
            images = images.reshape(-1, *shape)
        elif images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or 0 in images.shape:
            raise RunError(f"{path}: expected one image (h, w), several (N, h, w) or flattened ones "
                           f"(N, {math.prod(shape)}), got an array of shape {images.shape}")
    return np.stack([_resized(image, shape) for image in images]).astype(np.float32)


def _read_picture(path: Path, raw: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as image:
            image = image.convert("RGBA")
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            gray = np.asarray(Image.alpha_composite(white, image).convert("L"), np.int64)
    except (OSError, UnidentifiedImageError) as e:
        raise RunError(f"{path}: not a readable image ({e})") from None
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    # inverted on the integers, then one division: every pixel is the float32 nearest to k / 255
    # (1 - float32(k / 255) would round twice: one ulp off for 159 of the 256 levels)
    return np.asarray(255 - gray if 2 * border.sum() > 255 * border.size else gray, np.float32) / np.float32(255)


def _read_array(path: Path, raw: bytes) -> np.ndarray:
    from .data import DataError, read_idx

    if raw.startswith(b"\x93NUMPY"):
        try:
            return np.load(io.BytesIO(raw), allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise RunError(f"{path}: not a readable .npy array ({e})") from None
    try:
        return read_idx(path)
    except DataError as e:
        raise RunError(f"{e}; predict reads PNG, JPEG, .npy and IDX files") from None


def _scaled(array: np.ndarray, path: Path, dataset: str) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating):
        low, high = 0.0, 1.0
    elif np.issubdtype(array.dtype, np.integer):
        low, high = 0, PIXEL_RANGE[dataset]
    else:
        raise RunError(f"{path}: expected an array of floats in [0, 1] or of integer pixels, got {array.dtype}")
    if array.size and not (array.min() >= low and array.max() <= high):
        raise RunError(f"{path}: {array.dtype} pixels from {array.min()} to {array.max()}, but this {dataset} run "
                       f"takes {'floats in [0, 1]' if high == 1.0 else f'integers from 0 to {high}'}")
    return np.asarray(array, np.float64) / high


def _resized(image: np.ndarray, shape) -> np.ndarray:
    from PIL import Image

    if image.shape == shape:
        return image
    picture = Image.fromarray(np.asarray(image, np.float32))  # mode "F": 32-bit floats
    return np.asarray(picture.resize((shape[1], shape[0]), Image.Resampling.BOX))

"""Warm-up feeds built from a model's config, and the probe that checks a model really batches on its first axis.

Every open axis gets a size: the batch axis the number of rows asked for; an axis the config's ``warmup`` gives;
the image processor's height and width; the same size wherever the graph names the same symbol (silero-vad's
``state [2, batch, 128]`` follows its ``input [batch, sequence]``); else ``OPEN_AXIS``. Values are zeros (empty
strings, ``False``), a ragged axis's lengths input holds that axis's size, and ``warmup`` may give a value (a
sample rate, say). When these cannot run the model, the load fails and says to fill in ``warmup``.
"""

from __future__ import annotations

import numpy as np

from service.backends import Backend, Tensors
from service.config import ImageProcessor, ModelConfig
from service.datatypes import DTYPES
from service.signature import GraphSignature

OPEN_AXIS = 32  # a size most convolution stacks can take (a 32x32 picture survives five halvings)


def example_feeds(config: ModelConfig, graph: GraphSignature, rows: int = 1) -> Tensors:
    symbols: dict[str, int] = {}
    named = {t.name: t.dims for t in graph.inputs}
    image = config.processor if isinstance(config.processor, ImageProcessor) else None
    lengths_of = {axis.lengths_input: axis for axis in config.ragged if axis.lengths_input}
    batching = config.max_batch_size != 0
    sizes: dict[str, list[int]] = {}
    for tensor in config.inputs:
        given = config.warmup.get(tensor.name)
        shape = list(given.shape) if given is not None and given.shape is not None else list(tensor.shape)
        dims = named.get(tensor.name, ())
        for axis, size in enumerate(shape):
            dim = dims[axis] if axis < len(dims) else None
            symbol = dim if isinstance(dim, str) else None
            if axis == 0 and batching and tensor.shape and tensor.shape[0] == -1:
                shape[0] = rows
            elif size == -1:
                shape[axis] = symbols.get(symbol, 0) if symbol else 0
                if not shape[axis] and image is not None and tensor.name == image.input:
                    h, w = (2, 3) if image.layout == "NCHW" else (1, 2)
                    shape[axis] = image.height if axis == h else image.width if axis == w else OPEN_AXIS
                shape[axis] = shape[axis] or OPEN_AXIS
            if symbol:
                symbols.setdefault(symbol, shape[axis])
        sizes[tensor.name] = shape
    feeds: Tensors = {}
    for tensor in config.inputs:
        shape = sizes[tensor.name]
        given = config.warmup.get(tensor.name)
        value: object = given.value if given is not None and given.value is not None else None
        if value is None and tensor.name in lengths_of:
            ragged = lengths_of[tensor.name]
            value = sizes[ragged.input][ragged.axis]
        dtype = DTYPES[tensor.datatype]
        if tensor.datatype == "BYTES":
            text = value if isinstance(value, str) else ""
            feeds[tensor.name] = np.full(shape, text.encode(), dtype=object)
        else:
            feeds[tensor.name] = np.full(shape, value if value is not None else 0, dtype=dtype)
    return feeds


def describe_feeds(feeds: Tensors) -> str:
    return ", ".join(f"{name} {list(array.shape)}" for name, array in feeds.items())


def batching_problem(backend: Backend, config: ModelConfig, graph: GraphSignature,
                     rows: tuple[int, ...] = (1, 3)) -> str | None:
    """Run the model at several batch sizes: None when every output has as many rows as the inputs, else why not."""
    for n in rows:
        outputs = backend.run(example_feeds(config, graph, n))
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != n:
                return f"output '{name}' has shape {list(array.shape)} for {n} input rows"
    return None

"""The batch sizes a model runs at, and a batch padded up to the next of them.

onnxruntime's CUDA convolutions keep the plan of the last input shape each kernel of a session saw, and build a
new one (a cuDNN frontend graph: heuristics, then plans) whenever that shape changes (``Conv::UpdateState``). A
dynamic batcher changes the batch size almost every batch, so on CUDA most batches rebuilt every convolution's plan:
the ResNet's compute went from under 1 ms to tens of ms a batch (docs/benchmarks.md). With allowed sizes a batch is
padded, with copies of its first row, up to the next allowed size and runs on a session of that size alone, whose
shapes never change; the padded rows' outputs are dropped. TensorFlow Serving's ``allowed_batch_sizes`` is the same
idea.

Which sizes: a model's ``batching.allowed_batch_sizes`` (ending with the ``max_batch_size`` its config sets, or
cut at the server's ``--max-batch-size`` where it sets none), else the server's ``--allowed-batch-sizes``:
``auto`` (the default) is the powers of two below ``max_batch_size`` and ``max_batch_size`` itself where the model
runs on CUDA and its file is at most ``AUTO_MODEL_BYTES`` (each session holds its own copy of the weights: 7
sessions for a ``max_batch_size`` of 64), and any size on the CPU, whose kernels keep no per-shape plans (padding
would only add work); ``any``; or a list such as ``1,8,64``, cut at each model's ``max_batch_size`` and ending with
it. A model that runs one request at a time has none. The batcher does the padding (``service.batcher.merge``).
"""

from __future__ import annotations


def powers_of_two(max_batch_size: int) -> tuple[int, ...]:
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return (*sizes, max_batch_size)


AUTO_MODEL_BYTES = 256 * 1024 * 1024  # a larger model file: ``auto`` is any size (a session per size would copy it)


def allowed_batch_sizes(own: list[int] | None, server: str, max_batch_size: int, on_cuda: bool,
                        model_bytes: int = 0, own_max: bool = False) -> tuple[int, ...]:
    """The sizes a model's batches are padded to (module doc); () for any size. A list is cut at
    ``max_batch_size`` and ends with it; where the model's config sets that maximum itself (``own_max``), its own
    list must end with it, else ``ValueError`` says so."""
    if not max_batch_size:
        return ()
    if own is not None:
        if own_max and own[-1] != max_batch_size:
            raise ValueError(f"batching.allowed_batch_sizes {own} must end with the config's max_batch_size, "
                             f"{max_batch_size}: each batch runs at the smallest allowed size that holds it, up to "
                             f"{max_batch_size} rows")
        return _ending_with(own, max_batch_size)
    if server == "any" or (server == "auto" and (not on_cuda or model_bytes > AUTO_MODEL_BYTES)):
        return ()
    if server == "auto":
        return powers_of_two(max_batch_size)
    return _ending_with([int(v) for v in server.split(",")], max_batch_size)


def _ending_with(sizes: list[int], max_batch_size: int) -> tuple[int, ...]:
    return (*sorted({size for size in sizes if size < max_batch_size}), max_batch_size)


def padded_size(sizes: tuple[int, ...], rows: int) -> int:
    """The allowed size a batch of ``rows`` runs at (``rows`` itself where any size is allowed)."""
    return next((size for size in sizes if size >= rows), rows)

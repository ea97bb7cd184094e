"""A variant beside its source in one ``nnserve bench`` run (``--models resnet,resnet-int8``): a model whose report
names the model it was quantized from, when both are benched, gets a table of its own: each side's served
samples/s (mean over ``--rounds``, the two measured back to back in every cell and their order swapped every
round, because these machines drift by 20% within minutes), the ratio, every round's figures, both p50s, and the
ratio of their raw in-process onnxruntime ceilings measured in the same run."""

from __future__ import annotations

import statistics
from collections import defaultdict

from service.bench.baseline import Measured, side_by_side
from service.loading import LoadedVersion


def variant_pairs(models: dict[str, LoadedVersion]) -> list[tuple[str, str]]:
    """(source, variant) for every benched variant whose source is benched too."""
    found = []
    for name, model in models.items():
        quantization = model.report.quantization if model.report else None
        if quantization is not None and quantization.source.name in models and quantization.source.name != name:
            found.append((quantization.source.name, name))
    return found


def pair_table(rows: list[Measured], pairs: list[tuple[str, str]], raw_best: dict[str, tuple[float, str]]) -> str:
    by_cell: dict[tuple[str, str, int], list[Measured]] = defaultdict(list)
    for row in rows:
        by_cell[(row.model, row.protocol, row.concurrency)].append(row)
    head = ["source", "variant", "protocol", "conc.", "source samples/s", "variant samples/s", "ratio",
            "each round: source / variant", "p50 ms source / variant", "raw ORT source / variant (ratio)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells = sorted({(protocol, concurrency) for _, protocol, concurrency in by_cell},
                   key=lambda c: (c[0], c[1]))
    for source, variant in pairs:
        raw_s, raw_v = raw_best[source][0], raw_best[variant][0]
        for protocol, concurrency in cells:
            first, second = by_cell[(source, protocol, concurrency)], by_cell[(variant, protocol, concurrency)]
            if not first or not second:
                continue
            p50 = [statistics.median(r.p50_ms for r in side) for side in (first, second)]
            lines.append("| " + " | ".join([
                source, variant, protocol, str(concurrency),
                *side_by_side([r.samples_per_s for r in first], [r.samples_per_s for r in second]),
                f"{p50[0]:.2f} / {p50[1]:.2f}", f"{raw_s:,.0f} / {raw_v:,.0f} ({raw_v / raw_s:.2f}x)"]) + " |")
    return "\n".join(lines)

"""Activation ranges of every tensor, collected in one pass and shared by every backend.

The FP32 ONNX graph is run once over the calibration set with every intermediate float tensor
exposed. Per tensor we keep min/max and a histogram of |x| whose range doubles as larger values
arrive (bins merge pairwise, so no sample is re-read); percentile and entropy (KL) thresholds come
from that histogram. `ranges.json` stores the results by ONNX tensor name with the producing node
and its module path, so plans for ONNX/TensorRT (tensor names) and for PyTorch-based converters
(module paths) read the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from evitdeploy.errors import UserError

METHODS = ("minmax", "percentile", "entropy")
HIST_BINS = 2048
PERCENTILES = (99.9, 99.99, 99.999)
DEFAULT_PERCENTILE = 99.99
QUANTIZED_BINS = 128  # int8: 128 levels per sign
HISTOGRAM_SAMPLE = 1 << 18  # values per tensor and image the histogram sees (every k-th: high-res inputs)
RANGES_FORMAT = 1


class AbsHistogram:
    """A histogram of |x| over [0, bound] whose bound doubles (merging bin pairs) as needed."""

    def __init__(self, bins: int = HIST_BINS):
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.bound = 0.0

    def add(self, magnitudes: np.ndarray) -> None:
        peak = float(magnitudes.max()) if magnitudes.size else 0.0
        if not np.isfinite(peak):
            magnitudes = magnitudes[np.isfinite(magnitudes)]
            peak = float(magnitudes.max()) if magnitudes.size else 0.0
        if peak <= 0.0:
            self.counts[0] += magnitudes.size
            return
        if self.bound == 0.0:
            self.bound = peak
        elif peak > self.bound:
            factor = 2 ** int(np.ceil(np.log2(peak / self.bound)))
            if factor >= self.bins:
                self.counts = np.bincount([0], weights=[self.counts.sum()], minlength=self.bins).astype(np.int64)
            else:
                merged = self.counts.reshape(-1, factor).sum(axis=1)
                self.counts = np.concatenate([merged, np.zeros(self.bins - len(merged), dtype=np.int64)])
            self.bound *= factor
        index = np.minimum((magnitudes * (self.bins / self.bound)).astype(np.int64), self.bins - 1)
        self.counts += np.bincount(index.ravel(), minlength=self.bins)

    def percentile(self, percent: float) -> float:
        total = self.counts.sum()
        if total == 0 or self.bound == 0.0:
            return 0.0
        cumulative = np.cumsum(self.counts)
        index = int(np.searchsorted(cumulative, total * percent / 100.0))
        return float((index + 1) * self.bound / self.bins)

    def entropy_threshold(self, quantized_bins: int = QUANTIZED_BINS, step: int = 8) -> float:
        """The |x| clipping threshold minimising KL(clipped fp32 || quantized), as TensorRT's
        entropy calibrator does, searched over candidate thresholds every `step` bins."""
        from scipy.stats import entropy

        counts = self.counts.astype(np.float64)
        if self.bound == 0.0 or counts.sum() == 0:
            return 0.0
        last = int(np.nonzero(counts)[0][-1]) + 1
        if last <= quantized_bins:
            return float(last * self.bound / self.bins)
        best, best_kl = last, np.inf
        for edge in range(quantized_bins, last + 1, step):
            reference = counts[:edge].copy()
            reference[-1] += counts[edge:].sum()  # outliers clip into the last bin
            bounds = np.linspace(0, edge, quantized_bins + 1).astype(np.int64)[:-1]
            nonzero = reference > 0
            chunk_sums = np.add.reduceat(reference, bounds)
            chunk_nonzero = np.add.reduceat(nonzero.astype(np.float64), bounds)
            owner = np.repeat(np.arange(quantized_bins), np.diff(np.append(bounds, edge)))
            expanded = np.where(nonzero, chunk_sums[owner] / np.maximum(chunk_nonzero[owner], 1), 0.0)
            kl = entropy(reference + 1e-12, expanded + 1e-12)
            if kl < best_kl:
                best, best_kl = edge, kl
        return float(best * self.bound / self.bins)


@dataclass
class TensorRange:
    """Running statistics of one tensor over the calibration set."""

    node: str
    op: str
    minimum: float = np.inf
    maximum: float = -np.inf
    histogram: AbsHistogram = field(default_factory=AbsHistogram)

    def add(self, values: np.ndarray) -> None:
        low, high = float(values.min()), float(values.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            finite = values[np.isfinite(values)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (np.inf, -np.inf)
        self.minimum, self.maximum = min(self.minimum, low), max(self.maximum, high)
        flat = values.reshape(-1)
        if flat.size > HISTOGRAM_SAMPLE:  # min/max stay exact; the histogram needs no more than this
            flat = flat[:: flat.size // HISTOGRAM_SAMPLE]
        self.histogram.add(np.abs(flat.astype(np.float32, copy=False)))

    def summary(self, module: str, with_entropy: bool) -> dict:
        absmax = max(abs(self.minimum), abs(self.maximum))
        result = {
            "node": self.node,
            "op": self.op,
            "module": module,
            "min": self.minimum,
            "max": self.maximum,
            "absmax": absmax,
            "percentiles": {str(p): min(self.histogram.percentile(p), absmax) for p in PERCENTILES},
        }
        if with_entropy:
            result["entropy"] = min(self.histogram.entropy_threshold(), absmax)
        return result


@dataclass(frozen=True)
class Ranges:
    """Per-tensor ranges (JSON-ready dicts) plus where they came from."""

    tensors: dict[str, dict]
    calibration: dict

    def interval(self, name: str, method: str = "minmax", percentile: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
        """(low, high) to quantize `name` with: the observed range, clipped to the method's |x|
        threshold for percentile and entropy (never wider than what was observed)."""
        stats = self.tensors[name]
        low, high = stats["min"], stats["max"]
        if method == "minmax":
            return low, high
        threshold = stats["percentiles"][str(percentile)] if method == "percentile" else stats["entropy"]
        return max(low, -threshold), min(high, threshold)

    def absmax(self, name: str) -> Optional[float]:
        stats = self.tensors.get(name)
        return None if stats is None else stats["absmax"]

    def to_dict(self) -> dict:
        return {"format": RANGES_FORMAT, "calibration": self.calibration, "tensors": self.tensors}

    @classmethod
    def from_dict(cls, data: dict) -> "Ranges":
        if data.get("format") != RANGES_FORMAT or "tensors" not in data:
            raise UserError("the ranges file is not an evitdeploy ranges file", "re-run the export or `evitdeploy plan`")
        return cls(data["tensors"], data.get("calibration", {}))


def _exposed_model(model, names: list[str]):
    """A copy of the graph that also outputs every tensor in `names`."""
    import onnx

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    existing = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in existing:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return exposed


def float_tensors(model) -> dict[str, tuple[str, str]]:
    """tensor name -> (producing node, op type) for every float node output (shapes excluded)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return {output: (node.name, node.op_type) for node in inferred.graph.node for output in node.output if types.get(output) == onnx.TensorProto.FLOAT}


def collect_ranges(
    onnx_path: Path,
    inputs: np.ndarray,
    input_name: str,
    calibration: dict,
    with_entropy: bool = False,
    progress: Optional[Callable[[str], None]] = None,
) -> Ranges:
    """Run the FP32 graph over `inputs` one at a time and record every float tensor's range."""
    import onnx
    import onnxruntime as ort

    from evitdeploy.precision.plan import module_path

    model = onnx.load(str(onnx_path))
    tensors = float_tensors(model)
    graph_input = model.graph.input[0].name
    names = list(tensors)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every named tensor survives
    options.log_severity_level = 3
    session = ort.InferenceSession(_exposed_model(model, names).SerializeToString(), options, providers=["CPUExecutionProvider"])
    stats = {graph_input: TensorRange("", "input")}
    stats.update({name: TensorRange(*tensors[name]) for name in names})
    for index in range(len(inputs)):
        if progress and (index % 8 == 0):
            progress(f"collecting ranges: image {index + 1}/{len(inputs)}")
        batch = inputs[index : index + 1]
        outputs = session.run(names, {input_name: batch})
        stats[graph_input].add(batch)
        for name, value in zip(names, outputs):
            stats[name].add(value)
    summaries = {name: s.summary(module_path(s.node), with_entropy) for name, s in stats.items()}
    return Ranges(summaries, calibration)

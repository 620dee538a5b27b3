"""BiSeNet face parsing (CelebAMask-HQ's 19 classes), the paper authors' mask source.

The model files are the ONNX exports of the ``yakhyo/face-parsing`` project (MIT licence;
ResNet-18 or ResNet-34 backbone, the authors use ResNet-34), run with onnxruntime: input
``input`` (N, 3, 512, 512) RGB scaled to [0, 1] and normalised with ImageNet's mean and std,
first output (N, 19, 512, 512) class logits. The class order is that project's (below). The face
is the authors' set: skin, brows, eyes, glasses, ears, nose, mouth, lips and neck, not hair,
hat, earrings, clothes or background; anything else in front of the face (a hand, a
microphone) is not face either, so it stays as it was.

As the authors do, the mask at a coarser size marks every pixel a face pixel touches
(``resize`` of the 512 px mask, then ``> 0``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from faceanon.errors import ModelUnavailableError

CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
    "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
FACE = (
    "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "nose", "mouth",
    "u_lip", "l_lip", "neck",
)  # fmt: skip
INPUT_SIDE = 512
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
RELEASE = "https://github.com/yakhyo/face-parsing/releases/download/weights/"
MODELS = {"resnet18": RELEASE + "resnet18.onnx", "resnet34": RELEASE + "resnet34.onnx"}
DEFAULT_MODEL = "resnet34"


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faceanon" / "face-parsing"


def model_file(name: str = DEFAULT_MODEL, timeout: float = 30.0) -> Path:
    """The ONNX file of ``name`` (``resnet18`` / ``resnet34``: downloaded once into
    :func:`cache_folder`), or ``name`` itself if it is a path to a file."""
    if name not in MODELS:
        path = Path(name)
        if not path.is_file():
            raise ModelUnavailableError(
                f"{name}: no such face-parsing model file (or give {' / '.join(MODELS)})"
            )
        return path
    target = cache_folder() / f"{name}.onnx"
    if target.is_file():
        return target
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(MODELS[name], timeout=timeout) as answer:
            partial.write_bytes(answer.read())
        partial.replace(target)  # atomic: a half-downloaded file is never used
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ModelUnavailableError(
            f"face parser {name}: cannot download {MODELS[name]} ({type(exc).__name__}, offline?);"
            f" download it where there is internet and pass --parser-model FILE.onnx, or use"
            " --mask landmarks"
        ) from None
    return target


class FaceParser:
    """``parser(crop)``: boolean (S, S), True on the pixels of ``classes`` in the (S, S, 3)
    uint8 RGB crop."""

    def __init__(self, model: Path | str, classes: tuple[str, ...] = FACE) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelUnavailableError(
                "--mask parser needs onnxruntime: pip install 'faceanon[parser]'"
            ) from None

        unknown = sorted(set(classes) - set(CLASSES))
        if unknown:
            raise ValueError(f"unknown face-parsing classes: {', '.join(unknown)}")
        path = Path(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's own error types for an unreadable model
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise ModelUnavailableError(
                f"{path}: not a face-parsing ONNX model ({first})"
            ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = outputs[0].shape
        channels = shape[1] if len(shape) == 4 else 0
        known = isinstance(channels, int)  # an exported model may leave dimensions named
        if len(inputs) != 1 or (known and channels != len(CLASSES)):
            raise ModelUnavailableError(
                f"{path}: not a 19-class face-parsing model (input {len(inputs)}, output {shape})"
            )
        self.input_name = inputs[0].name
        self.face_ids = np.array([CLASSES.index(c) for c in classes])

    def labels(self, crop: np.ndarray) -> np.ndarray:
        """uint8 (512, 512): the class of each pixel of the crop resized to 512."""
        import cv2

        x = cv2.resize(crop, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_LINEAR)
        x = (x.astype(np.float32) / 255.0 - MEAN) / STD
        batch = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        logits: Any = self.session.run(None, {self.input_name: batch})[0]
        if logits.shape != (1, len(CLASSES), INPUT_SIDE, INPUT_SIDE):
            raise ModelUnavailableError(f"face parser returned shape {logits.shape}")
        return np.asarray(logits[0].argmax(axis=0), dtype=np.uint8)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        import cv2

        face = np.isin(self.labels(crop), self.face_ids).astype(np.float32)
        side = crop.shape[0]
        return np.asarray(cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA) > 0)

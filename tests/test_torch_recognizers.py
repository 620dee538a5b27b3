"""The torch recognizers (faceanon.faces.torch_recognizers) against onnxruntime on the same
ONNX files, and their refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceanon.errors import ModelUnavailableError
from faceanon.faces.torch_recognizers import CropRecognizer, OnnxGraph, model_file


def _onnxruntime(path):
    """An onnxruntime session on the file, its unused graph inputs dropped (SFace's file
    declares its raw weights as inputs, which onnxruntime would ask to be fed)."""
    import onnx
    import onnxruntime

    model = onnx.load(str(path))
    used = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


@pytest.mark.parametrize("name", ["sface", "arcface"])
def test_matches_onnxruntime_on_the_example_face(name, face):
    import cv2

    recognizer = CropRecognizer(name)
    small = cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA).astype(np.float32)
    if name == "sface":  # BGR in [0, 255]
        x = np.ascontiguousarray(small[..., ::-1].transpose(2, 0, 1)[None])
    else:  # RGB in [-1, 1]
        x = (small.transpose(2, 0, 1)[None] - 127.5) / 127.5
    x = np.ascontiguousarray(np.concatenate([x, x[:, :, ::-1, :]]), np.float32)  # and upside down
    session = _onnxruntime(model_file(name))
    name_in = session.get_inputs()[0].name
    expected = np.concatenate([session.run(None, {name_in: row[None]})[0] for row in x])
    got = recognizer.embed_112(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (2, 128 if name == "sface" else 512)
    assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 0.1  # the two inputs differ


def test_crop_embedding_is_differentiable_and_recognises_the_face(face):
    recognizer = CropRecognizer("sface")
    x = torch.from_numpy(face.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    x.requires_grad_(True)
    e = recognizer(x)
    assert torch.allclose(e.norm(dim=1), torch.ones(1))
    e.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        mirrored = recognizer(x.flip(3))  # the same person, mirrored
        noise = recognizer(torch.rand_like(x) * 2 - 1)
    e = e.detach()
    assert float(e[0] @ mirrored[0]) > 0.5 > float(e[0] @ noise[0])


def test_refuses_damaged_and_foreign_files(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(model_file("sface").read_bytes()[:5000])
    with pytest.raises(ModelUnavailableError, match=r"damaged\.onnx: not a readable ONNX"):
        OnnxGraph(damaged)

    node = helper.make_node("Softmax", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(ModelUnavailableError, match=r"foreign\.onnx: unsupported ONNX operators"):
        OnnxGraph(foreign)

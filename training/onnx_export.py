"""ONNX export of the project's checkpoints (classifier and FillSegNet segmenter).

:func:`export_onnx` writes a ``.pt`` checkpoint as an ONNX model that the onnxruntime backend of
:mod:`fillcls.backends` loads without torch: the Normalize layer is inside the graph (input: float
images in [0, 1], N x 3 x H x W, dynamic batch), the fillcls header is in the model's
metadata_props (classes, input size, model id), and with ``fp16_weights`` the weights are stored
as float16 with Cast-to-float32 nodes that onnxruntime folds at load (half the file size, fp32
compute). ``int8=True`` also writes ``<stem>.int8.onnx``: static QDQ quantisation calibrated on 1,024
procedural crops of the split's training containers (:func:`fillcls.backends.quantize_int8`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fillcls import backends
from fillcls.atomic import atomic_path
from fillcls.core import CheckpointError, load_classifier, read_checkpoint

DEFAULT_OPSET = 18


def _load(checkpoint: str):
    """(model in eval mode, header, example input, whether the stored weights are fp16)."""
    header, state_dict, _ = read_checkpoint(checkpoint)
    half = any(v.dtype == torch.float16 for v in state_dict.values())
    if header.kind == "segmenter":
        from fillcls.segnet_torch import load_segnet

        model, header, (h, w) = load_segnet(checkpoint)
        return model, header, torch.rand(2, 3, h, w), half
    model, header = load_classifier(checkpoint)
    s = header.input_size
    return model, header, torch.rand(2, 3, s, s), half


def fp16_initializers(model, min_elements: int = 16) -> None:
    """Store the float32 initializers of an ``onnx.ModelProto`` (those with at least
    ``min_elements`` values) as float16, each followed by a Cast back to float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            keep.append(init)
            continue
        arr = numpy_helper.to_array(init).astype(np.float16)
        half = numpy_helper.from_array(arr, init.name + "__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "__cast"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)


def export_onnx(checkpoint: str, out_path: str, opset: int = DEFAULT_OPSET, fp16_weights: bool | None = None,
                int8: bool = False, calibration_crops: int = 1024, calibration_split: str = "S1",
                seed: int = 0) -> list[str]:
    """Export the project checkpoint ``checkpoint`` (classifier or segmenter) to ``out_path``.

    ``fp16_weights``: None = as stored in the checkpoint (the shipped models are fp16).
    ``int8`` (classifiers): also ``<stem>.int8.onnx``, calibrated on ``calibration_crops``
    procedural crops of ``calibration_split``'s training containers. Checks that onnxruntime's
    output matches torch's on random inputs. Returns the paths written; CheckpointError naming the
    checkpoint for a bad file, :class:`fillcls.atomic.WriteError` naming ``out_path``.
    """
    import onnx

    model, header, example, half = _load(checkpoint)
    if fp16_weights is None:
        fp16_weights = half
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["image"],
                                    output_names=["logits"], dynamic_shapes=({0: batch},),
                                    opset_version=opset, external_data=False, verbose=False)
    except Exception as exc:
        raise CheckpointError(f"{checkpoint}: ONNX export failed ({type(exc).__name__}: {exc})") from exc
    proto = program.model_proto
    del proto.metadata_props[:]  # torch.export bookkeeping, not needed at run time
    if fp16_weights:
        fp16_initializers(proto)
    backends.set_metadata(proto, header, "fp32")
    proto.producer_name = "fillcls"
    with atomic_path(out_path, suffix=".onnx") as tmp:
        onnx.save(proto, tmp)
    _check(model, out_path, example)
    written = [out_path]
    if int8 and header.kind == "classifier":
        written.append(quantize_onnx(out_path, None, calibration_crops, calibration_split, seed))
    return written


def quantize_onnx(fp32_path: str, out_path: str | None = None, calibration_crops: int = 1024,
                  calibration_split: str = "S1", seed: int = 0) -> str:
    """The int8 copy of the fp32 classifier ONNX ``fp32_path`` (default ``<stem>.int8.onnx``,
    where ``precision: auto`` looks), calibrated on ``calibration_crops`` procedural crops of
    ``calibration_split``'s training containers at the model's input size: the same file
    ``export --int8`` writes. Returns the path written; CheckpointError naming ``fp32_path`` if it
    is not an fp32 fillcls classifier."""
    header, precision = backends.read_onnx_header(fp32_path)
    if header.kind != "classifier" or precision != "fp32":
        raise CheckpointError(f"{fp32_path}: not an fp32 classifier ({header.kind}, {precision}); "
                              "int8 copies are made from the fp32 classifier export")
    crops = calibration_set(header.input_size, calibration_crops, calibration_split, seed)
    return backends.quantize_int8(fp32_path, out_path or backends.int8_sibling(fp32_path), crops)


def _check(model, path: str, example: torch.Tensor, atol: float = 1e-3) -> None:
    """RuntimeError unless onnxruntime reproduces torch's output on ``example`` (fp16 weights: the
    torch model is compared with its weights rounded the same way)."""
    runner = backends.OrtRunner(path, post=lambda y: y)
    x = torch.rand_like(example)
    with torch.inference_mode():
        ref = model(x).float().numpy()
    got = runner(x.numpy())
    tol = atol + 2e-2 * float(np.abs(ref).max())  # fp16 weights round each weight by <= 2^-11
    if got.shape != ref.shape or float(np.abs(got - ref).max()) > tol:
        raise RuntimeError(f"{path}: onnxruntime output differs from torch's "
                           f"(max |diff| {float(np.abs(got - ref).max()):.3g})")


def calibration_set(size: int, n: int = 256, split: str = "S1", seed: int = 0) -> np.ndarray:
    """``n`` procedural crops (N x 3 x size x size float32 in [0, 1]) of ``split``'s training
    containers, rendered by :func:`training.data.procedural.make_cropset`."""
    from fillcls.world.containers import split_containers
    from training.data.procedural import make_cropset

    train, _ = split_containers(split)
    cs = make_cropset(n, size, seed=seed + 7919, containers=train, workers=1)
    return cs.images.numpy().astype(np.float32) / np.float32(255.0)


def _up_to_date(src: str, dst: str) -> bool:
    """True if ``dst`` exists and is not older than ``src`` (``--if-missing``)."""
    if os.path.isfile(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
        print(f"{dst} is up to date")
        return True
    return False


def main(argv=None) -> int:
    """``python -m training.onnx_export CHECKPOINT OUT.onnx [--int8] [--fp32-weights]``, or
    ``python -m training.onnx_export --int8-of MODEL.onnx [--if-missing]`` (the int8 copy of an
    fp32 export, beside it)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--int8", action="store_true", help="also write <stem>.int8.onnx (classifiers)")
    ap.add_argument("--fp32-weights", action="store_true", help="store fp32 weights even for an fp16 checkpoint")
    ap.add_argument("--int8-of", metavar="MODEL.onnx", default=None,
                    help="only write the int8 copy <stem>.int8.onnx of this fp32 classifier export")
    ap.add_argument("--if-missing", action="store_true",
                    help="do nothing if the file to write exists and is newer than its source (the "
                         "checkpoint, or with --int8-of the fp32 export)")
    ap.add_argument("--calibration-crops", type=int, default=1024, metavar="N",
                    help="procedural training crops the int8 calibration sees (default 1024)")
    args = ap.parse_args(argv)
    if args.int8_of:
        src, dst = args.int8_of, backends.int8_sibling(args.int8_of)
        if args.if_missing and _up_to_date(src, dst):
            return 0
        try:
            written = [quantize_onnx(src, None, args.calibration_crops)]
        except CheckpointError as exc:
            ap.exit(2, f"error: {exc}\n")
    else:
        if not (args.checkpoint and args.out):
            ap.error("CHECKPOINT and OUT are required (or --int8-of MODEL.onnx)")
        if args.if_missing and _up_to_date(args.checkpoint, args.out):
            return 0
        written = export_onnx(args.checkpoint, args.out, args.opset, False if args.fp32_weights else None, args.int8,
                              args.calibration_crops)
    for p in written:
        print(f"wrote {p} ({os.path.getsize(p) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

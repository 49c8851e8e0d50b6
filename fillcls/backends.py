"""Inference backends: run a classifier or the learned segmenter with torch or onnxruntime.

A *runner* takes a float32 batch in [0, 1] (B x 3 x H x W, numpy or torch) and returns numpy:
class probabilities (B x 4) for a classifier, foreground probabilities (B x h x w) for FillSegNet.

* ``torch``: eager PyTorch. With ``optimize`` (the old ``cpu_jit``) BatchNorm is folded into the
  convolutions (``torch.fx`` conv-BN fusion) and the model runs channels-last; no TorchScript. On
  CUDA each batch shape is captured once as a CUDA graph and replayed (batches padded to a power
  of two; eager if capture fails). ``bf16``: CPU autocast where the CPU has bf16 units (AMX /
  AVX512-BF16), else fp32 with a warning; ``fp16``: half precision on CUDA.
* ``onnxruntime``: an ``.onnx`` file written by :func:`training.onnx_export.export_onnx` (the
  fillcls header in its metadata); CPU execution provider, CUDA / TensorRT providers where
  installed. ``int8``: a statically quantised (QDQ) model, the file itself or ``<stem>.int8.onnx``
  beside it (see :func:`quantize_int8`); a classifier's int8 answers whose top two probabilities
  lie within ``recheck_margin`` are computed again by the fp32 model (near-ties are where int8
  rounding flips the answer); ``fp16``: TensorRT fp16 or an fp16 copy on CUDA.
  Importing this module or running this backend never imports torch.
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any, Callable, Sequence

import numpy as np

from .spec import CheckpointError, CheckpointHeader, check_classifier_header

INFERENCE_BACKENDS: tuple[str, ...] = ("auto", "torch", "onnxruntime")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8", "fp16")
#: ONNX metadata keys written by the exporter.
META_HEADER = "fillcls_header"
META_FORMAT = "fillcls_format"
META_PRECISION = "fillcls_precision"
META_NEAR_TIES = "fillcls_int8_near_ties"  # int8 files: the top-2 gaps of their calibration crops
ONNX_FORMAT = "fillcls-onnx"
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")
#: Default ``recheck_margin`` of the int8 classifier: int8 answers whose top-1 and top-2
#: probabilities differ by less are recomputed in fp32. Chosen on S1 training crops (2.5 % of them
#: re-run, agreement with fp32 98.4 -> 99.4 %); README "int8" for the test-split figures.
INT8_RECHECK_MARGIN = 0.1


def model_format(path: str | os.PathLike) -> str:
    """``"onnx"`` or ``"torch"``: a ``torch.save`` file is a zip archive (``PK``), anything else
    ending in ``.onnx`` is ONNX; CheckpointError naming a missing file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: model file not found")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"PK":
        return "torch"
    return "onnx" if path.lower().endswith(".onnx") else "torch"


def ort_available() -> bool:
    """Whether onnxruntime can be imported."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(name: str, model_path: str | os.PathLike) -> str:
    """``torch`` or ``onnxruntime`` for backend ``name`` and the model file (ValueError for an
    unknown name). ``auto`` follows the file: ``.onnx`` -> onnxruntime, a ``.pt`` -> torch."""
    if name not in INFERENCE_BACKENDS:
        raise ValueError(f"inference_backend must be one of {', '.join(INFERENCE_BACKENDS)}, got {name!r}")
    if name != "auto":
        return name
    return "onnxruntime" if model_format(model_path) == "onnx" else "torch"


def check_precision(precision: str) -> str:
    """``precision`` if known, else ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def cpu_bf16_support() -> tuple[bool, str]:
    """(whether the CPU computes bf16 natively, what was found): AMX-BF16 / AVX512-BF16 flags of
    /proc/cpuinfo, else torch's reported CPU capability (``AVX512_BF16`` / ``AMX``)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    if found:
        return True, "+".join(found)
    try:
        import torch

        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - torch missing or too old
        cap = "unknown"
    return ("AMX" in cap or "BF16" in cap), f"no amx_bf16/avx512_bf16 flag, torch capability {cap}"


def parse_device(name: str) -> tuple[str, int]:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> (kind, index); ValueError for another string (no torch)."""
    if not _DEVICE_RE.match(name):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    kind = name.split(":")[0]
    return kind, int(name.split(":")[1]) if ":" in name else 0


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32."""
    z = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


# --------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------


def fold_batchnorm(model):
    """``model`` (eval) with BatchNorm folded into the convolutions (``torch.fx`` conv-BN fusion):
    same outputs up to float rounding, fewer kernels. Returns ``model`` itself if it cannot be traced."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval())
    except Exception:  # pragma: no cover - untraceable architectures
        return model.eval()


class CudaGraphs:
    """``fn`` (a tensor -> tensor function of fixed weights, called under inference mode) replayed
    as CUDA graphs: one captured per input shape, the batch padded to a power of two up to
    :attr:`MAX_BATCH` (larger batches run eagerly). A failed capture switches to eager for good and
    records why in ``failed`` and in ``warnings``. Outputs are only valid until the next call (copy them)."""

    MAX_BATCH = 32

    def __init__(self, fn: Callable, device, warnings: list[str]):
        self.fn, self.device, self.warnings = fn, device, warnings
        self.graphs: dict[tuple, tuple] = {}
        self.failed = ""

    def __call__(self, x):
        n = int(x.shape[0])
        if self.failed or not 0 < n <= self.MAX_BATCH:
            return self.fn(x)
        padded = 1 << (n - 1).bit_length()
        key = (padded, *x.shape[1:], x.dtype, x.is_contiguous())
        entry = self.graphs.get(key)
        if entry is None:
            try:
                entry = self.graphs[key] = self._capture(x, padded)
            except Exception as exc:  # driver / allocator limits: stay correct, run eagerly
                self.failed = f"CUDA graph capture failed ({type(exc).__name__}: {exc}): running eagerly"
                self.warnings.append(self.failed)
                return self.fn(x)
        graph, static_in, static_out = entry
        static_in[:n].copy_(x)
        graph.replay()
        return static_out[:n]

    def _capture(self, x, batch: int):
        import torch

        static_in = torch.zeros((batch, *x.shape[1:]), dtype=x.dtype, device=x.device)
        if not x.is_contiguous():
            static_in = static_in.contiguous(memory_format=torch.channels_last)
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the graph (cuDNN plans, allocator)
                for _ in range(2):
                    self.fn(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(static_in)
        return graph, static_in, static_out


class TorchRunner:
    """A torch module as a runner (see the module doc): ``precision`` fp32, bf16 (CPU autocast
    where supported) or fp16 (CUDA); ``optimize``: :func:`fold_batchnorm` and channels-last;
    ``cuda_graphs``: :class:`CudaGraphs` on a CUDA device. ``warnings`` lists the fallbacks taken;
    ``post`` maps the float32 output tensor to probabilities."""

    def __init__(self, model, device, precision: str = "fp32", optimize: bool = True,
                 post: Callable | None = None, cuda_graphs: bool = True):
        import torch

        self.warnings: list[str] = []
        self.device = torch.device(device)
        precision = self.precision = "fp32" if check_precision(precision) == "auto" else precision
        self.autocast = False
        if precision == "int8":
            raise ValueError("precision 'int8' needs inference_backend 'onnxruntime' (a quantised .onnx model)")
        if precision == "fp16" and self.device.type != "cuda":
            self.warnings.append("fp16 needs a CUDA device: running in fp32")
            self.precision = "fp32"
        if precision == "bf16":
            ok, why = cpu_bf16_support() if self.device.type == "cpu" else (True, "")
            if not ok:
                self.warnings.append(f"bf16 is not supported by this CPU ({why}): running in fp32")
                self.precision = "fp32"
            self.autocast = ok
        model = fold_batchnorm(model) if optimize else model.eval()
        model = model.to(self.device)
        if self.precision == "fp16":
            model = model.half()
        self.channels_last = optimize or (self.device.type == "cpu" and self.autocast)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.post = post or (lambda y: torch.softmax(y, dim=1))
        self.graphs = None
        if cuda_graphs and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
            self.graphs = CudaGraphs(lambda x: self.post(self.model(x).float()), self.device, self.warnings)

    def forward(self, batch):
        """Float32 torch output (on the CPU) of a batch (numpy or torch)."""
        import torch

        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        if self.precision == "fp16":
            x = x.half()
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                     enabled=self.autocast and self.precision == "bf16"):
            if self.graphs is not None:
                return self.graphs(x).cpu()
            return self.post(self.model(x).float()).cpu()

    def __call__(self, batch) -> np.ndarray:
        return self.forward(batch).numpy()


# --------------------------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------------------------


def read_onnx_header(path: str | os.PathLike) -> tuple[CheckpointHeader, str]:
    """(fillcls header, precision) from an ONNX file's metadata, without loading the weights;
    CheckpointError naming the file if it is missing, not ONNX or has no fillcls header."""
    path = os.fspath(path)
    return _header_from_meta(path, _onnx_metadata(path))


def _onnx_metadata(path: str) -> dict:
    """The custom metadata of the ONNX file ``path``, read once per version of the file (start-up
    reads the same files for the header, the near-tie record and the runner)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: model file not found")
    st = os.stat(path)
    return dict(_read_onnx_metadata(path, st.st_mtime_ns, st.st_size, st.st_ino))


@functools.lru_cache(maxsize=16)
def _read_onnx_metadata(path: str, mtime_ns: int, size: int, ino: int) -> dict:
    import onnxruntime as ort

    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        meta = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    return dict(meta.custom_metadata_map)


def read_model_header(path: str | os.PathLike) -> CheckpointHeader:
    """The fillcls header of a model file, ONNX (metadata, no weights loaded) or a .pt checkpoint."""
    if model_format(path) == "onnx":
        return read_onnx_header(path)[0]
    from .core import read_checkpoint

    return read_checkpoint(path)[0]


def _header_from_meta(path, props: dict) -> tuple[CheckpointHeader, str]:
    if props.get(META_FORMAT) != ONNX_FORMAT or META_HEADER not in props:
        raise CheckpointError(f"{path}: an ONNX model without a fillcls header (export it with "
                              "python -m training export --format onnx)")
    try:
        header = CheckpointHeader.from_dict(json.loads(props[META_HEADER]))
    except Exception as exc:
        raise CheckpointError(f"{path}: bad fillcls header in the ONNX metadata ({exc})") from exc
    return header, props.get(META_PRECISION, "fp32")


def int8_sibling(path: str) -> str:
    """``models/x.onnx`` -> ``models/x.int8.onnx`` (where the exporter writes the int8 copy)."""
    stem = path[:-5] if path.lower().endswith(".onnx") else path
    return stem + ".int8.onnx"


def _providers(device: str, fp16: bool, warnings: list[str]) -> list:
    import onnxruntime as ort

    kind, index = parse_device(device)
    available = ort.get_available_providers()
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        warnings.append(f"device {device!r} requested but onnxruntime has no CUDA provider "
                        f"({', '.join(available)}): using the CPU")
        return ["CPUExecutionProvider"]
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        providers.append(("TensorrtExecutionProvider", {"device_id": index, "trt_fp16_enable": fp16}))
    providers += [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return providers


class OrtRunner:
    """An ONNX model as a runner (see the module doc); ``post`` maps the output to probabilities.

    CheckpointError naming the file if it is missing, a torch checkpoint, not ONNX, or lacks the
    fillcls header; ``warnings`` lists the fallbacks taken (no GPU provider, bf16 / fp16 on CPU).
    With ``precision="int8"`` and ``recheck_margin`` > 0, the fp32 model is loaded too and
    re-answers the rows whose top two outputs lie within the margin (``rechecked`` counts them,
    ``answered`` all rows)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", precision: str = "fp32",
                 threads: int = 0, post: Callable[[np.ndarray], np.ndarray] | None = None,
                 recheck_margin: float = 0.0):
        import onnxruntime as ort

        self.path = path = fp32_path = os.fspath(path)
        self.warnings: list[str] = []
        precision = self.precision = "fp32" if check_precision(precision) == "auto" else precision
        if model_format(path) == "torch":
            raise CheckpointError(f"{path}: a PyTorch checkpoint; inference_backend 'onnxruntime' needs an "
                                  ".onnx model (python -m training export --format onnx)")
        self.header, file_precision = read_onnx_header(path)
        if file_precision == "int8":
            fp32_path = ""
        if precision == "int8" and file_precision != "int8":
            q = int8_sibling(path)
            if not os.path.isfile(q):
                raise CheckpointError(f"{path}: precision 'int8' needs a quantised model; {q} not found "
                                      "(python -m training export --format onnx --int8)")
            self.path = path = q
            self.header, file_precision = read_onnx_header(q)
        providers = _providers(device, precision == "fp16", self.warnings)
        on_gpu = providers[0] != "CPUExecutionProvider"
        if precision in ("bf16", "fp16") and not on_gpu:
            self.warnings.append(f"{precision} with onnxruntime needs a CUDA device: running in fp32")
            self.precision = "fp32"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = max(0, int(threads))
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model: Any = path
        if self.precision == "fp16" and on_gpu and "TensorrtExecutionProvider" not in str(providers[0]):
            model = _fp16_copy(path)
        self.session = _session(path, model, so, providers)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self.post = post or softmax
        self.recheck_margin, self.recheck = float(recheck_margin), None
        self.rechecked = self.answered = 0
        if self.precision == "int8" and self.recheck_margin > 0:
            if fp32_path:
                self.recheck = _session(fp32_path, fp32_path, so, providers)
            else:
                self.warnings.append(f"{path} is an int8 model without its fp32 original beside it: "
                                     "near-tie answers are not re-checked in fp32")

    def __call__(self, batch) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        out = self.post(self.session.run(None, {self.input_name: x})[0])
        self.answered += len(x)
        if self.recheck is not None:
            top2 = np.sort(out, axis=1)[:, -2:]
            redo = np.flatnonzero(top2[:, 1] - top2[:, 0] < self.recheck_margin)
            if len(redo):
                out[redo] = self.post(self.recheck.run(None, {self.input_name: x[redo]})[0])
                self.rechecked += len(redo)
        return out


def _session(path: str, model, so, providers):
    """An onnxruntime InferenceSession of ``model`` (a path or bytes); CheckpointError naming ``path``."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model, so, providers=providers)
    except Exception as exc:
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from exc


def _fp16_copy(path: str) -> bytes:
    """The model with fp16 weights and fp32 inputs / outputs (CUDA provider without TensorRT)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.load(path), keep_io_types=True).SerializeToString()


#: ``precision: auto`` re-checks at most this share of the int8 copy's calibration answers in fp32:
#: when ``int8_recheck`` would re-run more, it narrows the margin to the top-2 gap of this share.
#: The re-runs then cost about a tenth of an fp32 forward (deployment crops are closer to a tie
#: than the training crops of the calibration: 1.6-2.6 x this share, bench/bench_backends.py).
AUTO_RECHECK_SHARE = 0.05


def _gap_percentiles(int8_path: str) -> list[float] | None:
    """The 0th, 5th, ..., 100th percentile of the int8 copy's top-2 gaps on its calibration crops
    (its metadata); None if not recorded."""
    raw = _onnx_metadata(int8_path).get(META_NEAR_TIES)
    if not raw:
        return None
    try:
        gaps = [float(g) for g in json.loads(raw)["gap_percentiles"]]
        if len(gaps) < 2:
            raise ValueError("fewer than two percentiles")
        return gaps
    except Exception as exc:
        raise CheckpointError(f"{int8_path}: bad {META_NEAR_TIES} metadata ({exc})") from exc


def near_tie_rate(int8_path: str, margin: float) -> float | None:
    """Share of the int8 model's calibration crops whose top two probabilities lie within
    ``margin`` (what the fp32 re-check would re-run), from its metadata; None if not recorded."""
    gaps = _gap_percentiles(int8_path)
    return None if gaps is None else float(np.interp(margin, gaps, np.linspace(0.0, 1.0, len(gaps)),
                                                      left=0.0, right=1.0))


def near_tie_margin(int8_path: str, share: float) -> float | None:
    """The margin within which ``share`` of the int8 model's calibration answers lie (inverse of
    :func:`near_tie_rate`); None if not recorded."""
    gaps = _gap_percentiles(int8_path)
    return None if gaps is None else float(np.interp(share, np.linspace(0.0, 1.0, len(gaps)), gaps))


def resolve_precision(precision: str, backend: str, path: str, device: str = "cpu",
                      int8_recheck: float = INT8_RECHECK_MARGIN) -> tuple[str, str, float]:
    """``(precision, why, recheck margin)``: ``auto`` is int8 for onnxruntime on the CPU when the
    model is int8 or has its int8 copy beside it (``make models`` and setup write it), its answers
    within ``int8_recheck`` of a tie re-checked in fp32 — within a narrower margin when the copy
    records that more than :data:`AUTO_RECHECK_SHARE` of its calibration answers lie within
    ``int8_recheck``; else fp32. Any other precision is itself (``why`` empty, margin
    ``int8_recheck``)."""
    if precision != "auto":
        return precision, "", int8_recheck
    if backend == "onnxruntime" and parse_device(device)[0] == "cpu" and model_format(path) == "onnx":
        q = int8_sibling(path)
        if os.path.isfile(q):
            rate = near_tie_rate(q, int8_recheck) if int8_recheck > 0 else None
            if rate is not None and rate > AUTO_RECHECK_SHARE:
                margin = near_tie_margin(q, AUTO_RECHECK_SHARE)
                return "int8", (f"precision auto -> int8: {q} found beside the model; int8_recheck {int8_recheck:g} "
                                f"would re-run {100 * rate:.0f} % of its calibration answers in fp32, so only those within "
                                f"{margin:.3g} of a tie are re-checked (the closest {100 * AUTO_RECHECK_SHARE:g} %)"), margin
            return "int8", (f"precision auto -> int8: {q} found beside the model (answers near a tie "
                             "re-checked in fp32)"), int8_recheck
        if os.path.isfile(path) and read_onnx_header(path)[1] == "int8":
            return "int8", f"precision auto -> int8: {path} is quantised", int8_recheck
        return "fp32", f"precision auto -> fp32: no int8 copy {q} (`make models` writes it)", int8_recheck
    return "fp32", f"precision auto -> fp32 ({backend} on {device})", int8_recheck


def load_classifier_runner(path: str, backend: str = "auto", device: str = "cpu", precision: str = "fp32",
                           threads: int = 0, optimize: bool = True, int8_recheck: float = INT8_RECHECK_MARGIN):
    """A classifier runner for the model file ``path`` (``.pt`` or ``.onnx``): ``(runner, header)``;
    ``int8_recheck``: the int8 runner's ``recheck_margin`` (0: pure int8).

    CheckpointError naming the file (missing, corrupt, not a classifier of CLASSES, wrong format for
    the backend); ValueError for an unknown backend / precision / device."""
    check_precision(precision)
    backend = resolve_backend(backend, path)
    precision, why, int8_recheck = resolve_precision(precision, backend, path, device, int8_recheck)
    if backend == "onnxruntime":
        runner = OrtRunner(path, device, precision, threads, recheck_margin=int8_recheck)
        runner.precision_choice = why
        check_classifier_header(path, runner.header)
        return runner, runner.header
    if model_format(path) == "onnx":
        raise CheckpointError(f"{path}: an ONNX model; inference_backend 'torch' needs a .pt checkpoint "
                              "(or use inference_backend 'onnxruntime' / 'auto')")
    from .core import load_classifier

    model, header = load_classifier(path, "cpu")
    runner = TorchRunner(model, device, precision, optimize)
    runner.precision_choice = why
    return runner, header


#: Percentile of the activation histograms kept by the int8 calibration (see :func:`quantize_int8`).
INT8_PERCENTILE = 99.9


def _fp32_ends(model) -> list[str]:
    """Names of the first Conv and the last Gemm / MatMul of an ``onnx.ModelProto`` (kept in fp32
    by :func:`quantize_int8`: the input's colour channels and the logits lose most to int8)."""
    nodes = list(model.graph.node)
    first = next((n.name for n in nodes if n.op_type == "Conv"), None)
    last = next((n.name for n in reversed(nodes) if n.op_type in ("Gemm", "MatMul")), None)
    return [n for n in (first, last) if n]


def quantize_int8(fp32_path: str, out_path: str, calibration: np.ndarray, per_channel: bool = True,
                  percentile: float = INT8_PERCENTILE) -> str:
    """Static QDQ int8 copy of the fp32 ONNX model ``fp32_path`` at ``out_path`` (atomic write),
    calibrated on ``calibration`` (N x 3 x S x S float32 in [0, 1], e.g. training crops; whole
    batches of 16, the rest left out); the fillcls metadata is kept, with precision ``int8`` and
    the percentiles of the int8 answers' top-2 gaps on the calibration crops (:func:`near_tie_rate`,
    used by ``precision: auto``). Returns ``out_path``.

    u8 activations (histogram percentile ``percentile``), s8 per-channel weights, the first
    convolution and the final fully-connected layer kept in fp32: the best agreement with fp32 of
    the variants bench/bench_backends.py --int8-variants measures (min-max, entropy, percentiles,
    per-tensor weights, QOperator, symmetric activations, reduce_range, fp32 ends)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .atomic import atomic_path

    header, _ = read_onnx_header(fp32_path)
    name = onnx.load(fp32_path, load_external_data=False).graph.input[0].name
    # equal batches: onnxruntime's histogram calibrator fails on a shorter last batch
    bs = min(16, len(calibration))
    batches = [calibration[i:i + bs].astype(np.float32) for i in range(0, len(calibration) // bs * bs, bs)]

    class Reader(CalibrationDataReader):
        """The batches, ``stride`` at a time (``set_range``, called by ``CalibStridedMinMax``)."""

        def __init__(self):
            self.it = iter(batches)

        def __len__(self):
            return len(batches)

        def set_range(self, start_index: int, end_index: int):
            self.it = iter(batches[start_index:end_index])

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {name: b}

    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
        with atomic_path(out_path, suffix=".onnx") as dst:
            quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=_fp32_ends(onnx.load(pre, load_external_data=False)),
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": float(percentile),
                                           "CalibStridedMinMax": _calibration_stride(len(batches), bs,
                                                                                     calibration.shape[-1])})
            model = onnx.load(dst)
            set_metadata(model, header, "int8")
            entry = model.metadata_props.add()
            entry.key, entry.value = META_NEAR_TIES, _near_ties(model, name, batches)
            onnx.save(model, dst)
    return out_path


#: Pixels of calibration crops whose activations onnxruntime's calibrator holds at once (it keeps every
#: intermediate output until the histograms are built): 1024 crops at 64 px, about 2 GB with ResNet-18.
#: 1024 crops at 224 px held at once did not fit in 24 GiB.
CALIBRATION_PIXELS = 1024 * 64 * 64


def _calibration_stride(n_batches: int, batch: int, size: int) -> int:
    """Batches per calibration pass: as many as CALIBRATION_PIXELS allows, dividing ``n_batches``
    (the histograms are merged across passes; one pass, all batches, at 64 px)."""
    most = max(1, CALIBRATION_PIXELS // (batch * size * size))
    return max(d for d in range(1, min(most, n_batches) + 1) if n_batches % d == 0)


def _near_ties(model, name: str, batches) -> str:
    """JSON of the 0th, 5th, ..., 100th percentile of the top-2 probability gaps of the
    ``onnx.ModelProto`` ``model`` on ``batches`` (the META_NEAR_TIES metadata)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probs = np.concatenate([softmax(sess.run(None, {name: b})[0]) for b in batches])
    top2 = np.sort(probs, axis=1)[:, -2:]
    gaps = np.percentile(top2[:, 1] - top2[:, 0], np.arange(0, 101, 5))
    return json.dumps({"crops": len(probs), "gap_percentiles": [round(float(g), 5) for g in gaps]})


def set_metadata(model, header: CheckpointHeader, precision: str = "fp32") -> None:
    """Write the fillcls header and precision into an ``onnx.ModelProto``'s metadata_props."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({META_FORMAT: ONNX_FORMAT, META_HEADER: json.dumps(header.to_dict()), META_PRECISION: precision})
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def describe_runner(runner) -> str:
    """``torch fp32 (cpu)`` / ``torch fp16 (cuda), CUDA graphs`` / ``onnxruntime int8
    (CPUExecutionProvider)``, for logs."""
    why = getattr(runner, "precision_choice", "")
    if isinstance(runner, OrtRunner):
        out = f"onnxruntime {runner.precision} ({runner.providers[0]})"
        if runner.recheck is not None:
            out += f", answers within {runner.recheck_margin:g} of a tie re-checked in fp32"
    else:
        out = f"torch {runner.precision} ({runner.device})"
        if getattr(runner, "graphs", None) is not None:
            out += ", CUDA graphs" + (" (capture failed: eager)" if runner.graphs.failed else "")
    return out + (f"; {why}" if why else "")


def check_options(backend: str, precision: str, devices: Sequence[str] = ()) -> None:
    """ValueError for an unknown backend, precision or device string."""
    if backend not in INFERENCE_BACKENDS:
        raise ValueError(f"inference_backend must be one of {', '.join(INFERENCE_BACKENDS)}, got {backend!r}")
    check_precision(precision)
    for d in devices:
        parse_device(d)

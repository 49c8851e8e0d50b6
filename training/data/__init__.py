"""Target-domain data: procedural C-CCM-like crops and frames, and real C-CCM crop manifests.

* :mod:`training.data.procedural`: the 8 CCM containers rendered from a seed (:func:`render_frame`,
  :func:`render_crop`, :func:`make_cropset`);
* :mod:`training.data.ccm`: container names, splits, C-CCM counts, the manifest format
  (:func:`load_manifest`, :func:`write_dataset`, :func:`counts`);
* :mod:`training.data.base`: :class:`CropSet`, the in-memory dataset of the trainer.

Command line: ``python -m training.data {generate,frames,merge,counts,contact-sheet} --help``.
"""

from .base import CropSet
from .ccm import (CCM_CLASS_COUNTS, CCM_CONTAINER_COUNTS, CONTAINER_NAMES, MANIFEST_COLUMNS,
                  ManifestError, MissingImagesError, counts, format_counts, load_manifest, merge_manifests,
                  read_manifest, split_containers, split_cropset, write_dataset, write_manifest,
                  SPLITS)
from .procedural import (CONTAINERS, FILLINGS, GENERATOR_VERSION, LEVEL_FRACTIONS, ContainerSpec, Profile,
                         contact_sheet, iter_crops, make_cropset, plan, render_crop, render_frame, write_frames)

__all__ = [
    "CCM_CLASS_COUNTS", "CCM_CONTAINER_COUNTS", "CONTAINERS", "CONTAINER_NAMES", "ContainerSpec", "CropSet",
    "FILLINGS", "GENERATOR_VERSION", "LEVEL_FRACTIONS", "MANIFEST_COLUMNS", "ManifestError",
    "MissingImagesError", "Profile", "SPLITS", "contact_sheet", "iter_crops", "counts", "format_counts", "load_manifest",
    "make_cropset", "merge_manifests", "plan", "read_manifest", "render_crop", "render_frame", "split_containers",
    "split_cropset", "write_dataset", "write_frames", "write_manifest",
]

"""The synthetic world shared by the camera and the trainer: the CCM containers and the paper's
splits (:mod:`.containers`) and the procedural scene renderer (:mod:`.render`)."""

from .containers import CCM_CLASS_COUNTS, CCM_CONTAINER_COUNTS, CONTAINER_NAMES, OPAQUE, SPLITS, split_containers
from .render import CONTAINERS, render_crop, render_frame

__all__ = ["CCM_CLASS_COUNTS", "CCM_CONTAINER_COUNTS", "CONTAINERS", "CONTAINER_NAMES", "OPAQUE", "SPLITS",
           "render_crop", "render_frame", "split_containers"]

"""The procedural world: the 8 CCM containers rendered from a seed (ROS-free, trainer-free).

One scene model, two outputs: :func:`render_frame` (a camera frame with one or more containers,
their masks and C-CCM annotations; for the segmenter and the node demo) and :func:`render_crop`
(one container crop made exactly as the node makes it: ``crop_square(frame, box, DEFAULT_MARGIN)``
then ``resize_uint8``; what the classifier trains on). The trainer's
:func:`training.data.procedural.make_cropset` builds whole datasets from it.

This module is the public entry; the renderer lives in small modules beside it:

* :mod:`.profiles`: a container is a revolved 2-D :class:`Profile` (cavity radius ``r(h)``, ``h``
  in [0, 1] from the bottom of the cavity to the rim) plus an optional stem and foot; the
  catalogue :data:`CONTAINERS`. The fill height of a level is computed from the profile so that
  50 % / 90 % are fractions of the *volume* (:meth:`Profile.fill_height`; a cone at half volume
  is filled to 0.5**(1/3) ~ 79 %);
* :mod:`.instances`: a container placed in a scene, seen from slightly above (horizontal circles
  are ellipses: rim, liquid surface, bottom), rolled by a small angle; levels, fillings, views;
* :mod:`.geometry`: its silhouette, rim and wall, pixel by pixel (numpy/cv2, vectorised over the
  container's bounding box);
* :mod:`.contents`: water (transparent, a visible surface line, the background flipped and
  magnified through it as through a cylindrical lens) and pasta / rice (opaque textures);
* :mod:`.materials`: transparent containers show the background through them (tint, dark/bright
  edges, vertical highlights, blur through frosted plastic); opaque ones (C1, C2) are shaded
  solids that hide their content (only what shows inside the rim), labelled ``unknown`` as in the
  paper;
* :mod:`.background`, :mod:`.hands`, :mod:`.lighting`: backgrounds (gradients, noise, stripes,
  checks, wood, distractor shapes, a table edge); a skin-toned hand with fingers, thumb and
  forearm holding the container in ``hand_prob`` of the images; light (gain, white balance,
  direction, vignette), camera noise and blur;
* :mod:`.textures` (the texture bank), :mod:`.raster` (per-pixel helpers), :mod:`.container`
  (one container composited), :mod:`.scene` (whole scenes and the public functions).

Everything is deterministic: sample ``i`` of seed ``s`` depends only on ``(s, i)`` (numpy
``default_rng``), so parallel generation gives the same bytes as serial generation.
"""

from __future__ import annotations

from .containers import CCM_CLASS_COUNTS, CCM_CONTAINER_COUNTS, CONTAINER_NAMES, SPLITS  # noqa: F401
from .instances import FILLINGS, HAND_PROB, LEVEL_FRACTIONS, TRANSPARENT_LEVEL_P, VIEWS
from .profiles import CONTAINERS, ContainerSpec, Profile
from .scene import contact_sheet, render_crop, render_frame
from .textures import bank as _bank  # noqa: F401  (warm-up hook of training.data.procedural)

#: Bump whenever the rendering changes (invalidates caches).
GENERATOR_VERSION = 1

__all__ = ["CONTAINERS", "FILLINGS", "GENERATOR_VERSION", "HAND_PROB", "LEVEL_FRACTIONS", "TRANSPARENT_LEVEL_P",
           "VIEWS", "ContainerSpec", "Profile", "contact_sheet", "render_crop", "render_frame"]

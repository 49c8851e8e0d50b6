"""fillcls: the ROS-free library of fillcls_ros.

The class list, crop rule and checkpoint header without torch (:mod:`.spec`), the model builder
and checkpoints (:mod:`.core`), inference engines, torch or onnxruntime (:mod:`.backends`), image
messages to RGB with every failure a counted bad frame (:mod:`.image_codec`; fuzzed messages for
tests and the soak benchmark: :mod:`.fuzz`), segmentation backends (:mod:`.segmentation`,
:mod:`.segnet`), the estimator the node runs (:mod:`.inference`), tracks with a fused level
(:mod:`.tracking`), 3-D position from depth (:mod:`.geometry3d`), scoring (:mod:`.evaluation`)
and the synthetic world (:mod:`.world`). Imports neither rclpy nor the trainer.
"""

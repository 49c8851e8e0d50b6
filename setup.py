"""fillcls_ros: ament_python package with three Python packages, imports one way:
``fillcls`` (ROS-free library) <- ``fillcls_ros`` (rclpy programs) and ``training`` (offline trainer)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fillcls_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["fillcls", "fillcls.*", "fillcls_ros", "fillcls_ros.*", "training", "training.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.pt")),
    ],
    # The node's runtime: onnxruntime (the CPU default) or torch; images through OpenCV and Pillow.
    install_requires=["setuptools", "numpy", "opencv-python-headless", "pillow", "onnxruntime", "torch",
                      "torchvision", "rosbags", "rosbags-image"],
    # The trainer's own dependencies (the node's runtime does not need them): pip install .[train]
    extras_require={"train": ["tqdm", "matplotlib", "onnx", "onnxscript"]},
    zip_safe=True,
    maintainer="fillcls_ros developers",
    maintainer_email="fillcls@example.com",
    description="Filling level of cups and drinking glasses from camera images (ROS 2 node + trainer)",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "fillcls-node = fillcls_ros.node:main",
            "fillcls-lifecycle-node = fillcls_ros.lifecycle:main",
            "fillcls-camera = fillcls_ros.camera:main",
            "fillcls-demo = fillcls_ros.demo:main",
            "fillcls-bag = fillcls_ros.bag:main",
        ],
    },
)

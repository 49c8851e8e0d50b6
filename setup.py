"""fillcls_ros: ament_python package (ROS 2 node + ROS-free core) and the offline trainer."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fillcls_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["fillcls_ros", "fillcls_ros.*", "training", "training.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.pt")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="fillcls_ros developers",
    maintainer_email="fillcls@example.com",
    description="Filling level of cups and drinking glasses from camera images (ROS 2 node + trainer)",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "fillcls-node = fillcls_ros.node:main",
            "fillcls-camera = fillcls_ros.camera:main",
            "fillcls-demo = fillcls_ros.demo:main",
            "fillcls-bag = fillcls_ros.bag:main",
        ],
    },
)

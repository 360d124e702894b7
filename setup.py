"""spd_ros: one ament_python package holding the ROS-free core (spd_core) and the node (spd_ros)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spd_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Sparse query-point metric depth for robots (ConvNeXt V2 + DPT FPN, exact O(K) queries)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["spd_core", "spd_core.*", "spd_ros", "spd_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0.9",
        "pyyaml>=6",
        "tqdm>=4.60",
        "pillow>=10",
        "rosbags>=0.10",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
    ],
    extras_require={
        # On a robot the system ROS 2 install provides these; the wheels serve tests and laptops.
        "ros": [
            "ros-jazzy-rclpy",
            "ros-jazzy-rmw-fastrtps-cpp",
            "ros-jazzy-sensor-msgs",
            "ros-jazzy-geometry-msgs",
            "ros-jazzy-diagnostic-msgs",
            "ros-jazzy-lifecycle-msgs",
            "ros-jazzy-rcl-lifecycle",
            "ros-jazzy-visualization-msgs",
        ],
        # spd-export and the onnxruntime backend (CPU EP; onnxruntime-gpu on a robot with CUDA/TensorRT)
        "onnx": [
            "onnx>=1.16",
            "onnxruntime>=1.18",
            "onnxscript>=0.1",
        ],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.2",
            "ruff>=0.6",
            "colcon-common-extensions>=0.3",
        ],
    },
    zip_safe=True,
    maintainer="spd_ros maintainers",
    maintainer_email="maintainers@spd-ros.dev",
    entry_points={
        "console_scripts": [
            "spd_node = spd_ros.spd_node:main",
            "spd_lifecycle_node = spd_ros.lifecycle_node:main",
            "spd-train = spd_core.train.cli:main",
            "spd-eval = spd_core.eval.evaluate:main",
            "spd-bench = spd_core.bench.cli:main",
            "spd-export = spd_core.export.cli:main",
            "spd-bench-node = spd_ros.bench_node:main",
            "spd-bag-eval = spd_ros.bag_eval:main",
            "spd-demo = spd_ros.demo:main",
        ],
    },
)

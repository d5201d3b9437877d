"""pip route for the pure-Python parts (m3_core, m3_ros nodes) and console scripts.

The distribution is named ``m3`` on purpose: naming it ``m3_ros`` would make
``pip install -e .`` uninstall CMake's ``m3_ros`` egg-info and delete the generated interfaces.
The interfaces themselves are built by CMake (scripts/setup.sh or colcon).
"""

from setuptools import find_packages, setup

setup(
    name="m3",
    version="0.1.0",
    description="3D spatial multimodal memory (M3) for robots",
    package_dir={"": "."},
    packages=find_packages(include=["m3_core", "m3_core.*", "m3_ros", "m3_ros.*"]),
    python_requires=">=3.10",
    install_requires=["torch", "numpy", "safetensors", "scipy", "tqdm"],
    entry_points={
        "console_scripts": [
            "m3 = m3_core.cli.main:main",
            "m3-bringup = m3_ros.bringup:main",
        ]
    },
)

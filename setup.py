"""Package discovery only; all metadata lives in setup.cfg.

The stage folders planners/, preprocessing/ and inference/ sit at the repository's top level but
install as mmseg_robust.planners, mmseg_robust.preprocessing and mmseg_robust.inference, because
top-level modules with those names collide with other distributions.
"""

from setuptools import find_packages, setup

STAGE_FOLDERS = ("planners", "preprocessing", "inference")

packages = find_packages(include=["mmseg_robust", "mmseg_robust.*"])
package_dir = {"mmseg_robust": "mmseg_robust"}
for stage in STAGE_FOLDERS:
    package_dir[f"mmseg_robust.{stage}"] = stage
    packages += [f"mmseg_robust.{stage}"] + [f"mmseg_robust.{stage}.{sub}" for sub in find_packages(stage)]

setup(packages=packages, package_dir=package_dir)

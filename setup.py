"""Package discovery only; everything else is in pyproject.toml.

Each top-level component folder (domain/, daemon/, extender/, protos/) holds a portion of the
`mipart` namespace. setuptools cannot merge one namespace from several roots on its own, so
the packages are mapped to their folders here (see docs/layout.md).
"""

from setuptools import find_namespace_packages, setup

ROOTS = ("domain", "common", "daemon", "extender", "protos")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in ROOTS:
    for package in find_namespace_packages(root, include=["mipart.*"]):
        packages.append(package)
        package_dir[package] = f"{root}/{package.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)

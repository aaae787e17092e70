"""The package's layout for setuptools (everything else is in pyproject.toml): the shipped
configs stay in the repository's ``configs/`` folder and install as ``vissl_neg/configs``."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["vissl_neg", "vissl_neg.*"]) + ["vissl_neg.configs"],
    package_dir={"vissl_neg.configs": "configs"},
    package_data={"vissl_neg": ["py.typed", "data/*.txt"], "vissl_neg.configs": ["*.yaml"]},
)

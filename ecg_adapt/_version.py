"""The package version, in one place: the package face, saved files and pyproject.toml
(``[tool.setuptools.dynamic]``) read it from here, so no module needs to import the package face for it."""

__version__ = "0.1.0"

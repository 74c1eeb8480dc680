"""The Jinja2 templates of the rendered Asterisk files (`*.conf.j2`).

This directory is the one source of the templates. pyproject.toml maps it into the package as
`reconciler.templates` (setuptools `package-dir`), so a wheel, an sdist and an editable install all
ship it, and `reconciler.settings.packaged_templates_dir()` finds it through `importlib.resources`.
This file only makes it a regular package; `--templates DIR` needs no such file.
"""

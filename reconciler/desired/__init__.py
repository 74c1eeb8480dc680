"""Desired state: YAML → validated model → secrets → rendered files. Pure: no Docker, no git, no network."""

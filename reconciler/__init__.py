"""GitOps for the Asterisk PBX: desired state in YAML, rendered to PJSIP, applied, verified, rolled back."""

__version__ = "0.1.0"

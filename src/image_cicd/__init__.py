"""image-cicd: promote container images DEV -> TEST -> PROD by digest."""

__version__ = "0.1.0"

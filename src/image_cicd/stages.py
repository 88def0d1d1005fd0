"""The stages an image goes through, defined once for the whole package."""

from __future__ import annotations

from typing import Literal

# Where an image can be: DEV (where it is pushed), TEST and PROD.
Stage = Literal["DEV", "TEST", "PROD"]
# A stage a promotion copies to, asks an approval for and records a release in.
Destination = Literal["TEST", "PROD"]

STAGES: tuple[Stage, ...] = ("DEV", "TEST", "PROD")
DESTINATIONS: tuple[Destination, ...] = ("TEST", "PROD")

"""The promotion and rollback steps, one function per state machine task.

Each takes typed inputs and the services it needs (registry, ledger, locker, ...)
and returns a typed result. Nothing here knows about Lambda events or reads the
environment: the handlers in `functions/` do that and call in here.
"""

from image_cicd.promotion.steps.approval import request_approval
from image_cicd.promotion.steps.moves import copy_to_stage, rollback_prod
from image_cicd.promotion.steps.outcome import execution_ended, finish, outcome_message
from image_cicd.promotion.steps.resolve import resolve
from image_cicd.promotion.steps.services import Publish, Services

__all__ = [
    "Publish",
    "Services",
    "copy_to_stage",
    "execution_ended",
    "finish",
    "outcome_message",
    "request_approval",
    "resolve",
    "rollback_prod",
]

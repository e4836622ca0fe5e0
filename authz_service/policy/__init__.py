"""The policy file: its schema, its loading and validation, and the compiled routes."""

from authz_service.policy.errors import PolicyError, Problem
from authz_service.policy.loader import load_policy
from authz_service.policy.model import Policy, Route

__all__ = ["Policy", "PolicyError", "Problem", "Route", "load_policy"]

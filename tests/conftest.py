"""Shared test configuration.

Hypothesis profiles: ``ci`` (the default; few examples, no deadline) and ``dev`` (many
examples). Pick one with ``HYPOTHESIS_PROFILE=dev pytest ...``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "dev", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

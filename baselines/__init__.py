"""Reference encoders, registered through the same public API a submitter uses."""

from baselines import intensity, oracle, random_init  # noqa: F401

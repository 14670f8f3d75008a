"""The embedded local stack: a real broker, Redis, object store and MLflow, each its own process."""

from facegate.stack.manager import LocalStack

__all__ = ["LocalStack"]

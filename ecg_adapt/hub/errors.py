"""The hub's exception, in its own module so that every hub module can raise it without importing the package
``ecg_adapt.hub`` (whose ``__init__`` imports them all)."""


class HubError(RuntimeError):
    """A push or a download that cannot be done; the message says why and what to do."""


__all__ = ["HubError"]

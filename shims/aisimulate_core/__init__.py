"""Import shim for machines where NVIDIA's aisimulate cannot be installed.

The Dynamo planner imports two aisimulate_core classes at module load; its
load-based scaling never uses them. Anything that constructs them, or asks
them for an attribute, fails loudly here instead of silently degrading.
"""


class _MissingAisimulate(type):
    def __getattr__(cls, name):
        if name.startswith("__"):  # let introspection (copy, typing, pydantic) see a plain class
            raise AttributeError(name)
        raise ImportError(
            f"aisimulate_core.{cls.__name__}.{name}: the real aisimulate package is "
            "not installed (this is an import shim); use NVIDIA's runtime image"
        )

    def __call__(cls, *args, **kwargs):
        raise ImportError(
            f"aisimulate_core.{cls.__name__}: the real aisimulate package is not "
            "installed (this is an import shim); use NVIDIA's runtime image"
        )


class ForwardPassPerfModelConfig(metaclass=_MissingAisimulate):
    pass


class RustForwardPassPerfModel(metaclass=_MissingAisimulate):
    pass

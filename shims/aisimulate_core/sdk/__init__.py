from aisimulate_core import ForwardPassPerfModelConfig, RustForwardPassPerfModel

__all__ = ["ForwardPassPerfModelConfig", "RustForwardPassPerfModel"]

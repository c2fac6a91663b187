from .lmd_model import LMD_PRESETS, LMDModel, LMDModelOutput

__all__ = ["LMD_PRESETS", "LMDModel", "LMDModelOutput"]

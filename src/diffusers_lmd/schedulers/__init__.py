from .scheduling_lmd_mask import MASK_SCHEDULES, LMDMaskScheduler, LMDMaskSchedulerOutput

__all__ = ["MASK_SCHEDULES", "LMDMaskScheduler", "LMDMaskSchedulerOutput"]

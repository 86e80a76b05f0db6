"""One convolution layer (Linear is a 1x1 convolution on a 1x1 input), by job:

- ``conv_plan.py``: tiling onto the core's buffers (:func:`plan_conv`, :class:`ConvPlan`);
- ``conv_params.py``: the weight and bias blobs in external memory;
- ``conv_schedule.py``: the instructions of a plan (:func:`schedule_conv`,
  :class:`ConvScheduler`);
- ``dma.py`` and ``tiling.py``: DMA pieces and tiling helpers shared with ``pool.py``.

This module gathers the public names of those for ``program.py`` and for callers that import
them from here.
"""

from __future__ import annotations

from shiftbook.sw.compiler.conv_params import (
    codebook_weight_bytes,
    conv_bias_bytes,
    conv_weight_bytes,
)
from shiftbook.sw.compiler.conv_plan import ConvPlan, check_codebook, plan_conv
from shiftbook.sw.compiler.conv_schedule import ConvScheduler, SlotPool, schedule_conv
from shiftbook.sw.compiler.dma import dma_pieces
from shiftbook.sw.compiler.tiling import CompileError

__all__ = ["ConvPlan", "plan_conv", "conv_weight_bytes", "conv_bias_bytes", "schedule_conv",
           "ConvScheduler", "SlotPool", "dma_pieces", "CompileError", "check_codebook",
           "codebook_weight_bytes"]

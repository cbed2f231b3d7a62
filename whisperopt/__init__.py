"""whisperopt: build, benchmark and compare optimised variants of any Whisper checkpoint."""

import logging as _logging

__version__ = "0.1.0"

# transformers imports torchao whenever it is installed (the torch-int8-weight-only extra); torchao 0.18, the newest,
# predates torch 2.13 and logs four harmless lines on every import (CUDA-only kernels it cannot load here, an Enum
# registration torch now does itself). Errors from either still show.
for _name in ("torchao", "torch.utils._pytree"):  # a filter, not a level: torch resets its loggers' levels on import
    _logging.getLogger(_name).addFilter(lambda record: record.levelno >= _logging.ERROR)

"""GPU beam search fast path (:func:`cuda_beam_search`), four layers: :mod:`.kernels` (Triton),
:mod:`.decoder` (compact decoder and KV cache), :mod:`.stops` (stop-string automata), :mod:`.search`
(the search itself, CUDA graphs). Nothing touches CUDA at import time.
"""

from .search import BeamInputError, cuda_beam_search

__all__ = ["BeamInputError", "cuda_beam_search"]

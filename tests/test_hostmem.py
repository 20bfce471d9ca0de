import subprocess
import sys

import pytest

_CHILD = """
import resource, sys
import torch
from embedder.hostmem import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # in force (glibc), and idempotent
from embedder.config import FusionConfig, ModelConfig
from embedder.data.testing import make_test_cube
from embedder.inference import Predictor, prepare_tile
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.sensors import S1, S2
torch.set_num_threads(1)
torch.manual_seed(0)
aes = {s.name: ModalityAutoencoder(s, cfg=ModelConfig()) for s in (S1, S2)}
model = FusionModel(aes, cfg=FusionConfig())
tile = prepare_tile(
    make_test_cube(3, size_px=18, n_dates=12, n_s1=24, cloud_frac=0.0),
    start="2021-01-01", end="2030-12-31", halo_px=7,
)
pred = Predictor(model, spectral=False)  # the direct convolutions' large activations (the DFT path's differ)
pred.embed_tile(tile)  # the first pass grows the heap
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
pred.embed_tile(tile)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_second_pass(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True, timeout=300
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_a_repeated_paper_model_pass_page_faults_no_more() -> None:
    # A 4 x 4 px paper-model tile: glibc's default returns the freed activations to the OS and the
    # second pass faults them back in (~60,000 faults here); kept, the second pass reuses them.
    # Alone this measures ~60,000 faults every time; once in a full parallel run it measured 594 (the
    # kernel's memory state while the other test worker ran). Measure again before concluding; when the
    # default allocator does not fault at all there is nothing to compare against, which is a skip.
    default = _faults_of_second_pass("default")
    if default <= 5_000:
        default = _faults_of_second_pass("default")
    if default <= 5_000:
        pytest.skip(f"the default allocator faulted only {default} times here: nothing to compare against")
    kept = _faults_of_second_pass("keep")
    assert kept < default / 20, f"{kept} faults with freed memory kept vs {default} without"

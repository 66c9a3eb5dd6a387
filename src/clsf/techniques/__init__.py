"""Training techniques, one module each: its config check, its numpy reference and its realisation in
each framework (see docs/architecture.md). Batch techniques (clsf.techniques.batch) are found here,
by every pipeline and by the generated tests (tests/test_techniques.py); the others are called by the
engines and the loop: loss (cross-entropy, label smoothing, class weights: every engine's loss, its
examples tested in every framework against the reference), class_weights (their resolution),
averaging (EMA, Lookahead), whitening, tta (evaluation views) -- the last three in numpy only."""

from clsf.techniques.cutout import Cutout
from clsf.techniques.mixing import Mixing

BATCH = (Mixing, Cutout)  # every training batch goes through the active ones in this order

"""Put the summary of `snakemake evaluate` into README.md's "Evaluation" section (between its
markers), after the evaluation's numbers changed: CI checks that the two agree.

    .venv/bin/python scripts/quote-evaluation.py [results/evaluation/summary.md]
"""

import sys
from pathlib import Path

from voxelprompt.evaluation_report import with_quote
from voxelprompt.io import write_text

summary = Path(sys.argv[1] if len(sys.argv) > 1 else "results/evaluation/summary.md")
readme = Path(__file__).resolve().parent.parent / "README.md"
write_text(readme, with_quote(readme.read_text(), summary.read_text()))
print(f"{readme}: quoted {summary}")

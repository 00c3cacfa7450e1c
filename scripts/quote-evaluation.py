"""Put the summary of `snakemake evaluate` into docs/evaluation.md (between the markers of its
setting), after the evaluation's numbers changed. CI checks that the reduced setting's quote is what a
fresh run gives; the full setting's is reproduced by its command in docs/evaluation.md.

    .venv/bin/python scripts/quote-evaluation.py [results/evaluation/summary.md] [--setting full]
"""

import argparse
from pathlib import Path

from voxelprompt.core.io import write_text
from voxelprompt.evaluation.summary import EVALUATION_PAGE, QUOTE_MARKERS, with_quote

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("summary", type=Path, nargs="?", default=Path("results/evaluation/summary.md"))
parser.add_argument("--setting", choices=sorted(QUOTE_MARKERS), default="reduced",
                    help="which quote to replace (default: reduced, the one CI reproduces)")
args = parser.parse_args()
page = Path(__file__).resolve().parent.parent / EVALUATION_PAGE
write_text(page, with_quote(page.read_text(), args.summary.read_text(), args.setting))
print(f"{page}: quoted {args.summary} as the {args.setting} setting")

import sys

from voxelprompt.cli import main

sys.exit(main())

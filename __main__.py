import sys

from roboreal.cli import main

sys.exit(main())

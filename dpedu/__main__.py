import sys

from dpedu.cli import main

sys.exit(main())

import sys

from ffexport.cli import main

sys.exit(main())

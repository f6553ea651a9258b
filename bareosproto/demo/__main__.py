import sys

from .topology import main

sys.exit(main())

import sys

from archlab._cli import main

sys.exit(main())

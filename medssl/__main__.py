import sys

from medssl.cli.main import main

sys.exit(main())

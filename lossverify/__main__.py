import sys

from lossverify.cli import main

sys.exit(main())

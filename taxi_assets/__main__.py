import sys

from taxi_assets.cli import main

sys.exit(main())

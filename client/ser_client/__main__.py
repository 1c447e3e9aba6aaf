import sys

from ser_client.cli import main

sys.exit(main())

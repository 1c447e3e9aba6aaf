import sys

from app.client.cli import main

sys.exit(main())

# micropython: run the board application. argv: config.json duration_ms (0 = forever)
import sys

from emberlink.firmware.board import app

ms = int(sys.argv[2])
sys.exit(app.main(sys.argv[1], ms or None))

# The board's entry point (copied to the root of the board's filesystem as main.py).
# Reads /config.json (written by build.py) and runs the gateway; the outbox lives under the
# configuration's data_dir on the flash filesystem.
from emberlink.firmware.board import app

app.main("/config.json")

# ruff: noqa: F821
# mypy: ignore-errors
# Deployment manifest (micropython-lib style) for freezing the board application into a
# firmware image: `make BOARD=RPI_PICO_W FROZEN_MANIFEST=/path/to/firmware/board/manifest.py`
# from a MicroPython checkout. Frozen modules keep their bytecode in flash, not in the heap.
# The repository root is two levels up from this file.
metadata(description="EmberLink board gateway", version="0.1.0")

ROOT = "../.."
package("emberlink", base_path=ROOT + "/build/board/src")

# Run golden vectors on the micropython interpreter: argv = vector files; prints one JSON line
# {"name": file, "got": [...], "block": [...]} per vector (feed, then feed_block),
# compared with "expect" by test_vectors.py.
import json
import sys

from emberlink.firmware.golden import run_vector

for path in sys.argv[1:]:
    with open(path) as f:
        vec = json.load(f)
    try:
        got = run_vector(vec)
        block = run_vector(vec, block=True)
        print(json.dumps({"name": path, "got": got, "block": block}))
    except Exception as e:  # report and continue: the test names the vector
        print(json.dumps({"name": path, "error": repr(e)}))

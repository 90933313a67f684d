# Run golden vectors on the micropython interpreter: argv = vector files; prints one JSON line
# {"name": file, "got": [...]} per vector (compared with "expect" by test_vectors.py).
import json
import sys

from emberlink.firmware.golden import run_vector

for path in sys.argv[1:]:
    with open(path) as f:
        vec = json.load(f)
    try:
        got = run_vector(vec)
        print(json.dumps({"name": path, "got": got}))
    except Exception as e:  # report and continue: the test names the vector
        print(json.dumps({"name": path, "error": repr(e)}))

# micropython helper: evaluate each line of a file as an expression over the board modules and
# print the hex of the bytes it gives, or "ERR <reason>" for an MQTTError / ValueError.
import sys

from emberlink.firmware.board import mqtt

ns = {"mqtt": mqtt}
try:
    from emberlink.firmware.board import modbus_rtu

    ns["modbus_rtu"] = modbus_rtu
except ImportError:
    pass
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        try:
            v = eval(line, ns)
            if isinstance(v, (bytes, bytearray)):
                print(bytes(v).hex())
            else:
                print(repr(v))
        except mqtt.MQTTError as e:
            print("ERR", e.reason)
        except ValueError:
            print("ERR value")

# micropython: the RTU master over a pty, driven line by line from stdin.
# argv: device baud   stdin lines: "<unit> <fc> <addr> <count>"   stdout: "<rc> <regs...>"
import sys

from emberlink.firmware.board import modbus_rtu

port = modbus_rtu.PtyPort(sys.argv[1], int(sys.argv[2]))
m = modbus_rtu.Master(port, int(sys.argv[2]), timeout_ms=int(sys.argv[3]))
print("ready")
while True:
    line = sys.stdin.readline()
    if not line:
        break
    unit, fc, addr, count = [int(x) for x in line.split()]
    rc = m.read(unit, fc, addr, count)
    out = [str(rc)]
    if rc == 0:
        out += [str(m.regs[i]) for i in range(count)]
    print(" ".join(out))

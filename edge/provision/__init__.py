"""Provisioning mode of the gateway: from the box to "claimed and green" on site.

| module | what |
|---|---|
| ``store.py`` | the provisioning state on disk: serial, pairing code, site, credentials (0600) |
| ``pairing.py`` | pairing-code check (constant time) with a lockout after repeated failures |
| ``modbus.py`` | a one-off Modbus client for a bus (the scan and commissioning reads) |
| ``scan.py`` | find responding unit ids and identify their profile by signature registers |
| ``commission.py`` | read every configured point, flag what is out of range or silent, the report |
| ``api.py`` | the local HTTP provisioning API (FastAPI), pairing code required on every route |
| ``mdns.py`` | the ``_emberlink._tcp.local.`` advertisement (zeroconf) |
| ``runner.py`` | provisioning mode, then the gateway service with the claimed credentials |
"""

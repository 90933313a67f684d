"""The gateway's mDNS advertisement: ``_emberlink._tcp.local.`` with TXT records.

TXT: ``serial``, ``sw`` (software version), ``state`` (unclaimed / claimed / fault), ``fp`` (key
fingerprint, '-' before the claim), ``api`` (provisioning API version). ``update()``
re-announces after a state change.
"""

from __future__ import annotations

import socket
from typing import Any

from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

SERVICE_TYPE = "_emberlink._tcp.local."


def service_info(
    serial: str, port: int, props: dict[str, str], addresses: list[str]
) -> ServiceInfo:
    return ServiceInfo(
        SERVICE_TYPE,
        f"EmberLink {serial}.{SERVICE_TYPE}",
        port=port,
        properties=props,
        server=f"emberlink-{serial.lower()}.local.",
        addresses=[socket.inet_aton(a) for a in addresses],
    )


class Advertiser:
    """``async with Advertiser(...)``: registered while inside, unregistered on exit."""

    def __init__(
        self, serial: str, port: int, props: dict[str, str], *, addresses: list[str],
        interfaces: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.serial = serial
        self.port = port
        self.addresses = addresses
        self.interfaces = interfaces
        self.info = service_info(serial, port, props, addresses)
        self.zc: AsyncZeroconf | None = None

    async def __aenter__(self) -> Advertiser:
        kw: dict[str, Any] = {"ip_version": IPVersion.V4Only}
        if self.interfaces:
            kw["interfaces"] = self.interfaces
        self.zc = AsyncZeroconf(**kw)
        await self.zc.async_register_service(self.info)
        return self

    async def update(self, props: dict[str, str]) -> None:
        assert self.zc is not None
        self.info = service_info(self.serial, self.port, props, self.addresses)
        await self.zc.async_update_service(self.info)

    async def __aexit__(self, *exc: object) -> None:
        if self.zc is not None:
            await self.zc.async_unregister_service(self.info)
            await self.zc.async_close()
            self.zc = None

"""Gurux DLMS client (PyPI `gurux-dlms`, an independent implementation) used as a test peer.

Reads a wattline COSEM server over the TCP wrapper and prints one JSON object per line:
    python3 gurux_client.py HOST PORT public|lls|hls [INVOCATION_COUNTER]
With GURUX_INTERFACE=hdlc it speaks HDLC (IEC 62056-46) over the TCP stream instead.
Started by crates/dlms/tests/interop.rs; it is not part of the product.
"""
import json
import os
import socket
import sys

from gurux_dlms import GXByteBuffer, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureClient

# Green Book example keys and system titles: the documented wattline demo credentials.
CLIENT_TITLE = bytes.fromhex("4D4D4D0000000001")
BLOCK_CIPHER_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AUTHENTICATION_KEY = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")


def emit(**kw):
    print(json.dumps(kw), flush=True)


class Link:
    def __init__(self, client, host, port):
        self.client = client
        self.sock = socket.create_connection((host, port), timeout=10)

    def packet(self, data, reply):
        if not data:
            return
        notify = GXReplyData()
        self.sock.sendall(bytes(data))
        rd = GXByteBuffer()
        while not self.client.getData(rd, reply, notify):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise IOError("connection closed by server")
            rd.set(chunk)

    def block(self, data, reply):
        if isinstance(data, list):
            for it in data:
                reply.clear()
                self.block(it, reply)
            return
        self.packet(data, reply)
        while reply.isMoreData():
            self.packet(self.client.receiverReady(reply), reply)

    def read(self, item, attribute):
        reply = GXReplyData()
        self.block(self.client.read(item, attribute)[0], reply)
        if reply.error:
            raise IOError("data-access-result %d" % reply.error)
        return self.client.updateValue(item, attribute, reply.value)

    def call(self, frames):
        reply = GXReplyData()
        self.block(frames, reply)
        if reply.error:
            raise IOError("data-access-result %d" % reply.error)
        return reply


def main():
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    hdlc = os.environ.get("GURUX_INTERFACE") == "hdlc"
    interface = InterfaceType.HDLC if hdlc else InterfaceType.WRAPPER
    if mode == "public":
        client = GXDLMSSecureClient(True, 16, 1, Authentication.NONE, None, interface)
    elif mode == "lls":
        client = GXDLMSSecureClient(True, 17, 1, Authentication.LOW, "demo-lls", interface)
    elif mode == "hls":
        client = GXDLMSSecureClient(True, 1, 1, Authentication.HIGH_GMAC, None, interface)
        client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        client.ciphering.systemTitle = CLIENT_TITLE
        client.ciphering.blockCipherKey = BLOCK_CIPHER_KEY
        client.ciphering.authenticationKey = AUTHENTICATION_KEY
        client.ciphering.invocationCounter = int(sys.argv[4])
    else:
        raise SystemExit("mode must be public, lls or hls")

    link = Link(client, host, port)
    if hdlc:
        reply = link.call(client.snrmRequest())
        client.parseUAResponse(reply.data)
        emit(event="hdlc_connected", max_info_tx=client.hdlcSettings.maxInfoTX, max_info_rx=client.hdlcSettings.maxInfoRX)
    reply = link.call(client.aarqRequest())
    client.parseAareResponse(reply.data)
    if client.getIsAuthenticationRequired():
        for it in client.getApplicationAssociationRequest():
            reply = link.call(it)
            client.parseApplicationAssociationResponse(reply.data)
    emit(event="associated", mode=mode)

    counter = GXDLMSData("0.0.43.1.0.255")
    link.read(counter, 2)
    emit(event="invocation_counter", value=int(counter.value))

    clock = GXDLMSClock("0.0.1.0.0.255")
    link.read(clock, 2)
    emit(event="clock", value=clock.time.value.strftime("%Y-%m-%dT%H:%M:%S"))
    if mode == "public":
        # The public association may not read energy: expect a denial.
        try:
            link.read(GXDLMSRegister("1.0.1.8.0.255"), 2)
            emit(event="register_denied", ok=False)
        except Exception as e:  # Gurux raises GXDLMSException on data-access errors.
            emit(event="register_denied", ok=True, error=str(e))
        release(link, client)
        return

    for ln in ("1.0.1.8.0.255", "1.0.2.8.0.255"):
        reg = GXDLMSRegister(ln)
        link.read(reg, 3)
        link.read(reg, 2)
        emit(event="register", ln=ln, value=float(reg.value), scaler=reg.scaler, unit=int(reg.unit))

    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    link.read(pg, 3)
    link.read(pg, 4)
    reply = link.call(client.readRowsByEntry(pg, 1, 10))
    client.updateValue(pg, 2, reply.value)
    rows = [[str(c) for c in row] for row in pg.buffer]
    emit(event="profile_by_entry", capture_objects=len(pg.captureObjects), period=pg.capturePeriod, rows=rows)
    pg.buffer = []
    link.read(pg, 2)
    emit(event="profile_all", rows=len(pg.buffer), last=[str(c) for c in pg.buffer[-1]])

    dc = GXDLMSDisconnectControl("0.0.96.3.10.255")
    try:
        link.call(dc.remoteDisconnect(client))
        link.read(dc, 3)
        emit(event="disconnect", ok=True, control_state=int(dc.controlState))
        link.call(dc.remoteReconnect(client))
        link.read(dc, 3)
        emit(event="reconnect", ok=True, control_state=int(dc.controlState))
    except Exception as e:
        emit(event="disconnect", ok=False, error=str(e))
    release(link, client)


def release(link, client):
    reply = GXReplyData()
    try:
        link.block(client.releaseRequest(), reply)
        emit(event="released")
        if client.interfaceType == InterfaceType.HDLC:
            reply.clear()
            link.block(client.disconnectRequest(), reply)
            emit(event="hdlc_disconnected")
    finally:
        link.sock.close()


if __name__ == "__main__":
    main()

"""A COSEM server built on the Gurux DLMS library (PyPI `gurux-dlms`), used only as an
independent test peer for our client. Serves one association over the TCP wrapper:
    python3 gurux_server.py none|lls|hls
It binds a free loopback port, prints `READY <port>` and serves until stdin closes.
Started by crates/dlms/tests/interop.rs; it is not part of the product.
"""
import socket
import sys
import threading

import datetime

from gurux_dlms import GXDateTime, GXServerReply
from gurux_dlms.enums import Authentication, InterfaceType, Security, SourceDiagnostic, Unit
from gurux_dlms.enums.AccessMode import AccessMode
from gurux_dlms.enums.MethodAccessMode import MethodAccessMode
from gurux_dlms.objects import (
    GXDLMSAssociationLogicalName,
    GXDLMSClock,
    GXDLMSData,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureServer

SERVER_TITLE = bytes.fromhex("4752580000000001")
BLOCK_CIPHER_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AUTHENTICATION_KEY = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
LLS_PASSWORD = b"demo-lls"


class Meter(GXDLMSSecureServer):
    def __init__(self, association):
        super().__init__(association, InterfaceType.WRAPPER)

    def isTarget(self, serverAddress, clientAddress):
        return serverAddress == 1

    def onValidateAuthentication(self, authentication, password):
        if authentication == Authentication.LOW and bytes(password or b"") != LLS_PASSWORD:
            return SourceDiagnostic.AUTHENTICATION_FAILURE
        return SourceDiagnostic.NONE

    def onPreGet(self, *args):
        pass

    def onPostGet(self, *args):
        pass

    def onFindObject(self, objectType, sn, ln):
        return None

    def onPreRead(self, *args):
        pass

    def notifyRead(self, *args):
        # gurux-dlms 1.0.x's GET handler calls this hook, which its GXDLMSServer lacks.
        pass

    def onPostRead(self, *args):
        pass

    def onPreWrite(self, *args):
        pass

    def onPostWrite(self, *args):
        pass

    def onConnected(self, *args):
        pass

    def onInvalidConnection(self, *args):
        pass

    def onDisconnected(self, *args):
        pass

    def onGetAttributeAccess(self, arg):
        return AccessMode.READ_WRITE

    def onGetMethodAccess(self, arg):
        return MethodAccessMode.ACCESS

    def onPreAction(self, *args):
        pass

    def onPostAction(self, *args):
        pass


class Reply(GXServerReply):
    """gurux-dlms 1.0.x's server calls accessors its own GXServerReply lacks."""

    def setReply(self, value):
        self.reply = value

    def getConnectionInfo(self):
        return self.connectionInfo


def build(mode):
    association = GXDLMSAssociationLogicalName()
    if mode == "lls":
        association.authenticationMechanismName.mechanismId = Authentication.LOW
        association.secret = LLS_PASSWORD
    elif mode == "hls":
        association.authenticationMechanismName.mechanismId = Authentication.HIGH_GMAC
    meter = Meter(association)
    if mode == "hls":
        # gurux-dlms 1.0.x's secure server keeps its ciphering in `settings.ciphering` but the
        # protocol code reads `settings.cipher`: point both at the same object.
        meter.settings.cipher = meter.getCiphering()
        meter.getCiphering().security = Security.AUTHENTICATION_ENCRYPTION
        meter.getCiphering().systemTitle = SERVER_TITLE
        meter.getCiphering().blockCipherKey = BLOCK_CIPHER_KEY
        meter.getCiphering().authenticationKey = AUTHENTICATION_KEY
    name = GXDLMSData("0.0.42.0.0.255")
    name.value = b"GRX0000000001"
    clock = GXDLMSClock("0.0.1.0.0.255")
    clock.time = GXDateTime(datetime.datetime.now())
    energy = GXDLMSRegister("1.0.1.8.0.255")
    energy.value = 123456
    energy.scaler = 0.1
    energy.unit = Unit.ACTIVE_ENERGY
    power = GXDLMSRegister("1.0.1.7.0.255")
    power.value = 1500
    power.scaler = 1
    power.unit = Unit.ACTIVE_POWER
    # The association must be among the items with its object list filled in, or Gurux's
    # initialize() tries to append the whole collection as one object.
    for it in (association, name, clock, energy, power):
        meter.items.append(it)
        association.objectList.append(it)
    meter.initialize()
    return meter


def serve(conn, mode):
    meter = build(mode)
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            sr = Reply(bytearray(data))
            meter.handleRequest(sr)
            if sr.reply:
                conn.sendall(bytes(sr.reply))


def main():
    mode = sys.argv[1]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    print("READY %d" % listener.getsockname()[1], flush=True)

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn, mode), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    # Serve until the test closes our stdin.
    sys.stdin.read()


if __name__ == "__main__":
    main()

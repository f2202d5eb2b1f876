"""Cloud-to-device messages sent with Microsoft's azure-iot-hub 2.7.0
(IoTHubRegistryManager.send_c2d_message, AMQP through uamqp 1.6.11) against a running ferrohub,
received by a Python MQTT device (azure-iot-device 2.14.0) and a Node AMQP device
(azure-iot-device-amqp 1.14.4, conformance/node/tools/amqp-device.js).

Environment (set by conformance/run): FERROHUB_CONNECTION_STRING (HostName=localhost:<https port>),
FERROHUB_HTTPS_PORT, FERROHUB_MQTT_PORT, FERROHUB_AMQP_PORT, FERROHUB_DATA_DIR, FERROHUB_CA.

SDK facts these tests rely on (read in .venv/lib/python3.11/site-packages/azure/iot/hub and uamqp):
  * Constructing IoTHubRegistryManager builds a uamqp SendClient for
    amqps://{HostName}/messages/devicebound and a JWTTokenAuth whose audience is
    https://{HostName}; it connects on the first send_c2d_message. The SAS token's sr is the raw
    HostName (here localhost:<https port>, which the hub accepts as its own name, as for REST).
  * uamqp takes only the host of that URL: AMQPAuth.set_io dials DEFAULT_AMQPS_PORT (5671), or 443
    with TransportType.AmqpOverWebsocket, and the SDK passes no port. The `amqp_port` fixture wraps
    AMQPAuth.set_tlsio and set_wsio (test_device.patch_uamqp) so that 5671 goes to
    FERROHUB_AMQP_PORT (nothing changes when the hub listens on 5671 itself,
    CONFORMANCE_AMQP_PORT=5671) and 443 to FERROHUB_HTTPS_PORT. Host, SNI and certificate check
    stay `localhost`. Over WebSockets uamqp asks for wss://{host}:443/$servicebus/websocket/
    (trailing slash), subprotocol AMQPWSB10.
  * uamqp trusts only certifi.where(), read when the client is built: the fixture points
    uamqp's certifi at the hub's CA.
  * send_c2d_message(device_id, body, properties): the keys messageId, correlationId,
    contentType, contentEncoding and expiryTimeUtc (int, ms since the epoch) become AMQP
    properties, every other key an application property (so "iothub-ack" sets the ack mode). A
    message-id is always sent (a uuid4 string when none is given).
  * Any outcome other than accepted raises Exception("C2D message send failure"); the rejection's
    condition is not exposed. The client stays usable afterwards.
  * A put-token answered with an error status is retried three times, then raises
    uamqp.errors.AuthenticationException("Token authentication failed: …"); a refused link attach
    raises uamqp.errors.LinkDetach carrying the hub's condition and description.
  * Feedback has no AMQP receiver in this SDK: it is read with its REST operations
    (IoTHubHttpRuntimeManager), as in test_device.py.
"""

import base64
import json
import os
import queue
import subprocess
import time
import types
import uuid

import paho.mqtt.client as paho
import pytest
import uamqp.errors as uamqp_errors
from azure.iot.device import IoTHubDeviceClient
from azure.iot.hub import IoTHubHttpRuntimeManager, IoTHubRegistryManager
from uamqp import TransportType

from test_device import CALL_TIMEOUT, WAIT, FeedbackCollector, Hub, call, patch_uamqp

pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning")

NODE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "node")


@pytest.fixture(scope="module")
def hub():
    hub = Hub()
    yield hub
    hub.close()


@pytest.fixture(scope="module", autouse=True)
def amqp_port(hub):
    """Sends uamqp's fixed 5671 to the hub's AMQP listener and makes uamqp trust the hub's CA."""
    undo = patch_uamqp(hub.amqp_port, hub.port, hub.ca)
    yield hub.amqp_port
    undo()


@pytest.fixture(scope="module", autouse=True)
def redirect_mqtt(hub):
    """Sends azure-iot-device's hard-coded 8883 to the hub's MQTT listener (as in test_device.py)."""
    original = paho.Client.connect

    def connect(self, host, port=1883, keepalive=60, *args, **kwargs):
        return original(self, host, hub.mqtt_port if port == 8883 else port, keepalive, *args, **kwargs)

    paho.Client.connect = connect
    yield
    paho.Client.connect = original


@pytest.fixture(scope="module")
def registry(hub, amqp_port):
    os.environ.setdefault("REQUESTS_CA_BUNDLE", hub.ca)
    manager = IoTHubRegistryManager.from_connection_string(hub.owner_cs)
    yield manager
    manager.amqp_svc_client.disconnect_sync()


@pytest.fixture(scope="module")
def feedback(hub):
    os.environ.setdefault("REQUESTS_CA_BUNDLE", hub.ca)
    return FeedbackCollector(IoTHubHttpRuntimeManager.from_connection_string(hub.owner_cs))


@pytest.fixture
def devices(hub, registry):
    created = []
    clients = []

    def create():
        device_id = "pyamqp-%s" % uuid.uuid4()
        created.append(device_id)
        return registry.create_device_with_sas(device_id, "", "", "enabled")

    def mqtt_client(device):
        key = device.authentication.symmetric_key.primary_key
        cs = "HostName=%s;DeviceId=%s;SharedAccessKey=%s" % (hub.host, device.device_id, key)
        with open(hub.ca) as f:
            client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=f.read())
        clients.append(client)
        return client

    yield types.SimpleNamespace(create=create, mqtt_client=mqtt_client)
    for client in clients:
        try:
            call(client.shutdown)
        except BaseException:
            pass
    for device_id in created:
        try:
            registry.delete_device(device_id)
        except Exception:
            pass


def _send(registry, device_id, body, properties=None):
    """The SDK's own call, with a deadline (it has none)."""
    return call(registry.send_c2d_message, device_id, body, properties or {})


def _fields(ack="full"):
    return {
        "messageId": "c2d-%s" % uuid.uuid4(),
        "correlationId": "corr-%s" % uuid.uuid4(),
        "contentType": "text/plain",
        "contentEncoding": "utf-8",
        # uamqp wants an int: ms since the epoch.
        "expiryTimeUtc": int((time.time() + 600) * 1000),
        "iothub-ack": ack,
        "color": "blue",
        "with-dash": "a b&c=d/e",
        "n": "42",
    }


CUSTOM = {"color": "blue", "with-dash": "a b&c=d/e", "n": "42"}


def test_send_c2d_reaches_mqtt_device_with_properties_and_success_feedback(hub, registry, devices, feedback):
    device = devices.create()
    client = devices.mqtt_client(device)
    inbox = queue.Queue()
    call(client.connect)
    client.on_message_received = inbox.put
    fields = _fields()
    _send(registry, device.device_id, "hello mqtt device", fields)
    try:
        message = inbox.get(timeout=WAIT)
    except queue.Empty:
        raise AssertionError("no C2D message within %s s" % WAIT) from None
    assert message.data == b"hello mqtt device"
    assert message.message_id == fields["messageId"]
    assert message.correlation_id == fields["correlationId"]
    assert message.content_type == "text/plain"
    assert message.content_encoding == "utf-8"
    assert message.ack == "full"
    assert message.custom_properties == CUSTOM, message.custom_properties
    assert message.expiry_time_utc, "no $.exp on the C2D topic"
    # The PUBACK completes the message: ack=full gives a Success record.
    record = feedback.wait_for(device.device_id, fields["messageId"])
    assert record["statusCode"] == "Success", record
    assert record["deviceGenerationId"] == device.generation_id, record
    assert hub.purge(device.device_id)["totalMessagesPurged"] == 0


def test_send_c2d_reaches_node_amqp_device(hub, registry, devices, feedback, amqp_port):
    device = devices.create()
    fields = _fields()
    # Queued before the device connects; it arrives when the device's C2D link attaches.
    _send(registry, device.device_id, "hello amqp device", fields)
    key = device.authentication.symmetric_key.primary_key
    cs = "HostName=%s;GatewayHostName=%s:%d;DeviceId=%s;SharedAccessKey=%s" % (
        hub.host, hub.host, amqp_port, device.device_id, key)
    env = dict(os.environ, AMQP_DEVICE_CONNECTION_STRING=cs, NODE_EXTRA_CA_CERTS=hub.ca)
    proc = subprocess.run(
        ["node", os.path.join(NODE_DIR, "tools", "amqp-device.js")],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=CALL_TIMEOUT, check=False)
    assert proc.returncode == 0, "amqp-device.js exited %d: %s" % (proc.returncode, proc.stderr)
    received = json.loads(proc.stdout.strip().splitlines()[-1])
    assert received["body"] == "hello amqp device"
    assert received["messageId"] == fields["messageId"]
    assert received["correlationId"] == fields["correlationId"]
    assert received["contentType"] == "text/plain"
    assert received["contentEncoding"] == "utf-8"
    assert received["to"] == "/devices/%s/messages/devicebound" % device.device_id
    assert received["ack"] == "full"
    assert received["expiryTimeUtc"] == fields["expiryTimeUtc"]
    assert received["properties"] == CUSTOM, received["properties"]
    # The Node device completed it.
    record = feedback.wait_for(device.device_id, fields["messageId"])
    assert record["statusCode"] == "Success", record
    assert hub.purge(device.device_id)["totalMessagesPurged"] == 0


def test_send_c2d_over_websockets(hub, devices):
    """transport_type=AmqpOverWebsocket: the same send through /$servicebus/websocket/ on the
    HTTPS port."""
    device = devices.create()
    manager = IoTHubRegistryManager.from_connection_string(
        hub.owner_cs, transport_type=TransportType.AmqpOverWebsocket)
    try:
        fields = _fields()
        _send(manager, device.device_id, "over websockets", fields)
        with pytest.raises(Exception, match="C2D message send failure"):
            _send(manager, "pyamqp-missing-%s" % uuid.uuid4(), "nobody home")
    finally:
        manager.amqp_svc_client.disconnect_sync()
    client = devices.mqtt_client(device)
    inbox = queue.Queue()
    call(client.connect)
    client.on_message_received = inbox.put
    message = inbox.get(timeout=WAIT)
    assert message.data == b"over websockets"
    assert message.message_id == fields["messageId"]
    assert message.custom_properties == CUSTOM, message.custom_properties


def test_send_c2d_without_message_id_gets_one(hub, registry, devices):
    """The SDK sends a uuid4 message-id when none is given; the hub keeps it."""
    device = devices.create()
    _send(registry, device.device_id, "no id")
    client = devices.mqtt_client(device)
    inbox = queue.Queue()
    call(client.connect)
    client.on_message_received = inbox.put
    message = inbox.get(timeout=WAIT)
    assert message.data == b"no id"
    assert str(uuid.UUID(message.message_id)) == message.message_id


def test_send_c2d_to_unknown_device_raises(hub, registry):
    device_id = "pyamqp-missing-%s" % uuid.uuid4()
    with pytest.raises(Exception, match="C2D message send failure"):
        _send(registry, device_id, "nobody home")
    # The client stays usable, and the device still does not exist.
    resp = hub.request("GET", "/devices/%s" % device_id)
    assert resp.status_code == 404, resp.text


def test_send_c2d_to_full_queue_raises(hub, registry, devices):
    device = devices.create()
    for i in range(50):
        _send(registry, device.device_id, "m%d" % i, {"messageId": "q-%d" % i})
    with pytest.raises(Exception, match="C2D message send failure"):
        _send(registry, device.device_id, "one too many", {"messageId": "q-50"})
    assert hub.purge(device.device_id)["totalMessagesPurged"] == 50
    _send(registry, device.device_id, "room again", {"messageId": "q-51"})
    assert hub.purge(device.device_id)["totalMessagesPurged"] == 1


def test_send_c2d_with_wrong_key_raises_and_queues_nothing(hub, registry, devices):
    device = devices.create()
    wrong = base64.b64encode(os.urandom(32)).decode()
    cs = "HostName=%s:%d;SharedAccessKeyName=%s;SharedAccessKey=%s" % (hub.host, hub.port, hub.policy, wrong)
    manager = IoTHubRegistryManager.from_connection_string(cs)
    try:
        # The put-token is answered 401: uamqp retries it, then gives up.
        with pytest.raises(uamqp_errors.AuthenticationException, match="Token authentication failed"):
            _send(manager, device.device_id, "must not arrive", {"messageId": "wrong-key"})
    finally:
        manager.amqp_svc_client.disconnect_sync()
    assert hub.purge(device.device_id)["totalMessagesPurged"] == 0


def test_send_c2d_with_policy_without_service_connect_raises(hub, devices):
    """registryRead's token is valid, but not for /messages/devicebound."""
    device = devices.create()
    cs = "HostName=%s:%d;SharedAccessKeyName=registryRead;SharedAccessKey=%s" % (
        hub.host, hub.port, hub.policy_key("registryRead"))
    manager = IoTHubRegistryManager.from_connection_string(cs)
    try:
        # The C2D link is refused: uamqp raises the link's detach error.
        with pytest.raises(uamqp_errors.LinkDetach, match="UnauthorizedAccess.*ServiceConnect"):
            _send(manager, device.device_id, "must not arrive")
    finally:
        manager.amqp_svc_client.disconnect_sync()
    assert hub.purge(device.device_id)["totalMessagesPurged"] == 0

"""Device-side scenarios run with Microsoft's azure-iot-device 2.14.0 (IoTHubDeviceClient) against a
running ferrohub, over MQTT (TLS) and MQTT over WebSockets.

Environment (set by conformance/run):
  FERROHUB_CONNECTION_STRING  owner connection string, HostName=localhost (no port)
  FERROHUB_HTTPS_PORT         port of the HTTPS listener (REST, and MQTT over WebSockets)
  FERROHUB_MQTT_PORT          port of the MQTT/TLS listener
  FERROHUB_DATA_DIR           the hub's data dir; policies.json holds the `device` policy's keys
  FERROHUB_CA                 path of the hub's CA certificate (PEM)

SDK facts these tests rely on (read in .venv/lib/python3.11/site-packages/azure/iot/device):
  * MQTTTransport.connect() calls paho's connect(host, port=8883), or port=443 with websockets=True,
    and offers no option to change it; HostName/GatewayHostName may not contain a port. The
    `redirect_ports` fixture wraps paho.Client.connect so that 8883 goes to FERROHUB_MQTT_PORT and
    443 to FERROHUB_HTTPS_PORT. Host name, SNI, certificate check, username and SAS stay `localhost`.
  * server_verification_cert takes the PEM text (not a path). The SSL context is TLS 1.2 only.
  * CleanSession is always 0, and the SDK never re-subscribes after a reconnect: C2D received after
    a reconnect relies on the hub keeping the session's subscription.
  * The SUBSCRIBE for devicebound/# is sent lazily, when on_message_received is set.
  * connect(), send_message() and disconnect() have no timeout: every call goes through `call()`.
  * CONNACK 4/5 surfaces as azure.iot.device.exceptions.CredentialError.
  * C2D topic parsing: $.mid, $.cid, $.uid, $.ct, $.ce, $.exp and iothub-ack map to fields, $.to is
    dropped, every other key becomes a custom property.
  * C2D is sent with the service SDK's IoTHubRegistryManager.send_c2d_message (AMQP through uamqp,
    which always dials 5671 and trusts only certifi's bundle: `redirect_uamqp` below sends it to
    FERROHUB_AMQP_PORT with the hub's CA; test_amqp_c2d.py has the details). Feedback is read with
    the service SDK's REST operations (receive_feedback_notification /
    complete_feedback_notification): the Python SDK has no AMQP feedback receiver.
"""

import base64
import concurrent.futures
import datetime
import hashlib
import hmac
import json
import os
import queue
import threading
import time
import types
import urllib.parse
import uuid

import paho.mqtt.client as paho
import pytest
import requests
import uamqp.authentication.common as uamqp_auth
from msrest.exceptions import HttpOperationError

from azure.iot.device import IoTHubDeviceClient, Message
from azure.iot.device import exceptions as device_errors
from azure.iot.device.common.auth.sastoken import RenewableSasToken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
from azure.iot.hub import IoTHubHttpRuntimeManager, IoTHubRegistryManager

from test_registry import IN_CLUSTER

# Longest time one SDK call may take before the test fails.
CALL_TIMEOUT = 30
# How long to wait for something the hub pushes (an event in the log, a C2D message, feedback).
WAIT = 15
API_VERSION = "2021-04-12"

TRANSPORTS = [pytest.param(False, id="mqtt"), pytest.param(True, id="websockets")]

# The SDK builds its SSL context with the deprecated ssl.PROTOCOL_TLSv1_2 on every connect.
pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning")


def _require_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail("environment variable %s is not set (run the suite through conformance/run)" % name)
    return value


def _parse_cs(cs):
    return dict(item.split("=", 1) for item in cs.strip().split(";") if item)


def _with_port(connection_string, port):
    parts = []
    for item in connection_string.strip().split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key == "HostName":
            value = value.split(":", 1)[0] + ":" + str(port)
        parts.append(key + "=" + value)
    return ";".join(parts)


def _executor():
    # One worker thread per call, so a call that never returns does not block the next one.
    return concurrent.futures.ThreadPoolExecutor(max_workers=1)


def call(fn, *args, timeout=CALL_TIMEOUT, **kwargs):
    """Runs an SDK call with a deadline (the SDK's own calls have none)."""
    pool = _executor()
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        pytest.fail("%s did not return within %s s" % (getattr(fn, "__qualname__", fn), timeout))


def wait_until(predicate, timeout=WAIT, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- hub access -----------------------------------------------------------------------------------


class Hub:
    """Plain HTTPS access to the service API for what the SDK sends over AMQP (C2D send) and
    the event read API."""

    def __init__(self):
        self.ca = _require_env("FERROHUB_CA")
        self.port = int(_require_env("FERROHUB_HTTPS_PORT"))
        self.mqtt_port = int(_require_env("FERROHUB_MQTT_PORT"))
        self.amqp_port = int(_require_env("FERROHUB_AMQP_PORT"))
        self._service = None
        self.data_dir = _require_env("FERROHUB_DATA_DIR")
        self.owner_cs = _require_env("FERROHUB_CONNECTION_STRING")
        fields = _parse_cs(self.owner_cs)
        self.host = fields["HostName"].split(":", 1)[0]
        self.policy = fields["SharedAccessKeyName"]
        self.key = fields["SharedAccessKey"]
        self.base = "https://%s:%d" % (self.host, self.port)
        self.http = requests.Session()
        self.http.verify = self.ca

    def service_token(self, ttl=3600):
        expiry = int(time.time()) + ttl
        sr = urllib.parse.quote(self.host, safe="")
        sig = base64.b64encode(
            hmac.new(base64.b64decode(self.key), ("%s\n%d" % (sr, expiry)).encode(), hashlib.sha256).digest()
        ).decode()
        return "SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s" % (
            sr,
            urllib.parse.quote(sig, safe=""),
            expiry,
            self.policy,
        )

    def request(self, method, path, headers=None, **kwargs):
        all_headers = {"Authorization": self.service_token()}
        all_headers.update(headers or {})
        params = kwargs.pop("params", {})
        params.setdefault("api-version", API_VERSION)
        return self.http.request(
            method, self.base + path, headers=all_headers, params=params, timeout=CALL_TIMEOUT, **kwargs
        )

    def policy_key(self, name):
        with open(os.path.join(self.data_dir, "policies.json")) as f:
            policies = json.load(f)["policies"]
        for p in policies:
            if p["keyName"] == name:
                return p["primaryKey"]
        raise AssertionError("no policy %r in policies.json" % name)

    # C2D, service side

    def service(self):
        """The owner's IoTHubRegistryManager for send_c2d_message (needs `redirect_uamqp`)."""
        if self._service is None:
            self._service = IoTHubRegistryManager.from_connection_string(self.owner_cs)
        return self._service

    def close(self):
        if self._service is not None:
            self._service.amqp_svc_client.disconnect_sync()
            self._service = None

    def send_c2d_ok(self, device_id, body, message_id=None, correlation_id=None, content_type=None,
                    content_encoding=None, ack=None, expiry=None, properties=None):
        """Sends with the SDK's send_c2d_message; it raises unless the hub accepted the message."""
        props = {}
        for name, value in (
            ("messageId", message_id),
            ("correlationId", correlation_id),
            ("contentType", content_type),
            ("contentEncoding", content_encoding),
            ("iothub-ack", ack),
        ):
            if value is not None:
                props[name] = value
        if expiry is not None:
            # uamqp wants absolute-expiry-time as an int of ms since the epoch.
            props["expiryTimeUtc"] = int(_parse_iso(expiry).timestamp() * 1000)
        props.update(properties or {})
        call(self.service().send_c2d_message, device_id, body, props)

    def send_c2d_rest(self, device_id, body, message_id=None):
        """POST /devices/{id}/messages/deviceBound: the HTTPS send no SDK uses."""
        headers = {} if message_id is None else {"iothub-messageid": message_id}
        return self.request(
            "POST", "/devices/%s/messages/deviceBound" % urllib.parse.quote(device_id, safe=""),
            headers=headers, data=body,
        )

    def purge(self, device_id):
        resp = self.request("DELETE", "/devices/%s/commands" % urllib.parse.quote(device_id, safe=""))
        assert resp.status_code == 200, "purge: %s %s" % (resp.status_code, resp.text)
        return resp.json()

    # event read API

    def partitions(self):
        resp = self.request("GET", "/messages/events/partitions")
        assert resp.status_code == 200, resp.text
        return resp.json()["partitionIds"]

    def find_event(self, device_id, message_id, timeout=WAIT):
        """Scans every partition of the event log for the event `device_id` sent with `message_id`."""
        return self.find_event_where(
            device_id, lambda e: e["systemProperties"].get("message-id") == message_id, timeout,
            "with message-id %s" % message_id)

    def find_event_where(self, device_id, predicate, timeout=WAIT, what="matching"):
        """Scans every partition of the event log for an event of `device_id` that `predicate` accepts."""
        cursors = {p: None for p in self.partitions()}
        deadline = time.monotonic() + timeout
        while True:
            for p, cursor in list(cursors.items()):
                while True:
                    params = {"max": "1000"}
                    if cursor is not None:
                        params.update(sequenceNumber=str(cursor), inclusive="true")
                    resp = self.request("GET", "/messages/events/partitions/%s/events" % p, params=params)
                    assert resp.status_code == 200, "read events: %s %s" % (resp.status_code, resp.text)
                    batch = resp.json()
                    for event in batch["events"]:
                        system = event["systemProperties"]
                        if system.get("iothub-connection-device-id") == device_id and predicate(event):
                            return event
                    if batch.get("nextSequenceNumber") is not None:
                        cursor = batch["nextSequenceNumber"]
                        cursors[p] = cursor
                    if len(batch["events"]) < 1000:
                        break
            if time.monotonic() > deadline:
                raise AssertionError("no event from %s %s within %s s" % (device_id, what, timeout))
            time.sleep(0.2)


class FeedbackCollector:
    """Reads the hub-wide feedback queue with the service SDK's REST operations, completes every
    batch, and keeps its records so that each test finds its own by device id."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.records = []

    def _poll(self):
        ops = self.runtime.protocol.cloud_to_device_messages
        raw = ops.receive_feedback_notification(raw=True)
        resp = raw.response
        if resp.status_code == 204:
            return False
        assert resp.status_code == 200, resp.status_code
        etag = resp.headers.get("ETag")
        assert etag and len(etag) > 2 and etag.startswith('"') and etag.endswith('"'), \
            "feedback ETag %r is not quoted" % etag
        records = json.loads(resp.text)
        assert isinstance(records, list) and records, resp.text
        self.records.extend(records)
        # complete_feedback_notification accepts 204 only.
        self.runtime.complete_feedback_notification(etag[1:-1])
        return True

    def wait_for(self, device_id, original_message_id, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            for r in self.records:
                if r.get("deviceId") == device_id and r.get("originalMessageId") == original_message_id:
                    return r
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no feedback record for %s/%s within %s s; seen %r"
                    % (device_id, original_message_id, timeout, [r for r in self.records if r.get("deviceId") == device_id])
                )
            if not self._poll():
                time.sleep(0.2)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub():
    hub = Hub()
    yield hub
    hub.close()


def patch_uamqp(port, ws_port, ca):
    """Sends uamqp's fixed 5671 to `port` and its WebSocket port 443 to `ws_port`, and makes it
    trust `ca`; returns the undo."""
    original_tlsio = uamqp_auth.AMQPAuth.set_tlsio
    original_wsio = uamqp_auth.AMQPAuth.set_wsio
    original_certifi = uamqp_auth.certifi

    def set_tlsio(self, hostname, tls_port):
        return original_tlsio(self, hostname, port if int(tls_port) == 5671 else tls_port)

    def set_wsio(self, hostname, wss_port, http_proxy):
        return original_wsio(self, hostname, ws_port if int(wss_port) == 443 else wss_port, http_proxy)

    uamqp_auth.AMQPAuth.set_tlsio = set_tlsio
    uamqp_auth.AMQPAuth.set_wsio = set_wsio
    uamqp_auth.certifi = types.SimpleNamespace(where=lambda: ca)

    def undo():
        uamqp_auth.AMQPAuth.set_tlsio = original_tlsio
        uamqp_auth.AMQPAuth.set_wsio = original_wsio
        uamqp_auth.certifi = original_certifi

    return undo


@pytest.fixture(scope="module", autouse=True)
def redirect_uamqp(hub):
    """uamqp (send_c2d_message) dials 5671 and trusts certifi only: send it to the hub's AMQP port
    with the hub's CA. Nothing changes on the wire when the hub listens on 5671 itself."""
    undo = patch_uamqp(hub.amqp_port, hub.port, hub.ca)
    yield
    undo()


@pytest.fixture(scope="module", autouse=True)
def redirect_ports(hub):
    """Sends the SDK's hard-coded 8883 (MQTT) and 443 (WebSockets) to the hub's listeners."""
    original = paho.Client.connect
    ports = {8883: hub.mqtt_port, 443: hub.port}

    def connect(self, host, port=1883, keepalive=60, *args, **kwargs):
        return original(self, host, ports.get(port, port), keepalive, *args, **kwargs)

    paho.Client.connect = connect
    yield
    paho.Client.connect = original


@pytest.fixture(scope="module")
def registry(hub):
    os.environ.setdefault("REQUESTS_CA_BUNDLE", hub.ca)
    return IoTHubRegistryManager.from_connection_string(_with_port(hub.owner_cs, hub.port))


@pytest.fixture(scope="module")
def feedback(hub):
    os.environ.setdefault("REQUESTS_CA_BUNDLE", hub.ca)
    return FeedbackCollector(IoTHubHttpRuntimeManager.from_connection_string(_with_port(hub.owner_cs, hub.port)))


@pytest.fixture(scope="module")
def ca_pem(hub):
    with open(hub.ca) as f:
        return f.read()


class Devices:
    """Creates devices with fresh ids and device clients, and cleans both up."""

    def __init__(self, hub, registry, ca_pem):
        self.hub = hub
        self.registry = registry
        self.ca_pem = ca_pem
        self.ids = []
        self.clients = []

    def create(self, status="enabled"):
        device_id = "pydev-%s" % uuid.uuid4()
        self.ids.append(device_id)
        return self.registry.create_device_with_sas(device_id, "", "", status)

    def connection_string(self, device, key=None):
        key = key or device.authentication.symmetric_key.primary_key
        return "HostName=%s;DeviceId=%s;SharedAccessKey=%s" % (self.hub.host, device.device_id, key)

    def client(self, device, websockets=False, key=None, **kwargs):
        client = IoTHubDeviceClient.create_from_connection_string(
            self.connection_string(device, key),
            server_verification_cert=self.ca_pem,
            websockets=websockets,
            connection_retry=False,
            **kwargs,
        )
        self.clients.append(client)
        return client

    def client_from_token(self, token, websockets=False):
        client = IoTHubDeviceClient.create_from_sastoken(
            token, server_verification_cert=self.ca_pem, websockets=websockets, connection_retry=False
        )
        self.clients.append(client)
        return client

    def close(self):
        for client in self.clients:
            try:
                call(client.shutdown, timeout=10)
            except BaseException:  # noqa: BLE001 - cleanup must go on
                pass
        for device_id in self.ids:
            try:
                self.registry.delete_device(device_id)
            except HttpOperationError:
                pass


@pytest.fixture
def devices(hub, registry, ca_pem):
    d = Devices(hub, registry, ca_pem)
    yield d
    d.close()


def _policy_token(hub, device_id, ttl=3600):
    """A SAS token for the device minted from the `device` policy (skn=device), built with the
    device SDK's own token code: sr=localhost%2Fdevices%2F<id>."""
    uri = "%s/devices/%s" % (hub.host, device_id)
    return str(RenewableSasToken(uri, SymmetricKeySigningMechanism(hub.policy_key("device")), "device", ttl))


class Inbox:
    """on_message_received handler that queues what arrives."""

    def __init__(self):
        self.messages = queue.Queue()

    def __call__(self, message):
        self.messages.put(message)

    def get(self, timeout=WAIT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no C2D message within %s s" % timeout) from None

    def empty_for(self, seconds):
        try:
            m = self.messages.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError("unexpected C2D message %r (%r)" % (m.message_id, m.data))


# --- telemetry ----------------------------------------------------------------------------------

CUSTOM_PROPERTIES = {
    "alert": "yes",
    "with space": "a b",
    "a/b": "c/d",
    "amp&eq=": "x&y=z",
    "plus": "1+1",
    "percent": "100%",
    "unicode": "gr\u00fc\u00df",
    "empty": "",
}


def _telemetry(device_id):
    message = Message(
        '{"temperature": 21.5, "device": "%s"}' % device_id,
        message_id="mid-%s" % uuid.uuid4(),
        content_encoding="utf-8",
        content_type="application/json",
    )
    message.correlation_id = "cid-%s" % uuid.uuid4()
    message.custom_properties.update(CUSTOM_PROPERTIES)
    return message


def _assert_event_matches(event, device, message, scope):
    device_id = device.device_id
    system = event["systemProperties"]
    assert system["iothub-connection-device-id"] == device_id
    assert system["iothub-connection-auth-generation-id"] == device.generation_id, system
    auth = json.loads(system["iothub-connection-auth-method"])
    assert auth["scope"] == scope and auth["type"] == "sas" and auth["issuer"] == "iothub", auth
    assert system["iothub-message-source"] == "Telemetry", system
    assert isinstance(system["iothub-enqueuedtime"], int), system
    assert system["message-id"] == message.message_id
    assert system["correlation-id"] == message.correlation_id
    assert system["content-type"] == "application/json"
    assert system["content-encoding"] == "utf-8"
    assert event["properties"] == CUSTOM_PROPERTIES, event["properties"]
    assert event["bodyEncoding"] == "text", event
    assert event["body"] == message.data


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_telemetry_with_device_key(hub, devices, websockets):
    device = devices.create()
    client = devices.client(device, websockets=websockets)
    call(client.connect)
    assert client.connected
    message = _telemetry(device.device_id)
    call(client.send_message, message)  # returns on PUBACK
    event = hub.find_event(device.device_id, message.message_id)
    _assert_event_matches(event, device, message, scope="device")
    # A plain string message (no properties) goes to devices/{id}/messages/events/ with an empty bag.
    call(client.send_message, "plain")
    plain = hub.find_event_where(device.device_id, lambda e: "message-id" not in e["systemProperties"])
    assert plain["properties"] == {}, plain
    body = base64.b64decode(plain["body"]) if plain["bodyEncoding"] == "base64" else plain["body"].encode()
    assert body == b"plain", plain
    call(client.disconnect)
    assert not client.connected


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_telemetry_with_device_policy_token(hub, devices, websockets):
    device = devices.create()
    client = devices.client_from_token(_policy_token(hub, device.device_id), websockets=websockets)
    call(client.connect)
    assert client.connected
    message = _telemetry(device.device_id)
    call(client.send_message, message)
    event = hub.find_event(device.device_id, message.message_id)
    # A token signed with a shared access policy's key has hub scope.
    _assert_event_matches(event, device, message, scope="hub")
    call(client.disconnect)


def test_policy_token_for_unknown_device_is_refused(hub, devices):
    """A valid device-policy signature does not let an unregistered device id in (CONNACK 5)."""
    token = _policy_token(hub, "pydev-unknown-%s" % uuid.uuid4())
    client = devices.client_from_token(token)
    with pytest.raises(device_errors.CredentialError):
        call(client.connect)


# --- authentication and live revocation ---------------------------------------------------------


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_disabled_device_cannot_connect(devices, websockets):
    device = devices.create(status="disabled")
    client = devices.client(device, websockets=websockets)
    with pytest.raises(device_errors.CredentialError):
        call(client.connect)
    assert not client.connected


def test_wrong_key_cannot_connect(devices):
    device = devices.create()
    client = devices.client(device, key=base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(device_errors.CredentialError):
        call(client.connect)


def _watch_connection(client):
    changes = []
    lock = threading.Lock()

    def on_change():
        with lock:
            changes.append((time.monotonic(), client.connected))

    client.on_connection_state_change = on_change
    return changes


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_key_regeneration_closes_live_connection(registry, devices, websockets):
    device = devices.create()
    old_key = device.authentication.symmetric_key.primary_key
    client = devices.client(device, websockets=websockets)
    changes = _watch_connection(client)
    call(client.connect)
    assert client.connected

    # PUT /devices/{id} with empty keys and If-Match: "*" (etag None): the hub generates new keys.
    started = time.monotonic()
    updated = registry.update_device_with_sas(device.device_id, None, "", "", "enabled")
    new_key = updated.authentication.symmetric_key.primary_key
    assert new_key and new_key != old_key

    assert wait_until(lambda: not client.connected, timeout=5), "connection still up 5 s after key regeneration"
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, "connection closed %.2f s after key regeneration (want < 1 s plus slack)" % elapsed
    assert wait_until(lambda: any(not connected for _, connected in changes), timeout=2), changes

    # The old key no longer connects; the new one does. On a cluster, a node the change has not
    # reached yet (milliseconds) still takes the old key, and closes that connection when it
    # hears of the change (docs/deploy.md): the old key is refused once every node knows.
    if IN_CLUSTER:
        def refused():
            stale = devices.client(device, websockets=websockets, key=old_key)
            try:
                call(stale.connect)
            except device_errors.CredentialError:
                return True
            call(stale.disconnect)
            return False

        assert wait_until(refused, timeout=5), "the old key still connects 5 s after key regeneration"
    else:
        stale = devices.client(device, websockets=websockets, key=old_key)
        with pytest.raises(device_errors.CredentialError):
            call(stale.connect)
    fresh = devices.client(device, websockets=websockets, key=new_key)
    call(fresh.connect)
    assert fresh.connected


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_disabling_closes_live_connection(registry, devices, websockets):
    device = devices.create()
    client = devices.client(device, websockets=websockets)
    call(client.connect)
    assert client.connected
    keys = device.authentication.symmetric_key
    started = time.monotonic()
    registry.update_device_with_sas(device.device_id, None, keys.primary_key, keys.secondary_key, "disabled")
    assert wait_until(lambda: not client.connected, timeout=5), "connection still up 5 s after disabling"
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, "connection closed %.2f s after disabling" % elapsed
    with pytest.raises(device_errors.CredentialError):
        call(client.connect)


# --- cloud-to-device ----------------------------------------------------------------------------


def _expiry_in(seconds):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


C2D_PROPERTIES = {"color": "blue", "with-dash": "a b&c=d/e", "n": "42"}


def _c2d_fields(device_id):
    return dict(
        message_id="c2d-%s" % uuid.uuid4(),
        correlation_id="corr-%s" % uuid.uuid4(),
        content_type="text/plain",
        content_encoding="utf-8",
        ack="full",
        expiry=_expiry_in(600),
        properties=C2D_PROPERTIES,
    )


def _assert_c2d(message, body, fields):
    assert message.data == body.encode()
    assert message.message_id == fields["message_id"]
    assert message.correlation_id == fields["correlation_id"]
    assert message.content_type == fields["content_type"]
    assert message.content_encoding == fields["content_encoding"]
    assert message.ack == fields["ack"]
    assert message.custom_properties == fields["properties"], message.custom_properties
    # $.exp is passed through as text; the SDK does not parse it. Compare to the second.
    assert message.expiry_time_utc, "no $.exp on the C2D topic"
    assert _parse_time(message.expiry_time_utc) == _parse_time(fields["expiry"]), message.expiry_time_utc


def _parse_iso(text):
    """An ISO 8601 UTC time (as _expiry_in writes it) as an aware datetime."""
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def _parse_time(text):
    """Parses an ISO 8601 UTC time with any number of fraction digits, to whole seconds."""
    base = text.rstrip("Z").split(".")[0]
    return datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_c2d_while_connected_and_success_feedback(hub, devices, feedback, websockets):
    device = devices.create()
    client = devices.client(device, websockets=websockets)
    inbox = Inbox()
    call(client.connect)
    client.on_message_received = inbox  # SUBSCRIBE devices/{id}/messages/devicebound/#
    fields = _c2d_fields(device.device_id)
    hub.send_c2d_ok(device.device_id, "hello device", **fields)
    _assert_c2d(inbox.get(), "hello device", fields)

    # Completed by the PUBACK: ack=full gives a Success record.
    record = feedback.wait_for(device.device_id, fields["message_id"])
    assert record["statusCode"] == "Success", record
    assert record["deviceGenerationId"] == device.generation_id, record
    assert record["enqueuedTimeUtc"], record
    # Nothing is left in the queue.
    assert hub.purge(device.device_id)["totalMessagesPurged"] == 0
    inbox.empty_for(1)


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_c2d_sent_while_offline_arrives_on_reconnect(hub, devices, websockets):
    device = devices.create()
    client = devices.client(device, websockets=websockets)
    inbox = Inbox()
    call(client.connect)
    client.on_message_received = inbox
    # A first message proves the subscription is in place before going offline.
    first = _c2d_fields(device.device_id)
    hub.send_c2d_ok(device.device_id, "first", **first)
    _assert_c2d(inbox.get(), "first", first)

    call(client.disconnect)
    assert not client.connected
    second = _c2d_fields(device.device_id)
    hub.send_c2d_ok(device.device_id, "while offline", **second)

    # The SDK reconnects with CleanSession=0 and does not subscribe again.
    call(client.connect)
    _assert_c2d(inbox.get(), "while offline", second)
    inbox.empty_for(1)


def test_c2d_queued_before_first_subscribe(hub, devices):
    """Messages queued before the device ever connected arrive once it subscribes."""
    device = devices.create()
    fields = _c2d_fields(device.device_id)
    hub.send_c2d_ok(device.device_id, "queued early", **fields)
    client = devices.client(device)
    inbox = Inbox()
    call(client.connect)
    client.on_message_received = inbox
    _assert_c2d(inbox.get(), "queued early", fields)


def test_purged_message_gives_purged_feedback(hub, devices, feedback):
    device = devices.create()
    fields = _c2d_fields(device.device_id)
    hub.send_c2d_ok(device.device_id, "never delivered", **fields)
    result = hub.purge(device.device_id)
    assert result["totalMessagesPurged"] == 1, result
    assert result.get("deviceId") == device.device_id, result
    record = feedback.wait_for(device.device_id, fields["message_id"])
    assert record["statusCode"] == "Purged", record


def test_queue_full_answers_403004(hub, devices):
    device = devices.create()
    for i in range(50):
        hub.send_c2d_ok(device.device_id, "m%d" % i, message_id="q-%d" % i)
    # The HTTPS send's own error shape (no SDK sends C2D over HTTPS; test_amqp_c2d.py covers the
    # SDK's error).
    resp = hub.send_c2d_rest(device.device_id, "one too many", message_id="q-50")
    assert resp.status_code == 403, (resp.status_code, resp.text)
    assert resp.headers.get("iothub-errorcode") == "DeviceMaximumQueueDepthExceeded", dict(resp.headers)
    body = resp.json()
    assert body["Message"].startswith("ErrorCode:DeviceMaximumQueueDepthExceeded;"), body
    assert hub.purge(device.device_id)["totalMessagesPurged"] == 50
    hub.send_c2d_ok(device.device_id, "room again", message_id="q-51")

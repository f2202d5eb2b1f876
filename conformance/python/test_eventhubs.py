"""The Event Hub-compatible endpoint read with Microsoft's azure-eventhub 5.15.1
(EventHubConsumerClient) against a running ferrohub, as an Azure IoT back end reads its hub's
built-in endpoint, with telemetry sent by azure-iot-device 2.14.0 over MQTT; the checkpoint
store is azure-eventhub-checkpointstoreblob 1.2.0 on Azurite.

Environment: as test_device.py (set by conformance/run), plus AZURITE_BLOB_PORT. The AMQP port
is read from FERROHUB_DATA_DIR/listeners.json (key "amqp"): the hub runs with --amqp-port 0.

How the SDK is pointed at the hub (read in .venv/lib/python3.11/site-packages/azure/eventhub):
  * The connection string is the one `ferrohub eventhub connection-string` prints:
    Endpoint=sb://localhost/;SharedAccessKeyName=service;SharedAccessKey=<key>;EntityPath=localhost.
  * With TLS the SDK ignores a port in Endpoint (it dials 5671, or 443 for WebSockets), so the
    port goes in custom_endpoint_address="sb://localhost:<port>" together with
    transport_type=TransportType.Amqp: without it, a custom endpoint switches to AMQP over
    WebSockets (_configuration.py).
  * connection_verify=<the hub's CA file>.
  * receive() and receive_batch() block until close(): they run on a thread of their own here.
  * system_properties has bytes keys; x-opt-offset arrives as bytes, and event.offset decodes it.
"""

import datetime
import json
import os
import queue
import threading
import time
import uuid

import pytest

from azure.eventhub import EventHubConsumerClient, TransportType
from azure.eventhub.exceptions import AuthenticationError, ConnectionLostError, EventHubError
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.iot.device import Message

from test_device import (  # noqa: F401 - fixtures are used by name
    CUSTOM_PROPERTIES,
    ca_pem,
    call,
    devices,
    hub,
    redirect_ports,
    registry,
    wait_until,
)

# How long to wait for events the hub should deliver.
WAIT = 30
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning")


# --- the endpoint ---------------------------------------------------------------------------------


class Endpoint:
    """The hub's Event Hub-compatible endpoint and consumer clients for it."""

    def __init__(self, hub):
        self.hub = hub
        with open(os.path.join(hub.data_dir, "listeners.json")) as f:
            listeners = json.load(f)
        self.amqp_port = int(listeners["amqp"].rsplit(":", 1)[1])
        self.name = hub.host.split(".")[0]
        self.clients = []

    def connection_string(self, policy="service", key=None):
        key = key or self.hub.policy_key(policy)
        return "Endpoint=sb://%s/;SharedAccessKeyName=%s;SharedAccessKey=%s;EntityPath=%s" % (
            self.hub.host, policy, key, self.name)

    def client(self, consumer_group="$Default", websockets=False, policy="service", key=None, **kwargs):
        if websockets:
            extra = dict(transport_type=TransportType.AmqpOverWebsocket,
                         custom_endpoint_address="sb://%s:%d" % (self.hub.host, self.hub.port))
        else:
            extra = dict(transport_type=TransportType.Amqp,
                         custom_endpoint_address="sb://%s:%d" % (self.hub.host, self.amqp_port))
        client = EventHubConsumerClient.from_connection_string(
            self.connection_string(policy, key),
            consumer_group=consumer_group,
            connection_verify=self.hub.ca,
            retry_total=0,
            **extra,
            **kwargs,
        )
        self.clients.append(client)
        return client

    def close(self):
        for client in self.clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass


@pytest.fixture
def eh(hub):
    e = Endpoint(hub)
    yield e
    e.close()


class Receiving:
    """Runs client.receive (or receive_batch) on a thread and collects what arrives."""

    def __init__(self, client, batch=False, **kwargs):
        self.client = client
        self.events = queue.Queue()
        self.errors = queue.Queue()
        self.contexts = {}
        self.initialized = set()
        self.lock = threading.Lock()
        if batch:
            kwargs.setdefault("max_wait_time", 1)
            target = lambda: client.receive_batch(on_event_batch=self._on_batch, on_error=self._on_error,  # noqa: E731
                                                  on_partition_initialize=self._on_init, **kwargs)
        else:
            target = lambda: client.receive(on_event=self._on_event, on_error=self._on_error,  # noqa: E731
                                            on_partition_initialize=self._on_init, **kwargs)
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.failure = None
        self.thread.start()

    def _run(self, target):
        try:
            target()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.failure = e

    def _on_init(self, context):
        with self.lock:
            self.initialized.add(context.partition_id)

    def _on_event(self, context, event):
        if event is not None:
            with self.lock:
                self.contexts[context.partition_id] = context
            self.events.put((context.partition_id, event))

    def _on_batch(self, context, events):
        with self.lock:
            self.contexts[context.partition_id] = context
        for event in events:
            self.events.put((context.partition_id, event))

    def _on_error(self, context, error):
        self.errors.put((context.partition_id if context else None, error))

    def collect(self, predicate, count, timeout=WAIT):
        """Waits for `count` events that `predicate` accepts and returns them (with their
        partition) in arrival order."""
        found = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%d of %d events within %s s; errors: %r" % (
                    len(found), count, timeout, list(self.errors.queue)))
            try:
                partition, event = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if predicate(event):
                found.append((partition, event))
        return found

    def none_for(self, predicate, seconds):
        """Asserts that no event `predicate` accepts arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                _, event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            assert not predicate(event), "unexpected event %r" % event

    def error(self, timeout=WAIT):
        try:
            return self.errors.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no error reported within %s s" % timeout) from None

    def stop(self):
        self.client.close()
        self.thread.join(timeout=WAIT)
        assert not self.thread.is_alive(), "receive did not return after close()"


def _ends(client):
    """Where each partition ends now: starting positions (exclusive) that skip everything
    already in the log. The SDK's sync EventProcessor polls its partitions in turn, each poll
    of an idle partition waiting out the socket timeout (0.2 s, 1 s over WebSockets), so reading
    every partition from its start would cost that much per event of a long log."""
    ends = {}
    for p in client.get_partition_ids():
        last = client.get_partition_properties(p)["last_enqueued_sequence_number"]
        ends[p] = last if last >= 0 else "-1"
    return ends


def _from(device_id):
    return lambda e: e.system_properties.get(b"iothub-connection-device-id") == device_id.encode()


def _tagged(device_id, tag):
    return lambda e: _from(device_id)(e) and e.properties.get(b"tag") == tag.encode()


def _telemetry(device_id, tag, i=0):
    message = Message(
        '{"temperature": %d.5, "device": "%s"}' % (20 + i, device_id),
        message_id="mid-%s" % uuid.uuid4(),
        content_encoding="utf-8",
        content_type="application/json",
    )
    message.correlation_id = "cid-%s" % uuid.uuid4()
    message.custom_properties.update(CUSTOM_PROPERTIES)
    message.custom_properties["tag"] = tag
    return message


def _sender(devices):
    device = devices.create()
    client = devices.client(device)
    call(client.connect)
    return device, client


def _send(client, device_id, tag, count=1, start=0):
    sent = []
    for i in range(start, start + count):
        m = _telemetry(device_id, tag, i)
        call(client.send_message, m)  # returns on PUBACK: the event is durable
        sent.append(m)
    return sent


def _assert_event(event, device, message):
    """Every property an Azure IoT back end reads from an event of the built-in endpoint."""
    system = event.system_properties
    assert event.body_as_str() == message.data
    assert next(event.body) == message.data.encode()
    # Message properties, as the device set them.
    assert event.message_id == message.message_id
    assert event.correlation_id == message.correlation_id
    assert event.content_type == "application/json"
    assert system[b"content-encoding"] == b"utf-8", system
    # User properties (application properties), names and values as sent (bytes, as pyamqp gives them).
    expected = {k.encode(): v.encode() for k, v in message.custom_properties.items()}
    assert event.properties == expected, event.properties
    # Event Hubs annotations.
    assert isinstance(event.sequence_number, int) and event.sequence_number >= 0
    assert isinstance(event.offset, str) and event.offset, system
    assert isinstance(system[b"x-opt-offset"], bytes), system
    assert isinstance(event.enqueued_time, datetime.datetime)
    assert event.enqueued_time.tzinfo is not None
    assert abs(event.enqueued_time - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=5)
    assert event.partition_key is None
    # IoT Hub annotations.
    assert system[b"iothub-connection-device-id"] == device.device_id.encode()
    assert system[b"iothub-connection-auth-generation-id"] == device.generation_id.encode(), system
    auth = json.loads(system[b"iothub-connection-auth-method"])
    assert (auth["scope"], auth["type"], auth["issuer"]) == ("device", "sas", "iothub"), auth
    assert system[b"iothub-message-source"] == b"Telemetry", system
    enqueued = system[b"iothub-enqueuedtime"]
    assert isinstance(enqueued, int), system
    assert abs(enqueued - int(event.enqueued_time.timestamp() * 1000)) < 1000, system


# --- management -----------------------------------------------------------------------------------


def test_eventhub_and_partition_properties(eh, devices):
    client = eh.client()
    props = client.get_eventhub_properties()
    assert props["eventhub_name"] == eh.name
    assert isinstance(props["created_at"], datetime.datetime)
    ids = props["partition_ids"]
    assert ids and all(isinstance(p, str) for p in ids), ids
    assert ids == [str(i) for i in range(len(ids))]
    assert client.get_partition_ids() == ids

    device, sender = _sender(devices)
    tag = uuid.uuid4().hex
    ends = _ends(client)
    _send(sender, device.device_id, tag)
    r = Receiving(eh.client(), starting_position=ends)
    [(partition, event)] = r.collect(_tagged(device.device_id, tag), 1)
    r.stop()

    for p in ids:
        pp = client.get_partition_properties(p)
        assert pp["eventhub_name"] == eh.name
        assert pp["id"] == p
        assert isinstance(pp["beginning_sequence_number"], int)
        assert isinstance(pp["last_enqueued_sequence_number"], int)
        assert isinstance(pp["last_enqueued_offset"], str)
        assert isinstance(pp["last_enqueued_time_utc"], datetime.datetime)
        assert isinstance(pp["is_empty"], bool)
        if p == partition:
            assert pp["is_empty"] is False
            assert pp["last_enqueued_sequence_number"] >= event.sequence_number
            assert pp["beginning_sequence_number"] <= event.sequence_number
            assert pp["last_enqueued_time_utc"] >= event.enqueued_time
    with pytest.raises(EventHubError):
        client.get_partition_properties(str(len(ids)))


# --- receiving ------------------------------------------------------------------------------------


@pytest.mark.parametrize("websockets", [pytest.param(False, id="amqp"), pytest.param(True, id="websockets")])
def test_receive_from_start_sees_every_property(eh, devices, websockets):
    device, sender = _sender(devices)
    tag = uuid.uuid4().hex
    ends = _ends(eh.client())
    sent = _send(sender, device.device_id, tag, count=3)
    r = Receiving(eh.client(websockets=websockets), starting_position=ends)
    got = r.collect(_tagged(device.device_id, tag), 3)
    r.stop()
    # One device's events stay in one partition, in order, with consecutive sequence numbers.
    assert len({p for p, _ in got}) == 1
    seqs = [e.sequence_number for _, e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    for (_, event), message in zip(got, sent):
        _assert_event(event, device, message)
    # The same events, read from the start of their partition.
    r = Receiving(eh.client(websockets=websockets), partition_id=got[0][0], starting_position="-1")
    again = r.collect(_tagged(device.device_id, tag), 3)
    r.stop()
    assert [e.sequence_number for _, e in again] == seqs
    for (_, event), message in zip(again, sent):
        _assert_event(event, device, message)


def test_receive_batch_from_a_sequence_number_and_an_enqueued_time(eh, devices):
    device, sender = _sender(devices)
    tag = uuid.uuid4().hex
    ends = _ends(eh.client())
    sent = _send(sender, device.device_id, tag, count=5)
    r = Receiving(eh.client(), batch=True, starting_position=ends)
    got = r.collect(_tagged(device.device_id, tag), 5)
    r.stop()
    partition = got[0][0]
    events = [e for _, e in got]
    assert [e.message_id for e in events] == [m.message_id for m in sent]

    # From a sequence number: exclusive by default, inclusive when asked.
    third = events[2]
    r = Receiving(eh.client(), batch=True, partition_id=partition, starting_position=third.sequence_number)
    after = r.collect(_tagged(device.device_id, tag), 2)
    r.stop()
    assert [e.message_id for _, e in after] == [m.message_id for m in sent[3:]]
    r = Receiving(eh.client(), batch=True, partition_id=partition,
                  starting_position=third.sequence_number, starting_position_inclusive=True)
    first = r.collect(lambda e: True, 1)
    r.stop()
    assert first[0][1].message_id == sent[2].message_id

    # From an enqueued time: the events enqueued after it.
    r = Receiving(eh.client(), batch=True, partition_id=partition,
                  starting_position=events[1].enqueued_time)
    first = r.collect(lambda e: True, 1)
    r.stop()
    assert first[0][1].enqueued_time > events[1].enqueued_time
    assert first[0][1].sequence_number > events[1].sequence_number
    # From an offset (what receive() resumes from), inclusive.
    r = Receiving(eh.client(), partition_id=partition, starting_position=events[3].offset,
                  starting_position_inclusive=True)
    first = r.collect(lambda e: True, 1)
    r.stop()
    assert first[0][1].message_id == sent[3].message_id


def test_latest_sees_only_new_telemetry_while_the_device_sends(eh, devices):
    device, sender = _sender(devices)
    tag = uuid.uuid4().hex
    _send(sender, device.device_id, tag + "-before")
    ids = eh.client().get_partition_ids()
    r = Receiving(eh.client(), starting_position="@latest")
    assert wait_until(lambda: r.initialized == set(ids), timeout=WAIT), r.initialized
    # The receivers attach after on_partition_initialize: send until the first new event shows.
    sent = []
    deadline = time.monotonic() + WAIT
    got = []
    while not got and time.monotonic() < deadline:
        sent += _send(sender, device.device_id, tag, start=len(sent))
        try:
            got = r.collect(_from(device.device_id), 1, timeout=1)
        except AssertionError:
            pass
    assert got, "no live event within %s s" % WAIT
    first = got[0][1]
    assert first.properties[b"tag"] == tag.encode(), "an event sent before the receiver started arrived"
    # Everything after the first live event arrives, in order.
    more = _send(sender, device.device_id, tag, count=3, start=len(sent))
    sent += more
    rest = r.collect(_from(device.device_id), len(sent) - sent.index(
        next(m for m in sent if m.message_id == first.message_id)) - 1)
    r.stop()
    ids_seen = [first.message_id] + [e.message_id for _, e in rest]
    assert ids_seen[-3:] == [m.message_id for m in more]
    assert b"before" not in b"".join(e.properties[b"tag"] for _, e in rest)


def test_last_enqueued_event_properties_are_tracked(eh, devices):
    device, sender = _sender(devices)
    tag = uuid.uuid4().hex
    ends = _ends(eh.client())
    _send(sender, device.device_id, tag, count=2)
    r = Receiving(eh.client(), starting_position=ends, track_last_enqueued_event_properties=True)
    got = r.collect(_tagged(device.device_id, tag), 2)
    partition = got[0][0]
    last = r.contexts[partition].last_enqueued_event_properties
    r.stop()
    assert set(last) == {"sequence_number", "offset", "enqueued_time", "retrieval_time"}, last
    assert last["sequence_number"] >= got[-1][1].sequence_number
    assert isinstance(last["offset"], str)
    assert last["enqueued_time"] >= got[-1][1].enqueued_time
    assert isinstance(last["retrieval_time"], datetime.datetime)


def test_consumer_groups_are_the_hubs(eh, hub, devices):
    device, sender = _sender(devices)
    tag = uuid.uuid4().hex
    ends = _ends(eh.client())
    _send(sender, device.device_id, tag)
    # $Default is matched without regard to case (JS writes $default).
    r = Receiving(eh.client(consumer_group="$default"), starting_position=ends)
    r.collect(_tagged(device.device_id, tag), 1)
    r.stop()
    # A group created through the REST API.
    name = "cg%s" % uuid.uuid4().hex[:8]
    resp = hub.request("PUT", "/messages/events/consumergroups/%s" % name)
    assert resp.status_code in (200, 201), resp.text
    r = Receiving(eh.client(consumer_group=name.upper()), starting_position=ends)
    r.collect(_tagged(device.device_id, tag), 1)
    r.stop()


# --- refusals -------------------------------------------------------------------------------------


def test_a_consumer_group_that_does_not_exist_is_not_found(eh):
    client = eh.client(consumer_group="no-such-group")
    r = Receiving(client, partition_id="0", starting_position="-1")
    _, error = r.error()
    r.stop()
    # The SDK raises ConnectionLostError for every amqp:* link condition (ConnectError only for
    # com.microsoft:* ones), as against Azure.
    assert isinstance(error, ConnectionLostError), repr(error)
    assert "Error condition: amqp:not-found" in str(error), str(error)
    assert "no-such-group" in str(error), str(error)


def test_a_wrong_key_is_refused(eh):
    wrong = eh.client(key="d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dyb25nd3I=")
    with pytest.raises(AuthenticationError):
        wrong.get_partition_ids()
    r = Receiving(eh.client(key="d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dyb25nd3I="), partition_id="0",
                  starting_position="-1")
    _, error = r.error()
    r.stop()
    assert isinstance(error, AuthenticationError), repr(error)


def test_a_policy_without_service_connect_is_refused(eh):
    client = eh.client(policy="registryRead")
    with pytest.raises(AuthenticationError):
        client.get_partition_ids()


# On a cluster the receivers may land on different nodes: the owner level holds across them.
def test_an_epoch_receiver_displaces_another(eh, devices):
    device, sender = _sender(devices)
    tag = uuid.uuid4().hex
    ends = _ends(eh.client())
    _send(sender, device.device_id, tag)
    r = Receiving(eh.client(), starting_position=ends)
    [(partition, _)] = r.collect(_tagged(device.device_id, tag), 1)
    r.stop()

    first = Receiving(eh.client(), partition_id=partition, starting_position="-1", owner_level=1)
    first.collect(_tagged(device.device_id, tag), 1)
    second = Receiving(eh.client(), partition_id=partition, starting_position="-1", owner_level=2)
    second.collect(_tagged(device.device_id, tag), 1)
    _, error = first.error()
    assert "epoch" in str(error).lower(), str(error)
    # A lower epoch than the owner's is refused, and so is a receiver without one.
    lower = Receiving(eh.client(), partition_id=partition, starting_position="-1", owner_level=1)
    _, error = lower.error()
    assert "epoch" in str(error).lower(), str(error)
    plain = Receiving(eh.client(), partition_id=partition, starting_position="-1")
    _, error = plain.error()
    assert "epoch" in str(error).lower(), str(error)
    # The owner keeps reading.
    _send(sender, device.device_id, tag + "-2")
    second.collect(_tagged(device.device_id, tag + "-2"), 1)
    for r in (first, lower, plain, second):
        r.stop()


# --- checkpoints ----------------------------------------------------------------------------------


def _checkpoint_store():
    port = os.environ.get("AZURITE_BLOB_PORT")
    if not port:
        pytest.fail("AZURITE_BLOB_PORT is not set (run the suite through conformance/run)")
    conn = ("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://127.0.0.1:%s/%s;"
            % (AZURITE_ACCOUNT, AZURITE_KEY, port, AZURITE_ACCOUNT))
    container = "checkpoints-%s" % uuid.uuid4().hex[:12]
    from azure.storage.blob import BlobServiceClient

    BlobServiceClient.from_connection_string(conn).create_container(container)
    return BlobCheckpointStore.from_connection_string(conn, container)


class Checkpointing(Receiving):
    """A consumer that checkpoints after every event it handles."""

    def _on_event(self, context, event):
        super()._on_event(context, event)
        if event is not None:
            context.update_checkpoint(event)


def test_a_checkpointing_consumer_resumes_where_it_stopped(eh, devices):
    device, sender = _sender(devices)
    tag = uuid.uuid4().hex
    store = _checkpoint_store()
    ends = _ends(eh.client())
    first_batch = _send(sender, device.device_id, tag, count=3)

    consumer = Checkpointing(eh.client(checkpoint_store=store, load_balancing_interval=1), starting_position=ends)
    got = consumer.collect(_tagged(device.device_id, tag), 3)
    consumer.stop()
    assert [e.message_id for _, e in got] == [m.message_id for m in first_batch]
    partition = got[0][0]
    checkpoints = [c for c in store.list_checkpoints(eh.hub.host, eh.name, "$Default")
                   if c["partition_id"] == partition]
    assert checkpoints and checkpoints[0]["sequence_number"] >= got[-1][1].sequence_number, checkpoints

    # While it is stopped, the device sends more; the restarted consumer starts after its
    # checkpoint: nothing of the first batch again, nothing of the second skipped.
    second_batch = _send(sender, device.device_id, tag, count=4, start=3)
    consumer = Checkpointing(eh.client(checkpoint_store=store, load_balancing_interval=1), starting_position=ends)
    again = consumer.collect(_tagged(device.device_id, tag), 4)
    consumer.none_for(_tagged(device.device_id, tag), 1)
    consumer.stop()
    assert [e.message_id for _, e in again] == [m.message_id for m in second_batch]
    assert again[0][1].sequence_number > got[-1][1].sequence_number

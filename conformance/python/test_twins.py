"""Twin, direct method and module scenarios run with Microsoft's azure-iot-device 2.14.0
(IoTHubDeviceClient, its asyncio twin, IoTHubModuleClient) and azure-iot-hub 2.7.0
(IoTHubRegistryManager) against a running ferrohub (twins-methods-contract.md).

The hub endpoints, port redirection, device creation and the call() deadline come from
test_device.py; its fixtures are imported here.

SDK facts these tests rely on (read in .venv/lib/python3.11/site-packages/azure/iot):
  * get_twin() and patch_twin_reported_properties() subscribe $iothub/twin/res/# (QoS 1) on first
    use and wait forever for the response: every call goes through call().
  * Setting on_twin_desired_properties_patch_received or on_method_request_received while
    connected subscribes and waits for the SUBACK before the setter returns.
  * With ensure_desired_properties (the default), the SDK sends a twin GET after every reconnect
    and, when desired.$version differs from the last patch it delivered, hands the whole desired
    section (with $version) to the handler as one patch.
  * The service SDK's update_twin/replace_twin send If-Match "<etag>" (quoted) or "*", and accept
    200 only; invoke_device_method accepts 200 only and raises HttpOperationError otherwise
    (404103, 504101), never retrying a POST. CloudToDeviceMethod without a payload sends "".
"""

import asyncio
import json
import queue
import threading
import uuid

import pytest
from msrest.exceptions import HttpOperationError

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse
from azure.iot.device.aio import IoTHubDeviceClient as AioDeviceClient
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

from test_device import (  # noqa: F401 - fixtures are used by name
    CALL_TIMEOUT,
    TRANSPORTS,
    WAIT,
    call,
    ca_pem,
    devices,
    hub,
    redirect_ports,
    registry,
)

pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning")


class Patches:
    """on_twin_desired_properties_patch_received handler that queues what arrives."""

    def __init__(self):
        self.items = queue.Queue()

    def __call__(self, patch):
        self.items.put(patch)

    def get(self, timeout=WAIT):
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no desired patch within %s s" % timeout) from None


def _desired(twin):
    """A service-side twin's desired members, without $metadata and $version."""
    return {k: v for k, v in twin.properties.desired.items() if not k.startswith("$")}


def _assert_method_error(excinfo, status, code):
    """invoke_device_method raised HttpOperationError with the real hub's JSON-in-Message body."""
    response = excinfo.value.response
    assert response.status_code == status, (response.status_code, response.text)
    body = json.loads(response.text)
    inner = json.loads(body["Message"])
    assert inner["errorCode"] == code, inner
    assert body["ExceptionMessage"] == "", body
    return inner


def _answer_methods(client, answers):
    """A method handler answering each request with answers(request) -> (status, payload)."""

    def handler(request):
        status, payload = answers(request)
        client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))

    return handler


@pytest.mark.parametrize("websockets", TRANSPORTS)
def test_device_twin_get_patch_and_desired_notifications(registry, devices, websockets):
    device = devices.create()
    device_id = device.device_id
    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"fw": "1.0"})))
    client = devices.client(device, websockets=websockets)
    call(client.connect)

    twin = call(client.get_twin)
    assert twin == {"desired": {"fw": "1.0", "$version": 2}, "reported": {"$version": 1}}, twin

    call(client.patch_twin_reported_properties, {"a": 1, "b": None, "nested": {"x": [1, 2]}})
    service_twin = registry.get_twin(device_id)
    assert service_twin.properties.reported["a"] == 1
    assert service_twin.properties.reported["nested"] == {"x": [1, 2]}
    assert service_twin.properties.reported["$version"] == 2
    assert service_twin.connection_state == "Connected"
    assert service_twin.tags == {}

    patches = Patches()
    client.on_twin_desired_properties_patch_received = patches  # SUBSCRIBE …/desired/#
    updated = registry.update_twin(
        device_id,
        Twin(tags={"site": "b7"}, properties=TwinProperties(desired={"fw": "2.0", "old": None})),
        service_twin.etag,
    )
    assert _desired(updated) == {"fw": "2.0"}
    assert patches.get() == {"fw": "2.0", "old": None, "$version": 3}

    # A stale ETag is 412 PreconditionFailed; nothing changes, nothing is sent.
    with pytest.raises(HttpOperationError) as excinfo:
        registry.update_twin(device_id, Twin(tags={"x": 1}), service_twin.etag)
    response = excinfo.value.response
    assert response.status_code == 412, response.text
    assert response.headers.get("iothub-errorcode") == "PreconditionFailed"
    assert json.loads(response.text)["Message"].startswith("ErrorCode:PreconditionFailed;")

    # replace_twin: the device gets the diff (new values, null for what went away).
    replaced = registry.replace_twin(
        device_id, Twin(tags={"only": True}, properties=TwinProperties(desired={"rate": 5})), updated.etag
    )
    assert replaced.tags == {"only": True}
    assert _desired(replaced) == {"rate": 5}
    assert patches.get() == {"fw": None, "rate": 5, "$version": 4}

    # Offline changes: after the reconnect the SDK GETs the twin and delivers the whole
    # desired section (the hub keeps the session's subscriptions; the SDK never re-subscribes).
    call(client.disconnect)
    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"rate": 6, "mode": "eco"})))
    call(client.connect)
    assert patches.get() == {"rate": 6, "mode": "eco", "$version": 5}
    # And notifications keep coming on the restored subscription.
    registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"mode": None})))
    assert patches.get() == {"mode": None, "$version": 6}
    twin = call(client.get_twin)
    assert twin["desired"] == {"rate": 6, "$version": 6}, twin
    assert twin["reported"]["$version"] == 2, twin


def test_reported_patch_errors_reach_the_device(devices):
    device = devices.create()
    client = devices.client(device)
    call(client.connect)
    # A `$` name is refused by the hub: 400 with {"errorCode": 400004, ...}; the SDK raises.
    with pytest.raises(Exception) as excinfo:
        call(client.patch_twin_reported_properties, {"$version": 4})
    assert "400" in repr(excinfo.value.__cause__) or "400" in str(excinfo.value), repr(excinfo.value)
    # The twin is unchanged and the client still works.
    twin = call(client.get_twin)
    assert twin["reported"] == {"$version": 1}, twin


def test_device_methods_answered_offline_and_silent(registry, devices):
    device = devices.create()
    device_id = device.device_id

    # Not connected: 404103 at once (connect timeout 0).
    with pytest.raises(HttpOperationError) as excinfo:
        registry.invoke_device_method(device_id, CloudToDeviceMethod(method_name="reboot"))
    inner = _assert_method_error(excinfo, 404, 404103)
    assert inner["info"]["timeout"] == "00:00:00", inner

    client = devices.client(device)
    call(client.connect)
    seen = []

    def answers(request):
        seen.append((request.name, request.payload))
        if request.name == "silent":
            return None
        return 201, {"echo": request.payload, "name": request.name}

    def handler(request):
        answer = answers(request)
        if answer is not None:
            client.send_method_response(MethodResponse.create_from_method_request(request, *answer))

    client.on_method_request_received = handler  # SUBSCRIBE $iothub/methods/POST/#
    result = registry.invoke_device_method(
        device_id,
        CloudToDeviceMethod(
            method_name="reboot", payload={"delay": 5}, response_timeout_in_seconds=30, connect_timeout_in_seconds=0
        ),
    )
    assert result.status == 201
    assert result.payload == {"echo": {"delay": 5}, "name": "reboot"}

    # No payload: Python sends "" and the device gets it as a JSON string.
    result = registry.invoke_device_method(device_id, CloudToDeviceMethod(method_name="ping"))
    assert result.status == 201
    assert result.payload == {"echo": "", "name": "ping"}

    # A device that never answers: 504101 after the 5-second minimum.
    with pytest.raises(HttpOperationError) as excinfo:
        registry.invoke_device_method(
            device_id, CloudToDeviceMethod(method_name="silent", response_timeout_in_seconds=5)
        )
    inner = _assert_method_error(excinfo, 504, 504101)
    assert inner["message"] == "Timed out waiting for the response from device.", inner
    assert [name for name, _ in seen] == ["reboot", "ping", "silent"]


def test_asyncio_device_client_twin_and_methods(registry, devices, ca_pem):
    device = devices.create()
    device_id = device.device_id

    async def scenario():
        loop = asyncio.get_running_loop()
        client = AioDeviceClient.create_from_connection_string(
            devices.connection_string(device), server_verification_cert=ca_pem, connection_retry=False
        )
        try:
            await asyncio.wait_for(client.connect(), CALL_TIMEOUT)
            twin = await asyncio.wait_for(client.get_twin(), CALL_TIMEOUT)
            assert twin == {"desired": {"$version": 1}, "reported": {"$version": 1}}, twin
            await asyncio.wait_for(client.patch_twin_reported_properties({"aio": True}), CALL_TIMEOUT)

            patches = asyncio.Queue()

            async def on_patch(patch):
                await patches.put(patch)

            async def on_method(request):
                response = MethodResponse.create_from_method_request(request, 200, {"got": request.payload})
                await client.send_method_response(response)

            client.on_twin_desired_properties_patch_received = on_patch
            client.on_method_request_received = on_method
            # The service SDK is blocking: run it off the event loop the handlers need.
            await loop.run_in_executor(
                None,
                lambda: registry.update_twin(device_id, Twin(properties=TwinProperties(desired={"x": 1}))),
            )
            patch = await asyncio.wait_for(patches.get(), WAIT)
            assert patch == {"x": 1, "$version": 2}, patch
            result = await loop.run_in_executor(
                None,
                lambda: registry.invoke_device_method(device_id, CloudToDeviceMethod(method_name="m", payload=[1, 2])),
            )
            assert (result.status, result.payload) == (200, {"got": [1, 2]})
        finally:
            await asyncio.wait_for(client.shutdown(), CALL_TIMEOUT)

    asyncio.run(scenario())
    assert registry.get_twin(device_id).properties.reported["aio"] is True


def test_module_client_telemetry_twin_and_methods(hub, registry, devices, ca_pem):
    device = devices.create()
    device_id = device.device_id
    module_id = "mod-%s" % uuid.uuid4().hex[:8]
    module = registry.create_module_with_sas(device_id, module_id, None, "", "")
    cs = "HostName=%s;DeviceId=%s;ModuleId=%s;SharedAccessKey=%s" % (
        hub.host,
        device_id,
        module_id,
        module.authentication.symmetric_key.primary_key,
    )
    client = IoTHubModuleClient.create_from_connection_string(
        cs, server_verification_cert=ca_pem, connection_retry=False
    )
    devices.clients.append(client)
    call(client.connect)

    # Telemetry is stamped with the module.
    message = Message('{"m": 1}', message_id="mod-msg-%s" % uuid.uuid4())
    call(client.send_message, message)
    event = hub.find_event(device_id, message.message_id)
    assert event["systemProperties"]["iothub-connection-module-id"] == module_id, event["systemProperties"]

    # The module's twin is its own.
    call(client.patch_twin_reported_properties, {"module": True})
    module_twin = registry.get_module_twin(device_id, module_id)
    assert module_twin.module_id == module_id
    assert module_twin.properties.reported["module"] is True
    assert "module" not in registry.get_twin(device_id).properties.reported

    patches = Patches()
    client.on_twin_desired_properties_patch_received = patches
    updated = registry.update_module_twin(
        device_id, module_id, Twin(properties=TwinProperties(desired={"rate": 2})), module_twin.etag
    )
    assert updated.properties.desired["rate"] == 2
    assert patches.get() == {"rate": 2, "$version": 2}
    assert call(client.get_twin)["desired"] == {"rate": 2, "$version": 2}

    client.on_method_request_received = _answer_methods(client, lambda r: (200, {"module": r.name}))
    result = registry.invoke_device_module_method(device_id, module_id, CloudToDeviceMethod(method_name="hello"))
    assert (result.status, result.payload) == (200, {"module": "hello"})
    # The device itself is not connected: its own methods are 404103.
    with pytest.raises(HttpOperationError) as excinfo:
        registry.invoke_device_method(device_id, CloudToDeviceMethod(method_name="hello"))
    _assert_method_error(excinfo, 404, 404103)


def test_service_twin_calls_for_unknown_identities(registry):
    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_twin("nobody-%s" % uuid.uuid4())
    assert excinfo.value.response.status_code == 404
    assert excinfo.value.response.headers.get("iothub-errorcode") == "DeviceNotFound"
    with pytest.raises(HttpOperationError) as excinfo:
        registry.invoke_device_method("nobody-%s" % uuid.uuid4(), CloudToDeviceMethod(method_name="m"))
    assert excinfo.value.response.status_code == 404
    assert excinfo.value.response.headers.get("iothub-errorcode") == "DeviceNotFound"


def test_concurrent_service_updates_notify_in_version_order(registry, devices):
    device = devices.create()
    client = devices.client(device)
    call(client.connect)
    patches = Patches()
    client.on_twin_desired_properties_patch_received = patches
    errors = []

    def writer(i):
        try:
            registry.update_twin(device.device_id, Twin(properties=TwinProperties(desired={"w%d" % i: i})))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CALL_TIMEOUT)
    assert not errors, errors
    versions = [patches.get()["$version"] for _ in range(8)]
    assert versions == list(range(2, 10)), versions
    desired = _desired(registry.get_twin(device.device_id))
    assert desired == {"w%d" % i: i for i in range(8)}, desired

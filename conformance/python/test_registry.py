"""Identity registry scenarios run with Microsoft's azure-iot-hub 2.7.0 against a running ferrohub.

Environment (set by conformance/run):
  FERROHUB_CONNECTION_STRING  owner connection string, HostName=localhost (no port)
  FERROHUB_HTTPS_PORT         port of the hub's HTTPS listener
  FERROHUB_CA                 path of the hub's CA certificate (PEM)
  REQUESTS_CA_BUNDLE          same path: this is what requests (under msrest) trusts

SDK facts these tests rely on (read in the installed package):
  * IoTHubRegistryManager builds its REST client on "https://" + HostName, so a port in HostName
    works for REST. The SAS `sr` is then quote_plus("localhost:PORT") = "localhost%3APORT".
  * The generated operations accept exact status codes only: PUT /devices/{id} 200,
    DELETE /devices/{id} and /devices/{id}/modules/{mid} 204, PUT module 200/201,
    POST /devices (bulk) 200/400, everything else 200. Anything else raises HttpOperationError.
  * create_device_with_sas sends no If-Match; update_device_with_sas and delete_device send
    If-Match: "<etag>" quoted, or "*" (quoted) when the etag is None.
"""

import base64
import json
import os
import uuid

import pytest
from msrest.exceptions import HttpOperationError

from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import (
    AuthenticationMechanism,
    ExportImportDevice,
    SymmetricKey,
)


# Set by `conformance/run --cluster`: the hub is three nodes behind a TCP balancer.
IN_CLUSTER = os.environ.get("FERROHUB_CLUSTER") == "1"


def not_in_cluster(reason):
    """Skips a test that cannot apply to a cluster (each is listed in conformance/README.md)."""
    return pytest.mark.skipif(IN_CLUSTER, reason="not on a cluster: " + reason)


def _require_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail("environment variable %s is not set (run the suite through conformance/run)" % name)
    return value


def _with_port(connection_string, port):
    """Return the connection string with HostName=<host>:<port>."""
    parts = []
    for item in connection_string.strip().split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key == "HostName":
            value = value.split(":", 1)[0] + ":" + str(port)
        parts.append(key + "=" + value)
    return ";".join(parts)


def _new_id(prefix="py"):
    return "%s-%s" % (prefix, uuid.uuid4())


def _new_key():
    return base64.b64encode(os.urandom(32)).decode("ascii")


def _assert_generated_key(key):
    assert isinstance(key, str), "key is %r" % (key,)
    assert len(key) == 44, "generated key %r is not 44 characters of base64" % key
    assert len(base64.b64decode(key, validate=True)) == 32


def _assert_hub_error(excinfo, status, error_code):
    """The SDK raised HttpOperationError with `status`; the hub answered in the legacy error
    form {"Message": "ErrorCode:<Name>;<text>", "ExceptionMessage": ...} plus the
    iothub-errorcode header (azure-contract.md 8.6)."""
    err = excinfo.value
    assert isinstance(err, HttpOperationError)
    response = err.response
    assert response is not None
    assert response.status_code == status, "status %s, body %r" % (response.status_code, response.text)
    assert response.headers.get("iothub-errorcode") == error_code, dict(response.headers)
    body = json.loads(response.text)
    assert body["Message"].startswith("ErrorCode:%s;" % error_code), body
    assert "ExceptionMessage" in body, body


@pytest.fixture(scope="module")
def registry():
    ca = _require_env("FERROHUB_CA")
    os.environ.setdefault("REQUESTS_CA_BUNDLE", ca)
    cs = _with_port(_require_env("FERROHUB_CONNECTION_STRING"), _require_env("FERROHUB_HTTPS_PORT"))
    return IoTHubRegistryManager.from_connection_string(cs)


@pytest.fixture
def cleanup(registry):
    """Collects device ids to delete after the test, whatever its outcome."""
    ids = []
    yield ids
    for device_id in ids:
        try:
            registry.delete_device(device_id)
        except HttpOperationError:
            pass


def _create(registry, cleanup, primary_key="", secondary_key="", status="enabled", prefix="py"):
    device_id = _new_id(prefix)
    cleanup.append(device_id)
    return registry.create_device_with_sas(device_id, primary_key, secondary_key, status)


# --- create ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "empty_key",
    [
        # create_device_with_sas(id, "", "", ...) sends "symmetricKey": {"primaryKey": "", "secondaryKey": ""}
        pytest.param("", id="empty-strings"),
        # create_device_with_sas(id, None, None, ...) sends "symmetricKey": {}
        pytest.param(None, id="omitted"),
    ],
)
def test_create_device_with_generated_keys(registry, cleanup, empty_key):
    device_id = _new_id()
    cleanup.append(device_id)
    device = registry.create_device_with_sas(device_id, empty_key, empty_key, "enabled")

    assert device.device_id == device_id
    assert device.status == "enabled"
    assert device.etag
    assert device.generation_id
    assert device.authentication.type == "sas"
    keys = device.authentication.symmetric_key
    _assert_generated_key(keys.primary_key)
    _assert_generated_key(keys.secondary_key)
    assert keys.primary_key != keys.secondary_key
    assert device.capabilities is not None and device.capabilities.iot_edge is False


def test_create_device_with_given_keys(registry, cleanup):
    primary, secondary = _new_key(), _new_key()
    device = _create(registry, cleanup, primary, secondary)

    keys = device.authentication.symmetric_key
    assert keys.primary_key == primary
    assert keys.secondary_key == secondary
    assert device.authentication.type == "sas"


def test_create_disabled_device(registry, cleanup):
    device = _create(registry, cleanup, status="disabled")
    assert device.status == "disabled"
    assert registry.get_device(device.device_id).status == "disabled"


def test_create_duplicate_device_is_409(registry, cleanup):
    device = _create(registry, cleanup)
    with pytest.raises(HttpOperationError) as excinfo:
        registry.create_device_with_sas(device.device_id, "", "", "enabled")
    _assert_hub_error(excinfo, 409, "DeviceAlreadyExists")


def test_device_id_with_special_characters(registry, cleanup):
    # The characters the registry docs allow in ids. msrest percent-encodes the path segment
    # with quote(safe=""), so the hub sees e.g. %25 %2A %3F %21 %28 %29 %2C %3A %3D %40 %24 %27.
    device_id = "py-%s-.%%_*?!(),:=@$'" % uuid.uuid4().hex[:8]
    cleanup.append(device_id)
    created = registry.create_device_with_sas(device_id, "", "", "enabled")
    assert created.device_id == device_id

    got = registry.get_device(device_id)
    assert got.device_id == device_id
    keys = got.authentication.symmetric_key
    updated = registry.update_device_with_sas(
        device_id, got.etag, keys.primary_key, keys.secondary_key, "disabled"
    )
    assert updated.status == "disabled"
    assert any(d.device_id == device_id for d in registry.get_devices())

    registry.delete_device(device_id, updated.etag)
    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_device(device_id)
    assert excinfo.value.response.status_code == 404


# --- get ------------------------------------------------------------------------------------


def test_get_device(registry, cleanup):
    primary, secondary = _new_key(), _new_key()
    created = _create(registry, cleanup, primary, secondary)

    got = registry.get_device(created.device_id)
    assert got.device_id == created.device_id
    assert got.etag == created.etag
    assert got.generation_id == created.generation_id
    assert got.status == "enabled"
    assert got.authentication.type == "sas"
    assert got.authentication.symmetric_key.primary_key == primary
    assert got.authentication.symmetric_key.secondary_key == secondary
    assert got.cloud_to_device_message_count == 0


def test_get_unknown_device_is_404(registry):
    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_device(_new_id())
    _assert_hub_error(excinfo, 404, "DeviceNotFound")


def test_device_response_headers(registry, cleanup):
    """The SDK ignores them, but C# copies the ETag header into the entity and Node only parses
    JSON when content-type says application/json (azure-contract.md 8.3)."""
    created = _create(registry, cleanup)
    raw = registry.protocol.devices.get_identity(created.device_id, raw=True)
    headers = raw.response.headers
    assert "application/json" in headers.get("Content-Type", ""), dict(headers)
    assert headers.get("ETag") == '"%s"' % created.etag, dict(headers)


# --- update ---------------------------------------------------------------------------------


def test_update_device_with_etag(registry, cleanup):
    created = _create(registry, cleanup)
    keys = created.authentication.symmetric_key

    updated = registry.update_device_with_sas(
        created.device_id, created.etag, keys.primary_key, keys.secondary_key, "disabled"
    )
    assert updated.status == "disabled"
    assert updated.etag and updated.etag != created.etag
    assert updated.generation_id == created.generation_id

    got = registry.get_device(created.device_id)
    assert got.status == "disabled"
    assert got.etag == updated.etag
    assert got.authentication.symmetric_key.primary_key == keys.primary_key
    assert got.authentication.symmetric_key.secondary_key == keys.secondary_key


def test_update_device_with_stale_etag_is_412(registry, cleanup):
    created = _create(registry, cleanup)
    keys = created.authentication.symmetric_key
    registry.update_device_with_sas(
        created.device_id, created.etag, keys.primary_key, keys.secondary_key, "disabled"
    )

    with pytest.raises(HttpOperationError) as excinfo:
        registry.update_device_with_sas(
            created.device_id, created.etag, keys.primary_key, keys.secondary_key, "enabled"
        )
    _assert_hub_error(excinfo, 412, "PreconditionFailed")
    assert registry.get_device(created.device_id).status == "disabled"


def test_update_device_with_wildcard_etag(registry, cleanup):
    # etag=None makes the SDK send If-Match: "*" (quoted star)
    created = _create(registry, cleanup)
    new_primary, new_secondary = _new_key(), _new_key()
    updated = registry.update_device_with_sas(
        created.device_id, None, new_primary, new_secondary, "enabled"
    )
    assert updated.authentication.symmetric_key.primary_key == new_primary
    assert updated.authentication.symmetric_key.secondary_key == new_secondary


def test_update_unknown_device_is_404(registry):
    with pytest.raises(HttpOperationError) as excinfo:
        registry.update_device_with_sas(_new_id(), None, _new_key(), _new_key(), "enabled")
    _assert_hub_error(excinfo, 404, "DeviceNotFound")


# --- delete ---------------------------------------------------------------------------------


def test_delete_device_then_get_is_404(registry, cleanup):
    created = _create(registry, cleanup)
    assert registry.delete_device(created.device_id) is None  # 204 expected by the SDK

    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_device(created.device_id)
    _assert_hub_error(excinfo, 404, "DeviceNotFound")

    with pytest.raises(HttpOperationError) as excinfo:
        registry.delete_device(created.device_id)
    _assert_hub_error(excinfo, 404, "DeviceNotFound")


def test_delete_device_with_etag(registry, cleanup):
    created = _create(registry, cleanup)
    keys = created.authentication.symmetric_key
    updated = registry.update_device_with_sas(
        created.device_id, created.etag, keys.primary_key, keys.secondary_key, "enabled"
    )

    with pytest.raises(HttpOperationError) as excinfo:
        registry.delete_device(created.device_id, created.etag)
    _assert_hub_error(excinfo, 412, "PreconditionFailed")

    registry.delete_device(created.device_id, updated.etag)
    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_device(created.device_id)
    assert excinfo.value.response.status_code == 404


def test_recreated_device_gets_new_generation_id(registry, cleanup):
    created = _create(registry, cleanup)
    registry.delete_device(created.device_id)
    again = registry.create_device_with_sas(created.device_id, "", "", "enabled")
    assert again.generation_id and again.generation_id != created.generation_id


# --- list and statistics --------------------------------------------------------------------


def test_get_devices_lists_created_devices(registry, cleanup):
    a = _create(registry, cleanup)
    b = _create(registry, cleanup, status="disabled")

    devices = registry.get_devices()
    by_id = {d.device_id: d for d in devices}
    assert a.device_id in by_id and b.device_id in by_id
    assert by_id[a.device_id].status == "enabled"
    assert by_id[b.device_id].status == "disabled"
    assert by_id[a.device_id].etag == a.etag

    limited = registry.get_devices(max_number_of_devices=1)
    assert len(limited) == 1


def test_registry_statistics_count_devices(registry, cleanup):
    before = registry.get_device_registry_statistics()
    _create(registry, cleanup, status="enabled")
    _create(registry, cleanup, status="disabled")
    after = registry.get_device_registry_statistics()

    assert after.total_device_count == before.total_device_count + 2
    assert after.enabled_device_count == before.enabled_device_count + 1
    assert after.disabled_device_count == before.disabled_device_count + 1
    assert after.total_device_count == after.enabled_device_count + after.disabled_device_count


def test_service_statistics(registry):
    stats = registry.get_service_statistics()
    assert isinstance(stats.connected_device_count, int)
    assert stats.connected_device_count >= 0


# --- modules --------------------------------------------------------------------------------


def test_module_lifecycle(registry, cleanup):
    device = _create(registry, cleanup)
    device_id = device.device_id
    mid_generated, mid_given = "mod-gen", "mod-given"
    primary, secondary = _new_key(), _new_key()

    generated = registry.create_module_with_sas(device_id, mid_generated, None, "", "")
    assert generated.device_id == device_id
    assert generated.module_id == mid_generated
    assert generated.etag
    assert generated.generation_id
    _assert_generated_key(generated.authentication.symmetric_key.primary_key)
    _assert_generated_key(generated.authentication.symmetric_key.secondary_key)

    given = registry.create_module_with_sas(device_id, mid_given, None, primary, secondary)
    assert given.authentication.symmetric_key.primary_key == primary
    assert given.authentication.symmetric_key.secondary_key == secondary

    got = registry.get_module(device_id, mid_given)
    assert got.module_id == mid_given and got.device_id == device_id
    assert got.etag == given.etag
    assert got.authentication.symmetric_key.primary_key == primary

    modules = registry.get_modules(device_id)
    assert sorted(m.module_id for m in modules) == [mid_generated, mid_given]

    new_primary = _new_key()
    updated = registry.update_module_with_sas(
        device_id, mid_given, None, given.etag, new_primary, secondary
    )
    assert updated.authentication.symmetric_key.primary_key == new_primary
    assert updated.etag != given.etag

    with pytest.raises(HttpOperationError) as excinfo:
        registry.update_module_with_sas(device_id, mid_given, None, given.etag, primary, secondary)
    _assert_hub_error(excinfo, 412, "PreconditionFailed")

    registry.delete_module(device_id, mid_generated)
    with pytest.raises(HttpOperationError) as excinfo:
        registry.get_module(device_id, mid_generated)
    _assert_hub_error(excinfo, 404, "ModuleNotFound")

    assert [m.module_id for m in registry.get_modules(device_id)] == [mid_given]


def test_create_duplicate_module_is_409(registry, cleanup):
    device = _create(registry, cleanup)
    registry.create_module_with_sas(device.device_id, "m1", None, "", "")
    with pytest.raises(HttpOperationError) as excinfo:
        registry.create_module_with_sas(device.device_id, "m1", None, "", "")
    _assert_hub_error(excinfo, 409, "ModuleAlreadyExistsOnDevice")


def test_module_on_unknown_device_is_404(registry):
    with pytest.raises(HttpOperationError) as excinfo:
        registry.create_module_with_sas(_new_id(), "m1", None, "", "")
    _assert_hub_error(excinfo, 404, "DeviceNotFound")


def test_modules_removed_with_device(registry, cleanup):
    device = _create(registry, cleanup)
    registry.create_module_with_sas(device.device_id, "m1", None, "", "")
    registry.delete_device(device.device_id)
    registry.create_device_with_sas(device.device_id, "", "", "enabled")
    assert registry.get_modules(device.device_id) == []


# --- bulk (POST /devices) -------------------------------------------------------------------


def _bulk_entry(device_id, import_mode, status="enabled", primary="", secondary="", etag=None):
    return ExportImportDevice(
        id=device_id,
        import_mode=import_mode,
        status=status,
        e_tag=etag,
        authentication=AuthenticationMechanism(
            type="sas", symmetric_key=SymmetricKey(primary_key=primary, secondary_key=secondary)
        ),
    )


def test_bulk_create_update_delete(registry, cleanup):
    a, b = _new_id("pybulk"), _new_id("pybulk")
    cleanup.extend([a, b])
    primary, secondary = _new_key(), _new_key()

    result = registry.bulk_create_or_update_devices(
        [_bulk_entry(a, "create"), _bulk_entry(b, "create", "disabled", primary, secondary)]
    )
    assert result.is_successful is True, result.errors
    assert not result.errors

    got_a = registry.get_device(a)
    _assert_generated_key(got_a.authentication.symmetric_key.primary_key)
    got_b = registry.get_device(b)
    assert got_b.status == "disabled"
    assert got_b.authentication.symmetric_key.primary_key == primary

    result = registry.bulk_create_or_update_devices(
        [_bulk_entry(b, "update", "enabled", primary, secondary)]
    )
    assert result.is_successful is True, result.errors
    assert registry.get_device(b).status == "enabled"

    result = registry.bulk_create_or_update_devices(
        [_bulk_entry(a, "delete"), _bulk_entry(b, "delete")]
    )
    assert result.is_successful is True, result.errors
    for device_id in (a, b):
        with pytest.raises(HttpOperationError) as excinfo:
            registry.get_device(device_id)
        assert excinfo.value.response.status_code == 404


def test_bulk_create_existing_reports_error(registry, cleanup):
    existing = _create(registry, cleanup).device_id
    fresh = _new_id("pybulk")
    cleanup.append(fresh)

    # The generated operation accepts 400 and deserializes the same BulkRegistryOperationResult.
    raw = registry.protocol.bulk_registry.update_registry(
        [_bulk_entry(existing, "create"), _bulk_entry(fresh, "create")], raw=True
    )
    assert raw.response.status_code == 400
    result = raw.output
    assert result.is_successful is False
    assert [e.device_id for e in result.errors] == [existing]
    assert result.errors[0].error_code == "DeviceAlreadyExists"

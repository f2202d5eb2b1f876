'use strict';
// Identity registry scenarios run with Microsoft's azure-iothub 1.16.6 (Node) against a running
// ferrohub.
//
// Environment (set by conformance/run):
//   FERROHUB_CONNECTION_STRING  owner connection string, HostName=localhost (no port)
//   FERROHUB_HTTPS_PORT         port of the hub's HTTPS listener
//   NODE_EXTRA_CA_CERTS         the hub's CA; node reads it only at start-up
//
// SDK facts these tests rely on (read in node_modules/azure-iothub/dist):
//   * Registry passes HostName as `host` to https.request, so a port in HostName gives ENOTFOUND.
//     The port comes from an https.Agent whose defaultPort is the hub's port, installed on the
//     private `registry._restApiClient` (the constructor installs its own keep-alive agent).
//   * The SAS `sr` is the raw HostName ("localhost"), fields in the order sr, sig, skn, se.
//   * Response bodies are JSON-parsed only when content-type contains application/json.
//   * Errors: the status picks the class (409 DeviceAlreadyExistsError, 412 InvalidEtagError);
//     a 404 becomes DeviceNotFoundError only if the body is the legacy form
//     {"Message":"ErrorCode:DeviceNotFound;<text>"}; otherwise a plain Error('Not found').
//   * create() sends no If-Match; update() and delete() send If-Match: "*" (quoted).
//   * A device without `authentication` is sent as {type:'sas', symmetricKey:{primaryKey:'', secondaryKey:''}}.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const https = require('node:https');
const crypto = require('node:crypto');
const { Registry } = require('azure-iothub');

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`environment variable ${name} is not set (run the suite through conformance/run)`);
  }
  return value;
}

function withoutPort(connectionString) {
  return connectionString
    .trim()
    .split(';')
    .filter((item) => item.length > 0)
    .map((item) => {
      const eq = item.indexOf('=');
      const key = item.slice(0, eq);
      const value = item.slice(eq + 1);
      return key === 'HostName' ? `${key}=${value.split(':')[0]}` : item;
    })
    .join(';');
}

const newId = () => `node-${crypto.randomUUID()}`;
const newKey = () => crypto.randomBytes(32).toString('base64');

function assertGeneratedKey(key) {
  assert.equal(typeof key, 'string', `key is ${key}`);
  assert.equal(key.length, 44, `generated key ${key} is not 44 characters of base64`);
  assert.equal(Buffer.from(key, 'base64').length, 32);
}

let registry;
let agent;
const created = [];

before(() => {
  requireEnv('NODE_EXTRA_CA_CERTS');
  const port = Number(requireEnv('FERROHUB_HTTPS_PORT'));
  registry = Registry.fromConnectionString(withoutPort(requireEnv('FERROHUB_CONNECTION_STRING')));
  agent = new https.Agent({ keepAlive: true });
  agent.defaultPort = port;
  registry._restApiClient.setOptions({ http: { agent } });
});

after(async () => {
  for (const deviceId of created) {
    try {
      await registry.delete(deviceId);
    } catch {
      // already gone
    }
  }
  agent.destroy();
});

async function createDevice(device) {
  created.push(device.deviceId);
  return registry.create(device);
}

test('create with generated keys', async () => {
  const deviceId = newId();
  const { responseBody: device, httpResponse } = await createDevice({ deviceId, status: 'enabled' });
  assert.equal(httpResponse.statusCode, 200);
  assert.equal(device.deviceId, deviceId);
  assert.equal(device.status, 'enabled');
  assert.ok(device.etag, 'etag is set');
  assert.ok(device.generationId, 'generationId is set');
  assert.equal(device.authentication.type, 'sas');
  assertGeneratedKey(device.authentication.symmetricKey.primaryKey);
  assertGeneratedKey(device.authentication.symmetricKey.secondaryKey);
  assert.notEqual(device.authentication.symmetricKey.primaryKey, device.authentication.symmetricKey.secondaryKey);
});

test('create with given keys keeps them', async () => {
  const deviceId = newId();
  const primaryKey = newKey();
  const secondaryKey = newKey();
  const { responseBody: device } = await createDevice({
    deviceId,
    status: 'enabled',
    authentication: { symmetricKey: { primaryKey, secondaryKey } },
  });
  assert.equal(device.authentication.symmetricKey.primaryKey, primaryKey);
  assert.equal(device.authentication.symmetricKey.secondaryKey, secondaryKey);
});

test('get returns the created device', async () => {
  const deviceId = newId();
  const { responseBody: made } = await createDevice({ deviceId });
  const { responseBody: got, httpResponse } = await registry.get(deviceId);
  assert.equal(httpResponse.statusCode, 200);
  assert.equal(got.deviceId, deviceId);
  assert.equal(got.etag, made.etag);
  assert.equal(got.generationId, made.generationId);
  assert.equal(got.status, 'enabled');
  assert.equal(got.authentication.symmetricKey.primaryKey, made.authentication.symmetricKey.primaryKey);
  assert.equal(got.authentication.symmetricKey.secondaryKey, made.authentication.symmetricKey.secondaryKey);
});

test('update changes status and keeps keys', async () => {
  const deviceId = newId();
  const { responseBody: made } = await createDevice({ deviceId, status: 'enabled' });
  const { symmetricKey } = made.authentication;

  const { responseBody: updated, httpResponse } = await registry.update({
    deviceId,
    status: 'disabled',
    authentication: { symmetricKey: { primaryKey: symmetricKey.primaryKey, secondaryKey: symmetricKey.secondaryKey } },
  });
  assert.equal(httpResponse.statusCode, 200);
  assert.equal(updated.status, 'disabled');
  assert.notEqual(updated.etag, made.etag);

  const { responseBody: got } = await registry.get(deviceId);
  assert.equal(got.status, 'disabled');
  assert.equal(got.etag, updated.etag);
  assert.equal(got.authentication.symmetricKey.primaryKey, symmetricKey.primaryKey);
});

test('delete, then get gives DeviceNotFoundError', async () => {
  const deviceId = newId();
  await createDevice({ deviceId });
  const { httpResponse } = await registry.delete(deviceId);
  assert.equal(httpResponse.statusCode, 204);

  await assert.rejects(registry.get(deviceId), (err) => {
    assert.equal(err.name, 'DeviceNotFoundError', `got ${err.name}: ${err.message}; body ${err.responseBody}`);
    assert.equal(err.response.statusCode, 404);
    assert.equal(err.response.headers['iothub-errorcode'], 'DeviceNotFound');
    return true;
  });
});

test('delete of an unknown device gives DeviceNotFoundError', async () => {
  await assert.rejects(registry.delete(newId()), (err) => {
    assert.equal(err.name, 'DeviceNotFoundError', `got ${err.name}: ${err.message}; body ${err.responseBody}`);
    return true;
  });
});

test('create duplicate gives DeviceAlreadyExistsError', async () => {
  const deviceId = newId();
  await createDevice({ deviceId });
  await assert.rejects(registry.create({ deviceId }), (err) => {
    assert.equal(err.name, 'DeviceAlreadyExistsError', `got ${err.name}: ${err.message}; body ${err.responseBody}`);
    assert.equal(err.response.statusCode, 409);
    assert.equal(err.response.headers['iothub-errorcode'], 'DeviceAlreadyExists');
    // parsed from the legacy body: the text after "ErrorCode:DeviceAlreadyExists;"
    assert.ok(err.message && err.message !== 'Error: ' + err.responseBody, `message ${err.message}`);
    return true;
  });
});

test('device id with special characters', async () => {
  // encodeURIComponent leaves - . _ * ! ( ) ' as they are and percent-encodes % ? , : = @ $
  const deviceId = `node-${crypto.randomUUID().slice(0, 8)}-.%_*?!(),:=@$'`;
  const { responseBody: made } = await createDevice({ deviceId });
  assert.equal(made.deviceId, deviceId);
  const { responseBody: got } = await registry.get(deviceId);
  assert.equal(got.deviceId, deviceId);
  assert.equal(got.etag, made.etag);
  await registry.delete(deviceId);
  await assert.rejects(registry.get(deviceId), (err) => err.name === 'DeviceNotFoundError');
});

test('list includes created devices', async () => {
  const deviceId = newId();
  await createDevice({ deviceId });
  const { responseBody: devices } = await registry.list();
  assert.ok(Array.isArray(devices));
  assert.ok(devices.some((d) => d.deviceId === deviceId), `${deviceId} missing from list`);
});

test('registry statistics count a new device', async () => {
  const { responseBody: before } = await registry.getRegistryStatistics();
  await createDevice({ deviceId: newId(), status: 'disabled' });
  const { responseBody: after } = await registry.getRegistryStatistics();
  assert.equal(after.totalDeviceCount, before.totalDeviceCount + 1);
  assert.equal(after.disabledDeviceCount, before.disabledDeviceCount + 1);
  assert.equal(after.enabledDeviceCount, before.enabledDeviceCount);
});

test('module add, get, list, remove', async () => {
  const deviceId = newId();
  await createDevice({ deviceId });
  const { responseBody: mod, httpResponse } = await registry.addModule({ deviceId, moduleId: 'm1' });
  assert.ok([200, 201].includes(httpResponse.statusCode), `status ${httpResponse.statusCode}`);
  assert.equal(mod.moduleId, 'm1');
  assertGeneratedKey(mod.authentication.symmetricKey.primaryKey);

  const { responseBody: got } = await registry.getModule(deviceId, 'm1');
  assert.equal(got.etag, mod.etag);
  const { responseBody: list } = await registry.getModulesOnDevice(deviceId);
  assert.deepEqual(list.map((m) => m.moduleId), ['m1']);

  // updateModule(module, false) sends If-Match: "<module.etag>"; a stale one gives 412 -> InvalidEtagError.
  const primaryKey = newKey();
  const { responseBody: updated } = await registry.updateModule(
    { ...got, authentication: { symmetricKey: { primaryKey, secondaryKey: got.authentication.symmetricKey.secondaryKey } } },
    false,
  );
  assert.equal(updated.authentication.symmetricKey.primaryKey, primaryKey);
  assert.notEqual(updated.etag, got.etag);
  await assert.rejects(registry.updateModule(got, false), (err) => {
    assert.equal(err.name, 'InvalidEtagError', `got ${err.name}: ${err.message}; body ${err.responseBody}`);
    assert.equal(err.response.statusCode, 412);
    return true;
  });

  await registry.removeModule(deviceId, 'm1');
  await assert.rejects(registry.getModule(deviceId, 'm1'), (err) => {
    assert.equal(err.response.statusCode, 404);
    return true;
  });
});

test('bulk add, update, remove (importMode create / Update / Delete)', async () => {
  const ids = [newId(), newId()];
  created.push(...ids);
  // addDevices sends [{id, importMode: 'create', authentication: {type: 'sas', symmetricKey: {primaryKey: '', secondaryKey: ''}}}]
  const { responseBody: added, httpResponse } = await registry.addDevices(ids.map((deviceId) => ({ deviceId, status: 'enabled' })));
  assert.equal(httpResponse.statusCode, 200);
  assert.equal(added.isSuccessful, true, JSON.stringify(added));
  const { responseBody: first } = await registry.get(ids[0]);
  assertGeneratedKey(first.authentication.symmetricKey.primaryKey);

  // updateDevices(devices, true) sends importMode 'Update' (capitalised) with whatever fields the
  // caller passes: here whole Device objects as returned by get(), read-only fields included,
  // as the SDK's documentation recommends.
  const fetched = [];
  for (const deviceId of ids) {
    const { responseBody } = await registry.get(deviceId);
    fetched.push({ ...responseBody, status: 'disabled' });
  }
  const { responseBody: updated } = await registry.updateDevices(fetched, true);
  assert.equal(updated.isSuccessful, true, JSON.stringify(updated));
  const { responseBody: afterUpdate } = await registry.get(ids[0]);
  assert.equal(afterUpdate.status, 'disabled');
  assert.equal(afterUpdate.authentication.symmetricKey.primaryKey, first.authentication.symmetricKey.primaryKey);

  // removeDevices(devices, true) sends importMode 'Delete'.
  const { responseBody: removed } = await registry.removeDevices(ids.map((deviceId) => ({ deviceId })), true);
  assert.equal(removed.isSuccessful, true, JSON.stringify(removed));
  for (const deviceId of ids) {
    await assert.rejects(registry.get(deviceId), (err) => err.name === 'DeviceNotFoundError');
  }
});

test('bulk update with etag check (importMode UpdateIfMatchETag, etag from get())', async () => {
  const deviceId = newId();
  await createDevice({ deviceId });
  // updateDevices(devices, false) sends importMode 'UpdateIfMatchETag'. The SDK passes the device
  // objects through, so with a device from get() the etag is in the lower-case `etag` field,
  // not the `eTag` of the ExportImportDevice schema.
  const { responseBody: current } = await registry.get(deviceId);
  const { responseBody: result } = await registry.updateDevices([{ ...current, status: 'disabled' }], false);
  assert.equal(result.isSuccessful, true, JSON.stringify(result));
  assert.equal((await registry.get(deviceId)).responseBody.status, 'disabled');

  // The same (now stale) etag must be refused: HTTP 400 and one per-device error.
  await assert.rejects(registry.updateDevices([{ ...current, status: 'enabled' }], false), (err) => {
    assert.equal(err.response.statusCode, 400, `got ${err.name}: ${err.message}`);
    const body = JSON.parse(err.responseBody);
    assert.equal(body.isSuccessful, false);
    assert.deepEqual(body.errors.map((e) => e.deviceId), [deviceId]);
    return true;
  });
  assert.equal((await registry.get(deviceId)).responseBody.status, 'disabled');
});

test('bulk add of an existing device fails with the per-device error', async () => {
  const deviceId = newId();
  await createDevice({ deviceId });
  // A 400 answer becomes an ArgumentError; the BulkRegistryOperationResult is in responseBody.
  await assert.rejects(registry.addDevices([{ deviceId }]), (err) => {
    assert.equal(err.response.statusCode, 400, `got ${err.name}: ${err.message}`);
    const result = JSON.parse(err.responseBody);
    assert.equal(result.isSuccessful, false);
    assert.deepEqual(result.errors.map((e) => [e.deviceId, e.errorCode]), [[deviceId, 'DeviceAlreadyExists']]);
    return true;
  });
});

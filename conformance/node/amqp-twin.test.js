'use strict';
// Twins and direct methods over AMQP, run with Microsoft's azure-iot-device 1.18.4 +
// azure-iot-device-amqp 1.14.4 (Amqp) and azure-iothub 1.16.6 (Registry, and the REST part of
// Client) against a running ferrohub (amqp-contract.md §4.5, §4.6).
//
// Environment (set by conformance/run): FERROHUB_CONNECTION_STRING, FERROHUB_HTTPS_PORT,
// FERROHUB_DATA_DIR, NODE_EXTRA_CA_CERTS; the AMQP port comes from FERROHUB_AMQP_PORT or, when
// that is not set, from the hub's listeners.json in FERROHUB_DATA_DIR.
//
// SDK facts these tests rely on (read in node_modules/azure-iot-device-amqp/dist):
//   * The transport dials 'amqps://' + (GatewayHostName || HostName), without SASL, and puts the
//     device's token on $cbs; trust comes from NODE_EXTRA_CA_CERTS.
//   * client.getTwin() attaches a receiver and a sender link on /devices/{id}/twin (module:
//     /devices/{id}/modules/{m}/twin), both with com.microsoft:channel-correlation-id
//     'twin:<uuid>', then sends GET (message annotation `operation`, a string correlation-id, body
//     ' '). Answers are matched by correlation-id; the message annotation `status` must be
//     200–300 (or absent) for success, and the body's data section is parsed as JSON.
//   * twin.properties.reported.update sends PATCH with `resource` '/properties/reported' and the
//     patch as the body; a 'properties.desired' listener sends PUT on
//     '/notifications/twin/properties/desired' (twin.enableTwinDesiredPropertiesUpdates with a
//     callback returns once it is answered). A message without correlation-id on the receiver
//     link is a desired patch (its body parsed as JSON, with $version).
//   * onDeviceMethod attaches the method links on /devices/{id}/methods/devicebound; a request
//     carries the application property IoThub-methodname and a uuid correlation-id;
//     res.send(status, payload) answers with IoThub-status (int) and the same correlation-id.

const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Client, ModuleClient } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');
const { NoRetry } = require('azure-iot-common');
const ServiceClient = require('azure-iothub').Client;
const { Hub, withTimeout, WAIT_MS } = require('./hub');

const hub = new Hub();
const clients = [];
const OP_MS = 30000;

function amqpPort() {
  if (process.env.FERROHUB_AMQP_PORT) return Number(process.env.FERROHUB_AMQP_PORT);
  const listeners = JSON.parse(fs.readFileSync(path.join(hub.dataDir, 'listeners.json'), 'utf8'));
  if (!listeners.amqp) throw new Error('the hub has no AMQP listener (listeners.json)');
  return Number(listeners.amqp.split(':').pop());
}
const gateway = `;GatewayHostName=${hub.host}:${amqpPort()}`;

const service = ServiceClient.fromConnectionString(
  `HostName=${hub.host};SharedAccessKeyName=${hub.policy};SharedAccessKey=${hub.key}`,
);
service._restApiClient.setOptions({ http: { agent: hub.agent } });

after(async () => {
  for (const client of clients) {
    try {
      await withTimeout(client.close(), 10000, 'close');
    } catch {
      // best effort
    }
  }
  await hub.cleanup();
});

async function open(client) {
  clients.push(client);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => {}); // errors are asserted through the API calls
  await withTimeout(client.open(), OP_MS, 'open');
  return client;
}

function deviceClient(device) {
  return open(Client.fromConnectionString(hub.connectionString(device, gateway), Amqp));
}

/** Queues the values of a twin event; `next()` waits for the next one. */
class Events {
  constructor(emitter, name) {
    this.queue = [];
    this.waiters = [];
    emitter.on(name, (value) => {
      const copy = JSON.parse(JSON.stringify(value));
      const waiter = this.waiters.shift();
      if (waiter) waiter(copy);
      else this.queue.push(copy);
    });
  }

  next(ms = WAIT_MS) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), ms, 'a desired properties event');
  }
}

function reportedUpdate(twin, patch) {
  return withTimeout(
    new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()))),
    OP_MS,
    'reported update',
  );
}

function userProperties(section) {
  return Object.fromEntries(Object.entries(section).filter(([k]) => !k.startsWith('$')));
}

describe('twins and direct methods over amqp', () => {
  test('getTwin, reported updates and desired patches', async () => {
    const device = await hub.createDevice();
    const deviceId = device.deviceId;
    const { responseBody: initial } = await hub.registry.getTwin(deviceId);
    const { responseBody: seeded } = await hub.registry.updateTwin(
      deviceId,
      { properties: { desired: { fw: '1.0' } } },
      initial.etag,
    );
    assert.equal(seeded.properties.desired.fw, '1.0');

    const client = await deviceClient(device);
    const twin = await withTimeout(client.getTwin(), OP_MS, 'getTwin');
    assert.equal(twin.properties.desired.fw, '1.0');
    assert.equal(twin.properties.desired.$version, 2);
    assert.equal(twin.properties.reported.$version, 1);

    await reportedUpdate(twin, { a: 1, nested: { x: [1, 2] } });
    await reportedUpdate(twin, { a: 2, b: 'two' });
    const { responseBody: afterReport } = await hub.registry.getTwin(deviceId);
    assert.equal(afterReport.properties.reported.a, 2);
    assert.equal(afterReport.properties.reported.b, 'two');
    assert.deepEqual(afterReport.properties.reported.nested, { x: [1, 2] });
    assert.equal(afterReport.properties.reported.$version, 3);
    assert.equal(afterReport.connectionState, 'Connected');

    const desired = new Events(twin, 'properties.desired');
    // The listener fires at once with the cached desired properties.
    assert.equal((await desired.next()).fw, '1.0');
    // Wait until the subscription (PUT) is answered, so the write below cannot overtake it.
    await withTimeout(
      new Promise((resolve, reject) => twin.enableTwinDesiredPropertiesUpdates((err) => (err ? reject(err) : resolve()))),
      OP_MS,
      'enableTwinDesiredPropertiesUpdates',
    );
    await afterReport.update({ properties: { desired: { fw: '2.0', cfg: { rate: 5 } } } });
    const patch = await desired.next();
    assert.deepEqual(patch, { fw: '2.0', cfg: { rate: 5 }, $version: 3 });
    assert.deepEqual(userProperties(twin.properties.desired), { fw: '2.0', cfg: { rate: 5 } });

    // A second getTwin over the same links sees the current twin.
    const again = await withTimeout(client.getTwin(), OP_MS, 'getTwin again');
    assert.equal(again.properties.desired.$version, 3);
    assert.equal(again.properties.reported.b, 'two');
  });

  test('a reported patch the hub refuses fails the update', async () => {
    const device = await hub.createDevice();
    const client = await deviceClient(device);
    const twin = await withTimeout(client.getTwin(), OP_MS, 'getTwin');
    // Azure allows at most 10 levels of nesting in a patch (400004).
    let deep = { leaf: 1 };
    for (let i = 0; i < 12; i++) deep = { d: deep };
    // The transport wraps the twin client's FormatError (status 400) with the hub's message.
    await assert.rejects(reportedUpdate(twin, deep), /nested too deeply/);
    const { responseBody: after } = await hub.registry.getTwin(device.deviceId);
    assert.equal(after.properties.reported.$version, 1);
  });

  test('a module gets and patches its own twin', async () => {
    const device = await hub.createDevice();
    const deviceId = device.deviceId;
    await hub.registry.addModule({ deviceId, moduleId: 'sensor' });
    const { responseBody: module } = await hub.registry.getModule(deviceId, 'sensor');
    const cs = `HostName=${hub.host};DeviceId=${deviceId};ModuleId=sensor;SharedAccessKey=${module.authentication.symmetricKey.primaryKey}${gateway}`;
    const client = await open(ModuleClient.fromConnectionString(cs, Amqp));
    const twin = await withTimeout(client.getTwin(), OP_MS, 'module getTwin');
    assert.equal(twin.properties.reported.$version, 1);
    await reportedUpdate(twin, { temp: 21.5 });
    const { responseBody: moduleTwin } = await hub.registry.getModuleTwin(deviceId, 'sensor');
    assert.equal(moduleTwin.properties.reported.temp, 21.5);
    const { responseBody: deviceTwin } = await hub.registry.getTwin(deviceId);
    assert.equal(deviceTwin.properties.reported.temp, undefined);
  });

  test('onDeviceMethod answers Client.invokeDeviceMethod', async () => {
    const device = await hub.createDevice();
    const deviceId = device.deviceId;
    const client = await deviceClient(device);
    const requests = [];
    client.onDeviceMethod('reboot', (req, res) => {
      requests.push(req.payload);
      res.send(200, { rebooting: true, delay: req.payload && req.payload.delay });
    });
    client.onDeviceMethod('fail', (req, res) => res.send(500, { why: 'broken' }));
    // onDeviceMethod attaches the method links in the background: retry until the hub routes.
    const deadline = Date.now() + WAIT_MS;
    let result;
    for (;;) {
      try {
        result = await service.invokeDeviceMethod(deviceId, {
          methodName: 'reboot',
          payload: { delay: 5 },
          responseTimeoutInSeconds: 30,
        });
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.deepEqual(result.result, { status: 200, payload: { rebooting: true, delay: 5 } });
    assert.deepEqual(requests, [{ delay: 5 }]);

    const failed = await service.invokeDeviceMethod(deviceId, { methodName: 'fail', payload: {} });
    assert.deepEqual(failed.result, { status: 500, payload: { why: 'broken' } });
  });
});

'use strict';
// Twin and direct method scenarios run with Microsoft's azure-iot-device 1.18.4 +
// azure-iot-device-mqtt 1.16.4 (Mqtt, MqttWs) and azure-iothub 1.16.6 (Registry, and the REST
// part of Client) against a running ferrohub (twins-methods-contract.md).
//
// SDK facts these tests rely on (read in node_modules):
//   * client.getTwin() subscribes $iothub/twin/res/# (QoS 0), GETs the twin and merges it into
//     twin.properties.desired/reported; adding a 'properties.desired' listener subscribes
//     $iothub/twin/PATCH/properties/desired/# and fires at once with the cached desired
//     properties when they are not empty, then once per patch with the patch (with $version).
//   * The device ignores the response status: only an `errorCode` in the body makes an error
//     (azure-iot-device-mqtt mqtt_twin_client.js).
//   * onDeviceMethod subscribes $iothub/methods/POST/#; res.send(status, payload) answers on
//     $iothub/methods/res/{status}/?$rid=…; an empty request body is answered 400 by the SDK
//     itself, so the hub must send `null`.
//   * twin.on('properties.desired') subscribes without telling when the SUBACK came; the test
//     waits for it with twin.enableTwinDesiredPropertiesUpdates(callback), which the listener
//     calls itself.
//   * Registry.updateTwin requires an etag and quotes it; twin.update() uses the etag of the last
//     response. Client.invokeDeviceMethod is a REST call through the same REST client (its AMQP
//     transport is never opened here); its default retry policy retries 500/503/429 for 4 minutes
//     but neither 404 nor 504 (GatewayTimeoutError).
//   * Like Registry, Client's REST client dials 443: its agent is replaced with one whose
//     defaultPort is the hub's HTTPS port.

const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const ServiceClient = require('azure-iothub').Client;
const { Hub, withTimeout, WAIT_MS } = require('./hub');

const hub = new Hub();
const clients = [];
const OP_MS = 30000;

const service = ServiceClient.fromConnectionString(
  `HostName=${hub.host};SharedAccessKeyName=${hub.policy};SharedAccessKey=${hub.key}`,
);
service._restApiClient.setOptions({ http: { agent: hub.agent } });

class MqttWsOnHubPort extends MqttWs {
  _getBaseTransportConfig(credentials) {
    const config = super._getBaseTransportConfig(credentials);
    config.uri = config.uri.replace(':443/', `:${hub.httpsPort}/`);
    return config;
  }
}

const TRANSPORTS = [
  { name: 'mqtt', Transport: Mqtt, extra: () => `;GatewayHostName=${hub.host}:${hub.mqttPort}` },
  { name: 'mqtt-ws', Transport: MqttWsOnHubPort, extra: () => '' },
];

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

async function openClient(device, transport) {
  const client = Client.fromConnectionString(hub.connectionString(device, transport.extra()), transport.Transport);
  clients.push(client);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => {}); // errors are asserted through the API calls
  await withTimeout(client.setOptions({ ca: hub.ca }), OP_MS, 'setOptions');
  await withTimeout(client.open(), OP_MS, 'open');
  return client;
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

for (const transport of TRANSPORTS) {
  describe(`twins over ${transport.name}`, () => {
    test('getTwin, reported updates and desired patches from Registry.updateTwin', async () => {
      const device = await hub.createDevice();
      const deviceId = device.deviceId;
      const { responseBody: initial } = await hub.registry.getTwin(deviceId);
      assert.equal(initial.etag, 'AAAAAAAAAAE=');
      const { responseBody: seeded } = await hub.registry.updateTwin(
        deviceId,
        { tags: { site: 'b7' }, properties: { desired: { fw: '1.0' } } },
        initial.etag,
      );
      assert.equal(seeded.properties.desired.fw, '1.0');

      const client = await openClient(device, transport);
      const twin = await withTimeout(client.getTwin(), OP_MS, 'getTwin');
      assert.equal(twin.properties.desired.fw, '1.0');
      assert.equal(twin.properties.desired.$version, 2);
      assert.equal(twin.properties.reported.$version, 1);

      await reportedUpdate(twin, { a: 1, b: null, nested: { x: [1, 2] } });
      const { responseBody: afterReport } = await hub.registry.getTwin(deviceId);
      assert.equal(afterReport.properties.reported.a, 1);
      assert.deepEqual(afterReport.properties.reported.nested, { x: [1, 2] });
      assert.equal(afterReport.connectionState, 'Connected');
      assert.equal(afterReport.etag, seeded.etag, 'reported updates keep the ETag');

      const desired = new Events(twin, 'properties.desired');
      // The listener fires at once with the cached desired properties.
      assert.equal((await desired.next()).fw, '1.0');
      // Adding the listener subscribes in the background; the same call with a callback
      // returns once the SUBACK is in, so the service write below cannot overtake it (the hub
      // queues nothing for a device that is not subscribed yet).
      await withTimeout(
        new Promise((resolve, reject) => twin.enableTwinDesiredPropertiesUpdates((err) => (err ? reject(err) : resolve()))),
        OP_MS,
        'enableTwinDesiredPropertiesUpdates',
      );
      // twin.update() uses the etag of the last response: the current one.
      await afterReport.update({ properties: { desired: { fw: '2.0', cfg: { rate: 5 } } } });
      const patch = await desired.next();
      assert.deepEqual(patch, { fw: '2.0', cfg: { rate: 5 }, $version: 3 });
      assert.deepEqual(userProperties(twin.properties.desired), { fw: '2.0', cfg: { rate: 5 } });

      // A stale etag: InvalidEtagError (412).
      await assert.rejects(
        hub.registry.updateTwin(deviceId, { tags: { x: 1 } }, seeded.etag),
        (err) => err.constructor.name === 'InvalidEtagError',
      );

      // Clearing every desired property: the device's merged copy ends up empty.
      await hub.registry.updateTwin(deviceId, { properties: { desired: null } }, '*');
      const cleared = await desired.next();
      assert.deepEqual(cleared, { fw: null, cfg: null, $version: 4 });
      assert.deepEqual(userProperties(twin.properties.desired), {});

      // After closing and opening again, a GET gives what changed meanwhile.
      await withTimeout(client.close(), OP_MS, 'close');
      await hub.registry.updateTwin(deviceId, { properties: { desired: { late: true } } }, '*');
      await withTimeout(client.open(), OP_MS, 'open again');
      const again = await withTimeout(client.getTwin(), OP_MS, 'getTwin again');
      assert.equal(again.properties.desired.late, true);
      assert.equal(again.properties.desired.$version, 5);
    });

    test('direct methods answered, refused when offline, timed out when silent', async () => {
      const device = await hub.createDevice();
      const deviceId = device.deviceId;

      // Not connected: 404103 at once, not retried.
      await assert.rejects(
        withTimeout(service.invokeDeviceMethod(deviceId, { methodName: 'reboot' }), OP_MS, 'invoke offline'),
        (err) => {
          const inner = JSON.parse(JSON.parse(err.responseBody).Message);
          return inner.errorCode === 404103;
        },
      );

      const client = await openClient(device, transport);
      const requests = [];
      client.onDeviceMethod('reboot', (req, res) => {
        requests.push(req.payload);
        res.send(200, { rebooting: true, delay: req.payload && req.payload.delay });
      });
      client.onDeviceMethod('silent', () => {});
      // onDeviceMethod subscribes in the background: wait until the hub routes methods to it.
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

      // payload null reaches the device as JSON null (an empty body would be answered 400 by
      // the SDK without calling the handler).
      const nullPayload = await service.invokeDeviceMethod(deviceId, { methodName: 'reboot', payload: null });
      assert.equal(nullPayload.result.status, 200);
      assert.equal(requests.at(-1), null);

      // A device that never answers: 504101 GatewayTimeoutError after 5 s, not retried.
      await assert.rejects(
        withTimeout(
          service.invokeDeviceMethod(deviceId, { methodName: 'silent', responseTimeoutInSeconds: 5 }),
          OP_MS,
          'invoke silent',
        ),
        (err) => err.constructor.name === 'GatewayTimeoutError',
      );
    });
  });
}

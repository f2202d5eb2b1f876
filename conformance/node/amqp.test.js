'use strict';
// AMQP scenarios run with Microsoft's Node SDKs against a running ferrohub:
//   * the service side with azure-iothub 1.16.6 `Client` (open, send, getFeedbackReceiver);
//   * the device side with azure-iot-device 1.18.4 + azure-iot-device-amqp 1.14.4 (`Amqp`, `AmqpWs`).
//
// Environment (set by conformance/run): FERROHUB_CONNECTION_STRING, FERROHUB_HTTPS_PORT,
// FERROHUB_AMQP_PORT, FERROHUB_DATA_DIR, NODE_EXTRA_CA_CERTS.
//
// SDK facts these tests rely on (read in node_modules/azure-iothub/dist, azure-iot-device-amqp/dist
// and azure-iot-amqp-base/dist):
//   * The service Client dials 'amqps://' + HostName: HostName=localhost:<amqp port> reaches the
//     hub. It sends no SASL header (AMQP 0 1 0 0) and authenticates with a put-token on $cbs whose
//     audience is the raw HostName.
//   * Client.send resolves with MessageEnqueued once the hub settles the delivery as accepted; a
//     rejected delivery is turned into an error by the rejection's condition: amqp:not-found is
//     DeviceNotFoundError, amqp:resource-limit-exceeded is DeviceMaximumQueueDepthExceededError.
//   * The feedback receiver accepts every batch on arrival (rhea autoaccept); `message.data` is the
//     JSON array of records.
//   * The device transport `Amqp` dials 'amqps://' + (GatewayHostName || HostName); `AmqpWs` builds
//     'wss://' + (GatewayHostName || HostName) + ':443/$iothub/websocket'. The subclass below only
//     swaps 443 for the hub's HTTPS port in `_getConnectionUri`.
//   * The CA option of the AMQP transport is commented out in the SDK: trust comes from
//     NODE_EXTRA_CA_CERTS.
//   * open() connects and puts the device's token on $cbs; the telemetry link attaches on the first
//     sendEvent, the C2D link when a 'message' listener is added.
//   * sendEventBatch throws NotImplementedError('AMQP Transport does not support batching yet').
//   * complete / abandon / reject settle the delivery as accepted / released / rejected.

const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Client, Message, SharedAccessSignatureAuthenticationProvider } = require('azure-iot-device');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { Client: ServiceClient } = require('azure-iothub');
const { Message: ServiceMessage, NoRetry } = require('azure-iot-common');
const { Hub, Inbox, withTimeout, waitUntil, propertiesOf } = require('./hub');

const hub = new Hub();
const clients = [];
const OP_MS = 30000;

class AmqpWsOnHubPort extends AmqpWs {
  _getConnectionUri(credentials) {
    return super._getConnectionUri(credentials).replace(':443/', `:${hub.httpsPort}/`);
  }
}

const TRANSPORTS = [
  { name: 'amqp', Transport: Amqp, gatewayHost: () => `${hub.host}:${hub.amqpPort}` },
  { name: 'amqp-ws', Transport: AmqpWsOnHubPort, gatewayHost: () => undefined },
];

after(async () => {
  for (const client of clients) {
    try {
      client.removeAllListeners('message');
      await withTimeout(client.close(), 10000, 'close');
    } catch {
      // best effort
    }
  }
  await hub.cleanup();
});

function track(client) {
  clients.push(client);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => {}); // errors are asserted through the API calls
  return client;
}

function deviceClient(device, Transport, gatewayHost, key) {
  const gateway = gatewayHost ? `;GatewayHostName=${gatewayHost}` : '';
  let cs = hub.connectionString(device, gateway);
  if (key) cs = cs.replace(/SharedAccessKey=[^;]*/, `SharedAccessKey=${key}`);
  return track(Client.fromConnectionString(cs, Transport));
}

/** A device client authenticated by a fixed SAS token for `deviceId`. */
function tokenClient(deviceId, token, Transport, gatewayHost) {
  const credentials = { host: hub.host, deviceId, sharedAccessSignature: token };
  if (gatewayHost) credentials.gatewayHostName = gatewayHost;
  return track(Client.fromAuthenticationProvider(new SharedAccessSignatureAuthenticationProvider(credentials), Transport));
}

const CUSTOM = { alert: 'yes', 'with space': 'a b', 'a/b': 'c/d', 'amp&eq=': 'x&y=z', plus: '1+1', percent: '100%' };

function telemetry(deviceId) {
  const msg = new Message(JSON.stringify({ temperature: 21.5, deviceId }));
  msg.messageId = `mid-${crypto.randomUUID()}`;
  msg.correlationId = `cid-${crypto.randomUUID()}`;
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  for (const [k, v] of Object.entries(CUSTOM)) msg.properties.add(k, v);
  return msg;
}

function c2dFields() {
  return {
    messageId: `c2d-${crypto.randomUUID()}`,
    correlationId: `corr-${crypto.randomUUID()}`,
    contentType: 'text/plain',
    contentEncoding: 'utf-8',
    ack: 'full',
    expiry: new Date(Date.now() + 600000).toISOString(),
    properties: { color: 'blue', 'with-dash': 'a b&c=d/e' },
  };
}

function assertC2d(msg, body, fields, deviceId) {
  assert.equal(msg.getData().toString(), body);
  assert.equal(msg.messageId, fields.messageId);
  assert.equal(msg.correlationId, fields.correlationId);
  assert.equal(msg.contentType, fields.contentType);
  assert.equal(msg.contentEncoding, fields.contentEncoding);
  assert.equal(msg.to, `/devices/${deviceId}/messages/devicebound`);
  assert.equal(msg.ack, fields.ack);
  assert.equal(new Date(msg.expiryTimeUtc).getTime(), new Date(fields.expiry).getTime());
  assert.deepEqual(propertiesOf(msg), fields.properties);
}

/** Asserts that the error is UnauthorizedError or has it as its cause, as the SDK wraps it. */
function isUnauthorized(err) {
  const names = [];
  for (let e = err; e; e = e.amqpError || e.innerError || e.transportError) {
    names.push(e.constructor.name);
    if (names.length > 5) break;
  }
  assert.ok(names.includes('UnauthorizedError'), `${names.join(' <- ')}: ${err.message}`);
  return true;
}

// --- service client ----------------------------------------------------------------------------

describe('azure-iothub Client over AMQP', () => {
  test('send to an unknown device fails with DeviceNotFoundError', async () => {
    const client = await hub.serviceClient();
    await assert.rejects(withTimeout(client.send(`nodedev-missing-${crypto.randomUUID()}`, 'nobody'), OP_MS, 'send'), (err) => {
      assert.equal(err.constructor.name, 'DeviceNotFoundError', err.message);
      return true;
    });
  });

  test('a full queue fails with DeviceMaximumQueueDepthExceededError; purge frees it', async () => {
    const device = await hub.createDevice();
    const client = await hub.serviceClient();
    for (let i = 0; i < 50; i++) await hub.sendC2d(device.deviceId, `m${i}`, { messageId: `q-${i}` });
    await assert.rejects(withTimeout(client.send(device.deviceId, 'one too many'), OP_MS, 'send'), (err) => {
      assert.equal(err.constructor.name, 'DeviceMaximumQueueDepthExceededError', err.message);
      return true;
    });
    assert.equal((await hub.purge(device.deviceId)).totalMessagesPurged, 50);
    await hub.sendC2d(device.deviceId, 'room again', { messageId: 'q-50' });
  });

  test('a wrong policy key cannot open the client', async () => {
    const key = crypto.randomBytes(32).toString('base64');
    const client = ServiceClient.fromConnectionString(hub.serviceConnectionString(key));
    client.setRetryPolicy(new NoRetry());
    try {
      await assert.rejects(withTimeout(client.open(), OP_MS, 'open'), isUnauthorized);
    } finally {
      await withTimeout(client.close(), OP_MS, 'close').catch(() => {});
    }
  });

  test('a policy without ServiceConnect cannot send', async () => {
    // registryRead has RegistryRead only: its token is valid, but the C2D link is refused.
    const device = await hub.createDevice();
    const client = ServiceClient.fromConnectionString(hub.serviceConnectionString(hub.policyKey('registryRead'), 'registryRead'));
    client.setRetryPolicy(new NoRetry());
    try {
      await withTimeout(client.open(), OP_MS, 'open');
      await assert.rejects(withTimeout(client.send(device.deviceId, new ServiceMessage('no')), OP_MS, 'send'), isUnauthorized);
    } finally {
      await withTimeout(client.close(), OP_MS, 'close').catch(() => {});
    }
    assert.equal((await hub.purge(device.deviceId)).totalMessagesPurged, 0);
  });
});

// --- devices -------------------------------------------------------------------------------------

for (const { name, Transport, gatewayHost } of TRANSPORTS) {
  describe(`azure-iot-device over ${name}`, () => {
    test('open, sendEvent with properties; the event is in the log', async () => {
      const device = await hub.createDevice();
      const client = deviceClient(device, Transport, gatewayHost());
      await withTimeout(client.open(), OP_MS, 'open');
      const msg = telemetry(device.deviceId);
      await withTimeout(client.sendEvent(msg), OP_MS, 'sendEvent');
      // sendEvent resolved on the hub's accepted disposition, given after the durable append.
      const [event] = await hub.findEvents(device.deviceId, (e) => e.systemProperties['message-id'] === msg.messageId, 1, 2000);
      const system = event.systemProperties;
      assert.equal(system['correlation-id'], msg.correlationId);
      assert.equal(system['content-type'], 'application/json');
      assert.equal(system['content-encoding'], 'utf-8');
      assert.equal(system['iothub-connection-auth-generation-id'], device.generationId);
      const auth = JSON.parse(system['iothub-connection-auth-method']);
      assert.deepEqual([auth.scope, auth.type, auth.issuer], ['device', 'sas', 'iothub']);
      assert.deepEqual(event.properties, CUSTOM);
      assert.equal(event.bodyEncoding, 'text');
      assert.equal(event.body, msg.getData());
      await withTimeout(client.close(), OP_MS, 'close');
    });

    test('sendEventBatch is not implemented by the AMQP transport', async () => {
      const device = await hub.createDevice();
      const client = deviceClient(device, Transport, gatewayHost());
      await withTimeout(client.open(), OP_MS, 'open');
      await assert.rejects(withTimeout(client.sendEventBatch([new Message('a'), new Message('b')]), OP_MS, 'sendEventBatch'), (err) => {
        assert.equal(err.constructor.name, 'NotImplementedError', err.message);
        return true;
      });
      // The messages one by one go through.
      for (const body of ['a', 'b']) {
        const m = new Message(body);
        m.messageId = `${body}-${device.deviceId}`;
        await withTimeout(client.sendEvent(m), OP_MS, 'sendEvent');
      }
      const events = await hub.findEvents(device.deviceId, () => true, 2);
      assert.deepEqual(events.map((e) => e.systemProperties['message-id']).sort(), [`a-${device.deviceId}`, `b-${device.deviceId}`]);
      await withTimeout(client.close(), OP_MS, 'close');
    });

    test('C2D from Client.send with every property; complete gives Success feedback', async () => {
      const device = await hub.createDevice();
      const client = deviceClient(device, Transport, gatewayHost());
      await withTimeout(client.open(), OP_MS, 'open');
      const inbox = new Inbox();
      client.on('message', inbox.handler);
      const fields = c2dFields();
      await hub.sendC2d(device.deviceId, 'hello amqp', fields);
      const msg = await inbox.next();
      assertC2d(msg, 'hello amqp', fields, device.deviceId);
      await withTimeout(client.complete(msg), OP_MS, 'complete');
      const record = await hub.feedbackFor(device.deviceId, fields.messageId);
      assert.equal(record.statusCode, 'Success');
      assert.equal(record.description, 'Success');
      assert.equal(record.deviceGenerationId, device.generationId);
      assert.equal((await hub.purge(device.deviceId)).totalMessagesPurged, 0);
      await withTimeout(client.close(), OP_MS, 'close');
    });

    test('C2D abandoned is delivered again; rejected gives Rejected feedback', async () => {
      const device = await hub.createDevice();
      const client = deviceClient(device, Transport, gatewayHost());
      await withTimeout(client.open(), OP_MS, 'open');
      const inbox = new Inbox();
      client.on('message', inbox.handler);
      const fields = c2dFields();
      await hub.sendC2d(device.deviceId, 'abandon then reject', fields);
      const first = await inbox.next();
      assertC2d(first, 'abandon then reject', fields, device.deviceId);
      await withTimeout(client.abandon(first), OP_MS, 'abandon');
      const again = await inbox.next();
      assertC2d(again, 'abandon then reject', fields, device.deviceId);
      await withTimeout(client.reject(again), OP_MS, 'reject');
      const record = await hub.feedbackFor(device.deviceId, fields.messageId);
      assert.equal(record.statusCode, 'Rejected');
      // Dead-lettered: not delivered again, nothing left to purge.
      await inbox.nothingFor(1000);
      assert.equal((await hub.purge(device.deviceId)).totalMessagesPurged, 0);
      await withTimeout(client.close(), OP_MS, 'close');
    });

    test('a wrong key cannot open; nothing is stored', async () => {
      const device = await hub.createDevice();
      const client = deviceClient(device, Transport, gatewayHost(), crypto.randomBytes(32).toString('base64'));
      await assert.rejects(withTimeout(client.open(), OP_MS, 'open'), isUnauthorized);
      await assert.rejects(withTimeout(client.sendEvent(new Message('must not land')), OP_MS, 'sendEvent'));
      assert.equal(await hub.countEvents(device.deviceId), 0);
    });

    test('an expired token is refused; nothing is stored', async () => {
      // Beyond the 5 minutes of clock skew the hub allows.
      const device = await hub.createDevice();
      const expiry = Math.floor(Date.now() / 1000) - 600;
      const token = Hub.token(`${hub.host}/devices/${device.deviceId}`, device.authentication.symmetricKey.primaryKey, undefined, expiry);
      const client = tokenClient(device.deviceId, token, Transport, gatewayHost());
      await assert.rejects(withTimeout(client.open(), OP_MS, 'open'), isUnauthorized);
      await assert.rejects(withTimeout(client.sendEvent(new Message('must not land')), OP_MS, 'sendEvent'));
      assert.equal(await hub.countEvents(device.deviceId), 0);
    });

    test("another device's token does not open this device's links; nothing is stored", async () => {
      const victim = await hub.createDevice();
      const other = await hub.createDevice();
      const token = Hub.token(`${hub.host}/devices/${other.deviceId}`, other.authentication.symmetricKey.primaryKey, undefined, Math.floor(Date.now() / 1000) + 3600);
      const client = tokenClient(victim.deviceId, token, Transport, gatewayHost());
      // The put-token itself succeeds (the token is valid for the other device); the telemetry
      // link of the victim is refused.
      await withTimeout(client.open(), OP_MS, 'open').catch(() => {});
      await assert.rejects(withTimeout(client.sendEvent(new Message('must not land')), OP_MS, 'sendEvent'), isUnauthorized);
      assert.equal(await hub.countEvents(victim.deviceId), 0);
      assert.equal(await hub.countEvents(other.deviceId), 0);
    });

    test('a token that expires while connected ends the device links', async () => {
      // The hub allows 5 minutes of clock skew: a token that expired 295 s ago still opens and
      // must be cut off about 5 s later.
      const device = await hub.createDevice();
      const expiry = Math.floor(Date.now() / 1000) - 295;
      const token = Hub.token(`${hub.host}/devices/${device.deviceId}`, device.authentication.symmetricKey.primaryKey, undefined, expiry);
      const client = tokenClient(device.deviceId, token, Transport, gatewayHost());
      let disconnected = false;
      client.on('disconnect', () => {
        disconnected = true;
      });
      await withTimeout(client.open(), OP_MS, 'open');
      const first = new Message('before expiry');
      first.messageId = `before-${device.deviceId}`;
      await withTimeout(client.sendEvent(first), OP_MS, 'sendEvent');
      await waitUntil(() => disconnected, 20000, 'the disconnect after the token expired');
      await assert.rejects(withTimeout(client.sendEvent(new Message('after expiry')), OP_MS, 'sendEvent after expiry'));
      const events = await hub.findEvents(device.deviceId, () => true, 1);
      assert.deepEqual(events.map((e) => e.systemProperties['message-id']), [first.messageId]);
    });
  });
}

'use strict';
// Device scenarios run with Microsoft's azure-iot-device 1.18.4 + azure-iot-device-mqtt 1.16.4
// (Node) against a running ferrohub, over MQTT/TLS and MQTT over WebSockets.
//
// Environment (set by conformance/run): FERROHUB_CONNECTION_STRING, FERROHUB_HTTPS_PORT,
// FERROHUB_MQTT_PORT, FERROHUB_DATA_DIR, NODE_EXTRA_CA_CERTS.
//
// SDK facts these tests rely on (read in node_modules/azure-iot-device-mqtt/dist):
//   * Mqtt connects to 'mqtts://' + (GatewayHostName || HostName) and MQTT.js takes the port from
//     that uri, so `GatewayHostName=localhost:<mqtt port>` reaches the hub while HostName=localhost
//     stays in the username and the SAS `sr`.
//   * MqttWs builds 'wss://' + (GatewayHostName || HostName) + ':443/$iothub/websocket'. The
//     subclass below only swaps 443 for the hub's HTTPS port (GatewayHostName is left unset).
//   * The CA is given with client.setOptions({ ca }) (PEM text or a file path).
//   * A 'message' listener subscribes devices/{id}/messages/devicebound/# (QoS 1). C2D topics are
//     matched with /^devices\/.*\/messages\/devicebound\/.*$/: the '/' after devicebound is required.
//     $.mid/$.cid/$.ct/$.ce/$.uid/$.exp/$.to map to fields; iothub-ack and application properties
//     land in message.properties. complete() over MQTT is a no-op (the PUBACK completes).
//   * A connection string may carry SharedAccessSignature=<token> instead of a key, but then
//     GatewayHostName is ignored (SharedAccessSignatureAuthenticationProvider.fromSharedAccessSignature
//     takes the host from the token's sr). Tokens are therefore given through the public
//     SharedAccessSignatureAuthenticationProvider constructor, whose credentials may carry
//     gatewayHostName, and Client.fromAuthenticationProvider.
//   * Any error while opening is wrapped as UnauthorizedError('Failure on first connection (Not
//     authorized): <cause>'), even ECONNREFUSED: the tests check the cause, which for a refused
//     CONNACK 5 is MQTT.js's 'Connection refused: Not authorized'.

const { test, describe, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Client, Message, SharedAccessSignatureAuthenticationProvider } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { Hub, Inbox, withTimeout, waitUntil, propertiesOf } = require('./hub');

const hub = new Hub();
const clients = [];
const OP_MS = 30000;

class MqttWsOnHubPort extends MqttWs {
  _getBaseTransportConfig(credentials) {
    const config = super._getBaseTransportConfig(credentials);
    config.uri = config.uri.replace(':443/', `:${hub.httpsPort}/`);
    return config;
  }
}

const TRANSPORTS = [
  { name: 'mqtt', Transport: Mqtt, gatewayHost: () => `${hub.host}:${hub.mqttPort}` },
  { name: 'mqtt-ws', Transport: MqttWsOnHubPort, gatewayHost: () => undefined },
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

async function newClient(connectionString, Transport) {
  return setUp(Client.fromConnectionString(connectionString, Transport));
}

/** A client authenticated by a fixed SAS token; `gatewayHostName` is where it connects. */
async function newTokenClient(deviceId, token, Transport, gatewayHostName) {
  const credentials = { host: hub.host, deviceId, sharedAccessSignature: token };
  if (gatewayHostName) credentials.gatewayHostName = gatewayHostName;
  return setUp(Client.fromAuthenticationProvider(new SharedAccessSignatureAuthenticationProvider(credentials), Transport));
}

async function setUp(client) {
  clients.push(client);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => {}); // errors are asserted through the API calls
  await withTimeout(client.setOptions({ ca: hub.ca }), OP_MS, 'setOptions');
  return client;
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

async function assertEventArrived(deviceId, msg) {
  const [event] = await hub.findEvents(deviceId, (e) => e.systemProperties['message-id'] === msg.messageId);
  const system = event.systemProperties;
  assert.equal(system['message-id'], msg.messageId);
  assert.equal(system['correlation-id'], msg.correlationId);
  assert.equal(system['content-type'], 'application/json');
  assert.equal(system['content-encoding'], 'utf-8');
  assert.deepEqual(event.properties, CUSTOM);
  assert.equal(event.bodyEncoding, 'text');
  assert.equal(event.body, msg.getData());
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
  assert.ok(msg.expiryTimeUtc, 'expiryTimeUtc is set');
  assert.equal(new Date(msg.expiryTimeUtc).getTime(), new Date(fields.expiry).getTime());
  assert.deepEqual(propertiesOf(msg), { 'iothub-ack': fields.ack, ...fields.properties });
}

for (const { name, Transport, gatewayHost } of TRANSPORTS) {
  const gateway = () => (gatewayHost() ? `;GatewayHostName=${gatewayHost()}` : '');
  describe(`azure-iot-device over ${name}`, () => {
    test('open and sendEvent with properties', async () => {
      const device = await hub.createDevice();
      const client = await newClient(hub.connectionString(device, gateway()), Transport);
      await withTimeout(client.open(), OP_MS, 'open');
      const msg = telemetry(device.deviceId);
      await withTimeout(client.sendEvent(msg), OP_MS, 'sendEvent');
      await assertEventArrived(device.deviceId, msg);
      await withTimeout(client.close(), OP_MS, 'close');
    });

    test('a token minted from the device policy (skn=device)', async () => {
      const device = await hub.createDevice();
      const token = Hub.token(`${hub.host}/devices/${device.deviceId}`, hub.policyKey('device'), 'device', Math.floor(Date.now() / 1000) + 3600);
      const client = await newTokenClient(device.deviceId, token, Transport, gatewayHost());
      await withTimeout(client.open(), OP_MS, 'open');
      const msg = telemetry(device.deviceId);
      await withTimeout(client.sendEvent(msg), OP_MS, 'sendEvent');
      await assertEventArrived(device.deviceId, msg);
      await withTimeout(client.close(), OP_MS, 'close');
    });

    test('a disabled device fails to open', async () => {
      const device = await hub.createDevice('disabled');
      const client = await newClient(hub.connectionString(device, gateway()), Transport);
      await assert.rejects(withTimeout(client.open(), OP_MS, 'open'), (err) => {
        assert.equal(err.constructor.name, 'UnauthorizedError', err.message);
        assert.match(err.message, /Connection refused: Not authorized/, err.message);
        return true;
      });
    });

    test('C2D while connected, with every property; completed gives Success feedback', async () => {
      const device = await hub.createDevice();
      const client = await newClient(hub.connectionString(device, gateway()), Transport);
      const inbox = new Inbox();
      client.on('message', inbox.handler);
      await withTimeout(client.open(), OP_MS, 'open');
      const fields = c2dFields();
      await hub.sendC2d(device.deviceId, 'hello node', fields);
      const msg = await inbox.next();
      assertC2d(msg, 'hello node', fields, device.deviceId);
      await withTimeout(client.complete(msg), OP_MS, 'complete');
      const record = await hub.feedbackFor(device.deviceId, fields.messageId);
      assert.equal(record.statusCode, 'Success');
      assert.equal(record.deviceGenerationId, device.generationId);
      assert.equal((await hub.purge(device.deviceId)).totalMessagesPurged, 0);
      await withTimeout(client.close(), OP_MS, 'close');
    });

    test('C2D sent while offline arrives after reopening', async () => {
      const device = await hub.createDevice();
      const client = await newClient(hub.connectionString(device, gateway()), Transport);
      const inbox = new Inbox();
      client.on('message', inbox.handler);
      await withTimeout(client.open(), OP_MS, 'open');
      const first = c2dFields();
      await hub.sendC2d(device.deviceId, 'first', first);
      await client.complete(await inbox.next());

      await withTimeout(client.close(), OP_MS, 'close');
      const second = c2dFields();
      await hub.sendC2d(device.deviceId, 'while offline', second);
      await withTimeout(client.open(), OP_MS, 'reopen');
      const msg = await inbox.next();
      assertC2d(msg, 'while offline', second, device.deviceId);
      await client.complete(msg);
      await inbox.nothingFor(500);
      await withTimeout(client.close(), OP_MS, 'close');
    });
  });
}

test('mqtt: an expired token closes the connection', async () => {
  // The hub allows 5 minutes of clock skew: a token that expired 295 s ago still connects and
  // must be cut off about 5 s later.
  const device = await hub.createDevice();
  const expiry = Math.floor(Date.now() / 1000) - 295;
  const token = Hub.token(`${hub.host}/devices/${device.deviceId}`, device.authentication.symmetricKey.primaryKey, undefined, expiry);
  const client = await newTokenClient(device.deviceId, token, Mqtt, `${hub.host}:${hub.mqttPort}`);
  let disconnected = false;
  client.on('disconnect', () => {
    disconnected = true;
  });
  await withTimeout(client.open(), OP_MS, 'open');
  await waitUntil(() => disconnected, 15000, 'the hub to close the connection of an expired token');
});

test('mqtt: key regeneration closes the live connection', async () => {
  const device = await hub.createDevice();
  const client = await newClient(hub.connectionString(device, `;GatewayHostName=${hub.host}:${hub.mqttPort}`), Mqtt);
  let disconnectedAt = null;
  client.on('disconnect', () => {
    disconnectedAt = Date.now();
  });
  await withTimeout(client.open(), OP_MS, 'open');
  const started = Date.now();
  const updated = { ...device, authentication: { type: 'sas', symmetricKey: { primaryKey: '', secondaryKey: '' } } };
  const { responseBody } = await hub.registry.update(updated);
  assert.notEqual(responseBody.authentication.symmetricKey.primaryKey, device.authentication.symmetricKey.primaryKey);
  await waitUntil(() => disconnectedAt !== null, 5000, 'the connection to close');
  assert.ok(disconnectedAt - started < 2000, `closed ${disconnectedAt - started} ms after the key change`);
});

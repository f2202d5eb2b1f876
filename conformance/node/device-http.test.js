'use strict';
// Device scenarios run with Microsoft's azure-iot-device 1.18.4 + azure-iot-device-http 1.14.4
// (Node) against a running ferrohub.
//
// Environment (set by conformance/run): FERROHUB_CONNECTION_STRING, FERROHUB_HTTPS_PORT,
// FERROHUB_DATA_DIR, NODE_EXTRA_CA_CERTS.
//
// SDK facts these tests rely on (read in node_modules/azure-iot-device-http/dist and
// azure-iot-http-base/dist):
//   * Requests go to https.request({ host: HostName }) with no port option: the port comes from an
//     https.Agent whose defaultPort is the hub's, passed as setOptions({ http: { agent } }).
//   * Http.setOptions calls back only when the options carry http.receivePolicy (or interval, at,
//     cron, drain, manualPolling); without it `await client.setOptions(...)` never settles. The
//     options object replaces the previous one, so ca, agent and receivePolicy go in one call.
//   * sendEvent: body as is, system properties as IoTHub-MessageId / IoTHub-CorrelationId /
//     iothub-contenttype / iothub-contentencoding headers, application properties as
//     iothub-app-<key> headers, chunked request body.
//   * sendEventBatch: Content-Type application/vnd.microsoft.iothub.json, a JSON array of
//     {"body": "<base64>", "properties": {"iothub-app-<key>": "<value>"}} (values concatenated raw
//     into the JSON, so they must not need escaping); system properties are not sent.
//   * C2D: a 'message' listener polls GET /devices/{id}/messages/devicebound every interval
//     seconds (and again at once after a 200, drain). toMessage maps iothub-messageid,
//     iothub-correlationid, iothub-to, iothub-expiry, keeps iothub-app-* headers as properties
//     under their full header name, and takes the lock token from the ETag minus its first and
//     last character (the quotes).
//   * complete: DELETE …/devicebound/{lock}; reject: DELETE …/devicebound/{lock}?reject;
//     abandon: POST …/devicebound/{lock}/abandon. Each expects a 2xx.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const https = require('node:https');
const crypto = require('node:crypto');
const { Client, Message } = require('azure-iot-device');
const { Http } = require('azure-iot-device-http');
const { NoRetry } = require('azure-iot-common');
const { Hub, Inbox, withTimeout, propertiesOf } = require('./hub');

const hub = new Hub();
const clients = [];
const agents = [];
const OP_MS = 30000;

after(async () => {
  for (const client of clients) {
    try {
      client.removeAllListeners('message');
      await withTimeout(client.close(), 10000, 'close');
    } catch {
      // best effort
    }
  }
  for (const agent of agents) agent.destroy();
  await hub.cleanup();
});

async function newClient(device) {
  const client = Client.fromConnectionString(hub.connectionString(device), Http);
  clients.push(client);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => {});
  const agent = new https.Agent({ keepAlive: true });
  agent.defaultPort = hub.httpsPort;
  agents.push(agent);
  await withTimeout(
    client.setOptions({ ca: hub.ca, http: { agent, receivePolicy: { interval: 1 } } }),
    OP_MS,
    'setOptions',
  );
  return client;
}

test('http: sendEvent with system and application properties', async () => {
  const device = await hub.createDevice();
  const client = await newClient(device);
  const msg = new Message('{"temperature": 19}');
  msg.messageId = `mid-${crypto.randomUUID()}`;
  msg.correlationId = `cid-${crypto.randomUUID()}`;
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.properties.add('alert', 'yes');
  msg.properties.add('level', '3');
  await withTimeout(client.sendEvent(msg), OP_MS, 'sendEvent');
  const [event] = await hub.findEvents(device.deviceId, (e) => e.systemProperties['message-id'] === msg.messageId);
  assert.equal(event.systemProperties['correlation-id'], msg.correlationId);
  assert.equal(event.systemProperties['content-type'], 'application/json');
  assert.equal(event.systemProperties['content-encoding'], 'utf-8');
  assert.deepEqual(event.properties, { alert: 'yes', level: '3' });
  assert.equal(event.body, '{"temperature": 19}');
});

test('http: sendEventBatch keeps each message with its properties', async () => {
  const device = await hub.createDevice();
  const client = await newClient(device);
  const batch = crypto.randomUUID();
  const messages = [0, 1, 2].map((i) => {
    const m = new Message(`batch body ${i} \u00e9`);
    m.properties.add('batch', batch);
    m.properties.add('index', String(i));
    return m;
  });
  // One message without properties: its JSON element has no "properties" member.
  messages.push(new Message('no properties'));
  await withTimeout(client.sendEventBatch(messages), OP_MS, 'sendEventBatch');
  const events = await hub.findEvents(device.deviceId, () => true, 4);
  assert.equal(events.length, 4);
  const withProps = events.filter((e) => e.properties.batch === batch);
  assert.equal(withProps.length, 3);
  for (const i of [0, 1, 2]) {
    const e = withProps.find((x) => x.properties.index === String(i));
    assert.ok(e, `event ${i} arrived`);
    assert.deepEqual(e.properties, { batch, index: String(i) });
    // The batch's bodies are bytes with no content type: the read API gives them as base64.
    const body = e.bodyEncoding === 'base64' ? Buffer.from(e.body, 'base64').toString('utf8') : e.body;
    assert.equal(body, `batch body ${i} \u00e9`);
  }
  const bare = events.find((e) => Object.keys(e.properties).length === 0);
  assert.ok(bare, 'the message without properties arrived');
  const bareBody = bare.bodyEncoding === 'base64' ? Buffer.from(bare.body, 'base64').toString('utf8') : bare.body;
  assert.equal(bareBody, 'no properties');
});

function c2dFields() {
  return {
    messageId: `c2d-${crypto.randomUUID()}`,
    correlationId: `corr-${crypto.randomUUID()}`,
    contentType: 'text/plain',
    contentEncoding: 'utf-8',
    ack: 'full',
    properties: { color: 'blue', size: 'xl' },
  };
}

function assertC2d(msg, body, fields, deviceId) {
  assert.equal(msg.getData().toString(), body);
  assert.equal(msg.messageId, fields.messageId);
  assert.equal(msg.correlationId, fields.correlationId);
  assert.match(msg.to, new RegExp(`^/devices/${deviceId}/messages/devicebound$`, 'i'));
  assert.ok(msg.lockToken && !msg.lockToken.includes('"'), `lock token ${msg.lockToken}`);
  const props = propertiesOf(msg);
  assert.deepEqual(props, { 'iothub-app-color': 'blue', 'iothub-app-size': 'xl' });
}

test('http: receive C2D and complete it; Success feedback', async () => {
  const device = await hub.createDevice();
  const fields = c2dFields();
  await hub.sendC2d(device.deviceId, 'complete me', fields);
  const client = await newClient(device);
  const inbox = new Inbox();
  client.on('message', inbox.handler);
  const msg = await inbox.next();
  assertC2d(msg, 'complete me', fields, device.deviceId);
  await withTimeout(client.complete(msg), OP_MS, 'complete');
  client.removeAllListeners('message');
  const record = await hub.feedbackFor(device.deviceId, fields.messageId);
  assert.equal(record.statusCode, 'Success');
  assert.equal(record.deviceGenerationId, device.generationId);
  assert.equal((await hub.purge(device.deviceId)).totalMessagesPurged, 0);
});

test('http: reject dead-letters the message; Rejected feedback', async () => {
  const device = await hub.createDevice();
  const fields = c2dFields();
  await hub.sendC2d(device.deviceId, 'reject me', fields);
  const client = await newClient(device);
  const inbox = new Inbox();
  client.on('message', inbox.handler);
  const msg = await inbox.next();
  assertC2d(msg, 'reject me', fields, device.deviceId);
  await withTimeout(client.reject(msg), OP_MS, 'reject');
  await inbox.nothingFor(2500);
  client.removeAllListeners('message');
  const record = await hub.feedbackFor(device.deviceId, fields.messageId);
  assert.equal(record.statusCode, 'Rejected');
  assert.equal((await hub.purge(device.deviceId)).totalMessagesPurged, 0);
});

test('http: abandon puts the message back; it is received again and completed', async () => {
  const device = await hub.createDevice();
  const fields = c2dFields();
  await hub.sendC2d(device.deviceId, 'abandon me', fields);
  const client = await newClient(device);
  const inbox = new Inbox();
  client.on('message', inbox.handler);
  const first = await inbox.next();
  assertC2d(first, 'abandon me', fields, device.deviceId);
  await withTimeout(client.abandon(first), OP_MS, 'abandon');
  const again = await inbox.next();
  assertC2d(again, 'abandon me', fields, device.deviceId);
  await withTimeout(client.complete(again), OP_MS, 'complete');
  client.removeAllListeners('message');
  const record = await hub.feedbackFor(device.deviceId, fields.messageId);
  assert.equal(record.statusCode, 'Success');
});

test('http: settling with a stale lock token fails', async () => {
  const device = await hub.createDevice();
  const fields = c2dFields();
  await hub.sendC2d(device.deviceId, 'settle twice', fields);
  const client = await newClient(device);
  const inbox = new Inbox();
  client.on('message', inbox.handler);
  const msg = await inbox.next();
  client.removeAllListeners('message');
  await withTimeout(client.complete(msg), OP_MS, 'complete');
  // The lock is gone: 412 DeviceMessageLockLost, which the SDK surfaces as an error.
  await assert.rejects(withTimeout(client.complete(msg), OP_MS, 'second complete'));
});

'use strict';
// The Event Hub-compatible endpoint read with Microsoft's @azure/event-hubs 6.0.4
// (EventHubConsumerClient.subscribe) against a running ferrohub, with telemetry sent by
// azure-iot-device 1.18.4 over MQTT (azure-iot-device-mqtt 1.16.4).
//
// Environment (set by conformance/run): as device-mqtt.test.js. The AMQP port is read from
// FERROHUB_DATA_DIR/listeners.json (key "amqp"): the hub runs with --amqp-port 0.
//
// SDK facts these tests rely on (read in node_modules/@azure/event-hubs/dist/commonjs):
//   * The connection string is the one `ferrohub eventhub connection-string` prints
//     (Endpoint=sb://localhost/;…;EntityPath=localhost). The port is given with
//     `customEndpointAddress: 'sb://localhost:<port>'`; the AMQP OPEN hostname and the token
//     audiences keep the Endpoint host. A port in Endpoint itself is honoured too.
//   * There is no CA option: NODE_EXTRA_CA_CERTS (set by conformance/run) makes Node trust the hub.
//   * subscribe() hands events to processEvents in batches (maxBatchSize), and errors to
//     processError; close() of the Subscription stops it.
//   * Events: annotations x-opt-sequence-number/-offset/-enqueued-time become sequenceNumber,
//     offset (string), enqueuedTimeUtc (Date); every other annotation lands in systemProperties,
//     and so do the message properties (messageId, correlationId, contentType, contentEncoding).
//     Application properties are `properties`. A data body that parses as JSON is parsed.
//   * An `amqp:not-found` refusal becomes MessagingError with code 'MessagingEntityNotFoundError';
//     `amqp:link:stolen` becomes 'ReceiverDisconnectedError'.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { EventHubConsumerClient, latestEventPosition, earliestEventPosition } = require('@azure/event-hubs');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { Hub, withTimeout, waitUntil } = require('./hub');

const hub = new Hub();
const WAIT_MS = 30000;
const amqpPort = Number(
  JSON.parse(fs.readFileSync(path.join(hub.dataDir, 'listeners.json'), 'utf8')).amqp.split(':').pop(),
);
const hubName = hub.host.split('.')[0];
const devices = [];
const consumers = [];

after(async () => {
  for (const c of consumers) {
    try {
      await withTimeout(c.close(), 10000, 'consumer close');
    } catch {
      // best effort
    }
  }
  for (const d of devices) {
    try {
      await withTimeout(d.close(), 10000, 'device close');
    } catch {
      // best effort
    }
  }
  await hub.cleanup();
});

function connectionString({ policy = 'service', key, port } = {}) {
  const host = port ? `${hub.host}:${port}` : hub.host;
  return `Endpoint=sb://${host}/;SharedAccessKeyName=${policy};SharedAccessKey=${key || hub.policyKey(policy)};EntityPath=${hubName}`;
}

function consumer(consumerGroup = '$Default', options = {}) {
  const c = new EventHubConsumerClient(consumerGroup, connectionString(options), {
    customEndpointAddress: options.port ? undefined : `sb://${hub.host}:${amqpPort}`,
    retryOptions: { maxRetries: 0, timeoutInMs: WAIT_MS },
  });
  consumers.push(c);
  return c;
}

async function sender() {
  const device = await hub.createDevice();
  const client = Client.fromConnectionString(
    hub.connectionString(device, `;GatewayHostName=${hub.host}:${hub.mqttPort}`),
    Mqtt,
  );
  devices.push(client);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => {});
  await withTimeout(client.setOptions({ ca: hub.ca }), WAIT_MS, 'setOptions');
  await withTimeout(client.open(), WAIT_MS, 'open');
  return { device, client };
}

const CUSTOM = { alert: 'yes', 'with space': 'a b', 'a/b': 'c/d', 'amp&eq=': 'x&y=z', percent: '100%' };

/** Sends `count` telemetry messages tagged `tag`; resolves once each is acknowledged (durable). */
async function send(client, deviceId, tag, count = 1) {
  const sent = [];
  for (let i = 0; i < count; i++) {
    const msg = new Message(JSON.stringify({ temperature: 20 + i, deviceId }));
    msg.messageId = `mid-${crypto.randomUUID()}`;
    msg.correlationId = `cid-${crypto.randomUUID()}`;
    msg.contentType = 'application/json';
    msg.contentEncoding = 'utf-8';
    for (const [k, v] of Object.entries(CUSTOM)) msg.properties.add(k, v);
    msg.properties.add('tag', tag);
    await withTimeout(client.sendEvent(msg), WAIT_MS, 'sendEvent');
    sent.push(msg);
  }
  return sent;
}

/** Subscribes and collects events and errors. */
class Collector {
  constructor() {
    this.events = [];
    this.errors = [];
    this.contexts = new Map();
    this.handlers = {
      processEvents: async (events, context) => {
        for (const e of events) this.events.push({ partitionId: context.partitionId, event: e });
        if (events.length) this.contexts.set(context.partitionId, context);
      },
      processError: async (err) => {
        this.errors.push(err);
      },
    };
  }

  async collect(predicate, count, ms = WAIT_MS) {
    let found = [];
    await waitUntil(() => {
      found = this.events.filter(({ event }) => predicate(event));
      return found.length >= count;
    }, ms, `${count} events (errors: ${this.errors.map((e) => e.message).join('; ')})`);
    return found;
  }

  async error(ms = WAIT_MS) {
    await waitUntil(() => this.errors.length > 0, ms, 'an error');
    return this.errors[0];
  }
}

const tagged = (deviceId, tag) => (e) =>
  e.systemProperties?.['iothub-connection-device-id'] === deviceId && e.properties?.tag === tag;

function assertEvent(event, device, msg) {
  const system = event.systemProperties;
  assert.deepEqual(event.body, JSON.parse(msg.getData()));
  assert.equal(event.messageId, msg.messageId);
  assert.equal(event.correlationId, msg.correlationId);
  assert.equal(event.contentType, 'application/json');
  assert.equal(system.contentEncoding, 'utf-8');
  assert.deepEqual(event.properties, { ...CUSTOM, tag: msg.properties.getValue('tag') });
  assert.equal(typeof event.sequenceNumber, 'number');
  assert.equal(typeof event.offset, 'string');
  assert.ok(event.enqueuedTimeUtc instanceof Date && Math.abs(event.enqueuedTimeUtc - Date.now()) < 300000);
  assert.equal(event.partitionKey, undefined);
  assert.equal(system['iothub-connection-device-id'], device.deviceId);
  assert.equal(system['iothub-connection-auth-generation-id'], device.generationId);
  assert.equal(JSON.parse(system['iothub-connection-auth-method']).scope, 'device');
  assert.equal(system['iothub-message-source'], 'Telemetry');
  assert.ok(Math.abs(new Date(system['iothub-enqueuedtime']) - event.enqueuedTimeUtc) < 1000, system);
}

test('partition ids and properties', async () => {
  const c = consumer();
  const props = await c.getEventHubProperties();
  assert.equal(props.name, hubName);
  assert.ok(props.createdOn instanceof Date);
  assert.ok(props.partitionIds.length > 0);
  assert.deepEqual(await c.getPartitionIds(), props.partitionIds);
  for (const id of props.partitionIds) {
    const p = await c.getPartitionProperties(id);
    assert.equal(p.eventHubName, hubName);
    assert.equal(p.partitionId, id);
    assert.equal(typeof p.beginningSequenceNumber, 'number');
    assert.equal(typeof p.lastEnqueuedSequenceNumber, 'number');
    assert.equal(typeof p.lastEnqueuedOffset, 'string');
    assert.ok(p.lastEnqueuedOnUtc instanceof Date);
    assert.equal(typeof p.isEmpty, 'boolean');
  }
});

test('subscribe to all partitions from the start sees every property', async () => {
  const { device, client } = await sender();
  const tag = crypto.randomUUID();
  const sent = await send(client, device.deviceId, tag, 3);
  const col = new Collector();
  const sub = consumer().subscribe(col.handlers, { startPosition: earliestEventPosition, maxBatchSize: 10, maxWaitTimeInSeconds: 1 });
  const got = await col.collect(tagged(device.deviceId, tag), 3);
  await sub.close();
  assert.equal(new Set(got.map((g) => g.partitionId)).size, 1);
  got.forEach(({ event }, i) => assertEvent(event, device, sent[i]));
});

test('the Endpoint port is honoured, and $default names $Default', async () => {
  const { device, client } = await sender();
  const tag = crypto.randomUUID();
  await send(client, device.deviceId, tag);
  const col = new Collector();
  const sub = consumer('$default', { port: amqpPort }).subscribe(col.handlers, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
  await col.collect(tagged(device.deviceId, tag), 1);
  await sub.close();
});

test('subscribe to one partition by sequence number and by enqueued time', async () => {
  const { device, client } = await sender();
  const tag = crypto.randomUUID();
  const sent = await send(client, device.deviceId, tag, 5);
  let col = new Collector();
  let sub = consumer().subscribe(col.handlers, { startPosition: earliestEventPosition, maxBatchSize: 10, maxWaitTimeInSeconds: 1 });
  const all = (await col.collect(tagged(device.deviceId, tag), 5)).map((g) => g);
  await sub.close();
  const partitionId = all[0].partitionId;
  const events = all.map((g) => g.event);
  assert.deepEqual(events.map((e) => e.messageId), sent.map((m) => m.messageId));

  // By sequence number, exclusive and inclusive.
  col = new Collector();
  sub = consumer().subscribe(partitionId, col.handlers, { startPosition: { sequenceNumber: events[2].sequenceNumber }, maxBatchSize: 10, maxWaitTimeInSeconds: 1 });
  let after = await col.collect(tagged(device.deviceId, tag), 2);
  await sub.close();
  assert.deepEqual(after.map((g) => g.event.messageId), sent.slice(3).map((m) => m.messageId));
  assert.ok(col.events.every((g) => g.partitionId === partitionId));

  col = new Collector();
  sub = consumer().subscribe(partitionId, col.handlers, { startPosition: { sequenceNumber: events[2].sequenceNumber, isInclusive: true }, maxWaitTimeInSeconds: 1 });
  after = await col.collect(() => true, 1);
  await sub.close();
  assert.equal(after[0].event.messageId, sent[2].messageId);

  // By enqueued time: the events enqueued after it.
  col = new Collector();
  sub = consumer().subscribe(partitionId, col.handlers, { startPosition: { enqueuedOn: events[1].enqueuedTimeUtc }, maxWaitTimeInSeconds: 1 });
  after = await col.collect(() => true, 1);
  await sub.close();
  assert.ok(after[0].event.enqueuedTimeUtc > events[1].enqueuedTimeUtc);
  assert.ok(after[0].event.sequenceNumber > events[1].sequenceNumber);

  // By offset (a string, as the SDK gives it back).
  col = new Collector();
  sub = consumer().subscribe(partitionId, col.handlers, { startPosition: { offset: events[3].offset, isInclusive: true }, maxWaitTimeInSeconds: 1 });
  after = await col.collect(() => true, 1);
  await sub.close();
  assert.equal(after[0].event.messageId, sent[3].messageId);
});

test('latest sees new telemetry only, with the last enqueued event tracked', async () => {
  const { device, client } = await sender();
  const tag = crypto.randomUUID();
  await send(client, device.deviceId, `${tag}-before`);
  const col = new Collector();
  const sub = consumer().subscribe(col.handlers, { startPosition: latestEventPosition, maxWaitTimeInSeconds: 1, trackLastEnqueuedEventProperties: true });
  // The receivers attach asynchronously: send until the first live event shows.
  const deadline = Date.now() + WAIT_MS;
  const fromDevice = (e) => e.systemProperties?.['iothub-connection-device-id'] === device.deviceId;
  const arrived = () => col.events.some((g) => fromDevice(g.event));
  while (!arrived() && Date.now() < deadline) {
    await send(client, device.deviceId, tag);
    await waitUntil(arrived, 500, 'a live event').catch(() => {});
  }
  const got = col.events.filter((g) => fromDevice(g.event));
  assert.ok(got.length > 0, 'no live event');
  assert.ok(got.every((g) => g.event.properties.tag === tag), 'an event sent before the subscription arrived');
  const last = col.contexts.get(got[0].partitionId).lastEnqueuedEventProperties;
  assert.equal(typeof last.sequenceNumber, 'number');
  assert.ok(last.sequenceNumber >= got[got.length - 1].event.sequenceNumber);
  assert.equal(typeof last.offset, 'string');
  assert.ok(last.enqueuedOn instanceof Date && last.retrievedOn instanceof Date);
  await sub.close();
});

// On a cluster the receivers may land on different nodes: the owner level holds across them.
test('an owner level receiver displaces another', async () => {
  const { device, client } = await sender();
  const tag = crypto.randomUUID();
  await send(client, device.deviceId, tag);
  let col = new Collector();
  let sub = consumer().subscribe(col.handlers, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
  const [{ partitionId }] = await col.collect(tagged(device.deviceId, tag), 1);
  await sub.close();

  const first = new Collector();
  const firstSub = consumer().subscribe(partitionId, first.handlers, { startPosition: earliestEventPosition, ownerLevel: 1, maxWaitTimeInSeconds: 1 });
  await first.collect(tagged(device.deviceId, tag), 1);
  const second = new Collector();
  const secondSub = consumer().subscribe(partitionId, second.handlers, { startPosition: earliestEventPosition, ownerLevel: 2, maxWaitTimeInSeconds: 1 });
  await second.collect(tagged(device.deviceId, tag), 1);
  const err = await first.error();
  assert.equal(err.code, 'ReceiverDisconnectedError', `${err.code}: ${err.message}`);
  await firstSub.close();
  await secondSub.close();
});

test('a consumer group that does not exist is not found', async () => {
  const col = new Collector();
  const sub = consumer('no-such-group').subscribe('0', col.handlers, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
  const err = await col.error();
  await sub.close();
  assert.equal(err.code, 'MessagingEntityNotFoundError', `${err.code}: ${err.message}`);
  assert.match(err.message, /no-such-group/);
});

test('a wrong key is refused', async () => {
  const c = consumer('$Default', { key: Buffer.from('wrong wrong wrong wrong wrong!!!').toString('base64') });
  await assert.rejects(c.getPartitionIds(), (err) => {
    assert.equal(err.code, 'UnauthorizedError', `${err.code}: ${err.message}`);
    return true;
  });
});

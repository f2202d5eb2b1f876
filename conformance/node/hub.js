'use strict';
// Shared helpers for the device suites: hub endpoints from the environment, device creation
// through azure-iothub's Registry, C2D send and feedback through azure-iothub's Client (AMQP),
// and the service-side REST calls no SDK makes (purge, the event read API).
//
// azure-iothub's Client connects to 'amqps://' + HostName, so HostName=localhost:<amqp port>
// reaches the hub's AMQP listener; its SAS `sr` (and the put-token audience) is then the raw
// 'localhost:<port>', which the hub accepts as its own host name. Its feedback receiver accepts
// every batch as it arrives (rhea autoaccept), which completes the batch.

const https = require('node:https');
const crypto = require('node:crypto');
const fs = require('node:fs');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const { Message: ServiceMessage } = require('azure-iot-common');

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`environment variable ${name} is not set (run the suite through conformance/run)`);
  }
  return value;
}

function parseConnectionString(cs) {
  const fields = {};
  for (const item of cs.trim().split(';')) {
    if (!item) continue;
    const eq = item.indexOf('=');
    fields[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return fields;
}

const API_VERSION = '2021-04-12';
const WAIT_MS = 15000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with `promise`, or rejects after `ms` with a message naming `what`. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitUntil(predicate, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

class Hub {
  constructor() {
    this.caPath = requireEnv('NODE_EXTRA_CA_CERTS');
    this.ca = fs.readFileSync(this.caPath, 'utf8');
    this.httpsPort = Number(requireEnv('FERROHUB_HTTPS_PORT'));
    this.mqttPort = Number(requireEnv('FERROHUB_MQTT_PORT'));
    this.amqpPort = Number(requireEnv('FERROHUB_AMQP_PORT'));
    this.dataDir = requireEnv('FERROHUB_DATA_DIR');
    const fields = parseConnectionString(requireEnv('FERROHUB_CONNECTION_STRING'));
    this.host = fields.HostName.split(':')[0];
    this.policy = fields.SharedAccessKeyName;
    this.key = fields.SharedAccessKey;
    this.agent = new https.Agent({ keepAlive: true });
    this.agent.defaultPort = this.httpsPort;
    const ownerCs = `HostName=${this.host};SharedAccessKeyName=${this.policy};SharedAccessKey=${this.key}`;
    this.registry = Registry.fromConnectionString(ownerCs);
    this.registry._restApiClient.setOptions({ http: { agent: this.agent } });
    this.created = [];
  }

  /** A SAS token signed with the base64-decoded `key` over `<encoded sr>\n<se>`. */
  static token(resource, key, keyName, expiry) {
    const sr = encodeURIComponent(resource);
    const sig = crypto
      .createHmac('sha256', Buffer.from(key, 'base64'))
      .update(`${sr}\n${expiry}`)
      .digest('base64');
    let token = `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${expiry}`;
    if (keyName) token += `&skn=${keyName}`;
    return token;
  }

  serviceToken() {
    return Hub.token(this.host, this.key, this.policy, Math.floor(Date.now() / 1000) + 3600);
  }

  policyKey(name) {
    const file = JSON.parse(fs.readFileSync(`${this.dataDir}/policies.json`, 'utf8'));
    const policy = file.policies.find((p) => p.keyName === name);
    if (!policy) throw new Error(`no policy ${name} in policies.json`);
    return policy.primaryKey;
  }

  /** A plain HTTPS request to the service API. Resolves {status, headers, body (string)}. */
  request(method, path, { headers = {}, body, query = {} } = {}) {
    const qs = new URLSearchParams({ 'api-version': API_VERSION, ...query }).toString();
    const options = {
      method,
      host: this.host,
      port: this.httpsPort,
      path: `${path}?${qs}`,
      ca: this.ca,
      headers: { Authorization: this.serviceToken(), ...headers },
    };
    if (body !== undefined) options.headers['Content-Length'] = Buffer.byteLength(body);
    const req = new Promise((resolve, reject) => {
      const r = https.request(options, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      r.on('error', reject);
      if (body !== undefined) r.write(body);
      r.end();
    });
    return withTimeout(req, 30000, `${method} ${path}`);
  }

  // --- registry -------------------------------------------------------------------------------

  async createDevice(status = 'enabled') {
    const deviceId = `nodedev-${crypto.randomUUID()}`;
    this.created.push(deviceId);
    const { responseBody } = await this.registry.create({ deviceId, status });
    return responseBody;
  }

  connectionString(device, extra = '') {
    return `HostName=${this.host};DeviceId=${device.deviceId};SharedAccessKey=${device.authentication.symmetricKey.primaryKey}${extra}`;
  }

  async cleanup() {
    for (const deviceId of this.created.splice(0)) {
      try {
        await this.registry.delete(deviceId);
      } catch {
        // already gone
      }
    }
    this.agent.destroy();
    if (this.service) {
      const service = this.service;
      this.service = undefined;
      try {
        await withTimeout(service.close(), 10000, 'closing the service client');
      } catch {
        // best effort
      }
    }
  }

  /** The owner's connection string for azure-iothub's Client (AMQP on the hub's AMQP port). */
  serviceConnectionString(key = this.key, policy = this.policy) {
    return `HostName=${this.host}:${this.amqpPort};SharedAccessKeyName=${policy};SharedAccessKey=${key}`;
  }

  /** The suite's azure-iothub Client, opened once; its feedback receiver keeps every record. */
  async serviceClient() {
    if (!this.servicePromise) {
      this.feedbackRecords = this.feedbackRecords || [];
      this.servicePromise = (async () => {
        const client = ServiceClient.fromConnectionString(this.serviceConnectionString());
        await withTimeout(client.open(), 30000, 'opening the service client');
        const { result: receiver } = await withTimeout(client.getFeedbackReceiver(), 30000, 'getFeedbackReceiver');
        receiver.on('message', (msg) => {
          this.feedbackRecords.push(...JSON.parse(msg.data.toString('utf8')));
        });
        receiver.on('errorReceived', () => {});
        this.service = client;
        return client;
      })();
    }
    return this.servicePromise;
  }

  // --- C2D, service side ----------------------------------------------------------------------

  /** Sends a C2D message with azure-iothub's Client.send (AMQP); resolves when the hub accepted it. */
  async sendC2d(deviceId, body, { messageId, correlationId, contentType, contentEncoding, ack, expiry, properties = {} } = {}) {
    const client = await this.serviceClient();
    const msg = new ServiceMessage(body);
    if (messageId !== undefined) msg.messageId = messageId;
    if (correlationId !== undefined) msg.correlationId = correlationId;
    if (contentType !== undefined) msg.contentType = contentType;
    if (contentEncoding !== undefined) msg.contentEncoding = contentEncoding;
    if (ack !== undefined) msg.ack = ack;
    // rhea writes absolute-expiry-time from a number of ms (a Date fails to encode).
    if (expiry !== undefined) msg.expiryTimeUtc = new Date(expiry).getTime();
    for (const [k, v] of Object.entries(properties)) msg.properties.add(k, v);
    const { result } = await withTimeout(client.send(deviceId, msg), 30000, `C2D send to ${deviceId}`);
    if (result.constructor.name !== 'MessageEnqueued') throw new Error(`C2D send resolved with ${result.constructor.name}`);
    return { messageId };
  }

  async purge(deviceId) {
    const res = await this.request('DELETE', `/devices/${encodeURIComponent(deviceId)}/commands`);
    if (res.status !== 200) throw new Error(`purge answered ${res.status}: ${res.body}`);
    return JSON.parse(res.body);
  }

  // --- feedback -------------------------------------------------------------------------------

  /** Waits for the feedback record of (deviceId, originalMessageId), read by the service
   *  client's feedback receiver. Records of other devices stay findable within this process. */
  async feedbackFor(deviceId, originalMessageId, ms = WAIT_MS) {
    await this.serviceClient();
    let found;
    await waitUntil(() => {
      found = this.feedbackRecords.find((r) => r.deviceId === deviceId && r.originalMessageId === originalMessageId);
      return found !== undefined;
    }, ms, `the feedback record for ${deviceId}/${originalMessageId}`);
    return found;
  }

  // --- event read API -------------------------------------------------------------------------

  /** How many events from `deviceId` the log holds now (one pass over every partition). */
  async countEvents(deviceId) {
    const parts = await this.request('GET', '/messages/events/partitions');
    if (parts.status !== 200) throw new Error(`partitions answered ${parts.status}: ${parts.body}`);
    let count = 0;
    for (const p of JSON.parse(parts.body).partitionIds) {
      let cursor = null;
      for (;;) {
        const query = { max: '1000' };
        if (cursor !== null) Object.assign(query, { sequenceNumber: String(cursor), inclusive: 'true' });
        const res = await this.request('GET', `/messages/events/partitions/${p}/events`, { query });
        if (res.status !== 200) throw new Error(`read events answered ${res.status}: ${res.body}`);
        const batch = JSON.parse(res.body);
        count += batch.events.filter((e) => e.systemProperties['iothub-connection-device-id'] === deviceId).length;
        if (batch.events.length < 1000 || batch.nextSequenceNumber === undefined || batch.nextSequenceNumber === null) break;
        cursor = batch.nextSequenceNumber;
      }
    }
    return count;
  }

  /** Scans every partition for events from `deviceId` until `count` events match `predicate`. */
  async findEvents(deviceId, predicate, count = 1, ms = WAIT_MS) {
    const parts = await this.request('GET', '/messages/events/partitions');
    if (parts.status !== 200) throw new Error(`partitions answered ${parts.status}: ${parts.body}`);
    const cursors = new Map(JSON.parse(parts.body).partitionIds.map((p) => [p, null]));
    const found = [];
    const deadline = Date.now() + ms;
    for (;;) {
      for (const [p, cursor] of cursors) {
        const query = { max: '1000' };
        if (cursor !== null) Object.assign(query, { sequenceNumber: String(cursor), inclusive: 'true' });
        const res = await this.request('GET', `/messages/events/partitions/${p}/events`, { query });
        if (res.status !== 200) throw new Error(`read events answered ${res.status}: ${res.body}`);
        const batch = JSON.parse(res.body);
        for (const event of batch.events) {
          if (event.systemProperties['iothub-connection-device-id'] === deviceId && predicate(event)) found.push(event);
        }
        if (batch.nextSequenceNumber !== undefined && batch.nextSequenceNumber !== null) cursors.set(p, batch.nextSequenceNumber);
      }
      if (found.length >= count) return found;
      if (Date.now() > deadline) {
        throw new Error(`found ${found.length} of ${count} events from ${deviceId} within ${ms} ms`);
      }
      await sleep(200);
    }
  }
}

/** Collects messages from a client's 'message' events; `next()` waits for the next one. */
class Inbox {
  constructor() {
    this.queue = [];
    this.waiters = [];
    this.handler = (msg) => {
      const waiter = this.waiters.shift();
      if (waiter) waiter(msg);
      else this.queue.push(msg);
    };
  }

  next(ms = WAIT_MS) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), ms, 'receiving a C2D message');
  }

  async nothingFor(ms) {
    await sleep(ms);
    if (this.queue.length) throw new Error(`unexpected C2D message ${this.queue[0].messageId}`);
  }
}

function propertiesOf(message) {
  const out = {};
  for (let i = 0; i < message.properties.count(); i++) {
    const item = message.properties.getItem(i);
    out[item.key] = item.value;
  }
  return out;
}

/**
 * Test options that skip a test which cannot apply to a cluster (`conformance/run --cluster`
 * sets FERROHUB_CLUSTER=1), saying why; each is listed in conformance/README.md.
 */
function notInCluster(reason) {
  return { skip: process.env.FERROHUB_CLUSTER === '1' ? `not on a cluster: ${reason}` : false };
}

module.exports = { Hub, Inbox, WAIT_MS, sleep, withTimeout, waitUntil, propertiesOf, notInCluster };

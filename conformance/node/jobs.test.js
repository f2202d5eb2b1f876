'use strict';
// Scheduled jobs v2 with Microsoft's azure-iothub 1.16.6 (JobClient) against a running ferrohub,
// the devices connected with azure-iot-device 1.18.4 + azure-iot-device-mqtt (twins-methods-
// contract.md §6).
//
// SDK facts these tests rely on (read in node_modules/azure-iothub/dist/job_client.js):
//   * scheduleTwinUpdate / scheduleDeviceMethod PUT /jobs/v2/{encodeURIComponent(id)} with
//     startTime null when no Date is given and maxExecutionTimeInSeconds as given (possibly
//     null); the method form fills payload and responseTimeoutInSeconds with its defaults.
//   * getJob / cancelJob do not encode the id. Their promises, and the schedule calls', resolve
//     to {jobStatus, response}; Query.next() to {result, response}.
//   * The REST client dials 443: its agent is replaced with one whose defaultPort is the hub's.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { JobClient } = require('azure-iothub');
const { Hub, withTimeout, waitUntil, WAIT_MS, notInCluster } = require('./hub');

const hub = new Hub();
const clients = [];
const OP_MS = 30000;

const jobs = JobClient.fromConnectionString(
  `HostName=${hub.host};SharedAccessKeyName=${hub.policy};SharedAccessKey=${hub.key}`,
);
jobs._restApiClient.setOptions({ http: { agent: hub.agent } });

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

async function openClient(device) {
  const client = Client.fromConnectionString(
    hub.connectionString(device, `;GatewayHostName=${hub.host}:${hub.mqttPort}`),
    Mqtt,
  );
  clients.push(client);
  client.setRetryPolicy(new NoRetry());
  client.on('error', () => {});
  await withTimeout(client.setOptions({ ca: hub.ca }), OP_MS, 'setOptions');
  await withTimeout(client.open(), OP_MS, 'open');
  return client;
}

async function waitStatus(jobId, status) {
  let job;
  await waitUntil(async () => {
    job = (await jobs.getJob(jobId)).jobStatus;
    return job.status === status;
  }, WAIT_MS, `job ${jobId} ${status}`);
  return job;
}

test('scheduleTwinUpdate patches the devices its condition selects', async () => {
  const device = await hub.createDevice();
  const other = await hub.createDevice();
  const tag = `node-${crypto.randomUUID().slice(0, 8)}`;
  await hub.registry.updateTwin(device.deviceId, { tags: { batch: tag } }, '*');
  const jobId = `node-twin-${crypto.randomUUID()}`;
  // Node's e2e patch: etag "*", empty desired and reported besides the tags.
  const { jobStatus: created } = await jobs.scheduleTwinUpdate(
    jobId,
    `tags.batch = '${tag}'`,
    { etag: '*', tags: { key: 'value2' }, properties: { desired: { rate: 5 }, reported: {} } },
    new Date(),
    120,
  );
  assert.equal(created.jobId, jobId);
  assert.equal(created.status, 'queued');
  const done = await waitStatus(jobId, 'completed');
  assert.deepEqual(done.deviceJobStatistics, {
    deviceCount: 1, failedCount: 0, succeededCount: 1, runningCount: 0, pendingCount: 0,
  });
  const { responseBody: twin } = await hub.registry.getTwin(device.deviceId);
  assert.equal(twin.tags.key, 'value2');
  assert.equal(twin.properties.desired.rate, 5);
  const { responseBody: untouched } = await hub.registry.getTwin(other.deviceId);
  assert.equal(untouched.tags.key, undefined);
});

// A method job's runner sees only the method subscriptions of its own node: a device connected to
// another node counts as offline, and the job waits for it until its window ends.
test('scheduleDeviceMethod calls a connected device', notInCluster('a method job calls only devices connected to the node that runs it'), async () => {
  const device = await hub.createDevice();
  const client = await openClient(device);
  const calls = [];
  client.onDeviceMethod('reboot', (req, res) => {
    calls.push(req.payload);
    res.send(200, { rebooting: true });
  });
  // onDeviceMethod subscribes in the background; a job started meanwhile waits for it.
  const jobId = `node-method-${crypto.randomUUID()}`;
  await jobs.scheduleDeviceMethod(jobId, `deviceId = '${device.deviceId}'`, { methodName: 'reboot', payload: { delay: 1 } });
  const done = await waitStatus(jobId, 'completed');
  assert.equal(done.deviceJobStatistics.succeededCount, 1);
  assert.deepEqual(calls, [{ delay: 1 }]);
});

test('cancelJob cancels a job that has not started', async () => {
  const jobId = `node-cancel-${crypto.randomUUID().slice(0, 8)}`;
  const later = new Date(Date.UTC(2099, 0, 1));
  const { jobStatus: created } = await jobs.scheduleTwinUpdate(jobId, "deviceId = 'nobody'", { etag: '*', tags: { a: 1 } }, later, 60);
  assert.equal(created.status, 'queued');
  const { jobStatus: cancelled } = await jobs.cancelJob(jobId);
  assert.equal(cancelled.status, 'cancelled');
  assert.equal((await jobs.getJob(jobId)).jobStatus.status, 'cancelled');
});

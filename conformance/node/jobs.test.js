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
//     to {jobStatus, response}; Query.next() to {result, message}.
//   * createQuery(jobType, jobStatus, pageSize) GETs /jobs/v2/query?jobStatus=&jobType= with
//     x-ms-max-item-count: pageSize and, after the first page, x-ms-continuation from the
//     previous answer; hasMoreResults = (x-ms-continuation header !== undefined).
//   * Called with no argument (the promise form), next() sends no continuation at all and asks
//     for the first page again and again: the tests pass query.next(query.continuationToken).
//   * The REST client dials 443: its agent is replaced with one whose defaultPort is the hub's.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { NoRetry } = require('azure-iot-common');
const { JobClient } = require('azure-iothub');
const { Hub, withTimeout, waitUntil, WAIT_MS } = require('./hub');

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

test('scheduleDeviceMethod calls a connected device', async () => {
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

// Every page of `query`: its rows, one array a page.
async function allPages(query) {
  const pages = [];
  while (query.hasMoreResults) {
    const { result, message: response } = await withTimeout(query.next(query.continuationToken), OP_MS, 'next');
    assert.equal(response.statusCode, 200);
    assert.equal(response.headers['x-ms-item-type'], 'jobResponse');
    assert.notEqual(response.headers['x-ms-continuation'], '', 'never an empty token');
    pages.push(result);
    assert.ok(pages.length < 200, 'paging ends');
  }
  return pages;
}

test('createQuery pages through the jobs of one type and status', async () => {
  // Jobs of other tests share the hub: this run's jobs share a prefix, and other jobs may sit
  // between them in id order.
  const prefix = `node-q-${crypto.randomUUID().slice(0, 8)}-`;
  const later = new Date(Date.UTC(2099, 0, 1));
  const nobody = "deviceId = 'nobody'";
  const twins = [];
  for (let i = 0; i < 5; i++) {
    const jobId = `${prefix}twin-${i}`;
    await jobs.scheduleTwinUpdate(jobId, nobody, { etag: '*', tags: { q: i } }, later, 60);
    await jobs.cancelJob(jobId);
    twins.push(jobId);
  }
  const method = `${prefix}method`;
  await jobs.scheduleDeviceMethod(method, nobody, { methodName: 'noop' }, later, 60);
  await jobs.cancelJob(method);
  const queued = `${prefix}queued`;
  await jobs.scheduleTwinUpdate(queued, nobody, { etag: '*', tags: { q: 'queued' } }, later, 60);

  // Cancelled twin updates, two a page: full pages but the last, every row of the type and
  // status asked for, in id order, none twice, this run's five among them.
  const pages = await allPages(jobs.createQuery('scheduleUpdateTwin', 'cancelled', 2));
  assert.ok(pages.length >= 3, `five jobs in pages of two: ${pages.length} pages`);
  pages.slice(0, -1).forEach((page) => assert.equal(page.length, 2));
  assert.ok(pages[pages.length - 1].length >= 1 && pages[pages.length - 1].length <= 2);
  const rows = pages.flat();
  for (const row of rows) {
    assert.equal(row.type, 'scheduleUpdateTwin', row.jobId);
    assert.equal(row.status, 'cancelled', row.jobId);
  }
  const ids = rows.map((row) => row.jobId);
  assert.deepEqual(ids, [...ids].sort(), 'id order');
  assert.equal(new Set(ids).size, ids.length, 'no job twice');
  assert.deepEqual(ids.filter((id) => id.startsWith(prefix)), twins);

  // The other type, and the other status, each find only theirs.
  const methods = (await allPages(jobs.createQuery('scheduleDeviceMethod', 'cancelled', 2))).flat();
  assert.deepEqual(methods.map((row) => row.jobId).filter((id) => id.startsWith(prefix)), [method]);
  assert.ok(methods.every((row) => row.type === 'scheduleDeviceMethod' && row.status === 'cancelled'));
  const waiting = (await allPages(jobs.createQuery('scheduleUpdateTwin', 'queued', 2))).flat();
  assert.deepEqual(waiting.map((row) => row.jobId).filter((id) => id.startsWith(prefix)), [queued]);
  assert.ok(waiting.every((row) => row.status === 'queued'));
  await jobs.cancelJob(queued);
});

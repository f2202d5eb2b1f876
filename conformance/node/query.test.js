'use strict';
// Query scenarios run with Microsoft's azure-iothub 1.16.6 (Registry.createQuery) against a
// running ferrohub (twins-methods-contract.md §5).
//
// SDK facts these tests rely on (read in node_modules/azure-iothub/dist/query.js, registry.js):
//   * createQuery(sql, pageSize) POSTs /devices/query with {"query": sql} and
//     x-ms-max-item-count: pageSize; next() sends x-ms-continuation from the previous answer.
//   * hasMoreResults = (x-ms-continuation header !== undefined): an empty header would page
//     forever, so the hub must leave it out on the last page.
//   * next() resolves to {result, message}; nextAsTwin() wraps every row in a Twin, which throws
//     without deviceId.
//   * Called with no argument (the promise form), next() sends no continuation at all: only the
//     callback form and nextAsTwin() fall back to query.continuationToken, so the promise form
//     must pass it (query.next(query.continuationToken)).
//
// Other suites use the same hub, so every query here is scoped to this run's own tag.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Hub, withTimeout } = require('./hub');

const hub = new Hub();
const { registry } = hub;
const created = [];
const OP_MS = 30000;

after(async () => {
  for (const id of created) {
    try {
      await withTimeout(registry.delete(id), OP_MS, 'delete');
    } catch {
      // already gone
    }
  }
  hub.agent.destroy();
});

async function fleet(n) {
  const run = `run-${crypto.randomUUID()}`;
  const ids = [];
  for (let i = 0; i < n; i++) {
    const deviceId = `node-q-${crypto.randomUUID()}`;
    await withTimeout(registry.create({ deviceId }), OP_MS, 'create');
    created.push(deviceId);
    const { responseBody: twin } = await withTimeout(registry.getTwin(deviceId), OP_MS, 'getTwin');
    await withTimeout(
      registry.updateTwin(deviceId, { tags: { run, i, region: i % 2 ? 'EU' : 'US' } }, twin.etag),
      OP_MS,
      'updateTwin',
    );
    ids.push(deviceId);
  }
  return { run, ids };
}

async function allPages(query, asTwin) {
  const sizes = [];
  const rows = [];
  while (query.hasMoreResults) {
    const { result, message } = await withTimeout(
      asTwin ? query.nextAsTwin() : query.next(query.continuationToken),
      OP_MS,
      'next',
    );
    assert.equal(message.statusCode, 200);
    assert.notEqual(message.headers['x-ms-continuation'], '', 'never an empty token');
    sizes.push(result.length);
    rows.push(...result);
    assert.ok(sizes.length < 50, 'paging ends');
  }
  return { sizes, rows };
}

test('createQuery pages through twins with nextAsTwin', async () => {
  const { run, ids } = await fleet(7);
  const query = registry.createQuery(`SELECT * FROM devices WHERE tags.run = '${run}'`, 3);
  const { sizes, rows } = await allPages(query, true);
  assert.deepEqual(sizes, [3, 3, 1]);
  assert.deepEqual(rows.map((t) => t.deviceId), [...ids].sort());
  const third = rows.find((t) => t.deviceId === ids[3]);
  assert.deepEqual(third.tags, { run, i: 3, region: 'EU' });
  assert.equal(third.status, 'enabled');

  // Ending exactly on the last row: one page, no more results.
  const eu = registry.createQuery(
    `SELECT * FROM devices WHERE tags.run = '${run}' AND tags.region = 'EU'`,
    3,
  );
  const euPages = await allPages(eu, true);
  assert.deepEqual(euPages.sizes, [3]);
  assert.equal(eu.hasMoreResults, false);
});

test('createQuery pages through projections and groups with next', async () => {
  const { run, ids } = await fleet(4);
  const projected = await allPages(
    registry.createQuery(`SELECT deviceId, tags.i FROM devices WHERE tags.run = '${run}'`, 1),
    false,
  );
  assert.deepEqual(projected.sizes, [1, 1, 1, 1]);
  assert.deepEqual(
    projected.rows,
    [...ids].sort().map((deviceId) => ({ deviceId, i: ids.indexOf(deviceId) })),
  );

  const groups = await allPages(
    registry.createQuery(
      `SELECT COUNT() AS n, tags.region AS region FROM devices WHERE tags.run = '${run}' GROUP BY tags.region`,
      1,
    ),
    false,
  );
  assert.deepEqual(groups.sizes, [1, 1]);
  assert.deepEqual(
    groups.rows.sort((a, b) => a.region.localeCompare(b.region)),
    [{ n: 2, region: 'EU' }, { n: 2, region: 'US' }],
  );
});

test('an unsupported query is refused with the construct named', async () => {
  const query = registry.createQuery('SELECT * FROM devices ORDER BY deviceId', 10);
  await assert.rejects(withTimeout(query.next(), OP_MS, 'next'), (err) => {
    assert.equal(err.response.statusCode, 400);
    assert.match(err.responseBody, /ORDER BY/);
    return true;
  });
});

'use strict';
// A Node device on azure-iot-device-amqp for the Python suite: opens the device of the connection
// string in AMQP_DEVICE_CONNECTION_STRING, prints each C2D message it receives as one JSON line
// and completes it. It exits after AMQP_DEVICE_MESSAGES messages (default 1), or with status 1 on
// an error. Messages sent before it starts wait in the device's queue.
//
// usage: AMQP_DEVICE_CONNECTION_STRING='HostName=…;GatewayHostName=localhost:<amqp port>;…' node tools/amqp-device.js

const { Client } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');
const { NoRetry } = require('azure-iot-common');

const connectionString = process.env.AMQP_DEVICE_CONNECTION_STRING;
const wanted = Number(process.env.AMQP_DEVICE_MESSAGES || '1');
if (!connectionString) {
  console.error('AMQP_DEVICE_CONNECTION_STRING is not set');
  process.exit(2);
}

function print(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function main() {
  const client = Client.fromConnectionString(connectionString, Amqp);
  client.setRetryPolicy(new NoRetry());
  client.on('error', (err) => {
    console.error(`device error: ${err.message}`);
    process.exit(1);
  });
  await client.open();
  let received = 0;
  client.on('message', async (msg) => {
    const properties = {};
    for (let i = 0; i < msg.properties.count(); i++) {
      const item = msg.properties.getItem(i);
      properties[item.key] = item.value;
    }
    print({
      messageId: msg.messageId,
      correlationId: msg.correlationId,
      contentType: msg.contentType,
      contentEncoding: msg.contentEncoding,
      to: msg.to,
      ack: msg.ack,
      expiryTimeUtc: msg.expiryTimeUtc ? new Date(msg.expiryTimeUtc).getTime() : null,
      properties,
      body: msg.getData().toString('utf8'),
    });
    await client.complete(msg);
    received += 1;
    if (received >= wanted) {
      await client.close();
      process.exit(0);
    }
  });
}

main().catch((err) => {
  console.error(`device failed: ${err.message}`);
  process.exit(1);
});

'use strict';
// One scenario of the official Node client (rocketmq-client-nodejs 1.0.8) against a Comet node.
//
// Run by tests/tests/clients.rs: `node scenarios.js SCENARIO SPEC_JSON`. The Rust test starts the
// node, creates the topics and groups, and asserts on what this script reports; the script only
// drives the client and records what it saw. Protocol on stdout, one JSON object a line:
//   {"phase": "consumed"}   every expected delivery was seen; the consumers keep running until
//                           the test writes a line on stdin (meanwhile it checks the broker)
//   {"result": {...}}       the observations, after every client shut down
// Every wait is bounded by the spec's `deadline_s`; a timeout fails with what was seen so far.
// The scenarios and their reports are the same as tests/clients/python/scenarios.py.

const readline = require('node:readline');
const {
  ConsumeResult, FilterExpression, Producer, PushConsumer, SimpleConsumer,
} = require('rocketmq-client-nodejs');
const { FilterType, TransactionResolution } = require(
  'rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb');

const stdinLines = readline.createInterface({ input: process.stdin });
const stdinIterator = stdinLines[Symbol.asyncIterator]();

function view(mv) {
  return {
    id: mv.messageId,
    topic: mv.topic,
    body: mv.body.toString(),
    tag: mv.tag || null,
    keys: [...mv.keys].sort(),
    props: Object.fromEntries(mv.properties),
    group: mv.messageGroup || null,
    attempt: mv.deliveryAttempt ?? null,
    delivery_ms: mv.deliveryTimestamp ? mv.deliveryTimestamp.getTime() : null,
    at_ms: Date.now(),
  };
}

// Records shared by the listeners; `waitFor` resolves on the add that satisfies it (no polling).
class Log {
  constructor(deadline) {
    this.deadline = deadline;
    this.records = [];
    this.waiters = [];
  }

  add(record) {
    this.records.push(record);
    this.waiters = this.waiters.filter(w => !w.check());
  }

  waitFor(pred, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${what}: not reached; seen ${JSON.stringify(this.records)}`));
      }, Math.max(this.deadline - Date.now(), 0));
      const waiter = {
        check: () => {
          if (!pred(this.records)) return false;
          clearTimeout(timer);
          resolve([ ...this.records ]);
          return true;
        },
      };
      if (!waiter.check()) this.waiters.push(waiter);
    });
  }
}

// Quiet logger: the client's own log lines go to stderr only at warn and above.
const logger = {
  debug() {},
  info() {},
  warn(...args) { console.error('[client warn]', ...args); },
  error(...args) { console.error('[client error]', ...args); },
};

function options(spec, extra) {
  return { endpoints: spec.endpoint, namespace: '', requestTimeout: 3000, logger, ...extra };
}

async function started(client) {
  await client.startup();
  return client;
}

async function pauseForChecks() {
  console.log(JSON.stringify({ phase: 'consumed' }));
  await stdinIterator.next();
}

// Receives (each call a long poll) until `pred(all received views)` holds.
async function receiveUntil(consumer, deadline, pred, invisibleMs, what) {
  const got = [];
  while (!pred(got.map(g => g[0]))) {
    if (Date.now() > deadline) {
      throw new Error(`${what}: not reached; received ${JSON.stringify(got.map(g => g[0]))}`);
    }
    for (const m of await consumer.receive(16, invisibleMs)) got.push([ view(m), m ]);
  }
  return got;
}

function simpleConsumer(spec, group, topic) {
  return started(new SimpleConsumer(options(spec, {
    consumerGroup: group,
    subscriptions: new Map([[ topic, FilterExpression.SUB_ALL ]]),
    awaitDuration: 2000,
  })));
}

// Starts a producer of `spec.topic` and sends `messages` in order; returns it with what was
// sent (message id, body, send time and delivery time).
async function sendAll(spec, messages) {
  const producer = await started(new Producer(options(spec, { topics: [ spec.topic ] })));
  const sent = [];
  for (const m of messages) {
    const receipt = await producer.send(m);
    sent.push({
      id: receipt.messageId,
      body: m.body.toString(),
      sent_ms: Date.now(),
      delivery_ms: m.deliveryTimestamp ? m.deliveryTimestamp.getTime() : null,
    });
  }
  return [ producer, sent ];
}

function range(n) {
  return [ ...Array(n).keys() ];
}

// Acks `got`, receives once more (what is left), waits for the test's checks and shuts both
// clients down; returns that last receive.
async function finishSimple(consumer, producer, got) {
  for (const [ , m ] of got) await consumer.ack(m);
  const final = (await consumer.receive(16, 20000)).map(view);
  await pauseForChecks();
  await consumer.shutdown();
  await producer.shutdown();
  return final;
}

async function produceSimple(spec, deadline) {
  const { topic, count } = spec;
  const [ producer, sent ] = await sendAll(spec, range(count).map(i => ({
    topic,
    body: Buffer.from(`body-${i}`),
    tag: i % 2 === 0 ? 'even' : 'odd',
    keys: [ `key-${i}`, `order-${Math.floor(i / 5)}` ],
    properties: new Map([[ 'index', String(i) ], [ 'origin', 'node' ]]),
  })));
  const consumer = await simpleConsumer(spec, spec.group, topic);
  const first = await receiveUntil(consumer, deadline, g => g.length >= count, 20000,
    'first deliveries');
  const actions = {};
  for (const [ v, m ] of first) {
    const index = Number(v.props.index);
    if (index === 0) {
      // Comes back after 1 s, with delivery attempt 2.
      await consumer.changeInvisibleDuration(m, 1000);
      actions[v.id] = 'invisible 1s';
    } else if (index === 1) {
      // The receipt handle the change answered replaces the message's: the ack uses it.
      await consumer.changeInvisibleDuration(m, 30000);
      await consumer.ack(m);
      actions[v.id] = 'invisible 30s, then acked';
    } else {
      await consumer.ack(m);
      actions[v.id] = 'acked';
    }
  }
  const again = await receiveUntil(consumer, deadline, g => g.length >= 1, 20000, 'redelivery');
  const final = await finishSimple(consumer, producer, again);
  return {
    sent, received: first.map(g => g[0]), actions, redelivered: again.map(g => g[0]), final,
  };
}

// Starts the push consumers, then produces, then waits until `done(records)`.
async function pushRun(spec, deadline, consumers, done, produce) {
  const log = new Log(deadline);
  const running = [];
  for (const [ group, expression, fail ] of consumers) {
    running.push(await started(new PushConsumer(options(spec, {
      consumerGroup: group,
      subscriptions: new Map([[ spec.topic, expression ]]),
      messageListener: {
        consume(mv) {
          const v = { ...view(mv), consumer: group };
          log.add(v);
          return fail(v) ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
        },
      },
    }))));
  }
  const [ producer, sent ] = await produce();
  await log.waitFor(done, 'deliveries');
  await pauseForChecks();
  const records = [ ...log.records ];
  for (const c of running) await c.shutdown();
  await producer.shutdown();
  return { sent, records };
}

async function fifo(spec, deadline) {
  const { topic, poison } = spec;
  const produce = () => sendAll(spec, range(spec.per_group * spec.message_groups).map(i => {
    const [ g, seq ] = [ i % spec.message_groups, Math.floor(i / spec.message_groups) ];
    return { topic, body: Buffer.from(`mg-${g}:${seq}`), messageGroup: `mg-${g}` };
  }));
  const expected = spec.message_groups * spec.per_group - 1 + spec.max_attempts;
  return pushRun(spec, deadline, [[ spec.group, FilterExpression.SUB_ALL, v => v.body === poison ]],
    r => r.length >= expected, produce);
}

async function pushRetry(spec, deadline) {
  const { topic, count, poison } = spec;
  const produce = () => sendAll(spec, range(count).map(i => ({
    topic, body: Buffer.from(`m-${i}`), tag: 't',
  })));
  const done = records => records.filter(r => r.body === poison).length >= spec.max_attempts
    && new Set(records.map(r => r.body)).size >= count;
  return pushRun(spec, deadline, [[ spec.group, FilterExpression.SUB_ALL, v => v.body === poison ]],
    done, produce);
}

async function pushFilters(spec, deadline) {
  const { topic, count } = spec;
  const produce = () => sendAll(spec, range(count).map(i => ({
    topic,
    body: Buffer.from(`f-${i}`),
    tag: 'abc'[i % 3],
    properties: new Map([[ 'region', [ 'eu', 'us' ][i % 2] ], [ 'price', String(i) ]]),
  })));
  const done = records => Object.entries(spec.expected).every(([ group, n ]) =>
    new Set(records.filter(r => r.consumer === group).map(r => r.body)).size >= n);
  return pushRun(spec, deadline, [
    [ spec.tag_group, new FilterExpression(spec.tag_expression), () => false ],
    [ spec.sql_group, new FilterExpression(spec.sql_expression, FilterType.SQL), () => false ],
  ], done, produce);
}

async function delay(spec, deadline) {
  const { topic, count } = spec;
  const produce = () => sendAll(spec, range(count).map(i => ({
    topic,
    body: Buffer.from(`d-${i}`),
    tag: 'delay',
    deliveryTimestamp: new Date(Date.now() + spec.delay_s * 1000),
  })));
  return pushRun(spec, deadline, [[ spec.group, FilterExpression.SUB_ALL, () => false ]],
    r => r.length >= count, produce);
}

async function transaction(spec, deadline) {
  const { topic } = spec;
  const checks = new Log(deadline);
  // Answers the server's check by the message's `decision` property; records every check.
  const checker = {
    async check(mv) {
      checks.add({ id: mv.messageId, body: mv.body.toString() });
      return mv.properties.get('decision') === 'commit'
        ? TransactionResolution.COMMIT : TransactionResolution.ROLLBACK;
    },
  };
  const producer = await started(new Producer(options(spec, { topics: [ topic ], checker })));
  const sent = {};
  for (const [ body, end ] of [[ 'direct-commit', 'commit' ], [ 'direct-rollback', 'rollback' ],
    [ 'check-commit', null ], [ 'check-rollback', null ]]) {
    const decision = body.endsWith('commit') ? 'commit' : 'rollback';
    const tx = producer.beginTransaction();
    const receipt = await producer.send({
      topic, body: Buffer.from(body), tag: 'tx', properties: new Map([[ 'decision', decision ]]),
    }, tx);
    sent[body] = receipt.messageId;
    if (end === 'commit') await tx.commit();
    if (end === 'rollback') await tx.rollback();
  }
  await checks.waitFor(r => [ 'check-commit', 'check-rollback' ].every(b =>
    r.some(c => c.body === b)), 'check-back of both open transactions');
  const consumer = await simpleConsumer(spec, spec.group, topic);
  const got = await receiveUntil(consumer, deadline, g => g.length >= 2, 20000,
    'committed messages');
  const final = await finishSimple(consumer, producer, got);
  return { sent, checks: [ ...checks.records ], received: got.map(g => g[0]), final };
}

// Two delay messages; the earlier one is recalled (twice); once the later one (the marker)
// arrived, a recall of it is refused, and so is a malformed handle.
async function recall(spec, deadline) {
  const { topic } = spec;
  const producer = await started(new Producer(options(spec, { topics: [ topic ] })));
  const at = Date.now() + spec.delay_s * 1000;
  const sent = {};
  const handles = {};
  for (const [ body, extra ] of [[ 'recalled', 0 ], [ 'marker', 1000 ]]) {
    const receipt = await producer.send({
      topic, body: Buffer.from(body), tag: 'recall', deliveryTimestamp: new Date(at + extra),
    });
    sent[body] = receipt.messageId;
    handles[body] = receipt.recallHandle;
  }
  const recalled = [];
  for (let i = 0; i < 2; i++) {
    recalled.push((await producer.recallMessage(topic, handles.recalled)).messageId);
  }
  const consumer = await simpleConsumer(spec, spec.group, topic);
  const got = await receiveUntil(consumer, deadline, g => g.some(v => v.body === 'marker'),
    20000, 'the marker');
  const refused = async handle => {
    try {
      return { ok: (await producer.recallMessage(topic, handle)).messageId };
    } catch (e) {
      return { error: String(e && e.message ? e.message : e) };
    }
  };
  const late = await refused(handles.marker);
  const bad = await refused('not-a-recall-handle');
  const final = await finishSimple(consumer, producer, got);
  return { sent, handles, recalled, received: got.map(g => g[0]), late, bad, final };
}

const SCENARIOS = {
  produce_simple: produceSimple,
  fifo,
  push_retry: pushRetry,
  push_filters: pushFilters,
  delay,
  transaction,
  recall,
};

async function main() {
  const [ scenario, specJson ] = process.argv.slice(2);
  const spec = JSON.parse(specJson);
  const deadline = Date.now() + spec.deadline_s * 1000;
  const result = await SCENARIOS[scenario](spec, deadline);
  console.log(JSON.stringify({ result }));
  stdinLines.close();
  // Clients leave timers and channels behind after shutdown; the report is complete.
  process.exit(0);
}

main().catch(e => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});

"""One scenario of the official Python client (rocketmq-python-client 5.1.2) against a Comet node.

Run by tests/tests/clients.rs: `python scenarios.py SCENARIO SPEC_JSON`. The Rust test starts
the node, creates the topics and groups, and asserts on what this script reports; the script
only drives the client and records what it saw. Protocol on stdout, one JSON object a line:
  {"phase": "consumed"}   every expected delivery was seen; the consumers keep running until
                          the test writes a line on stdin (meanwhile it checks the broker)
  {"result": {...}}       the observations, after every client shut down
Every wait is bounded by the spec's `deadline_s`; a timeout raises with what was seen so far.
"""

import json
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials,
                      FilterExpression, Message, MessageListener, Producer,
                      PushConsumer, SimpleConsumer, TransactionChecker,
                      TransactionResolution)
from rocketmq.grpc_protocol import FilterType


def now_ms():
    return int(time.time() * 1000)


def view(msg):
    """What the tests compare of a received message."""
    return {
        "id": msg.message_id,
        "topic": msg.topic,
        "body": msg.body.decode(),
        "tag": msg.tag,
        "keys": sorted(msg.keys),
        "props": dict(msg.properties),
        "group": msg.message_group,
        "attempt": msg.delivery_attempt,
        "delivery_ms": msg.delivery_timestamp,
        "at_ms": now_ms(),
    }


class Log:
    """Records shared between client threads; waits on a condition, never sleeps."""

    def __init__(self, deadline):
        self.deadline = deadline
        self.records = []
        self.cond = threading.Condition()

    def add(self, record):
        with self.cond:
            self.records.append(record)
            self.cond.notify_all()

    def wait_for(self, pred, what):
        with self.cond:
            left = self.deadline - time.monotonic()
            if not self.cond.wait_for(lambda: pred(self.records), timeout=max(left, 0)):
                raise TimeoutError(f"{what}: not reached; seen {json.dumps(self.records)}")
            return list(self.records)


class Recording(MessageListener):
    """Records every delivery (with the consumer group that got it); fails the ones
    `fail(view)` selects."""

    def __init__(self, log, group, fail):
        self.log = log
        self.group = group
        self.fail = fail

    def consume(self, message):
        v = view(message)
        v["consumer"] = self.group
        self.log.add(v)
        return ConsumeResult.FAILURE if self.fail(v) else ConsumeResult.SUCCESS


def config(spec):
    return ClientConfiguration(spec["endpoint"], Credentials(), request_timeout=3)


def message(topic, body, tag=None, keys=(), props=None, group=None, delivery_s=None):
    m = Message()
    m.topic = topic
    m.body = body.encode()
    if tag:
        m.tag = tag
    for k in keys:
        m.keys = k  # the setter adds one key
    for k, v in (props or {}).items():
        m.add_property(k, v)
    if group:
        m.message_group = group
    if delivery_s:
        m.delivery_timestamp = delivery_s  # 5.1.2 sends this value as seconds
    return m


def started(client):
    client.startup()
    return client


def pause_for_checks():
    """Tells the test every delivery was seen and waits for its go-ahead."""
    print(json.dumps({"phase": "consumed"}), flush=True)
    sys.stdin.readline()


def receive_until(consumer, deadline, pred, invisible_s, what):
    """Receives (each call a long poll) until `pred(all received views)` holds."""
    got = []
    while not pred(got):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached; received {json.dumps(got)}")
        for m in consumer.receive(16, invisible_s):
            got.append((view(m), m))
    return got


def send_all(spec, messages):
    """Starts a producer of the spec's topic and sends `messages` in order; returns it with
    what was sent (message id, body, send time and delivery time)."""
    producer = started(Producer(config(spec), (spec["topic"],)))
    sent = []
    for m in messages:
        message_id = producer.send(m).message_id
        sent.append({"id": message_id, "body": m.body.decode(), "sent_ms": now_ms(),
                     "delivery_ms": m.delivery_timestamp * 1000 if m.delivery_timestamp else None})
    return producer, sent


def simple_consumer(spec):
    return started(SimpleConsumer(config(spec), spec["group"],
                                  {spec["topic"]: FilterExpression("*")}, await_duration=2))


def finish_simple(consumer, producer, got):
    """Acks `got`, receives once more (what is left), waits for the test's checks and shuts both
    clients down; returns that last receive."""
    for _, m in got:
        consumer.ack(m)
    final = [view(m) for m in consumer.receive(16, 20)]
    pause_for_checks()
    consumer.shutdown()
    producer.shutdown()
    return final


def produce_simple(spec, deadline):
    topic, count = spec["topic"], spec["count"]
    producer, sent = send_all(spec, [
        message(topic, f"body-{i}", tag="even" if i % 2 == 0 else "odd",
                keys=(f"key-{i}", f"order-{i // 5}"), props={"index": str(i), "origin": "py"})
        for i in range(count)])
    consumer = simple_consumer(spec)
    first = receive_until(consumer, deadline, lambda g: len(g) >= count, 20, "first deliveries")
    actions = {}
    for v, m in first:
        index = int(v["props"]["index"])
        if index == 0:
            # Comes back after 1 s, with delivery attempt 2.
            consumer.change_invisible_duration(m, 1)
            actions[v["id"]] = "invisible 1s"
        elif index == 1:
            # The receipt handle the change answered replaces the message's: the ack uses it.
            consumer.change_invisible_duration(m, 30)
            consumer.ack(m)
            actions[v["id"]] = "invisible 30s, then acked"
        else:
            consumer.ack(m)
            actions[v["id"]] = "acked"
    again = receive_until(consumer, deadline, lambda g: len(g) >= 1, 20, "redelivery")
    final = finish_simple(consumer, producer, again)
    return {"sent": sent, "received": [v for v, _ in first], "actions": actions,
            "redelivered": [v for v, _ in again], "final": final}


def push_run(spec, deadline, consumers, done, producer_for):
    """Starts the push consumers, then produces, then waits until `done(records)`."""
    log = Log(deadline)
    started_consumers = []
    for group, expression, fail in consumers:
        started_consumers.append(started(PushConsumer(
            config(spec), group, Recording(log, group, fail), {spec["topic"]: expression})))
    producer, sent = producer_for()
    records = log.wait_for(done, "deliveries")
    pause_for_checks()
    records = list(log.records)
    for c in started_consumers:
        c.shutdown()
    producer.shutdown()
    return {"sent": sent, "records": records}


def fifo(spec, deadline):
    topic, poison = spec["topic"], spec["poison"]
    groups, per_group = spec["message_groups"], spec["per_group"]

    def produce():
        return send_all(spec, [message(topic, f"mg-{g}:{seq}", group=f"mg-{g}")
                               for seq in range(per_group) for g in range(groups)])

    expected = groups * per_group - 1 + spec["max_attempts"]
    return push_run(spec, deadline,
                    [(spec["group"], FilterExpression("*"), lambda v: v["body"] == poison)],
                    lambda r: len(r) >= expected, produce)


def push_retry(spec, deadline):
    topic, count, poison = spec["topic"], spec["count"], spec["poison"]

    def produce():
        return send_all(spec, [message(topic, f"m-{i}", tag="t") for i in range(count)])

    def done(records):
        return (sum(1 for r in records if r["body"] == poison) >= spec["max_attempts"]
                and len({r["body"] for r in records}) >= count)

    return push_run(spec, deadline,
                    [(spec["group"], FilterExpression("*"), lambda v: v["body"] == poison)],
                    done, produce)


def push_filters(spec, deadline):
    topic, count = spec["topic"], spec["count"]

    def produce():
        return send_all(spec, [
            message(topic, f"f-{i}", tag="abc"[i % 3],
                    props={"region": ("eu", "us")[i % 2], "price": str(i)})
            for i in range(count)])

    tag_group, sql_group = spec["tag_group"], spec["sql_group"]
    want = spec["expected"]

    def done(records):
        by = {}
        for r in records:
            by.setdefault(r["consumer"], set()).add(r["body"])
        return all(len(by.get(g, ())) >= n for g, n in want.items())

    return push_run(spec, deadline, [
        (tag_group, FilterExpression(spec["tag_expression"]), lambda v: False),
        (sql_group, FilterExpression(spec["sql_expression"], FilterType.SQL), lambda v: False),
    ], done, produce)


def delay(spec, deadline):
    topic, count, delay_s = spec["topic"], spec["count"], spec["delay_s"]

    def produce():
        return send_all(spec, [message(topic, f"d-{i}", tag="delay",
                                       delivery_s=int(time.time()) + delay_s)
                               for i in range(count)])

    return push_run(spec, deadline, [(spec["group"], FilterExpression("*"), lambda v: False)],
                    lambda r: len(r) >= count, produce)


class Checker(TransactionChecker):
    """Answers the server's check by the message's `decision` property; records every check."""

    def __init__(self, log):
        self.log = log

    def check(self, message):
        self.log.add({"id": message.message_id, "body": message.body.decode()})
        if message.properties.get("decision") == "commit":
            return TransactionResolution.COMMIT
        return TransactionResolution.ROLLBACK


def transaction(spec, deadline):
    topic = spec["topic"]
    checks = Log(deadline)
    producer = started(Producer(config(spec), (topic,), checker=Checker(checks)))
    sent = {}
    for body, end in (("direct-commit", "commit"), ("direct-rollback", "rollback"),
                      ("check-commit", None), ("check-rollback", None)):
        decision = "commit" if body.endswith("commit") else "rollback"
        tx = producer.begin_transaction()
        receipt = producer.send(message(topic, body, tag="tx", props={"decision": decision}), tx)
        sent[body] = receipt.message_id
        if end == "commit":
            tx.commit()
        elif end == "rollback":
            tx.rollback()
    checks.wait_for(lambda r: {"check-commit", "check-rollback"} <= {c["body"] for c in r},
                    "check-back of both open transactions")
    consumer = simple_consumer(spec)
    got = receive_until(consumer, deadline, lambda g: len(g) >= 2, 20, "committed messages")
    final = finish_simple(consumer, producer, got)
    return {"sent": sent, "checks": list(checks.records), "received": [v for v, _ in got],
            "final": final}


def recall(spec, deadline):
    """Two delay messages; the earlier one is recalled (twice); once the later one (the marker)
    arrived, a recall of it is refused, and so is a malformed handle."""
    topic, delay_s = spec["topic"], spec["delay_s"]
    producer = started(Producer(config(spec), (topic,)))
    at = int(time.time()) + delay_s
    receipts = {body: producer.send(message(topic, body, tag="recall", delivery_s=at + extra))
                for body, extra in (("recalled", 0), ("marker", 1))}
    sent = {b: r.message_id for b, r in receipts.items()}
    handles = {b: r.recall_handle for b, r in receipts.items()}
    recalled = [producer.recall_message(topic, handles["recalled"]) for _ in range(2)]
    consumer = simple_consumer(spec)
    got = receive_until(consumer, deadline, lambda g: any(v["body"] == "marker" for v, _ in g),
                        20, "the marker")

    def refused(handle):
        try:
            return {"ok": producer.recall_message(topic, handle)}
        except Exception as e:  # the client raises its own exception types
            return {"error": str(e)}

    late, bad = refused(handles["marker"]), refused("not-a-recall-handle")
    final = finish_simple(consumer, producer, got)
    return {"sent": sent, "handles": handles, "recalled": recalled,
            "received": [v for v, _ in got], "late": late, "bad": bad, "final": final}


SCENARIOS = {
    "produce_simple": produce_simple,
    "fifo": fifo,
    "push_retry": push_retry,
    "push_filters": push_filters,
    "delay": delay,
    "transaction": transaction,
    "recall": recall,
}


def main():
    scenario, spec = sys.argv[1], json.loads(sys.argv[2])
    deadline = time.monotonic() + spec["deadline_s"]
    result = SCENARIOS[scenario](spec, deadline)
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main()

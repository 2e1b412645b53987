"""The sandbox's moto fixes give moto's own answers: run with the venv's python,
`python -m unittest deploy/local/moto_server_test.py` (sim/tests/moto_fixes.rs
runs it in the test suite).

Messages past their retention period are not handed out, fresh ones are, with
the fix as without it; and the fix no longer computes the queue's attributes.
A queue's attributes read one by one are the ones moto builds all at once,
and sending a message counts no messages.
"""

import os
import sys
import unittest
from unittest import mock

import boto3
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import Queue, SQSBackend, sqs_backends

ORIGINAL = SQSBackend.is_message_valid_based_on_retention_period
ORIGINAL_ATTRIBUTES = Queue.attributes.fget
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moto_server  # noqa: E402  (applies the fixes)

FIXED = SQSBackend.is_message_valid_based_on_retention_period
REGION = "us-east-1"
RETENTION_SECONDS = 60


class RetentionTest(unittest.TestCase):
    def setUp(self):
        self.mock = mock_aws()
        self.mock.start()
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.url = self.sqs.create_queue(
            QueueName="retention",
            Attributes={"MessageRetentionPeriod": str(RETENTION_SECONDS)},
        )["QueueUrl"]
        for n in range(3):
            self.sqs.send_message(QueueUrl=self.url, MessageBody=f"m{n}")
        self.backend = sqs_backends[DEFAULT_ACCOUNT_ID][REGION]
        self.queue = self.backend.get_queue("retention")

    def tearDown(self):
        self.mock.stop()

    def age(self, message, seconds):
        message.sent_timestamp -= seconds * 1000

    def test_the_fix_is_what_moto_server_runs(self):
        self.assertIs(FIXED, moto_server._is_message_valid_based_on_retention_period)
        self.assertIsNot(FIXED, ORIGINAL)

    def test_fresh_and_expired_messages_are_judged_as_moto_judges_them(self):
        fresh, nearly, expired = self.queue._messages
        self.age(nearly, RETENTION_SECONDS - 2)
        self.age(expired, RETENTION_SECONDS + 1)
        for message, valid in [(fresh, True), (nearly, True), (expired, False)]:
            with self.subTest(body=message.body):
                self.assertEqual(ORIGINAL(self.backend, "retention", message), valid)
                self.assertEqual(FIXED(self.backend, "retention", message), valid)

    def receive_with(self, check):
        """Bodies a receive of 10 returns, the middle message expired, with
        `check` as moto's retention check."""
        self.age(self.queue._messages[1], RETENTION_SECONDS + 1)
        with mock.patch.object(
            SQSBackend, "is_message_valid_based_on_retention_period", check
        ):
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
        return [m["Body"] for m in got.get("Messages", [])]

    def test_a_receive_never_hands_out_the_expired_message(self):
        fixed = self.receive_with(FIXED)
        self.tearDown()
        self.setUp()
        original = self.receive_with(ORIGINAL)
        self.assertNotIn("m1", fixed)
        # moto ends a receive at an expired message (SQS would skip it and
        # go on); the fix keeps moto's answer, whatever it is.
        self.assertEqual(fixed, original)
        self.assertIn("m0", fixed)

    def test_a_changed_retention_period_is_read_at_once(self):
        message = self.queue._messages[0]
        self.age(message, RETENTION_SECONDS + 1)
        self.assertFalse(FIXED(self.backend, "retention", message))
        self.sqs.set_queue_attributes(
            QueueUrl=self.url, Attributes={"MessageRetentionPeriod": "120"}
        )
        self.assertTrue(FIXED(self.backend, "retention", message))
        self.assertTrue(ORIGINAL(self.backend, "retention", message))

    def test_the_fix_computes_no_queue_attributes(self):
        message = self.queue._messages[0]
        with mock.patch.object(
            SQSBackend, "get_queue_attributes", side_effect=AssertionError("scanned")
        ):
            self.assertTrue(FIXED(self.backend, "retention", message))



class AttributesTest(unittest.TestCase):
    def setUp(self):
        self.mock = mock_aws()
        self.mock.start()
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.backend = sqs_backends[DEFAULT_ACCOUNT_ID][REGION]

    def tearDown(self):
        self.mock.stop()

    def queue(self, name, **attributes):
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return url, self.backend.get_queue(name)

    def test_every_kind_of_queue_has_moto_s_attributes_keys_and_values(self):
        _, dead = self.queue("dead")
        queues = [
            self.queue("plain"),
            self.queue("fifo.fifo", FifoQueue="true", ContentBasedDeduplication="true"),
            self.queue(
                "redriven",
                RedrivePolicy=f'{{"deadLetterTargetArn": "{dead.queue_arn}", "maxReceiveCount": "3"}}',
                Policy='{"Version": "2012-10-17", "Statement": []}',
            ),
            self.queue("encrypted", KmsMasterKeyId="alias/muster"),
        ]
        for url, queue in queues:
            if not queue.fifo_queue:
                self.sqs.send_message(QueueUrl=url, MessageBody="m", DelaySeconds=30)
                self.sqs.send_message(QueueUrl=url, MessageBody="m")
            with self.subTest(queue=queue.name):
                lazy = queue.attributes
                self.assertIsInstance(lazy, moto_server.LazyAttributes)
                self.assertEqual(list(lazy), list(ORIGINAL_ATTRIBUTES(queue)))
                self.assertEqual(dict(lazy), ORIGINAL_ATTRIBUTES(queue))
                answer = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
                self.assertEqual(
                    answer["Attributes"]["ApproximateNumberOfMessages"],
                    "0" if queue.fifo_queue else "1",
                )

    def test_sending_counts_no_messages(self):
        url, _ = self.queue("plain")
        counted = AssertionError("a send counted the queue's messages")
        with mock.patch.object(
            Queue,
            "approximate_number_of_messages",
            new_callable=mock.PropertyMock,
            side_effect=counted,
        ):
            self.sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": "m"} for n in range(10)]
            )


if __name__ == "__main__":
    unittest.main()

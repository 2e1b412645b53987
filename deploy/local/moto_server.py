"""moto_server with the sandbox's fidelity fixes; same arguments as moto_server.

Each fix makes a call cost about what it costs on AWS and never changes an
answer; the README's sandbox section lists them.

- SQS ReceiveMessage: moto checks each message it hands out against the
  queue's retention period by computing all of the queue's attributes, three
  times, each counting every message in the queue. A receive of 10 from a
  queue 200 deep took 325 ms (800 ms at 500 deep; 16 and 23 ms with this
  fix: deploy/local/moto_sqs_depth.py), where SQS answers in milliseconds at
  any depth. The check here reads the one attribute it needs: same answer,
  no scan (deploy/local/moto_server_test.py compares the two).
- SQS SendMessage and SendMessageBatch: moto reads one attribute of the
  queue (ContentBasedDeduplication) per message sent, through the same
  property that builds them all, three of them counting every message. A
  SendMessageBatch of 10 took 68 ms on an empty queue and 2.1 s with 1,000
  messages queued (100 batches, 16 at once: 7.6 s), which kept a campaign
  of 1,000 scopes from the workers for seconds. The queue's attributes are
  now a mapping that computes each attribute when read: the same keys and
  values, and a read of one costs one.
"""

import json
import sys
from collections.abc import Mapping

from moto.core.utils import camelcase_to_underscores, unix_time
from moto.server import main
from moto.sqs.models import Queue, SQSBackend


def _is_message_valid_based_on_retention_period(self, queue_name, message):
    queue = self.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return retain_until > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _is_message_valid_based_on_retention_period


class LazyAttributes(Mapping):
    """moto's Queue.attributes, each value computed when it is read."""

    def __init__(self, queue):
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        self._names = list(dict.fromkeys(names))

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        queue = self._queue
        if name == "RedrivePolicy" and queue.redrive_policy:
            return json.dumps(queue.redrive_policy)
        value = getattr(queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


Queue.attributes = property(LazyAttributes)

if __name__ == "__main__":
    main(sys.argv[1:])

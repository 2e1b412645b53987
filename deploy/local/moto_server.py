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
"""

import sys

from moto.core.utils import unix_time
from moto.server import main
from moto.sqs.models import SQSBackend


def _is_message_valid_based_on_retention_period(self, queue_name, message):
    queue = self.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return retain_until > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _is_message_valid_based_on_retention_period

if __name__ == "__main__":
    main(sys.argv[1:])

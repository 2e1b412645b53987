"""Benchmark: moto's ReceiveMessage time against queue depth, with and
without moto_server.py's fix. Starts two moto processes on free loopback
ports, fills a queue per depth, receives it 10 at a time (messages stay in
flight) and prints the mean time per receive.

    .venv/bin/python deploy/local/moto_sqs_depth.py
"""

import os
import socket
import subprocess
import sys
import time

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
DEPTHS = [10, 50, 200, 500]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(label, argv):
    port = free_port()
    moto = subprocess.Popen(
        argv + ["-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit(f"{label}: moto did not start")
                time.sleep(0.1)
        sqs = boto3.client(
            "sqs",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        for depth in DEPTHS:
            url = sqs.create_queue(QueueName=f"depth-{depth}")["QueueUrl"]
            for _ in range(0, depth, 10):
                sqs.send_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "MessageBody": "x" * 200} for i in range(10)],
                )
            started, received, calls = time.time(), 0, 0
            while received < depth:
                answer = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
                )
                received += len(answer.get("Messages", []))
                calls += 1
            per_call = (time.time() - started) * 1000 / calls
            print(f"{label:<16} depth {depth:>4}: {calls:>3} receives, {per_call:6.1f} ms each")
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    python = sys.executable
    measure("moto_server", [os.path.join(os.path.dirname(python), "moto_server")])
    measure("moto_server.py", [python, os.path.join(HERE, "moto_server.py")])

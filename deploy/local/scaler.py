#!/usr/bin/env python3
"""The sandbox's autoscaler: the rule hub.yaml gives Application Auto Scaling,
applied to worker processes on this machine.

Every --interval seconds it reads the controller's scaling signal from
CloudWatch (namespace --namespace, dimension QueueName), as AWS would:

* target tracking on TaskDemandPerWorker: desired = ceil(workers * value /
  target), out at once (after --scale-out-cooldown), in only after
  --scale-in-cooldown and by the same rule;
* a step from zero on TaskDemand: no workers and demand > 0 starts
  ceil(demand / target) of them (target tracking cannot grow from zero);

clamped to [--min, --max]. It starts workers with the command after `--`
(each gets MUSTER_WORKER_ID=scaler-N, and each --worker-env KEY=VALUE with
{id} replaced by that id: a certificate per worker) and stops them as ECS
does on
scale-in: SIGTERM, then SIGKILL after --stop-timeout. Each decision is a
line of --record (CSV: seconds since start, workers running, desired,
TaskDemand, TaskDemandPerWorker, and Workers: those the controller saw
working), which the autoscaling test and benchmark read. A worker that exits
by itself is logged and replaced at the next decision. It stops every
worker the same way on SIGTERM or SIGINT.

Usage: scaler.py --queue-name NAME [--target N] [--min N] [--max N] -- muster-worker ARGS...
"""

import argparse
import datetime
import math
import os
import signal
import subprocess
import sys
import time

import boto3


def parse(argv):
    if "--" not in argv and not {"-h", "--help"} & set(argv):
        sys.exit("scaler: give the worker command after --")
    split = argv.index("--") if "--" in argv else len(argv)
    own, command = argv[:split], argv[split + 1:]
    p = argparse.ArgumentParser(prog="scaler.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--queue-name", required=True, help="the task queue's name (the metrics' QueueName)")
    p.add_argument("--namespace", default="Muster")
    p.add_argument("--target", type=float, default=150.0, help="TaskDemandPerWorker to aim for")
    p.add_argument("--min", type=int, default=1, dest="min_workers")
    p.add_argument("--max", type=int, default=8, dest="max_workers")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between decisions")
    p.add_argument("--scale-out-cooldown", type=float, default=0.0)
    p.add_argument("--scale-in-cooldown", type=float, default=20.0)
    p.add_argument("--stop-timeout", type=float, default=120.0, help="SIGKILL this long after SIGTERM")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--record", help="CSV of every decision")
    p.add_argument("--log-dir", help="where each worker's output goes (default: inherited)")
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment of each worker; {id} is its id")
    args = p.parse_args(own)
    if not command:
        sys.exit("scaler: the worker command after -- is empty")
    for name in ("target", "interval", "stop_timeout"):
        if getattr(args, name) <= 0:
            sys.exit(f"scaler: --{name.replace('_', '-')} must be above 0")
    if not 0 <= args.min_workers <= args.max_workers:
        sys.exit("scaler: --min must be from 0 to --max")
    for pair in args.worker_env:
        if "=" not in pair or pair.startswith("="):
            sys.exit(f"scaler: --worker-env '{pair}' is not KEY=VALUE")
    return args, command


def desired(workers, demand, per_worker, target, lo, hi):
    """What the target tracking and step policies of hub.yaml ask for."""
    if demand is None:
        want = workers
    elif workers == 0:
        want = math.ceil(demand / target) if demand > 0 else 0
    else:
        want = math.ceil(workers * (per_worker or 0.0) / target)
    return max(lo, min(hi, want))


def die_with_parent():
    """A worker is killed when the scaler dies (Linux), as ECS stops a
    service's tasks: no worker outlives a killed scaler."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Fleet:
    def __init__(self, command, worker_env, log_dir, stop_timeout):
        self.command = command
        self.worker_env = [pair.split("=", 1) for pair in worker_env]
        self.log_dir = log_dir
        self.stop_timeout = stop_timeout
        self.running = []  # (id, Popen)
        self.stopping = []  # (Popen, deadline)
        self.started = 0

    def start(self):
        self.started += 1
        worker_id = f"scaler-{self.started}"
        env = dict(os.environ, MUSTER_WORKER_ID=worker_id)
        env.update({key: value.replace("{id}", worker_id) for key, value in self.worker_env})
        out = None
        if self.log_dir:
            out = open(os.path.join(self.log_dir, f"{worker_id}.log"), "ab")
        proc = subprocess.Popen(self.command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                preexec_fn=die_with_parent)
        self.running.append((worker_id, proc))
        print(f"scaler: started {worker_id} (pid {proc.pid})", flush=True)

    def stop_one(self):
        worker_id, proc = self.running.pop()
        proc.send_signal(signal.SIGTERM)
        self.stopping.append((proc, time.monotonic() + self.stop_timeout))
        print(f"scaler: stopping {worker_id} (pid {proc.pid})", flush=True)

    def reap(self):
        still = []
        for proc, deadline in self.stopping:
            if proc.poll() is not None:
                continue
            if time.monotonic() > deadline:
                proc.kill()
                print(f"scaler: killed pid {proc.pid}: still running {self.stop_timeout}s after SIGTERM", flush=True)
                continue
            still.append((proc, deadline))
        self.stopping = still
        gone = [(i, p) for i, p in self.running if p.poll() is not None]
        for worker_id, proc in gone:
            print(f"scaler: {worker_id} exited with {proc.returncode}", flush=True)
        self.running = [(i, p) for i, p in self.running if p.poll() is None]

    def stop_all(self):
        while self.running:
            self.stop_one()
        while self.stopping:
            self.reap()
            time.sleep(0.2)


def latest(cloudwatch, args, name):
    now = datetime.datetime.now(datetime.timezone.utc)
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {
                        "Namespace": args.namespace,
                        "MetricName": name,
                        "Dimensions": [{"Name": "QueueName", "Value": args.queue_name}],
                    },
                    "Period": 1,
                    "Stat": "Maximum",
                },
            }
        ],
        StartTime=now - datetime.timedelta(seconds=max(10.0, 3 * args.interval)),
        EndTime=now + datetime.timedelta(seconds=1),
        ScanBy="TimestampDescending",
    )
    values = answer["MetricDataResults"][0]
    points = sorted(zip(values["Timestamps"], values["Values"]), reverse=True)
    return points[0][1] if points else None


def main():
    args, command = parse(sys.argv[1:])
    cloudwatch = boto3.client("cloudwatch", region_name=args.region)
    fleet = Fleet(command, args.worker_env, args.log_dir, args.stop_timeout)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    record = open(args.record, "w", buffering=1) if args.record else None
    if record:
        record.write("seconds,workers,desired,demand,demand_per_worker,working\n")
    began = time.monotonic()
    last_out = last_in = -math.inf
    for _ in range(args.min_workers):
        fleet.start()
    while not stop:
        fleet.reap()
        try:
            demand = latest(cloudwatch, args, "TaskDemand")
            per_worker = latest(cloudwatch, args, "TaskDemandPerWorker")
            working = latest(cloudwatch, args, "Workers")
        except Exception as error:  # CloudWatch unreachable: hold the fleet as it is
            print(f"scaler: cannot read the signal: {error}", flush=True)
            demand = per_worker = working = None
        workers = len(fleet.running)
        want = desired(workers, demand, per_worker, args.target, args.min_workers, args.max_workers)
        now = time.monotonic()
        if want > workers and now - last_out >= args.scale_out_cooldown:
            for _ in range(want - workers):
                fleet.start()
            last_out = now
        elif want < workers and now - max(last_in, last_out) >= args.scale_in_cooldown:
            for _ in range(workers - want):
                fleet.stop_one()
            last_in = now
        if record:
            figures = [demand, per_worker, working]
            shown = ",".join("" if f is None else f"{f:g}" for f in figures)
            record.write(f"{now - began:.1f},{len(fleet.running)},{want},{shown}\n")
        time.sleep(args.interval)
    fleet.stop_all()
    print("scaler: stopped", flush=True)


if __name__ == "__main__":
    main()

//! What the worker has done: counters for tests and benchmarks, and the
//! Prometheus metrics behind `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::Api;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: &'static str,
    api: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    service: &'static str,
    api: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    worker_protocol: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Counters shared by every task of the process.
#[derive(Debug)]
pub struct Stats {
    calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    aws_calls: Family<CallLabels, Counter>,
    throttled: Family<ApiLabels, Counter>,
    batches_gauge: Gauge,
    tasks_gauge: Gauge,
    tasks_started: Counter,
    sqs_receive: Histogram,
    sqs_messages: Counter,
    handled: Family<OutcomeLabels, Counter>,
    polls: Family<OutcomeLabels, Counter>,
    lost_sends: Family<OutcomeLabels, Counter>,
    document_checks: Family<OutcomeLabels, Counter>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            calls: Mutex::default(),
            aws_calls: Family::default(),
            throttled: Family::default(),
            batches_gauge: Gauge::default(),
            tasks_gauge: Gauge::default(),
            tasks_started: Counter::default(),
            // 5 ms to ~41 s: a long poll with nothing to take lasts 20 s.
            sqs_receive: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            sqs_messages: Counter::default(),
            polls: Family::default(),
            handled: Family::default(),
            lost_sends: Family::default(),
            document_checks: Family::default(),
        }
    }
}

/// Figures the worker's other parts keep, rendered next to [`Stats`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra {
    /// Sessions assumed or refreshed (STS AssumeRole answers).
    pub credential_refreshes: u64,
    /// (role session, region) client sets cached.
    pub cached_targets: usize,
    /// 1 when the worker takes tasks, 0 when stopping or the queue fails.
    pub ready: bool,
}

impl Stats {
    /// Counts one AWS call outcome: "ok", "throttled", "transient",
    /// "expired", "error".
    pub fn call(&self, api: Api, outcome: &'static str) {
        *self
            .calls
            .lock()
            .expect("stats lock")
            .entry((api.name(), outcome))
            .or_insert(0) += 1;
        self.aws_calls
            .get_or_create(&CallLabels {
                service: api.service(),
                api: api.name(),
                outcome,
            })
            .inc();
        if outcome == "throttled" {
            self.throttled
                .get_or_create(&ApiLabels {
                    service: api.service(),
                    api: api.name(),
                })
                .inc();
        }
    }

    /// Calls by (API, outcome).
    pub fn calls(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.calls.lock().expect("stats lock").clone()
    }

    /// Calls with `outcome`, over every API.
    pub fn total(&self, outcome: &str) -> u64 {
        self.calls
            .lock()
            .expect("stats lock")
            .iter()
            .filter(|((_, o), _)| *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    /// A batch was sent and is being polled (+1) or finished (-1).
    pub fn batches(&self, delta: i64) {
        self.batches_gauge.inc_by(delta);
    }

    /// Batches being polled now.
    pub fn in_flight_batches(&self) -> i64 {
        self.batches_gauge.get()
    }

    /// A task started (+1) or ended (-1).
    pub fn tasks(&self, delta: i64) {
        self.tasks_gauge.inc_by(delta);
        if delta > 0 {
            self.tasks_started.inc_by(delta as u64);
        }
    }

    /// Tasks running now.
    pub fn running_tasks(&self) -> i64 {
        self.tasks_gauge.get()
    }

    /// One SQS ReceiveMessage answered after `took` with `messages`.
    pub fn received(&self, took: Duration, messages: usize) {
        self.sqs_receive.observe(took.as_secs_f64());
        self.sqs_messages.inc_by(messages as u64);
    }

    /// One queue message handled: the lease answer's outcome (`granted`,
    /// `leased_elsewhere`, `finished`, ...), `malformed`, `unanswered` when
    /// the controller could not be asked, or `refused` when it refused the
    /// ask (a worker older than its protocol); the message comes back.
    pub fn count_handled(&self, outcome: &'static str) {
        self.handled.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A batch was polled because its command's event said it ended
    /// (`event`), or when its cadence said (`cadence`).
    pub fn poll(&self, by_event: bool) {
        let outcome = if by_event { "event" } else { "cadence" };
        self.polls.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Batch polls so far for `outcome` (`event` or `cadence`).
    pub fn polls(&self, outcome: &'static str) -> u64 {
        self.polls.get_or_create(&OutcomeLabels { outcome }).get()
    }

    /// A SendCommand got no answer, and after looking it up by its Comment
    /// the worker `adopted` the command it found, `sent_again` to the
    /// instances it did not find, or `left_to_next_attempt` (too many
    /// unanswered sends in this attempt).
    pub fn lost_send(&self, outcome: &'static str) {
        self.lost_sends.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Unanswered SendCommands so far that ended in `outcome`.
    pub fn lost_sends(&self, outcome: &'static str) -> u64 {
        self.lost_sends.get_or_create(&OutcomeLabels { outcome }).get()
    }

    /// Discovery checked a document a scope would send: it `passed`, was
    /// `refused` (a parameter SendCommand would refuse) or `missing` (not
    /// in the account and region at that version), or was `unchecked` (it
    /// could not be read; SSM decides at the send).
    pub fn document_check(&self, outcome: &'static str) {
        self.document_checks.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Queue messages handled with `outcome` so far.
    pub fn handled(&self, outcome: &'static str) -> u64 {
        self.handled.get_or_create(&OutcomeLabels { outcome }).get()
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self, extra: Extra) -> String {
        let mut registry = Registry::with_prefix("muster_worker");
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                worker_protocol: muster_proto::WORKER_PROTOCOL.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with this worker's version and the worker protocol it speaks (a rolling deploy's progress: count by version)",
            build,
        );
        registry.register(
            "aws_calls",
            "AWS calls in target accounts by service, API and outcome (ok, throttled, transient, expired, error)",
            self.aws_calls.clone(),
        );
        registry.register(
            "aws_throttled",
            "AWS calls answered with throttling (each was retried later)",
            self.throttled.clone(),
        );
        registry.register(
            "batches_in_flight",
            "Batches sent through SSM and being polled",
            self.batches_gauge.clone(),
        );
        registry.register("tasks_running", "Tasks leased and running", self.tasks_gauge.clone());
        registry.register(
            "batch_polls",
            "Batch polls (ListCommandInvocations rounds), by why: event (Run Command said the command ended), cadence (the poll schedule, a fallback while events are read)",
            self.polls.clone(),
        );
        registry.register(
            "messages_handled",
            "Task queue messages handled, by what the lease answer said (granted, leased_elsewhere, finished, stale_attempt, campaign_inactive, unknown_task), malformed, unanswered (the controller could not be asked), or refused (the controller refused the ask: a worker older than its protocol)",
            self.handled.clone(),
        );
        registry.register(
            "lost_sends",
            "SendCommands that got no answer, by what the lookup by Comment led to: adopted (found; nothing sent again), sent_again (not found within the lookups; sent again, so an instance runs twice if SSM took the first and lists it late), left_to_next_attempt (the attempt failed and the next looks again)",
            self.lost_sends.clone(),
        );
        registry.register(
            "document_checks",
            "Documents discovery checked before a scope sends them, by outcome: passed, refused (SendCommand would refuse a parameter; the scope failed, nothing sent), missing (not in the account and region at that version; the same), unchecked (could not be read; SSM decides at the send)",
            self.document_checks.clone(),
        );
        registry.register("tasks_started", "Tasks leased and started", self.tasks_started.clone());
        registry.register(
            "credential_refreshes",
            "Target-account sessions assumed or refreshed through STS",
            ConstCounter::new(extra.credential_refreshes),
        );
        registry.register(
            "cached_targets",
            "SDK client sets cached per (role session, region)",
            ConstGauge::new(extra.cached_targets as i64),
        );
        registry.register(
            "sqs_receive_seconds",
            "Latency of SQS ReceiveMessage (long polls wait up to 20 s when the queue is empty)",
            self.sqs_receive.clone(),
        );
        registry.register(
            "sqs_messages_received",
            "Task messages received from SQS",
            self.sqs_messages.clone(),
        );
        registry.register(
            "ready",
            "1 when the worker takes tasks (queue reachable, not stopping)",
            ConstGauge::new(i64::from(extra.ready)),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

//! The scaling signal: how much work there is for workers, published to
//! CloudWatch for the worker fleet's autoscaler (hub.yaml's target tracking,
//! the sandbox's `deploy/local/scaler.py`).
//!
//! Demand is counted in tasks (a task is a batch of at most 50 instances,
//! or one scope's discovery) from the store, not from the queue: the
//! queue holds at most `max_queued` messages and one worker may hold
//! thousands of leases, so its visible count says little. Demand is every
//! task a worker holds, plus every task of a campaign that releases work
//! now (discovering, running or cancelling) that waits for a worker, on the
//! queue or not yet. A paused campaign, one waiting for a window, an
//! approval or a promotion, asks for no workers.
//!
//! Every `interval` the leader puts, with the dimension QueueName (the task
//! queue's name):
//! - `TaskDemand`: that count;
//! - `Workers`: workers holding a lease or granted one lately;
//! - `TaskDemandPerWorker`: TaskDemand / max(Workers, 1), the metric to track
//!   with a target of the tasks one worker should hold (below its
//!   `--max-tasks`).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use tokio_util::sync::CancellationToken;

use crate::Controller;

/// Where and how often the signal is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingSignal {
    /// The CloudWatch namespace, e.g. "Muster".
    pub namespace: String,
    /// How often.
    pub interval: Duration,
}

/// The signal at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Demand {
    /// Tasks that wait for a worker, of campaigns that release work now.
    pub waiting: i64,
    /// Tasks workers hold.
    pub held: i64,
    /// Workers holding a lease or granted one lately.
    pub workers: usize,
}

impl Demand {
    /// Tasks for workers: held and waiting.
    pub fn tasks(&self) -> i64 {
        self.waiting + self.held
    }

    /// Tasks per worker, all of them when there is none.
    pub fn per_worker(&self) -> f64 {
        self.tasks() as f64 / self.workers.max(1) as f64
    }
}

/// Checks a CloudWatch namespace; the error names the rule.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    if namespace.is_empty() || namespace.len() > 255 {
        return Err(format!("'{namespace}' must be 1 to 255 characters"));
    }
    if namespace.starts_with("AWS/") {
        return Err(format!("'{namespace}' may not start with AWS/, which is AWS's own"));
    }
    if !namespace
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c))
    {
        return Err(format!(
            "'{namespace}' may hold only letters, digits, spaces and . - _ / # :"
        ));
    }
    Ok(())
}

/// The task queue's name, from its URL: the metrics' QueueName dimension.
pub fn queue_name(queue_url: &str) -> &str {
    queue_url.trim_end_matches('/').rsplit('/').next().unwrap_or(queue_url)
}

/// The data points of `demand`.
pub fn data(demand: &Demand, queue: &str, interval: Duration) -> Vec<MetricDatum> {
    let dimension = Dimension::builder().name("QueueName").value(queue).build();
    // Sub-minute publishing is high resolution, so a 1 s period can read it.
    let resolution = if interval < Duration::from_secs(60) { 1 } else { 60 };
    let now = aws_sdk_cloudwatch::primitives::DateTime::from(std::time::SystemTime::now());
    [
        ("TaskDemand", demand.tasks() as f64, StandardUnit::Count),
        ("Workers", demand.workers as f64, StandardUnit::Count),
        ("TaskDemandPerWorker", demand.per_worker(), StandardUnit::None),
    ]
    .into_iter()
    .map(|(name, value, unit)| {
        MetricDatum::builder()
            .metric_name(name)
            .dimensions(dimension.clone())
            .value(value)
            .unit(unit)
            .storage_resolution(resolution)
            .timestamp(now)
            .build()
    })
    .collect()
}

/// The signal now, from the store and the workers lately seen.
pub async fn demand(ctl: &Controller) -> crate::store::StoreResult<Demand> {
    let (waiting, held, holders) = ctl.store.read(crate::store::queue::demand).await?;
    Ok(Demand {
        waiting,
        held,
        workers: ctl
            .metrics
            .active_workers(ctl.settings.active_worker_window(), &holders),
    })
}

/// Publishes the signal every interval while this controller leads, until
/// `shutdown`; nothing without a namespace.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    let Some(signal) = ctl.settings.scaling.clone() else {
        return;
    };
    let queue = queue_name(&ctl.settings.queue_url).to_owned();
    let mut failing = false;
    loop {
        if ctl.leader.fence().is_some() {
            match publish(&ctl, &signal, &queue).await {
                Ok(demand) => {
                    if failing {
                        tracing::info!("scaling signal published again");
                    }
                    failing = false;
                    tracing::debug!(
                        tasks = demand.tasks(),
                        workers = demand.workers,
                        "scaling signal published"
                    );
                }
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, namespace = %signal.namespace, "cannot publish the scaling signal; the autoscaler sees old figures");
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(signal.interval) => {}
        }
    }
}

async fn publish(ctl: &Controller, signal: &ScalingSignal, queue: &str) -> Result<Demand, String> {
    let demand = demand(ctl).await.map_err(|e| e.to_string())?;
    ctl.cloudwatch
        .put_metric_data()
        .namespace(&signal.namespace)
        .set_metric_data(Some(data(&demand, queue, signal.interval)))
        .send()
        .await
        .map_err(|e| muster_common::retry::describe(&e))?;
    Ok(demand)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_per_worker_counts_all_of_it_when_no_worker_is_seen() {
        let idle = Demand::default();
        assert_eq!((idle.tasks(), idle.per_worker()), (0, 0.0));
        let burst = Demand {
            waiting: 30,
            held: 0,
            workers: 0,
        };
        assert_eq!(burst.per_worker(), 30.0);
        let busy = Demand {
            waiting: 10,
            held: 20,
            workers: 3,
        };
        assert_eq!((busy.tasks(), busy.per_worker()), (30, 10.0));
    }

    #[test]
    fn namespaces_follow_cloudwatch_rules() {
        check_namespace("Muster").unwrap();
        check_namespace("Acme/Muster prod").unwrap();
        assert!(check_namespace("").unwrap_err().contains("1 to 255"));
        assert!(check_namespace("AWS/ECS").unwrap_err().contains("AWS's own"));
        assert!(check_namespace("a\"b").unwrap_err().contains("only letters"));
    }

    #[test]
    fn the_queue_name_is_the_urls_last_segment() {
        assert_eq!(
            queue_name("https://sqs.us-east-1.amazonaws.com/123456789012/muster-tasks"),
            "muster-tasks"
        );
        assert_eq!(queue_name("http://127.0.0.1:4566/000000000000/q/"), "q");
    }

    #[test]
    fn three_figures_with_the_queue_as_dimension_high_resolution_below_a_minute() {
        let demand = Demand {
            waiting: 5,
            held: 7,
            workers: 2,
        };
        let data = data(&demand, "muster-tasks", Duration::from_secs(2));
        let figures: Vec<(&str, f64, i32)> = data
            .iter()
            .map(|d| {
                (
                    d.metric_name().unwrap(),
                    d.value().unwrap(),
                    d.storage_resolution().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            figures,
            [
                ("TaskDemand", 12.0, 1),
                ("Workers", 2.0, 1),
                ("TaskDemandPerWorker", 6.0, 1)
            ]
        );
        assert!(data.iter().all(|d| d.dimensions()[0].value() == Some("muster-tasks")));
        assert_eq!(
            super::data(&demand, "q", Duration::from_secs(60))[0].storage_resolution(),
            Some(60)
        );
    }
}

//! What a test reads of a running system: ports, logs, the sim's record
//! of sends, clients of its APIs.

use super::*;

impl System {
    /// The campaign API's port.
    pub fn campaign_port(&self) -> u16 {
        self.campaign_port
    }

    /// The worker API's port.
    pub fn worker_port(&self) -> u16 {
        self.worker_port
    }

    /// The controller's metrics port.
    pub fn controller_metrics_port(&self) -> u16 {
        self.metrics_port_of(0)
    }

    /// A worker's metrics port.
    pub fn worker_metrics_port(&self, index: usize) -> u16 {
        self.worker_metrics_ports[index]
    }

    /// Every process's log so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            paths.sort();
            for path in paths {
                all.push_str(&format!("=== {}\n", path.display()));
                all.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        all
    }

    /// The WARN and ERROR lines that muster's own code logged, in every
    /// process (the AWS SDK's and other crates' are left out).
    pub fn muster_warnings(&self) -> Vec<String> {
        let plain = strip_ansi(&self.logs());
        plain
            .lines()
            .filter(|line| {
                let mut words = line.split_whitespace();
                let level = words.nth(1).unwrap_or_default();
                (level == "WARN" || level == "ERROR") && line.contains(" muster_")
            })
            .map(str::to_owned)
            .collect()
    }

    /// A worker's log.
    pub fn worker_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("worker-{index}.log"))).unwrap_or_default()
    }

    /// Shortens the task queue's redrive to `max_receives` receives of
    /// `visibility_secs` each before the dead-letter queue (the hub's is
    /// 5 x 30 s), so that an outage in a test can outlast it.
    pub async fn shorten_redrive(&self, visibility_secs: u32, max_receives: u32) {
        use aws_sdk_sqs::types::QueueAttributeName;
        let sqs = aws_sdk_sqs::Client::new(&self.sb.hub_config("us-east-1"));
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&self.fleet.dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the dead-letter queue's ARN")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("an ARN");
        sqs.set_queue_attributes()
            .queue_url(&self.fleet.queue_url)
            .attributes(QueueAttributeName::VisibilityTimeout, visibility_secs.to_string())
            .attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives.to_string()})
                    .to_string(),
            )
            .send()
            .await
            .expect("the redrive policy");
    }

    /// Account id by fleet name.
    pub fn account(&self, name: &str) -> String {
        self.fleet.account(name).expect("account in the fleet").id.clone()
    }

    /// A ScheduleService client as the admin (its client certificate).
    pub fn schedules(&self) -> muster_proto::v1::schedule_service_client::ScheduleServiceClient<Channel> {
        muster_proto::v1::schedule_service_client::ScheduleServiceClient::new(
            self.creds
                .endpoint(self.campaign_port, Some(&self.creds.pki.admin))
                .connect_lazy(),
        )
    }

    /// A CampaignService client with bearer `token` (one the policy file
    /// names).
    pub fn token_client(&self, token: &str) -> crate::creds::TokenClient {
        self.creds.token_client(self.campaign_port, Some(token))
    }

    /// The muster CLI calling this controller with bearer `token`, for the
    /// caller's arguments.
    pub fn cli_with_token(&self, token: &str) -> tokio::process::Command {
        let mut command = muster_command();
        command
            .arg("--controller")
            .arg(format!("https://localhost:{}", self.campaign_port))
            .arg("--tls-ca")
            .arg(&self.creds.files.ca)
            .args(["--color", "never"])
            .env("MUSTER_TOKEN", token);
        command
    }

    /// SendCommands per (instance, command of the campaign's sequence, from
    /// 1), from the sim's audit log, as the Comment names the command
    /// ("muster task T", "muster task T command 2").
    pub fn sends_per_command(&self) -> std::collections::BTreeMap<(String, u32), usize> {
        let mut counts = std::collections::BTreeMap::new();
        for entry in self.sb.audit() {
            let n = command_of(&entry.comment);
            for id in entry.instance_ids {
                *counts.entry((id, n)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// SendCommands per instance, from the sim's audit log.
    pub fn sends_per_instance(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for entry in self.sb.audit() {
            for id in entry.instance_ids {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// `text` without terminal colour codes (ESC [ ... m).
pub(super) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
